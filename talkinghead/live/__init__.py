"""Live puppeteering: the per-frame puppet, the real-time loop, cameras and outputs."""

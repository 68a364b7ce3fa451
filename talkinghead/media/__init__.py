"""Media in and out: video and image files (PyAV, PIL), atomic writes, and the invisible mark."""

"""Test-wide settings. OpenMP workers sleep when idle (set before torch loads): with spinning workers, torch
ran 10-40x slower whenever another process shared the CPU."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

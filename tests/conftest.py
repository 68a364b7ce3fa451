"""Test-wide settings. OpenMP workers sleep when idle (set before torch loads): with spinning workers, torch
ran 10-40x slower whenever another process shared the CPU."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread: 2 CPU cores, often shared with a second process (oversubscription stalls)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

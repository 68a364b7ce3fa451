"""AKD — average keypoint distance between the 68 landmarks detected on generated frames and on the driving
(ground-truth) frames, per pair. Lower is better.

    AKD_i = mean_k ‖p̂_ik − p_ik‖₂ / s_i,   s_i = inter-ocular distance of the *driving* face
            (outer eye corners, points 36 and 45 of the iBUG-68 markup)

so 0.1 means the landmarks are off by a tenth of the eye distance on average, independent of the resolution.
Where no face is detected on the generated frame the pair has AKD = NaN and counts in the **no-face rate**
(the share of generated frames without a detected face), which is reported next to AKD, never hidden: a
generator that produces no face must not score a good AKD. Pairs whose driving frame has no face (or
zero eye distance) are NaN as well and flagged separately (`driving_missing`): they say nothing about the
generator. Landmarks: dlib HOG + 68-point predictor (talkinghead.landmarks.detect, via metrics/_faces.py); the driving landmarks may be
given (e.g. from preprocessing) to skip their detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from talkinghead.media.images import to_uint8
from talkinghead.metrics._faces import landmarks68

EYE_OUTER = (36, 45)


@dataclass
class AKDResult:
    akd: torch.Tensor  # (B,) float, NaN where undefined
    no_face: torch.Tensor  # (B,) bool: no face detected on the generated frame
    driving_missing: torch.Tensor  # (B,) bool: no face on the driving frame (pair excluded)

    @property
    def no_face_rate(self) -> float:
        """Share of generated frames (with a valid driving face) where no face was detected."""
        valid = ~self.driving_missing
        return float(self.no_face[valid].float().mean()) if valid.any() else float("nan")

    @property
    def mean(self) -> float:
        """Mean AKD over the pairs where both faces were found (NaN if none)."""
        ok = ~torch.isnan(self.akd)
        return float(self.akd[ok].mean()) if ok.any() else float("nan")


def detect_batch(images: torch.Tensor) -> list[np.ndarray | None]:
    """68 landmarks (68, 2) as (x, y) pixels, or None, for each image of (B, 3, H, W) in [-1, 1]."""
    return [landmarks68(img) for img in to_uint8(images)]


def keypoint_distance(fake_pts: np.ndarray, real_pts: np.ndarray) -> float:
    """Mean L2 distance of two (68, 2) landmark sets over the inter-ocular distance of `real_pts`."""
    scale = float(np.linalg.norm(real_pts[EYE_OUTER[0]] - real_pts[EYE_OUTER[1]]))
    if scale <= 0:
        return float("nan")
    return float(np.linalg.norm(fake_pts - real_pts, axis=1).mean() / scale)


def akd(fake: torch.Tensor, real: torch.Tensor, real_points=None) -> AKDResult:
    """AKD of generated frames vs driving frames, both (B, 3, H, W) in [-1, 1] at the same resolution.

    real_points: optional (B, 68, 2) driving landmarks in pixels of `real` (None entries are detected)."""
    if fake.shape[0] != real.shape[0]:
        raise ValueError(f"batch sizes differ: {fake.shape[0]} vs {real.shape[0]}")
    fake_pts = detect_batch(fake)
    if real_points is None:
        real_pts = detect_batch(real)
    else:
        real_pts = [None if p is None else np.asarray(p, np.float32).reshape(68, 2) for p in real_points]
        missing = [i for i, p in enumerate(real_pts) if p is None]
        if missing:
            found = detect_batch(real[missing])
            for i, p in zip(missing, found):
                real_pts[i] = p
    vals, no_face, drv_missing = [], [], []
    for fp, rp in zip(fake_pts, real_pts):
        drv_missing.append(rp is None)
        no_face.append(fp is None)
        vals.append(float("nan") if fp is None or rp is None else keypoint_distance(fp, rp))
    return AKDResult(torch.tensor(vals, dtype=torch.float32), torch.tensor(no_face), torch.tensor(drv_missing))

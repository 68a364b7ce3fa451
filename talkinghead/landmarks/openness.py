"""How open a face's mouth and eyes are, from its 68 iBUG landmarks (0-based), in units that do not depend on
the face's size: the inner-lip gap in inter-ocular distances, and dlib's eye aspect ratio."""

from __future__ import annotations

import numpy as np

from talkinghead.landmarks.detect import interocular

INNER_LIPS = ((61, 67), (62, 66), (63, 65))  # inner upper-lip point, the inner lower-lip point below it
EYES = (np.arange(36, 42), np.arange(42, 48))  # per eye: corner, two upper lid points, corner, two lower lid points


def mouth_gap(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (...,): the mean vertical distance between the inner upper-lip points 61-63 and the inner
    lower-lip points 67-65 (lips that cross count 0), over the outer-eye-corner distance (`detect.interocular`)."""
    p = np.asarray(points, np.float64)
    gap = np.mean([np.maximum(p[..., lo, 1] - p[..., up, 1], 0.0) for up, lo in INNER_LIPS], axis=0)  # (...,)
    flat = p.reshape(-1, 68, 2)
    scale = np.array([interocular(q) for q in flat]).reshape(p.shape[:-2])  # (...,)
    return gap / np.maximum(scale, 1e-6)


def eye_aperture(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (..., 2): the eye aspect ratio (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) of each eye (the
    subject's right eye, points 36-41, then the left, 42-47)."""
    p = np.asarray(points, np.float64)

    def dist(i, j):
        return np.linalg.norm(p[..., i, :] - p[..., j, :], axis=-1)

    return np.stack([(dist(e[1], e[5]) + dist(e[2], e[4])) / (2 * np.maximum(dist(e[0], e[3]), 1e-6))
                     for e in EYES], axis=-1)


def eyes_open(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (...,): the eye aspect ratio, mean of both eyes."""
    return eye_aperture(points).mean(axis=-1)

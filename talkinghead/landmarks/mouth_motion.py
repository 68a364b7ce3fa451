"""Mouth and jaw motion in a normalised face frame (DESIGN.md §2 "speech and text as drivers", MakeItTalk's
route): the speech model predicts where the mouth and jaw points sit relative to the speaker's mouth at rest,
with the head pose removed and in inter-ocular units, so that the same prediction fits any face and any pose.

- `to_face_frame`: each frame's similarity onto the mean 68-point shape (fitted on the nose and the eye corners,
  which speech does not move): the frame is centred, upright and 1 wide between the outer eye corners.
- `rest_shape`: a track's mouth at rest, the mean of its most closed frames.
- `with_mouth`: a track (pixels) whose mouth and jaw are replaced by rest + displacements, drawn back in each
  frame's own pose. Retargeting (`retarget.py`) then carries it onto a photo's face shape, so at silence
  (displacements 0) the photo keeps its own mouth.
"""

from __future__ import annotations

import numpy as np

from talkinghead.landmarks.openness import mouth_gap
from talkinghead.landmarks.retarget import apply_transform, invert_transform, procrustes

MOUTH_JAW = np.r_[0:17, 48:68]  # the 37 points speech moves: the jaw line and both lip contours
MOUTH = np.arange(48, 68)  # the 20 lip points (the LMD metric's)
STABLE = np.array([27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45])  # nose and eye corners


def rows(points) -> np.ndarray:
    """Where the given iBUG 68 indices sit among MOUTH_JAW's 37 rows (the speech model's offsets)."""
    where = {int(k): i for i, k in enumerate(MOUTH_JAW)}
    return np.array([where[int(k)] for k in np.ravel(points)])


def canonical_shape() -> np.ndarray:
    """(68, 2) the mean shape: centred, 1 between the outer eye corners."""
    from talkinghead.landmarks.manual import mean_shape

    return np.asarray(mean_shape(), np.float64)


def to_face_frame(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 68, 2) pixels -> ((T, 68, 2) face-frame points, (T, 2, 3) the similarities pixels -> face frame)."""
    seq = np.asarray(seq, np.float64)
    canon = canonical_shape()
    ms = np.stack([procrustes(p[STABLE], canon[STABLE]) for p in seq])  # (T, 2, 3)
    out = np.stack([apply_transform(m, p) for m, p in zip(ms, seq)])
    return out, ms


def rest_shape(face_seq: np.ndarray, share: float = 0.1) -> np.ndarray:
    """(T, 68, 2) face-frame points -> (68, 2): the mean of the `share` of frames with the smallest inner-lip
    gap (at least one frame): the speaker's mouth at rest."""
    face_seq = np.asarray(face_seq, np.float64)
    gaps = mouth_gap(face_seq)  # (T,)
    k = max(1, int(round(share * len(face_seq))))
    return face_seq[np.argsort(gaps, kind="stable")[:k]].mean(axis=0)


def displacements(face_seq: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """(T, 68, 2) face-frame points, (68, 2) rest -> (T, 37, 2): the mouth and jaw points' offsets from rest."""
    return (np.asarray(face_seq, np.float64)[:, MOUTH_JAW] - rest[MOUTH_JAW]).astype(np.float32)


def with_mouth(seq: np.ndarray, disp: np.ndarray, rest: np.ndarray | None = None) -> np.ndarray:
    """(T, 68, 2) pixels and (T, 37, 2) displacements -> (T, 68, 2) pixels: the track's mouth and jaw replaced by
    rest + displacement in each frame's face frame (rest: the track's own `rest_shape` unless given)."""
    seq = np.asarray(seq, np.float64)
    disp = np.asarray(disp, np.float64)
    if disp.shape != (len(seq), len(MOUTH_JAW), 2):
        raise ValueError(f"expected ({len(seq)}, {len(MOUTH_JAW)}, 2) displacements, got {disp.shape}")
    face, ms = to_face_frame(seq)
    rest = rest_shape(face) if rest is None else np.asarray(rest, np.float64)
    face[:, MOUTH_JAW] = rest[MOUTH_JAW] + disp
    return np.stack([apply_transform(invert_transform(m), p) for m, p in zip(ms, face)]).astype(np.float32)

"""Blinks through landmark smoothing: a blink closes the eyes for one or two frames, so a low-pass filter
over the points (landmarks/track.py) averages it away with the open frames around it. `keep_blinks` puts
back, after smoothing, the eye apertures that depart from the smoothed ones by far more than the run's noise.

Eye aperture: dlib's eye aspect ratio, (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) per eye (iBUG points 36-41 and
42-47).
"""

from __future__ import annotations

import numpy as np

from talkinghead.landmarks.openness import EYES, eye_aperture

# A departure of the raw aperture from the smoothed one, in units of the run's robust noise level: below
# EVENT_START it is noise (the smoothed aperture stays); from EVENT_FULL on it is an event (the raw lids are kept).
EVENT_START, EVENT_FULL = 3.0, 6.0
MIN_NOISE = 1e-3  # floor of the noise level (aperture units), for runs without noise
MIN_FRAMES = 5  # shorter runs have no noise level to judge by: left as smoothed


def _corners_onto(raw: np.ndarray, smooth: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """The raw points of one eye (T, 6, 2), each frame's moved by the similarity taking its corners onto the
    smoothed shape's: the raw lids in the smoothed eye's place. raw, smooth: (T, 68, 2)."""
    z = raw[:, eye, 0] + 1j * raw[:, eye, 1]  # (T, 6)
    s0, s1 = smooth[:, eye[0]], smooth[:, eye[3]]
    w0, w1 = s0[:, 0] + 1j * s0[:, 1], s1[:, 0] + 1j * s1[:, 1]
    r0, r1 = z[:, 0], z[:, 3]
    a = (w1 - w0) / np.where(np.abs(r1 - r0) > 1e-9, r1 - r0, 1.0)
    out = a[:, None] * (z - r0[:, None]) + w0[:, None]
    return np.stack([out.real, out.imag], axis=-1)


def keep_blinks(raw: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """(T, 68, 2) raw and smoothed points of one face track -> the smoothed points with the raw eyelids back
    where the raw aperture departs from the smoothed one by an event's size (a blink, a wide-eyed frame).

    The noise level is the run's median absolute departure (robust: a few blinks do not raise it); between
    EVENT_START and EVENT_FULL noise levels the lids are blended. Lids are taken in the smoothed eye's frame (the
    raw eye moved onto the smoothed corners), so the eye's position and size stay smoothed."""
    raw = np.asarray(raw, np.float64)
    out = np.array(smooth, np.float64, copy=True)
    if len(raw) < MIN_FRAMES:
        return out.astype(np.float32)
    departure = eye_aperture(raw) - eye_aperture(out)  # (T, 2)
    noise = np.maximum(1.4826 * np.median(np.abs(departure), axis=0), MIN_NOISE)  # (2,)
    weight = np.clip((np.abs(departure) / noise - EVENT_START) / (EVENT_FULL - EVENT_START), 0.0, 1.0)  # (T, 2)
    lids = [1, 2, 4, 5]  # of an eye's six points
    for k, eye in enumerate(EYES):
        moved = _corners_onto(raw, out, eye)  # (T, 6, 2)
        out[:, eye[lids]] += weight[:, k, None, None] * (moved[:, lids] - out[:, eye[lids]])
    return out.astype(np.float32)

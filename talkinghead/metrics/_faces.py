"""Face helpers shared by CSIM and AKD: dlib's 68-point landmarks, its face descriptor, aligned chips.

Landmarks come from the project's detector (`talkinghead.landmarks.detect`: dlib HOG + 68-point predictor of
face-recognition-models 0.3.0), the descriptor model from the same package's files (nothing downloaded).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=1)
def face_recognizer():
    """dlib's 128-d ResNet face descriptor model (cached)."""
    import dlib

    from talkinghead.landmarks.detect import dlib_models_dir

    return dlib.face_recognition_model_v1(str(dlib_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"))


@functools.lru_cache(maxsize=2)
def _detector(upsample: int):
    from talkinghead.landmarks.detect import DlibDetector

    return DlibDetector(upsample=upsample)


def _upsample_for(shape) -> int:
    # HOG finds faces of >= ~80 px; small crops (128²) need one pyramid up-sampling.
    return 1 if min(shape[:2]) < 200 else 0


def landmarks68(image: np.ndarray) -> np.ndarray | None:
    """68 landmarks (68, 2) float32 as (x, y) pixels of the main face in a uint8 RGB image (H, W, 3), or None.
    Images under 200 px get one detector up-sampling (HOG misses faces under ~80 px)."""
    from talkinghead.landmarks.detect import pick_face

    face = pick_face(_detector(_upsample_for(image.shape)).detect(image), image.shape)
    return None if face is None else np.asarray(face.points, dtype=np.float32).reshape(68, 2)


def face_chip(image: np.ndarray, points: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """dlib-aligned face chip (size, size, 3) uint8 from 68 landmarks (x, y) — the alignment dlib's
    descriptor was trained with."""
    import dlib

    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in points]
    x0, y0 = np.floor(points.min(0)).astype(int)
    x1, y1 = np.ceil(points.max(0)).astype(int)
    det = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), pts)
    return np.ascontiguousarray(dlib.get_face_chip(np.ascontiguousarray(image), det, size=size, padding=padding))

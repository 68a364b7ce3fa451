"""MediaPipe's face mesh as a stage of the face-finding cascade (optional extra `mesh`: mediapipe 0.10.21 ships
its face detector and 468-point landmark .tflite files and `mediapipe.solutions.face_mesh`; nothing is
downloaded). Its 468 points are mapped to the 68 iBUG points by the affine combinations of mesh_to_68.json,
fitted on real frames where dlib is right (scripts/fit_face_shapes.py)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import sys
import weakref
from pathlib import Path

import numpy as np

from talkinghead.landmarks.detect import Face, searchable

MAP_FILE = Path(__file__).with_name("mesh_to_68.json")


def mesh_available() -> bool:
    """Whether mediapipe is installed (the `mesh` extra)."""
    return importlib.util.find_spec("mediapipe") is not None


@functools.lru_cache(maxsize=1)
def _mesh_map() -> tuple[np.ndarray, np.ndarray]:
    data = json.loads(MAP_FILE.read_text())
    return np.asarray(data["indices"], np.int64), np.asarray(data["weights"], np.float64)  # (68, K) each


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """(468, 2) mesh points -> (68, 2) float32 iBUG points."""
    idx, w = _mesh_map()
    return (np.asarray(mesh, np.float64)[idx] * w[..., None]).sum(1).astype(np.float32)


@contextlib.contextmanager
def _quiet_stderr():
    """MediaPipe's C++ logging writes to file descriptor 2 when its graph starts; keep it off the console."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class MeshDetector:
    """MediaPipe face mesh (static images, up to `max_faces`) -> Faces with 68 iBUG points and a HOG-like box.
    `predict` (landmarks in a given box) is dlib's, as for the other stages."""

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5):
        self.max_faces, self.min_confidence = int(max_faces), float(min_confidence)
        self._mesh = None

    def __getstate__(self):  # MediaPipe graphs don't pickle; rebuilt in the worker process
        return {"max_faces": self.max_faces, "min_confidence": self.min_confidence}

    def __setstate__(self, state):
        self.__init__(**state)

    def _graph(self):
        if self._mesh is None:
            with _quiet_stderr():
                from mediapipe.python.solutions import face_mesh

                self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=self.max_faces,
                                                refine_landmarks=False, min_detection_confidence=self.min_confidence)
                self._mesh.process(np.zeros((64, 64, 3), np.uint8))  # starts the graph (and its log lines)
                # a graph not closed keeps its memory after the detector is gone: close it with the detector
                weakref.finalize(self, self._mesh.close)
        return self._mesh

    def mesh_points(self, image) -> list[np.ndarray]:
        """(468, 2) float32 pixel points of each face found (searched on detect.searchable's copy: an image
        too small or elongated raises UnsearchableImageError, a large one is searched shrunk)."""
        image, scale = searchable(image)
        h, w = image.shape[:2]
        graph = self._graph()
        with _quiet_stderr():  # a warning line on some images' sizes
            res = graph.process(image)
        return [np.array([(p.x * w * scale, p.y * h * scale) for p in f.landmark], np.float32)
                for f in (res.multi_face_landmarks or [])]

    def detect(self, image) -> list[Face]:
        from talkinghead.landmarks.manual import box_of

        faces = []
        for m in self.mesh_points(image):
            pts = mesh_to_68(m)
            faces.append(Face(box=box_of(pts), points=pts, score=1.0))
        return faces

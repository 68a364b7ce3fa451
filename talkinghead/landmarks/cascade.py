"""One face-finding cascade for every command (DESIGN.md §2 "any portrait"): dlib HOG at the image's
size → HOG on the image up-sampled ×2, ×4 (small faces) → dlib's CNN detector → MediaPipe's face mesh (the
optional extra `mesh`). The first stage that finds a face wins; manual landmarks (landmarks/manual.py) are
what a user gives when none does, and the command line's error says how (`NoFaceFoundError`). `detect`,
`detect_boxes` and `predict` are DlibDetector's interface; the object pickles (its detectors are rebuilt in
a worker process).

Video frames (`video_cascade`: the driver of `animate`, `preprocess`, `evaluate`): HOG at the frame's size
first, up-sampled only when that finds nothing and only while the up-sampled frame stays within
`UPSAMPLED_SIDE` (a 176×144 frame gets ×2 and ×4, a 960-px one ×2); no CNN (~50× HOG's time). They start at
the stage that found the previous face, so a small video does not pay for the failing stage on every frame;
after `MISSES` face-less frames in a row (a cut-away) the other stages run on every `MISSES`-th frame only
(benchmarks/bench_detectors.py measures what each stage costs).

Photos (`photo_cascade`) are searched once, so:
- the first stage is HOG ×1 and ×2 together, faces merged: either alone picks the wrong face on one of the 37
  images of shared/data/images (×1 misses the turned main face of breakingbad.jpg and finds the other
  person; ×2 misses Einstein and finds a 52-px false face); together they pick the right one on all;
- then the CNN, then the mesh;
- dlib's 68-point predictor assumes an upright face: on a head tilted 45-70° the box is right and its points
  are not (0.4-1.0 eye distances off, the mesh's 0.02-0.12), so where the mesh is installed dlib's points
  that differ from the mesh's by more than `MESH_DISAGREE` are replaced by the mesh's.
Numbers: benchmarks/bench_detectors.py.
"""

from __future__ import annotations

import time

import numpy as np

from talkinghead.console import log
from talkinghead.errors import NoFaceError
from talkinghead.landmarks.detect import (DlibCnnDetector, DlibDetector, Face, box_iou, check_searchable,
                                          interocular)

UPSAMPLED_SIDE = 2048  # HOG up-samples an image only while its longer side (after max_side) stays within this
# dlib's points vs the mesh's mapped ones on 364 real upright frames: median 0.03, max 0.26 of the eye distance
MESH_DISAGREE = 0.3
MISSES = 8  # sticky cascades: after this many face-less frames in a row, the later stages only every MISSES-th
STAGE_NAMES = {"hog0": "dlib HOG", "hog1": "dlib HOG up-sampled x2", "hog2": "dlib HOG up-sampled x4",
               "hog0+1": "dlib HOG at x1 and x2", "hog1+2": "dlib HOG at x2 and x4",
               "cnn": "dlib CNN", "mesh": "MediaPipe face mesh"}


class NoFaceFoundError(NoFaceError):
    """No stage found a face in a photo. Its text is "no face found in LABEL" (what library callers and the
    web app show); `command_line_message()` adds the stages tried and the command line's manual options."""

    def __init__(self, label: str, tried: list[str] | None = None):
        super().__init__(f"no face found in {label}")
        self.label, self.tried = label, list(tried or [])

    def command_line_message(self) -> str:
        how = f" by {', '.join(STAGE_NAMES.get(s, s) for s in self.tried)}" if self.tried else ""
        return (f"no face found in {self.label}{how}: give its 68 landmarks with --landmarks FILE.pts (write one "
                f"to correct with `talkinghead landmarks {self.label} -o FILE.pts [--points ...]`) or 5 points "
                "with --points x1,y1,...,x5,y5 (eye centres, nose tip, mouth corners)")


class FaceCascade:
    """Faces of an image from the first detector stage that finds at least `min_faces`.

    max_side: images with a larger side are detected on a copy of this size (landmarks at full size).
    min_upsample / max_upsample: first / most HOG up-samplings (each halves the smallest face found, 4× the
        time; preprocess --upsample sets the first).
    cnn / mesh: include dlib's CNN / MediaPipe's face mesh (mesh: only where mediapipe is installed).
    sticky: start at the stage that found the last face; in long face-less stretches the others run only on
        every MISSES-th frame (video frames).
    merge_first: the first two HOG stages run together, their faces merged (photos).
    mesh_check: dlib's points far from the mesh's (a tilted head) are replaced by the mesh's (photos).
    After `detect`, `last_stage` names the stage that found the faces (None: none did) and `tried` lists the
    stages run; `counts` tallies the winning stage per call (None: no face).
    """

    def __init__(self, max_side: int = 1024, min_upsample: int = 0, max_upsample: int = 2, cnn: bool = True,
                 mesh: bool = True, min_faces: int = 1, sticky: bool = False, merge_first: bool = False,
                 mesh_check: bool = False):
        from talkinghead.landmarks.mesh import mesh_available

        self.max_side, self.min_upsample, self.max_upsample = int(max_side), int(min_upsample), int(max_upsample)
        self.cnn, self.mesh, self.min_faces, self.sticky = bool(cnn), bool(mesh), max(1, int(min_faces)), sticky
        self.merge_first, self.mesh_check = bool(merge_first), bool(mesh_check)
        self._mesh_ok = self.mesh and mesh_available()
        self._detectors: dict[str, object] = {}
        self._start: str | None = None
        self._misses = 0  # face-less calls in a row
        self._said: set[str] = set()
        self.last_stage: str | None = None
        self.tried: list[str] = []
        self.counts: dict[str | None, int] = {}
        self.replaced = 0  # faces whose dlib points were replaced by the mesh's (mesh_check)

    def __getstate__(self):  # dlib and MediaPipe objects don't pickle; rebuilt in the worker process
        return {"max_side": self.max_side, "min_upsample": self.min_upsample, "max_upsample": self.max_upsample,
                "cnn": self.cnn, "mesh": self.mesh, "min_faces": self.min_faces, "sticky": self.sticky,
                "merge_first": self.merge_first, "mesh_check": self.mesh_check}

    def __setstate__(self, state):
        self.__init__(**state)

    def stages(self, shape) -> list[str]:
        """The stages run, in order, for an image of this shape (H, W, ...)."""
        side = max(shape[:2])
        if self.max_side:
            side = min(side, self.max_side)
        names = [f"hog{u}" for u in range(self.min_upsample, max(self.max_upsample, self.min_upsample) + 1)
                 if u == self.min_upsample or side * 2 ** u <= UPSAMPLED_SIDE]
        if self.merge_first and len(names) >= 2:
            names[:2] = [f"{names[0]}+{names[1][3:]}"]
        names += ["cnn"] * self.cnn + ["mesh"] * self._mesh_ok
        if self.sticky and self._start in names:
            names.remove(self._start)
            names.insert(0, self._start)
        if self.sticky and self._misses >= MISSES and self._misses % MISSES:
            names = names[:1]
        return names

    def reset(self) -> None:
        """Forget the stage that found the last face (a new video)."""
        self._start, self._misses = None, 0

    def _detector(self, name: str):
        if name not in self._detectors:
            if name.startswith("hog"):  # HOG itself is loaded once per thread (detect._dlib_models)
                hogs = [DlibDetector(upsample=int(u), max_side=self.max_side) for u in name[3:].split("+")]
                self._detectors[name] = hogs[0] if len(hogs) == 1 else _MergedHog(hogs)
            elif name == "cnn":
                self._detectors[name] = DlibCnnDetector(max_side=min(self.max_side or 512, 512))
            else:
                from talkinghead.landmarks.mesh import MeshDetector

                self._detectors[name] = MeshDetector()
        return self._detectors[name]

    def detect(self, image) -> list[Face]:
        """image (H, W, 3) uint8 RGB -> the faces of the first stage that finds `min_faces` of them (else the
        most any stage found, possibly none). UnsearchableImageError (detect.check_searchable) before any stage
        runs for an image too small or too elongated to search; each stage searches a large one shrunk."""
        image = np.asarray(image)
        check_searchable(image.shape)
        self.tried, best, best_stage = [], [], None
        for name in self.stages(image.shape):
            t0 = time.perf_counter()
            try:
                faces = self._detector(name).detect(image)
            except ImportError as e:  # a broken mediapipe install: the cascade goes on without the mesh
                log.warning("MediaPipe face mesh unavailable (%s); the face cascade runs without it", e)
                self._mesh_ok = False
                continue
            self.tried.append(name)
            if len(faces) > len(best):
                best, best_stage = faces, name
            if len(faces) >= self.min_faces:
                self._found(name, time.perf_counter() - t0)
                break
        if best and best_stage != "mesh" and self.mesh_check and self._mesh_ok:
            best = self._checked_by_mesh(image, best)
        self.last_stage = best_stage
        self.counts[best_stage] = self.counts.get(best_stage, 0) + 1
        if best_stage is not None:
            self._start = best_stage
        self._misses = 0 if best else self._misses + 1
        return best

    def _checked_by_mesh(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        """dlib's faces, each with the mesh's points instead where they differ by more than MESH_DISAGREE."""
        try:
            meshes = self._detector("mesh").detect(image)
        except ImportError:
            return faces
        out = []
        for f in faces:
            inside = [m for m in meshes if f.box[0] <= m.points[:, 0].mean() <= f.box[2]
                      and f.box[1] <= m.points[:, 1].mean() <= f.box[3]]
            m = min(inside, key=lambda m: np.linalg.norm(m.points.mean(0) - f.points.mean(0)), default=None)
            if m is not None:
                off = float(np.linalg.norm(f.points - m.points, axis=1).mean() / max(interocular(m.points), 1e-6))
                if off > MESH_DISAGREE:
                    log.debug("dlib's landmarks lie %.2f eye distances from the mesh's (a tilted head?): the mesh's "
                              "are used", off)
                    f = Face(box=m.box, points=m.points, score=f.score)
                    self.replaced += 1
            out.append(f)
        return out

    def _found(self, name: str, seconds: float) -> None:
        """Says (verbose, once per stage) which stage found a face, when it is not the first one."""
        if len(self.tried) > 1 and name not in self._said:
            self._said.add(name)
            log.debug("face found by %s (%.0f ms) after %s found none", STAGE_NAMES.get(name, name),
                      1000 * seconds, ", ".join(STAGE_NAMES.get(s, s) for s in self.tried[:-1]))

    def detect_boxes(self, image) -> list[tuple[np.ndarray, float]]:
        """(box (4,) float32, score) of each face found."""
        return [(f.box, f.score) for f in self.detect(image)]

    def predict(self, image, box, score: float = 0.0) -> Face:
        """68 landmarks inside a given box (dlib's predictor; used by tracking)."""
        if "predictor" not in self._detectors:
            self._detectors["predictor"] = DlibDetector(max_side=self.max_side)
        return self._detectors["predictor"].predict(image, box, score)

    def summary(self) -> str:
        """'dlib HOG 412, dlib HOG up-sampled x2 3, none 2': the winning stage per call so far."""
        return ", ".join(f"{STAGE_NAMES.get(k, 'none') if k else 'none'} {v}" for k, v in self.counts.items())


class _MergedHog:
    """HOG at several up-samplings: the faces of the first, plus those of the others that overlap none of them."""

    def __init__(self, hogs: list[DlibDetector]):
        self.hogs = hogs

    def detect(self, image) -> list[Face]:
        boxes = []
        for hog in self.hogs:
            boxes += [(b, s) for b, s in hog.detect_boxes(image) if all(box_iou(b, k) < 0.3 for k, _ in boxes)]
        return [self.hogs[0].predict(image, b, s) for b, s in boxes]


def photo_cascade(min_faces: int = 1, max_side: int = 1024) -> FaceCascade:
    """The cascade for source photos: every stage (the mesh where installed), HOG ×1 and ×2 together first,
    dlib's points checked against the mesh's."""
    return FaceCascade(max_side=max_side, min_faces=min_faces, merge_first=True, mesh_check=True)


def video_cascade(min_upsample: int = 0, max_side: int = 960) -> FaceCascade:
    """The cascade for video frames (driver, preprocess, evaluate): the HOG stages, starting at the one that
    found the previous face; the CNN's seconds per frame are too slow here."""
    return FaceCascade(max_side=max_side, min_upsample=min_upsample, cnn=False, mesh=False, sticky=True)

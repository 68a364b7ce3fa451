"""Landmarks through a video ("a driver that holds"): detect, track, re-detect, hold, smooth.

`VideoLandmarkTracker` runs the full detector on the first frame and whenever the tracked shape degrades;
otherwise it predicts the 68 points in a box carried over from the previous frame by the upper face (brows,
eyes, nose) and moved at the head's velocity, so fast pans are not lost and a misplaced jaw or mouth cannot
drag the box. Every `redetect_every` frames the detector checks that the tracked box has not drifted off the
face. A shape that left its box or is implausible — its lower or upper face too far from the last good shape
once aligned on the upper face (`shape_change`: a hand over the mouth, a predictor that slipped) — triggers a
re-detection. If the detector finds no face either, the last good shape is held, moved with the tracked upper
face (or the tracked box), for at most `max_hold` frames instead of dropping the face. A face the detector
finds is taken as it is: on a head turning to profile the tracked and the detected shapes can both be far
from the last good one, and holding would freeze the face. The predictor runs in two boxes (×1.1, ÷1.1) and
their shapes are averaged, which removes much of its frame-to-frame noise.

Smoothing: a One-Euro filter per point (cutoffs per face part: eyes and mouth move fast and get less
smoothing than the jaw; the speed that opens the cutoff is the point's speed in face sizes per second). The
streaming `update(frame)` is causal; `track(frames, zero_lag=True)` (a whole video known, as in `animate`)
averages the filter run forwards and backwards in time, whose lags cancel, and keeps the blinks that this
smoothing would flatten (landmarks/blinks.py).

Detector-agnostic: any object with `detect(image) -> list[Face]` and `predict(image, box, score) -> Face`
(`detect_boxes(image) -> [(box, score)]` is used for the drift check when present).
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np

from talkinghead.landmarks.blinks import keep_blinks
from talkinghead.landmarks.detect import Face, as_rgb_uint8, box_iou, interocular, pick_face
from talkinghead.landmarks.retarget import procrustes

PART_SLICES = {"jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48),
               "mouth": slice(48, 68)}
UPPER = np.r_[17:48]  # brows, nose, eyes: what a hand over the mouth leaves visible
LOWER = np.r_[0:17, 48:68]  # jaw and lips

# One-Euro cutoff multiplier per face part (larger = less smoothing): blinks and lips are fast and small, the
# jaw outline is the noisiest part of dlib's shape. (Measured by benchmarks/bench_tracking.py: 1–2 % less eye and
# mouth error than one cutoff for all, the same jitter.)
PART_CUTOFF = {"jaw": 1.0, "brows": 1.0, "nose": 1.0, "eyes": 1.5, "mouth": 1.5}
# (min_cutoff Hz, beta, d_cutoff Hz) at smoothing = 1, chosen on bench_tracking.py's three clips (pexels_woman and
# two val clips of talking/) for the two-box predictor ensemble: causal, the lowest jitter with ≤ 0.3 frames of lag
# on the fastest real frames (the previous 1 Hz / 4 / 1 Hz on single predictions: similar jitter at 0.3–0.6
# frames; beta 10 would cut the lag to 0.1–0.2 frames for +7 % jitter); zero-lag, smoother (its lag cancels) but
# no more (a lower cutoff flattens fast turns: the synthetic pan's error grows).
CAUSAL_FILTER = (0.5, 6.0, 3.0)
ZERO_LAG_FILTER = (0.3, 2.0, 2.0)


def _part_values(table: dict) -> np.ndarray:
    """{part name: value} -> (68, 1) per point."""
    out = np.ones((68, 1))
    for name, v in table.items():
        out[PART_SLICES[name]] = v
    return out


def landmark_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
    """A similarity-invariant reference frame of a face: centre (2,) and RMS radius of the 68 points."""
    c = points.mean(axis=0)
    s = float(np.sqrt(((points - c) ** 2).sum(axis=1).mean()))
    return c, max(s, 1e-3)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (rotation, scale, translation; no reflection) taking src (N, 2) onto dst:
    returns (A (2, 2), t (2,)) with dst ≈ src @ A.T + t (retarget.procrustes as a matrix and a shift)."""
    m = procrustes(src, dst)
    return m[:, :2], m[:, 2]


def shape_change(points: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(upper, lower): RMS distances, in inter-ocular units of `ref`, between `points` and `ref` aligned onto
    them by the similarity that best fits the upper face (brows, nose, eyes). A hand over the mouth moves the
    lower face (jaw, lips) of dlib's shape away from the upper face's frame; a slipped predictor moves both."""
    A, t = similarity_fit(ref[UPPER], points[UPPER])
    d = np.sqrt((((ref @ A.T + t) - points) ** 2).sum(axis=1)) / max(interocular(ref), 1e-3)
    return float(np.sqrt((d[UPPER] ** 2).mean())), float(np.sqrt((d[LOWER] ** 2).mean()))


class OneEuroFilter:
    """One-Euro filter (Casiez et al. 2012) over an array of values: low jitter when still, low lag when
    moving. min_cutoff / beta may be arrays broadcasting against the values (per-point cutoffs). `scale`
    divides the speed before it opens the cutoff (face size, so the filter is size-invariant); for (N, 2)
    values the speed is that of each point (x and y share one cutoff)."""

    def __init__(self, fps: float, min_cutoff=1.0, beta=0.5, d_cutoff: float = 1.0):
        self.fps, self.min_cutoff, self.beta, self.d_cutoff = float(fps), min_cutoff, beta, d_cutoff
        self.x = None
        self.dx = None

    @staticmethod
    def _alpha(cutoff, fps):
        return 1.0 / (1.0 + fps / (2 * math.pi * cutoff))

    def reset(self):
        self.x = self.dx = None

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.copy()
        a_d = self._alpha(self.d_cutoff, self.fps)
        self.dx = a_d * (x - self.x) * self.fps + (1 - a_d) * self.dx
        speed = np.abs(self.dx) if x.ndim < 2 else np.linalg.norm(self.dx, axis=-1, keepdims=True)
        cutoff = self.min_cutoff + self.beta * speed / max(scale, 1e-6)
        a = self._alpha(cutoff, self.fps)
        self.x = a * x + (1 - a) * self.x
        return self.x.copy()


def zero_lag_smooth(points: np.ndarray, make_filter) -> np.ndarray:
    """(T, 68, 2) points of one face track -> the mean of a causal filter run forwards and backwards in time
    (its lag forwards is a lead backwards: a ramp comes out unshifted). make_filter() -> a fresh filter."""
    fwd, bwd = make_filter(), make_filter()
    scales = [landmark_frame(p)[1] for p in points]
    a = np.stack([fwd(p, scale=s) for p, s in zip(points, scales)])
    b = np.stack([bwd(p, scale=s) for p, s in zip(points[::-1], scales[::-1])])[::-1]
    return ((a + b) / 2).astype(np.float32)


class VideoLandmarkTracker:
    """Landmarks for a frame sequence: detect, track, re-detect when the shape degrades, hold, smooth.

    redetect_every: frames between drift checks (the detector's box against the tracked one; the track
    restarts from the detection when they overlap less than `drift_iou`). min_iou: a tracked shape whose box
    overlaps the box it was predicted in by less is a failure. max_residual: a shape farther than this from
    the last good shape (`shape_change`, inter-ocular units) is implausible and re-detected. max_hold: frames
    the last good shape is held while the detector finds no face (0: never hold; default half a second).
    box_scales: the predictor runs in the box scaled by each and the shapes are averaged ((1.0,): once,
    faster). smoothing > 0 enables the One-Euro filter (larger = smoother, more lag; 0: raw
    points). Frames without a face give None. stats counts frames, detections, tracked frames, failures, holds and lost frames.
    """

    def __init__(self, detector, redetect_every: int = 10, smoothing: float = 1.0, fps: float = 25.0,
                 min_iou: float = 0.5, face_index: int | None = None,
                 max_residual: float = 0.1, max_hold: int | None = None, drift_iou: float = 0.6,
                 box_scales=(1.1, 1 / 1.1)):
        self.detector = detector
        self.redetect_every = max(1, int(redetect_every))
        self.smoothing = float(smoothing)
        self.fps = float(fps)
        self.min_iou = float(min_iou)
        self.face_index = face_index
        self.max_residual = float(max_residual)
        self.max_hold = int(round(0.5 * self.fps)) if max_hold is None else int(max_hold)
        self.drift_iou = float(drift_iou)
        self.box_scales = tuple(float(k) for k in box_scales)
        self.stats = {"frames": 0, "detections": 0, "tracked": 0, "lost": 0, "track_failures": 0, "held": 0}
        self._smooth = True  # causal smoothing of update()'s output (off for the offline path's raw pass)
        self._reset()

    # -- state -------------------------------------------------------------------------------------------
    def _reset(self):
        self._good: Face | None = None  # last plausible raw shape
        self._prev_pts: np.ndarray | None = None  # raw points of the previous frame (good or held)
        self._velocity = np.zeros(2)  # head centre motion per frame, pixels
        self._rel = None  # box relative to the landmark frame: (dx0, dy0, dx1, dy1) / scale
        self._since_detect = 0
        self._held = 0
        self._filter = self.make_filter() if self.smoothing > 0 and self._smooth else None

    def make_filter(self, zero_lag: bool = False) -> OneEuroFilter:
        """The One-Euro filter this tracker smooths with: causal (update()), or the one run forwards and
        backwards offline."""
        min_cutoff, beta, d_cutoff = ZERO_LAG_FILTER if zero_lag else CAUSAL_FILTER
        s = max(self.smoothing, 1e-6)
        return OneEuroFilter(self.fps, min_cutoff=_part_values(PART_CUTOFF) * min_cutoff / s, beta=beta / s,
                             d_cutoff=d_cutoff)

    # The box is carried by the upper face (brows, nose, eyes): a lower face that the predictor misplaces under
    # a hand or a turned jaw then cannot drag the box, and the box the shape from it, further each frame.
    def _calibrate(self, face: Face):
        c, s = landmark_frame(face.points[UPPER])
        self._rel = (face.box - np.array([c[0], c[1], c[0], c[1]], np.float32)) / s

    def _box_from_points(self, points: np.ndarray, shift=(0.0, 0.0)) -> np.ndarray:
        c, s = landmark_frame(points[UPPER])
        c = c + np.asarray(shift)
        return (np.array([c[0], c[1], c[0], c[1]], np.float32) + self._rel * s).astype(np.float32)

    # -- steps -------------------------------------------------------------------------------------------
    def _detect(self, frame) -> Face | None:
        self.stats["detections"] += 1
        faces = self.detector.detect(frame)
        if self._prev_pts is not None and faces and self.face_index is None:
            # keep following the same person: the face closest to the tracked one
            prev = self._box_from_points(self._prev_pts)
            best = max(faces, key=lambda f: box_iou(f.box, prev))
            if box_iou(best.box, prev) > 0.2:
                return best
        return pick_face(faces, frame.shape, self.face_index)

    def _plausible(self, points: np.ndarray) -> bool:
        """Close enough to the last good shape (`shape_change`, both parts within max_residual)."""
        return self._good is None or max(shape_change(points, self._good.points)) <= self.max_residual

    def _ensemble(self, frame, box: np.ndarray, score: float) -> Face:
        """The mean of the shapes predicted in `box` scaled by each of box_scales about its centre: a
        regression-tree predictor's error depends on its start box, and averaging over a few starts removes
        much of its frame-to-frame noise (benchmarks/bench_tracking.py measures it for the default two boxes,
        ×1.1 and ÷1.1; a third box at ×1 adds little)."""
        c, h = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
        shapes = [self.detector.predict(frame, np.r_[c - h * k, c + h * k].astype(np.float32), score).points
                  for k in self.box_scales]
        return Face(box=np.asarray(box, np.float32), points=np.mean(shapes, axis=0).astype(np.float32), score=score)

    def _predict(self, frame) -> tuple[Face, bool]:
        """(the shape predicted in the previous frame's box moved at the head's velocity, whether it holds:
        it stayed in its box and is plausible)."""
        box = self._box_from_points(self._prev_pts, self._velocity)
        cand = self._ensemble(frame, box, self._good.score if self._good is not None else 0.0)
        return cand, box_iou(self._box_from_points(cand.points), box) >= self.min_iou and self._plausible(cand.points)

    def _drifted(self, frame, face: Face) -> bool:
        """The detector's box (if it finds one) overlaps the tracked face's box by less than drift_iou."""
        self.stats["detections"] += 1
        if hasattr(self.detector, "detect_boxes"):
            boxes = [b for b, _ in self.detector.detect_boxes(frame)]
        else:
            boxes = [f.box for f in self.detector.detect(frame)]
        if not boxes:
            return False  # nothing to compare with (a turned head the detector misses): keep tracking
        tracked = self._box_from_points(face.points)
        return max(box_iou(b, tracked) for b in boxes) < self.drift_iou

    def _hold(self, cands: list[Face]) -> np.ndarray | None:
        """The last good shape moved with the upper face of the first candidate (the tracked shape) whose upper
        face is plausible, else with the first candidate's box, else unmoved; None when held too long."""
        if self._good is None or self._held >= self.max_hold:
            return None
        good = self._good.points
        upper = [c for c in cands if shape_change(c.points, good)[0] <= self.max_residual]
        if upper:
            A, t = similarity_fit(good[UPPER], upper[0].points[UPPER])
        elif cands:  # only a box is usable: move and scale the shape with it
            box, old = cands[0].box, self._box_from_points(good)
            k = (box[2] - box[0]) / max(old[2] - old[0], 1e-3)
            A, t = np.eye(2) * k, (box[:2] + box[2:]) / 2 - ((old[:2] + old[2:]) / 2) * k
        else:
            return self._prev_pts.copy()
        return (good @ A.T + t).astype(np.float32)

    def _step(self, frame: np.ndarray) -> Face | None:
        self.stats["frames"] += 1
        face = cand = None
        if self._prev_pts is not None:
            cand, holds = self._predict(frame)
            check = self._since_detect >= self.redetect_every - 1  # time for a drift check
            if holds and not (check and self._drifted(frame, cand)):
                face = cand
                self._since_detect = 0 if check else self._since_detect + 1
                self.stats["tracked"] += 1
            elif not holds:
                self.stats["track_failures"] += 1
        points = None
        if face is None:
            found = self._detect(frame)
            self._since_detect = 0
            # a detection restarts the track, plausible or not: on a face turning to profile the tracked shape
            # and the detection's can both be far from the last good one, and holding would then freeze the face
            if found is not None:
                face = found
                self._calibrate(face)
                if self.box_scales != (1.0,):  # the same predictor ensemble as tracking: no step at re-detections
                    face = Face(box=found.box, points=self._ensemble(frame, found.box, found.score).points,
                                score=found.score)
            else:
                points = self._hold([] if cand is None else [cand])
                if points is None:
                    self.stats["lost"] += 1
                    self._reset()
                    return None
                self._held += 1
                self.stats["held"] += 1
                face = Face(box=self._box_from_points(points), points=points, score=self._good.score)
        if points is None:  # a plausible shape: it becomes the reference
            if self._good is not None and box_iou(face.box, self._box_from_points(self._good.points)) < 0.2:
                self._velocity[:] = 0  # a jump (another face): no velocity, no smoothing across it
                if self._filter is not None:
                    self._filter.reset()
            self._good, self._held = face, 0
        if self._prev_pts is not None:
            self._velocity = landmark_frame(face.points[UPPER])[0] - landmark_frame(self._prev_pts[UPPER])[0]
        self._prev_pts = face.points
        if self._filter is not None:
            pts = self._filter(face.points, scale=landmark_frame(face.points)[1]).astype(np.float32)
            face = Face(box=face.box, points=pts, score=face.score)
        return face

    # -- API ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the tracked face (the next frame runs the detector)."""
        self._smooth = True
        self._reset()

    def update(self, frame: np.ndarray) -> Face | None:
        """The next frame of the sequence -> its Face or None (streaming use, e.g. a webcam); causal."""
        return self._step(as_rgb_uint8(frame))

    def track_iter(self, frames: Iterable[np.ndarray], smooth: bool = True) -> Iterator[Face | None]:
        """update() over a sequence, from a fresh state (the same faces as update()); smooth=False: the raw
        tracked points, for `smooth_offline`. A new sequence also resets the detector where it has a reset()
        (the cascade's memory of the stage that found the last face)."""
        self._smooth = smooth
        self._reset()
        if callable(getattr(self.detector, "reset", None)):
            self.detector.reset()
        for frame in frames:
            yield self._step(as_rgb_uint8(frame))

    def smooth_offline(self, faces: list[Face | None]) -> list[Face | None]:
        """Raw faces of a whole sequence (track_iter(smooth=False)) -> zero-lag smoothed (`smooth_faces` with
        this tracker's filter); unchanged when smoothing is off."""
        if self.smoothing <= 0:
            return list(faces)
        return smooth_faces(faces, lambda: self.make_filter(zero_lag=True))

    def track(self, frames: Iterable[np.ndarray], zero_lag: bool = False) -> list[Face | None]:
        """One Face (or None where no face was found) per frame. zero_lag: the whole sequence is known, so the
        points are smoothed forwards and backwards in time (`smooth_offline`) instead of causally."""
        if zero_lag:
            return self.smooth_offline(list(self.track_iter(frames, smooth=False)))
        return list(self.track_iter(frames))


def smooth_faces(faces: list[Face | None], make_filter) -> list[Face | None]:
    """Zero-lag smoothing of raw tracked faces, each run of consecutive faces on its own (a None or a jump of
    the face's box ends a run); the blinks that the smoothing would flatten are kept (`blinks.keep_blinks`)."""
    runs: list[list[int]] = []
    for i, f in enumerate(faces):
        if f is None:
            continue
        prev = faces[i - 1] if i > 0 else None
        if prev is None or box_iou(f.box, prev.box) < 0.2:
            runs.append([])
        runs[-1].append(i)
    out = list(faces)
    for run in runs:
        raw = np.stack([faces[i].points for i in run])
        pts = keep_blinks(raw, zero_lag_smooth(raw, make_filter))
        for k, i in enumerate(run):
            out[i] = Face(box=faces[i].box, points=pts[k], score=faces[i].score)
    return out

"""Driver landmarks over time (issue 11, "a driver that holds"): jitter, lag, accuracy, speed and lost faces
of per-frame detection, the previous tracker and the current one, on real clips and on two synthetic tests.

    .venv/bin/python benchmarks/bench_tracking.py [--clips A,B,C] [--frames N] [--json OUT.json]

Per clip (default: videos/pexels_woman.mp4 and two val clips of talking/: a fast, turned head and a small,
fast-moving one), the reference is the face-finding cascade of track_driver (dlib HOG, up-sampled where the
frame is small) + dlib's 68-point predictor run on every frame ("detect"); the trackers use the same detector.
- jitter: mean frame-to-frame motion of the points on near-static frames, in inter-ocular units (median
  outer-eye-corner distance of the reference): frames where the reference's head centre (nose and eye corners),
  smoothed by a Gaussian of σ = 2 frames, moves < 0.01 inter-ocular per frame for ±4 frames. "all": the 68
  points (speech moves the mouth and jaw); "rigid": nose and eye corners (noise only).
- lag (real): frames by which a method's head centre and yaw (nose tip against the eye corners) trail the
  reference on the fastest frames (reference speed in its top 10 % and > 0.02 inter-ocular/frame): the shift L
  (0.1-frame steps, linear interpolation) that minimises the squared difference there.
- pan: a synthetic fast pan with known ground truth: the first 96 frames moved sideways by
  x(t) = A·sin(2πt/24 frames), A = one inter-ocular (peak speed 0.26 inter-ocular/frame; edge pixels
  repeated); truth = the reference of the unmoved frame + x(t). lag = the shift of the head centre's x against
  the truth, NME = mean point error / inter-ocular.
- occlusion: a grey rectangle over the mouth (its reference box + 0.25 inter-ocular) on 5 consecutive frames,
  4 times per clip; NME against the unoccluded reference on those frames, and faces lost there.
- NME: mean point error against the reference on the clean clip; ms/frame: wall time of the tracking calls
  (decoding excluded), cpu ms: their process-CPU time (steadier on a shared machine); lost: frames without a
  face on the clean clip.
"old" is the tracker as it was before issue 11 (detection every 10 frames replacing the track, One-Euro with one
cutoff for every point), kept here for the comparison; "new" is talkinghead.landmarks.track streaming (causal,
as `update()` and `talkinghead live`), "new zero-lag" is the offline path of `animate` (forward-backward).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import Stopwatch  # noqa: E402  (and OpenBLAS on one thread)

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "data"
CLIPS = ["videos/pexels_woman.mp4",
         "talking/id00093/MegaPortrait-hack/junk_-2KGPYEFnsU_11.mp4",  # val: fast, head turned up to ~40°
         "talking/id00111/styletalk/samples_style_clips_video_happyenglish_clip2.mp4"]  # val: 256², fast
RIGID = np.r_[27:36, 36, 39, 42, 45]
MOUTH = np.r_[48:68]


# -- the tracker before issue 11, for the comparison ---------------------------------------------------------
class OldTracker:
    """VideoLandmarkTracker as it was (commit a6d3cf9): detect every 10 frames, else predict in the box of
    the previous points; One-Euro (min_cutoff 1 Hz, beta 4, per coordinate) on every point."""

    def __init__(self, detector, fps: float, redetect_every: int = 10):
        from talkinghead.landmarks.track import OneEuroFilter

        self.detector, self.every = detector, redetect_every
        self.filter = OneEuroFilter(fps, min_cutoff=1.0, beta=4.0)
        self.prev = self.rel = None
        self.since = 0

    def _box(self, pts):
        from talkinghead.landmarks.track import landmark_frame

        c, s = landmark_frame(pts)
        return (np.r_[c, c] + self.rel * s).astype(np.float32)

    def update(self, frame):
        from talkinghead.landmarks.detect import Face, box_iou, pick_face
        from talkinghead.landmarks.track import landmark_frame

        face = None
        if self.prev is not None and self.since < self.every - 1:
            box = self._box(self.prev.points)
            cand = self.detector.predict(frame, box, self.prev.score)
            if box_iou(self._box(cand.points), box) >= 0.5:
                face, self.since = cand, self.since + 1
        if face is None:
            faces = self.detector.detect(frame)
            face = None
            if self.prev is not None and faces:
                best = max(faces, key=lambda f: box_iou(f.box, self.prev.box))
                face = best if box_iou(best.box, self.prev.box) > 0.2 else None
            face = face or pick_face(faces, frame.shape)
            self.since = 0
            if face is None:
                self.prev = None
                self.filter.reset()
                return None
            if self.prev is not None and box_iou(face.box, self.prev.box) < 0.2:
                self.filter.reset()
            c, s = landmark_frame(face.points)
            self.rel = (face.box - np.r_[c, c]) / s
        self.prev = face
        # per coordinate, as it was: the flat (136,) vector
        pts = self.filter(face.points.reshape(-1), scale=landmark_frame(face.points)[1]).astype(np.float32)
        return Face(box=face.box, points=pts.reshape(68, 2), score=face.score)


# -- the methods ---------------------------------------------------------------------------------------------
def _points(faces) -> np.ndarray:
    """list of Face|None -> (T, 68, 2) with NaN where no face."""
    return np.stack([np.full((68, 2), np.nan, np.float32) if f is None else f.points for f in faces])


def run_method(name: str, frames, fps: float, detector, tracker_kwargs: dict | None = None):
    """(points (T, 68, 2) NaN where lost, ms per frame, the tracker's counts) of one method on a list of frames."""
    stats = {}
    if callable(getattr(detector, "reset", None)):
        detector.reset()  # every run starts from the same detector state (the cascade's last stage)
    with Stopwatch() as sw:
        faces = _run(name, frames, fps, detector, tracker_kwargs, stats)
    stats["cpu_ms_per_frame"] = 1e3 * sw.cpu / max(len(frames), 1)
    return _points(faces), 1e3 * sw.wall / max(len(frames), 1), stats


def _run(name, frames, fps, detector, tracker_kwargs, stats):
    from talkinghead.landmarks.detect import pick_face
    from talkinghead.landmarks.track import VideoLandmarkTracker

    if name == "detect":
        faces = [pick_face(detector.detect(f), f.shape) for f in frames]
    elif name == "old":
        tr = OldTracker(detector, fps)
        faces = [tr.update(f) for f in frames]
    elif name in ("new", "new zero-lag"):
        tr = VideoLandmarkTracker(detector, fps=fps, **(tracker_kwargs or {}))
        faces = tr.track(frames, zero_lag=name == "new zero-lag")
        stats.update(tr.stats)
    else:
        raise ValueError(name)
    return faces


# -- the measures --------------------------------------------------------------------------------------------
def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 of a NaN-free (T, ...) array, edges renormalised."""
    r = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    out = np.zeros_like(x, np.float64)
    w = np.zeros(len(x))
    for i, kk in enumerate(k):
        d = i - r
        lo, hi = max(0, -d), min(len(x), len(x) - d)
        out[lo:hi] += kk * x[lo + d:hi + d]
        w[lo:hi] += kk
    return out / w.reshape(-1, *([1] * (x.ndim - 1)))


def _fill(a: np.ndarray) -> np.ndarray:
    """NaN frames of a (T, ...) array filled by the nearest earlier (then later) frame."""
    a = a.copy()
    ok = ~np.isnan(a.reshape(len(a), -1)).any(1)
    if not ok.any():
        return np.zeros_like(a)
    last = a[np.argmax(ok)]
    for t in range(len(a)):
        if ok[t]:
            last = a[t]
        else:
            a[t] = last
    return a


def signals(pts: np.ndarray) -> np.ndarray:
    """(T, 68, 2) -> (T, 3): head centre x, y (nose and eye corners) and yaw (nose tip x against the outer eye
    corners' midpoint), all in pixels."""
    c = pts[:, RIGID].mean(1)
    yaw = pts[:, 30, 0] - (pts[:, 36, 0] + pts[:, 45, 0]) / 2
    return np.concatenate([c, yaw[:, None]], 1)


def best_shift(sig: np.ndarray, ref: np.ndarray, mask: np.ndarray, shifts=np.arange(-3, 6.01, 0.1)) -> float:
    """The L minimising Σ_{t in mask} |sig(t) − ref(t − L)|² (ref linearly interpolated): frames sig lags ref."""
    t = np.arange(len(ref))
    best, best_err = 0.0, np.inf
    for L in shifts:
        shifted = np.stack([np.interp(t - L, t, ref[:, k]) for k in range(ref.shape[1])], 1)
        err = np.nansum(((sig - shifted) ** 2)[mask])
        if err < best_err:
            best, best_err = float(L), err
    return best


def measures(pts: np.ndarray, ref: np.ndarray, io: float) -> dict:
    """jitter (all, rigid), real-video lag and NME of a method's points against the per-frame reference."""
    ok = ~np.isnan(ref[:, 0, 0])
    sig_ref = _fill(signals(ref))
    speed = np.r_[0, np.linalg.norm(np.diff(_gauss(sig_ref[:, :2], 2.0), axis=0), axis=1)] / io
    slow = (speed < 0.01) & ok
    static = np.array([slow[max(0, t - 4):t + 5].all() for t in range(len(ref))])
    pair = static[1:] & static[:-1] & ~np.isnan(pts[1:, 0, 0]) & ~np.isnan(pts[:-1, 0, 0])
    step = np.linalg.norm(np.diff(pts, axis=0), axis=2) / io  # (T-1, 68)
    fast = ok & (speed >= max(np.percentile(speed[ok], 90), 0.02))
    have = ~np.isnan(pts[:, 0, 0])
    nme = np.linalg.norm(pts - ref, axis=2).mean(1) / io
    return {"jitter_all": float(step[pair].mean()) if pair.any() else float("nan"),
            "jitter_rigid": float(step[pair][:, RIGID].mean()) if pair.any() else float("nan"),
            "static_frames": int(static.sum()),
            "lag_real": best_shift(_fill(signals(pts)), sig_ref, fast & have) if fast.any() else float("nan"),
            "fast_frames": int(fast.sum()),
            "nme": float(np.nanmean(nme[ok & have])), "lost": int((~have).sum())}


# -- the synthetic clips -------------------------------------------------------------------------------------
def pan_clip(frames, ref, io: float, n: int = 96, period: float = 24.0):
    """(moved frames, true points) of the first n frames panned by io·sin(2πt/period) pixels."""
    a = int(round(io))
    out, truth = [], []
    for t, (f, p) in enumerate(zip(frames[:n], ref[:n])):
        dx = int(round(io * np.sin(2 * np.pi * t / period)))
        padded = np.pad(f, ((0, 0), (a, a), (0, 0)), mode="edge")
        out.append(np.ascontiguousarray(padded[:, a - dx:a - dx + f.shape[1]]))
        truth.append(p + np.array([dx, 0], np.float32))
    return out, np.stack(truth)


def occluded_clip(frames, ref, io: float, events: int = 4, length: int = 5):
    """(frames with a grey rectangle over the mouth on `events` runs of `length` frames, occluded indices)."""
    out = list(frames)
    T = len(frames)
    idx = []
    for k in range(events):
        start = int(T * (0.1 + 0.8 * k / max(events - 1, 1)))
        start = min(start, T - length)
        for t in range(start, start + length):
            if np.isnan(ref[t, 0, 0]):
                continue
            lo = ref[t, MOUTH].min(0) - 0.25 * io
            hi = ref[t, MOUTH].max(0) + 0.25 * io
            x0, y0 = np.maximum(np.floor(lo).astype(int), 0)
            x1, y1 = np.ceil(hi).astype(int)
            f = frames[t].copy()
            f[y0:y1, x0:x1] = 128
            out[t] = f
            idx.append(t)
    return out, np.array(idx, int)


# -- the run -------------------------------------------------------------------------------------------------
METHODS = ["detect", "old", "new", "new zero-lag"]


def bench_clip(path: Path, max_frames: int | None, methods=METHODS, tracker_kwargs=None, log=print) -> dict:
    from talkinghead.landmarks.cascade import video_cascade
    from talkinghead.landmarks.detect import interocular
    from talkinghead.media.video import iter_frames, probe_video

    fps = probe_video(path).fps
    frames = list(iter_frames(path, max_frames=max_frames))
    det = video_cascade()  # as track_driver: HOG, up-sampled where the frame is small
    det.detect(frames[0])  # warm-up
    ref, ms_det, det_stats = run_method("detect", frames, fps, det)
    ok = ~np.isnan(ref[:, 0, 0])
    io = float(np.median([interocular(p) for p in ref[ok]]))
    pan_frames, pan_truth = pan_clip(frames, ref, io)
    pan_ok = ~np.isnan(pan_truth[:, 0, 0])
    occ_frames, occ_idx = occluded_clip(frames, ref, io)
    result = {"clip": str(path.relative_to(MEDIA)) if path.is_relative_to(MEDIA) else str(path),
              "frames": len(frames), "fps": fps, "interocular_px": round(io, 1), "methods": {}}
    log(f"{result['clip']}: {len(frames)} frames at {fps:g} fps, {frames[0].shape[1]}x{frames[0].shape[0]}, "
        f"inter-ocular {io:.0f} px, {len(occ_idx)} occluded frames")
    for name in methods:
        pts, ms, stats = ((ref, ms_det, dict(det_stats)) if name == "detect"
                          else run_method(name, frames, fps, det, tracker_kwargs))
        m = measures(pts, ref, io)
        m["ms_per_frame"] = ms
        m["cpu_ms_per_frame"] = stats.pop("cpu_ms_per_frame", m.get("cpu_ms_per_frame"))
        m["tracker_counts"] = stats
        pan, _, _ = run_method(name, pan_frames, fps, det, tracker_kwargs)
        x, xt = signals(pan)[:, :1], signals(pan_truth)[:, :1]
        m["pan_lag"] = best_shift(_fill(x), _fill(xt), pan_ok & ~np.isnan(pan[:, 0, 0]))
        m["pan_nme"] = float(np.nanmean(np.linalg.norm(pan - pan_truth, axis=2).mean(1)[pan_ok] / io))
        m["pan_lost"] = int(np.isnan(pan[:, 0, 0]).sum())
        if name == "detect":
            occ = ref.copy()
            occ[occ_idx] = run_method("detect", [occ_frames[t] for t in occ_idx], fps, det)[0]
        else:
            occ, _, occ_stats = run_method(name, occ_frames, fps, det, tracker_kwargs)
            m["occl_tracker_counts"] = occ_stats
        err = np.linalg.norm(occ[occ_idx] - ref[occ_idx], axis=2) / io  # (n, 68)
        m["occl_nme"] = float(np.nanmean(err.mean(1)))
        m["occl_mouth_nme"] = float(np.nanmean(err[:, MOUTH].mean(1)))
        m["occl_lost"] = int(np.isnan(occ[occ_idx, 0, 0]).sum())
        result["methods"][name] = m
    return result


COLUMNS = [("jitter_all", "jitter", 4), ("jitter_rigid", "jit.rigid", 4), ("lag_real", "lag", 1),
           ("pan_lag", "pan lag", 1), ("pan_nme", "pan NME", 3), ("nme", "NME", 3), ("ms_per_frame", "ms/frame", 1),
           ("cpu_ms_per_frame", "cpu ms", 1),
           ("lost", "lost", 0), ("occl_nme", "occl NME", 3), ("occl_mouth_nme", "occl mouth", 3),
           ("occl_lost", "occl lost", 0)]


def table(result: dict) -> str:
    head = f"{'method':14s}" + "".join(f"{h:>11s}" for _, h, _ in COLUMNS)
    rows = [head]
    for name, m in result["methods"].items():
        rows.append(f"{name:14s}" + "".join(f"{m[k]:11.{d}f}" if d else f"{m[k]:11d}" for k, _, d in COLUMNS))
    return "\n".join(rows)


def markdown(results: list[dict]) -> str:
    """One Markdown table of every clip and method (the figures of issue 11's closing note)."""
    cols = [("jitter_all", "jitter", 4), ("jitter_rigid", "jitter (nose, eye corners)", 4), ("lag_real", "lag", 1),
            ("pan_lag", "pan lag", 1), ("pan_nme", "pan NME", 3), ("nme", "NME vs detect", 3),
            ("cpu_ms_per_frame", "CPU ms/frame", 1), ("lost", "lost", 0), ("occl_nme", "occlusion NME", 3),
            ("occl_lost", "occlusion lost", 0)]
    rows = ["| clip | method | " + " | ".join(h for _, h, _ in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for r in results:
        for name, m in r["methods"].items():
            vals = [f"{m[k]:.{d}f}" if d else str(m[k]) for k, _, d in cols]
            rows.append(f"| {Path(r['clip']).name} | {name} | " + " | ".join(vals) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default=",".join(CLIPS), help="comma-separated paths (relative to ../shared/data)")
    ap.add_argument("--frames", type=int, default=None, help="at most this many frames per clip")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    results = []
    for clip in a.clips.split(","):
        path = Path(clip) if Path(clip).is_absolute() else MEDIA / clip
        if not path.is_file():
            print(f"skipped (missing): {path}")
            continue
        r = bench_clip(path, a.frames)
        print(table(r) + "\n", flush=True)
        results.append(r)
    print("jitter: inter-ocular per frame on near-static frames; lag: frames behind per-frame detection (real: the "
          "fastest frames; pan: synthetic, known truth); NME: inter-ocular; occl: 5-frame grey box over the mouth")
    print("\n" + markdown(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Data-side speed on this machine: landmark detection per frame vs tracking mode, rasterization, crop,
preprocessing throughput, and episode loading (episodes/s).

    .venv/bin/python benchmarks/bench_data.py [--video PATH] [--frames N] [--data DIR]

Uses ../shared/data (real media). `--data` points at a preprocessed folder for the episode benchmark (default:
a small one made in a temporary folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import header, measure  # noqa: E402  (before torch: sets the OpenMP wait policy)

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "data"


def _time(fn, n=1):
    """(median seconds of n calls, the last result), no warm-up: first calls count as a user sees them."""
    t = measure(fn, repeats=n, warmup=0)
    return t.seconds("wall", "median"), t.out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(MEDIA / "videos" / "capman_1.mp4"))
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--data", default=None, help="preprocessed folder for the episode benchmark")
    ap.add_argument("--shots", type=int, default=8)
    args = ap.parse_args()

    import torch

    from talkinghead.data.dataset import EpisodeDataset
    from talkinghead.data.preprocess import preprocess
    from talkinghead.landmarks.align import crop_from_landmarks
    from talkinghead.landmarks.detect import DlibDetector, VideoLandmarkTracker, interocular, pick_face
    from talkinghead.landmarks.rasterize import landmark_image_tensor, rasterize
    from talkinghead.video import iter_frames, probe_video

    torch.set_num_threads(1)
    print(header(1))
    info = probe_video(args.video)
    t_dec, frames = _time(lambda: list(iter_frames(args.video, max_frames=args.frames)))
    n = len(frames)
    print(f"video {Path(args.video).name}: {info.width}x{info.height}, {n} frames decoded at {n / t_dec:.0f} frames/s")

    det = DlibDetector()
    pick_face(det.detect(frames[0]), frames[0].shape)  # warm-up
    t_det, per_frame = _time(lambda: [pick_face(det.detect(f), f.shape) for f in frames])
    rows = [("detector every frame", t_det, None)]
    for every in (5, 10, 25):
        tr = VideoLandmarkTracker(det, redetect_every=every, smoothing=0)
        t_tr, tracked = _time(lambda: tr.track(frames))
        err = np.mean([np.linalg.norm(a.points - b.points, axis=1).mean() / interocular(a.points)
                       for a, b in zip(per_frame, tracked) if a is not None and b is not None])
        rows.append((f"tracking, detect every {every}", t_tr, err))
    tr = VideoLandmarkTracker(det, redetect_every=10, smoothing=1.0)
    t_sm, smooth = _time(lambda: tr.track(frames))
    rows.append(("tracking every 10 + One-Euro", t_sm, None))
    print(f"{'landmarks':34s} {'ms/frame':>9s} {'frames/s':>9s} {'speed-up':>9s} {'NME vs det':>10s}")
    for name, t, err in rows:
        print(f"{name:34s} {t / n * 1000:9.2f} {n / t:9.1f} {t_det / t:8.1f}x "
              f"{'' if err is None else f'{err:10.4f}'}")

    def jitter(seq):
        seq = [f for f in seq if f is not None]
        return np.mean([np.linalg.norm(seq[i + 1].points - seq[i].points, axis=1).mean() for i in range(len(seq) - 1)])

    print(f"frame-to-frame point motion (px): detector {jitter(per_frame):.3f}, tracked {jitter(tracked):.3f}, "
          f"smoothed {jitter(smooth):.3f}")

    face = per_frame[0]
    for s in (64, 128, 256):
        ct = crop_from_landmarks(face.points, s)
        pts = ct.points_to_crop(face.points)
        t_r, _ = _time(lambda: rasterize(pts, s), 200)
        t_t, _ = _time(lambda: landmark_image_tensor(pts, s), 100)
        t_c, crop = _time(lambda: ct.crop(frames[0]), 100)
        t_p, _ = _time(lambda: ct.paste_back(frames[0], crop), 50)
        print(f"{s:3d}²: rasterize {t_r * 1000:.2f} ms, landmark tensor {t_t * 1000:.2f} ms, crop {t_c * 1000:.2f} ms, "
              f"paste-back {t_p * 1000:.2f} ms")

    from talkinghead.data import preprocess as _pp

    _pp._detector(_pp.PreprocessOptions())  # load the shape predictor outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        (src / Path(args.video).name).symlink_to(args.video)
        for every in (1, 3):
            out = Path(tmp) / f"out{every}"
            s = preprocess(src, out, resolution=256, every=every, frames_per_video=args.frames, progress=False)
            print(f"preprocess 256², every {every}: {s.frames} frames in {s.seconds:.2f} s = "
                  f"{s.frames / s.seconds:.1f} frames/s (one process; decode + track + crop + JPEG)")
        data = args.data or str(Path(tmp) / "out1")
        for size in (128, 256):
            ds = EpisodeDataset(data, shots=args.shots, split="train", image_size=size, episodes_per_video=10**6)
            ds[0]
            k = 20
            t_e, _ = _time(lambda: [ds[i] for i in range(1, k + 1)])
            print(f"episodes (K={args.shots}, {size}², one process): {k / t_e:.1f} episodes/s, "
                  f"{k * (args.shots + 1) / t_e:.0f} frame+landmark pairs/s")
        shard = Path(data) / ds.entries[0]["path"]
        t_v, _ = _time(lambda: _pp.verify_shard(shard), 20)
        print(f"verify_shard ({len(ds.shard(0))} frames; every rerun and EpisodeDataset do it per shard): "
              f"{t_v * 1000:.2f} ms per shard = {t_v * 150_000:.0f} s for VoxCeleb2's ~150k clips")


if __name__ == "__main__":
    main()

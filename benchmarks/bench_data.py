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

    torch.set_num_threads(1)
    print(header(1))
    frames, per_frame = bench_landmarks(args.video, args.frames)
    bench_crops(per_frame[0], frames[0])
    with tempfile.TemporaryDirectory() as tmp:
        bench_preprocess(args.video, args.frames, Path(tmp))
        data = args.data or str(Path(tmp) / "out1")
        ds = bench_episodes(data, args.shots)
        bench_verify_shard(Path(data) / ds.entries[0]["path"], len(ds.shard(0)))


def bench_landmarks(video: str, max_frames: int):
    """Decoding, then landmarks per frame vs tracking mode (speed, NME against the detector, jitter); returns
    (the decoded frames, the detector's face on each)."""
    from talkinghead.landmarks.detect import DlibDetector, interocular, pick_face
    from talkinghead.landmarks.track import VideoLandmarkTracker
    from talkinghead.media.video import iter_frames, probe_video

    info = probe_video(video)
    t_dec, frames = _time(lambda: list(iter_frames(video, max_frames=max_frames)))
    n = len(frames)
    print(f"video {Path(video).name}: {info.width}x{info.height}, {n} frames decoded at {n / t_dec:.0f} frames/s")

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
    print(f"frame-to-frame point motion (px): detector {_jitter(per_frame):.3f}, tracked {_jitter(tracked):.3f}, "
          f"smoothed {_jitter(smooth):.3f}")
    return frames, per_frame


def _jitter(seq) -> float:
    """Mean frame-to-frame motion of the points (pixels) over the frames with a face."""
    seq = [f for f in seq if f is not None]
    return np.mean([np.linalg.norm(seq[i + 1].points - seq[i].points, axis=1).mean() for i in range(len(seq) - 1)])


def bench_crops(face, frame) -> None:
    """Rasterization, landmark tensor, crop and paste-back at three sizes."""
    from talkinghead.landmarks.align import crop_from_landmarks
    from talkinghead.landmarks.rasterize import landmark_image_tensor, rasterize

    for s in (64, 128, 256):
        ct = crop_from_landmarks(face.points, s)
        pts = ct.points_to_crop(face.points)
        t_r, _ = _time(lambda: rasterize(pts, s), 200)
        t_t, _ = _time(lambda: landmark_image_tensor(pts, s), 100)
        t_c, crop = _time(lambda: ct.crop(frame), 100)
        t_p, _ = _time(lambda: ct.paste_back(frame, crop), 50)
        print(f"{s:3d}²: rasterize {t_r * 1000:.2f} ms, landmark tensor {t_t * 1000:.2f} ms, crop {t_c * 1000:.2f} ms, "
              f"paste-back {t_p * 1000:.2f} ms")


def bench_preprocess(video: str, max_frames: int, tmp: Path) -> None:
    """`preprocess` throughput (one process) on the video, every frame and every 3rd, into tmp/out1, tmp/out3."""
    from talkinghead.data import preprocess as _pp

    _pp._detector(_pp.PreprocessOptions())  # load the shape predictor outside the timings
    src = tmp / "in"
    src.mkdir()
    (src / Path(video).name).symlink_to(video)
    for every in (1, 3):
        s = _pp.preprocess(src, tmp / f"out{every}", resolution=256, every=every, frames_per_video=max_frames,
                           progress=False)
        print(f"preprocess 256², every {every}: {s.frames} frames in {s.seconds:.2f} s = "
              f"{s.frames / s.seconds:.1f} frames/s (one process; decode + track + crop + JPEG)")


def bench_episodes(data: str, shots: int):
    """Episode loading at 128² and 256² (one process); returns the last dataset."""
    from talkinghead.data.dataset import EpisodeDataset

    for size in (128, 256):
        ds = EpisodeDataset(data, shots=shots, split="train", image_size=size, episodes_per_video=10**6)
        ds[0]
        k = 20
        t_e, _ = _time(lambda: [ds[i] for i in range(1, k + 1)])
        print(f"episodes (K={shots}, {size}², one process): {k / t_e:.1f} episodes/s, "
              f"{k * (shots + 1) / t_e:.0f} frame+landmark pairs/s")
    return ds


def bench_verify_shard(shard: Path, frames: int) -> None:
    """verify_shard on one shard, and what that costs at VoxCeleb2's scale."""
    from talkinghead.data.shards import verify_shard

    t_v, _ = _time(lambda: verify_shard(shard), 20)
    print(f"verify_shard ({frames} frames; every rerun and EpisodeDataset do it per shard): "
          f"{t_v * 1000:.2f} ms per shard = {t_v * 150_000:.0f} s for VoxCeleb2's ~150k clips")


if __name__ == "__main__":
    main()

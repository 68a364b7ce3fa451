"""The invisible mark (talkinghead.media.watermark): does it survive sharing, does it stay out of real media, what
does it cost?

- detection rate: the frames of every real video in DATA/videos and of the val clips of DATA/talking are
  marked (a marked real video stands in for an output: the mark does not care what the pixels show), then
  shared: H.264 at CRF 28 as is, scaled to half size, cropped by 10 % (7 % left, 3 % right, 4 % top, 6 %
  bottom), all three at once, and scaled to 0.8× (a size the detector finds by estimating it); each copy is
  judged over its frames (as `talkinghead verify` does) and every 6th frame alone (as for a still image). The
  same copies without the mark are the control.
- false-positive rate: `talkinghead verify`'s judgement (detect_file, up to --fp-frames frames per video) of
  EVERY real video and image in DATA, unmarked, plus the highest score seen.
- cost: PSNR of marked vs unmarked frames; CPU ms per frame of embed and detect at 256², 512² and 1080p.

    python benchmarks/bench_watermark.py [--data ../shared/data] [--frames 18] [--fp-frames 100] [--json F]

Frames per video: --frames frames in 3 runs of consecutive frames (at 1/6, 1/2 and 5/6 of the video), encoded
as one clip, so the encoder sees real motion between neighbours.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from timing import REPO

sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from talkinghead.media import video  # noqa: E402

from talkinghead.media import mark_files, watermark
from talkinghead.errors import TalkingHeadError  # noqa: E402

CONDITIONS = {  # name -> (scale, crop)
    "crf28": (1.0, False),
    "half+crf28": (0.5, False),
    "crop10+crf28": (1.0, True),
    "half+crop10+crf28": (0.5, True),
    "0.8x+crf28": (0.8, False),  # a size none of watermark.SCALES is: found by the scale estimate
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def sample_frames(path: Path, n: int) -> tuple[list[np.ndarray], float]:
    info = video.probe_video(path)
    total = max(1, info.num_frames)
    run = max(1, n // 3)
    idx = set()
    for c in (1 / 6, 1 / 2, 5 / 6):
        start = min(max(0, int(c * total) - run // 2), max(0, total - run))
        idx.update(range(start, start + run))
    frames = [f for _, f in video.iter_indexed_frames(path, indices=sorted(idx))]
    return frames, info.fps


def detection(data: Path, n_frames: int, max_videos: int | None) -> dict:
    paths = sorted((data / "videos").glob("*.mp4"))
    with open(data / "talking" / "clips.csv") as f:
        paths += [data / "talking" / r["path"] for r in csv.DictReader(f) if r["split"] == "val"]
    paths = paths if max_videos is None else paths[:max_videos]
    rows = []
    for i, p in enumerate(paths):
        t0 = time.time()
        try:
            frames, fps = sample_frames(p, n_frames)
        except TalkingHeadError as e:
            print(f"  skip {p.name}: {e}")
            continue
        marked = [watermark.embed(f) for f in frames]
        row = {"video": str(p.relative_to(data)), "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
               "frames": len(frames), "psnr": float(np.mean([psnr(a, b) for a, b in zip(frames, marked)]))}
        for name, (scale, crop) in CONDITIONS.items():
            copy, control = watermark.shared_copy(marked, scale, crop, fps=fps), watermark.shared_copy(frames, scale, crop, fps=fps)
            row[name] = {"score": watermark.detect_frames(copy).score,
                         "control": watermark.detect_frames(control).score,
                         "frame_scores": [watermark.detect(f).score for f in copy[::6]],
                         "control_frame_scores": [watermark.detect(f).score for f in control[::6]]}
        rows.append(row)
        print(f"  [{i + 1}/{len(paths)}] {row['video']} {row['size']} PSNR {row['psnr']:.2f} dB | "
              + " | ".join(f"{k} {row[k]['score']:.1f} (control {row[k]['control']:.1f})" for k in CONDITIONS)
              + f" [{time.time() - t0:.1f} s]", flush=True)
    return {"videos": rows}


def false_positives(data: Path, max_frames: int, max_files: int | None) -> dict:
    files = sorted(p for p in data.rglob("*") if p.is_file() and (video.is_video_path(p) or video.is_image_path(p)))
    files = files if max_files is None else files[:max_files]
    scores, errors = {}, {}
    t0 = time.time()
    for i, p in enumerate(files):
        try:
            scores[str(p.relative_to(data))] = mark_files.detect_file(p, max_frames=max_frames).score
        except TalkingHeadError as e:
            errors[str(p.relative_to(data))] = str(e)
        if (i + 1) % 20 == 0:
            print(f"  {i + 1}/{len(files)} files, {time.time() - t0:.0f} s", flush=True)
    return {"scores": scores, "errors": errors}


def single_frames(data: Path, per_video: int) -> list[float]:
    """Scores of `per_video` frames spread over every real video, each judged alone (as a still image would be):
    the tail of the null distribution, where the threshold must stay clear."""
    scores = []
    t0 = time.time()
    paths = sorted(p for p in data.rglob("*") if p.is_file() and video.is_video_path(p)) if per_video else []
    for i, p in enumerate(paths):
        try:
            n = max(1, video.probe_video(p).num_frames)
            idx = np.unique(np.linspace(0, n - 1, per_video).round().astype(int))
            scores += [watermark.detect(f).score for _, f in video.iter_indexed_frames(p, indices=idx)]
        except TalkingHeadError as e:
            print(f"  skip {p.name}: {e}")
        if (i + 1) % 40 == 0:
            print(f"  {i + 1}/{len(paths)} videos, {len(scores)} frames, {time.time() - t0:.0f} s", flush=True)
    return scores


def cost(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for name, (h, w) in {"256²": (256, 256), "512²": (512, 512), "1080p": (1080, 1920)}.items():
        # a smooth picture with texture, not white noise (embed's cost does not depend on it, detect's barely)
        f = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8)
        f = np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC))
        watermark.embed(f)
        watermark.detect(f)
        t = time.process_time()
        for _ in range(repeats * 20):
            watermark.embed(f)
        embed_ms = (time.process_time() - t) / (repeats * 20) * 1e3
        t = time.process_time()
        for _ in range(repeats):
            watermark.detect(f)
        detect_ms = (time.process_time() - t) / repeats * 1e3
        out[name] = {"embed_ms": embed_ms, "detect_ms": detect_ms}
        print(f"  {name:6} embed {embed_ms:6.2f} ms  detect {detect_ms:7.1f} ms (CPU time per frame, one thread)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--frames", type=int, default=18, help="frames per video for the detection rate")
    ap.add_argument("--max-videos", type=int, default=None, help="only the first N videos for the detection rate")
    ap.add_argument("--fp-frames", type=int, default=100, help="frames per video for the false-positive rate "
                    "(talkinghead verify's default)")
    ap.add_argument("--fp-max-files", type=int, default=None, help="only the first N files for the false positives")
    ap.add_argument("--null-frames", type=int, default=15, help="frames per real video judged one by one, "
                    "unmarked (0: none)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    data = Path(a.data)
    if not (data / "videos").is_dir():
        print(f"bench_watermark: no real media at {data}; nothing to measure")
        return 0
    t_start = time.time()
    th = watermark.THRESHOLD
    print(f"threshold {th:g}; tile {watermark.TILE}, amplitude {watermark.AMPLITUDE} grey levels RMS")
    print("\n== cost")
    result = {"threshold": th, "cost": cost(a.repeats)}
    print(f"\n== detection: {a.frames} frames per video, marked, then shared")
    det = detection(data, a.frames, a.max_videos)
    print(f"\n== false positives: every real video and image in {data}, unmarked")
    fp = false_positives(data, a.fp_frames, a.fp_max_files)
    print(f"\n== false positives: {a.null_frames} frames of every real video, each judged alone, unmarked")
    null = single_frames(data, a.null_frames)
    result.update(det, false_positives=fp, single_frame_scores=null)

    rows = det["videos"]
    print(f"\n== summary ({time.time() - t_start:.0f} s)")
    summary = {}
    if rows:
        print(f"PSNR of the mark: mean {np.mean([r['psnr'] for r in rows]):.2f} dB, "
              f"min {np.min([r['psnr'] for r in rows]):.2f} dB over {len(rows)} videos")
        print(f"{'condition':20} {'videos detected':>16} {'frames detected':>16} {'control videos >th':>19} "
              f"{'marked min/median':>18} {'control max':>12}")
    for k in CONDITIONS if rows else ():
        s = [r[k]["score"] for r in rows]
        c = [r[k]["control"] for r in rows]
        fs = [x for r in rows for x in r[k]["frame_scores"]]
        cs = [x for r in rows for x in r[k]["control_frame_scores"]]
        summary[k] = {"video_rate": float(np.mean([x > th for x in s])),
                      "frame_rate": float(np.mean([x > th for x in fs])),
                      "control_video_fp": float(np.mean([x > th for x in c])),
                      "control_frame_fp": float(np.mean([x > th for x in cs])),
                      "marked_min": float(min(s)), "marked_median": float(np.median(s)),
                      "control_max": float(max(c + cs))}
        m = summary[k]
        print(f"{k:20} {sum(x > th for x in s):>7}/{len(s):<3} {m['video_rate']:5.0%} "
              f"{sum(x > th for x in fs):>6}/{len(fs):<4} {m['frame_rate']:5.0%} "
              f"{sum(x > th for x in c):>12}/{len(c):<3}  {m['marked_min']:7.1f}/{m['marked_median']:<6.1f}"
              f"  {m['control_max']:10.1f}")
    small = [r["video"] for r in rows if r["half+crf28"]["score"] <= th]
    if small:
        print("not detected at half size + CRF 28: " + ", ".join(f"{v} ({r['size']})" for r in rows
                                                                  for v in [r["video"]] if v in small))
    sc = fp["scores"]
    vids = {k: v for k, v in sc.items() if video.is_video_path(k)}
    imgs = {k: v for k, v in sc.items() if not video.is_video_path(k)}
    for name, group in (("videos", vids), ("images", imgs)):
        if group:
            worst = max(group, key=group.get)
            n_fp = sum(v > th for v in group.values())
            print(f"false positives, {name}: {n_fp}/{len(group)} ({n_fp / len(group):.1%}); highest score "
                  f"{group[worst]:.2f} ({worst}); median {np.median(list(group.values())):.2f}")
    if null:
        n_fp = sum(v > th for v in null)
        print(f"false positives, single frames: {n_fp}/{len(null)} ({n_fp / len(null):.2%}); highest score "
              f"{max(null):.2f}; 99.9th percentile {np.quantile(null, 0.999):.2f}; above 6: {sum(v > 6 for v in null)}")
    if fp["errors"]:
        print(f"unreadable: {len(fp['errors'])} ({', '.join(fp['errors'])})")
    result["summary"] = summary
    result["seconds"] = round(time.time() - t_start, 1)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

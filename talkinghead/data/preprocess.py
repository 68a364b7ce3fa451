"""`talkinghead preprocess`: videos -> per-video shards of aligned face crops + landmarks (the paper's training
data, §4: frames x_i(t) and landmarks of each video i).

For each video (or frame range of one, see data.sources split files): sample frames (every n-th, optionally
capped evenly to N), find the 68 landmarks in tracking mode (detector now and then, shape predictor in between),
choose one stable square crop per segment (a clip's head moves little within seconds), and write

    OUT/videos/<video_id>/frames/<frame index>.jpg   (S×S RGB, JPEG q95 or PNG)
    OUT/videos/<video_id>/landmarks.npy              (F, 68, 2) float32 in crop pixels
    OUT/videos/<video_id>/boxes.npy                  (F, 3) float32 crop box cx, cy, side in source pixels
    OUT/videos/<video_id>/meta.json                  source, identity, group, split, fps, frame indices, ...

Each shard is written into a temporary folder and renamed into place, so a finished shard is complete.
OUT/manifest.jsonl gets one line per finished shard as it finishes (incremental; VoxCeleb-scale runs never hold
the list in memory), OUT/skipped.jsonl one line per video that was skipped (unreadable, no face) and
OUT/manifest.json is the sorted list of finished shards, rewritten at the end of each run. A rerun skips the
finished and the skipped videos (`--retry-failed` retries the latter). Parallel workers use spawn-safe
multiprocessing. One run at a time per OUT folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.data.sources import VideoRecord, apply_split, find_videos
from talkinghead.errors import TalkingHeadError, VideoError

log = logging.getLogger("talkinghead.preprocess")
FORMAT_VERSION = 1


@dataclass
class PreprocessOptions:
    resolution: int = 256  # S, side of the crops
    every: int = 3  # sample every n-th frame ...
    frames_per_video: int = 0  # ... then at most this many, evenly spaced (0 = no cap)
    redetect_every: int = 10  # tracking: full detection every n sampled frames
    segment_seconds: float = 10.0  # one stable crop per this much video (0 = one crop per clip)
    image_format: str = "jpg"  # "jpg" (q95) | "png"
    quality: int = 95
    min_frames: int = 2  # fewer frames with a face than this -> the video is skipped (K+1 needs several)
    margin: float = 0.45  # crop margin around the landmark extent (see landmarks.align.landmark_box)
    upsample: int = 0  # dlib detector up-sampling (1 finds faces down to ~40 px, 4× slower)


@dataclass
class Summary:
    out: str
    videos: int = 0  # records considered
    processed: int = 0  # shards written in this run
    already_done: int = 0  # finished earlier (resumed)
    frames: int = 0  # frames written in this run
    skipped: list = field(default_factory=list)  # [{"video_id", "path", "reason"}] in this run
    previously_skipped: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [f"preprocess: {self.videos} videos: {self.processed} processed ({self.frames} frames, "
                 f"{fps:.1f} frames/s), {self.already_done} already done, {len(self.skipped)} skipped"
                 + (f", {self.previously_skipped} skipped earlier" if self.previously_skipped else "")
                 + f"; {self.seconds:.1f} s -> {self.out}"]
        lines += [f"  skipped {s['video_id']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


# -- one video (runs in a worker) -------------------------------------------------------------------------
_DETECTOR = None


def _detector(opts: PreprocessOptions):
    global _DETECTOR
    if _DETECTOR is None:
        from talkinghead.landmarks.detect import DlibDetector

        _DETECTOR = DlibDetector(upsample=opts.upsample)
    return _DETECTOR


def sample_indices(start: int, stop: int, every: int, frames_per_video: int) -> list[int]:
    """Frame indices in [start, stop): every n-th, then at most frames_per_video of them, evenly spaced."""
    idx = list(range(start, stop, max(1, every)))
    if frames_per_video and len(idx) > frames_per_video:
        pick = np.linspace(0, len(idx) - 1, frames_per_video).round().astype(int)
        idx = [idx[i] for i in pick]
    return idx


def process_video(rec: VideoRecord, out_dir: Path, opts: PreprocessOptions) -> dict:
    """Writes one shard; returns {"ok": True, "entry": manifest entry} or {"ok": False, "reason": ...}."""
    from talkinghead.landmarks.align import segment_crops
    from talkinghead.landmarks.detect import VideoLandmarkTracker
    from talkinghead.video import iter_indexed_frames, probe_video, write_image

    t0 = time.perf_counter()
    try:
        info = probe_video(rec.path)
        stop = info.num_frames if rec.frame_stop is None else min(rec.frame_stop, info.num_frames)
        if rec.frame_stop is None and not info.num_frames:
            stop = 10**9  # unknown length: decode to the end
        indices = sample_indices(rec.frame_start, stop, opts.every, opts.frames_per_video)
        if not indices:
            return {"ok": False, "reason": f"no frames in range [{rec.frame_start}, {stop})"}
        # pass 1: landmarks on the sampled frames (tracking mode, no smoothing: exact per-frame targets)
        tracker = VideoLandmarkTracker(_detector(opts), redetect_every=opts.redetect_every, smoothing=0.0,
                                       fps=info.fps / opts.every)
        found_idx, found_pts = [], []
        n_sampled = 0
        for i, frame in iter_indexed_frames(rec.path, indices=indices):
            n_sampled += 1
            face = tracker.update(frame)
            if face is not None:
                found_idx.append(i)
                found_pts.append(face.points)
        if n_sampled == 0:
            return {"ok": False, "reason": "no frames could be decoded"}
        expected = sum(1 for i in indices if i < info.num_frames) if info.num_frames else n_sampled
        if expected - n_sampled > max(2, 0.05 * expected):  # the stream ends long before the header says
            return {"ok": False, "reason": f"truncated or corrupt video: decoded {n_sampled} of {expected} "
                                           f"sampled frames ({info.num_frames} frames in the header)"}
        if len(found_idx) < opts.min_frames:
            return {"ok": False, "reason": f"no face: found in {len(found_idx)} of {n_sampled} sampled frames"}
        pts = np.stack(found_pts)  # (F, 68, 2) source pixels
        seg_len = 0
        if opts.segment_seconds > 0:
            seg_len = max(1, int(round(opts.segment_seconds * info.fps / opts.every)))
        crops = segment_crops(pts, opts.resolution, seg_len or len(pts), margin=opts.margin,
                              image_shape=(info.height, info.width))
        # pass 2: crop and write into a temporary shard folder
        videos = out_dir / "videos"
        tmp = videos / f".tmp-{rec.video_id}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "frames").mkdir(parents=True)
        ext = "jpg" if opts.image_format in ("jpg", "jpeg") else "png"
        lm = np.empty((len(found_idx), 68, 2), np.float32)
        boxes = np.empty((len(found_idx), 3), np.float32)
        pos = {f: k for k, f in enumerate(found_idx)}
        written = 0
        for i, frame in iter_indexed_frames(rec.path, indices=found_idx):
            k = pos[i]
            ct = crops[k]
            write_image(tmp / "frames" / f"{i:06d}.{ext}", ct.crop(frame), quality=opts.quality)
            lm[k] = ct.points_to_crop(pts[k])
            boxes[k] = (ct.cx, ct.cy, ct.side)
            written += 1
        if written != len(found_idx):
            shutil.rmtree(tmp, ignore_errors=True)
            return {"ok": False, "reason": f"video changed between passes ({written} of {len(found_idx)} frames)"}
        np.save(tmp / "landmarks.npy", lm)
        np.save(tmp / "boxes.npy", boxes)
        meta = {
            "format_version": FORMAT_VERSION,
            "video_id": rec.video_id, "identity": rec.identity, "group": rec.group, "split": rec.split,
            "source": str(rec.path), "source_size": [info.width, info.height], "fps": info.fps,
            "frame_range": [rec.frame_start, rec.frame_stop], "every": opts.every,
            "resolution": opts.resolution, "image_format": ext,
            "frame_indices": [int(i) for i in found_idx], "num_frames": len(found_idx),
            "sampled": n_sampled, "no_face_frames": n_sampled - len(found_idx),
            "segments": sorted({(c.cx, c.cy, c.side) for c in crops}, key=lambda b: b[0]).__len__(),
            "tracker": tracker.stats, "seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        final = videos / rec.video_id
        if final.exists():  # finished by someone else meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, final)
        entry = {k: meta[k] for k in ("video_id", "identity", "group", "split", "num_frames")}
        entry["path"] = f"videos/{rec.video_id}"
        return {"ok": True, "entry": entry, "frames": len(found_idx)}
    except VideoError as e:
        return {"ok": False, "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - one broken video must not stop a VoxCeleb-scale run
        log.exception("unexpected error on %s", rec.path)
        # not remembered in skipped.jsonl: a bug or a transient failure, retried by the next run
        return {"ok": False, "reason": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", "retry": True}


def _worker(args):
    rec_dict, out_dir, opts_dict = args
    rec = VideoRecord(**rec_dict)
    res = process_video(rec, Path(out_dir), PreprocessOptions(**opts_dict))
    res["video_id"], res["path"] = rec.video_id, rec.path
    return res


# -- the run ----------------------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash
                continue
    return out


def _append_jsonl(path: Path, obj: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()


def write_manifest(out: Path) -> list[dict]:
    """manifest.json from manifest.jsonl (deduplicated, only shards that exist), sorted by video_id."""
    entries = {}
    for e in _read_jsonl(out / "manifest.jsonl"):
        if (out / e["path"] / "meta.json").exists():
            entries[e["video_id"]] = e
    videos = [entries[k] for k in sorted(entries)]
    info = json.loads((out / "dataset.json").read_text()) if (out / "dataset.json").exists() else {}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps({**info, "videos": videos}, indent=1))
    os.replace(tmp, out / "manifest.json")
    return videos


def preprocess(input, out, resolution: int = 256, frames_per_video: int = 0, workers: int = 1,
               every: int = 3, split=None, layout: str = "auto", identities: dict | None = None,
               retry_failed: bool = False, progress: bool = True, **options) -> Summary:
    """Preprocesses every video under `input` into shards under `out` (see module doc); returns a Summary.
    `options`: further PreprocessOptions fields (redetect_every, segment_seconds, image_format, ...)."""
    t0 = time.perf_counter()
    out = Path(out).expanduser().resolve()
    opts = PreprocessOptions(resolution=int(resolution), every=int(every), frames_per_video=int(frames_per_video),
                             **options)
    if opts.resolution < 16:
        raise TalkingHeadError(f"resolution {opts.resolution} is too small")
    records = find_videos(input, layout=layout, identities=identities)
    if split is not None:
        records = apply_split(records, split, root=input)
    if not records:
        raise TalkingHeadError(f"no videos found in {input}")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    info = {"format_version": FORMAT_VERSION, "resolution": opts.resolution, "every": opts.every,
            "frames_per_video": opts.frames_per_video, "image_format": opts.image_format}
    info_path = out / "dataset.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if old.get("resolution") != opts.resolution:
            raise TalkingHeadError(f"{out} holds {old.get('resolution')}² crops; use another --out for "
                                   f"{opts.resolution}²")
    else:
        info_path.write_text(json.dumps(info, indent=1))
    for stale in (out / "videos").glob(".tmp-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)

    manifest_jsonl = out / "manifest.jsonl"
    listed = {e["video_id"] for e in _read_jsonl(manifest_jsonl)}
    for d in (out / "videos").iterdir():  # shards renamed into place but not yet listed (crash in between)
        if d.name not in listed and (d / "meta.json").exists():
            m = json.loads((d / "meta.json").read_text())
            e = {k: m[k] for k in ("video_id", "identity", "group", "split", "num_frames")}
            _append_jsonl(manifest_jsonl, {**e, "path": f"videos/{d.name}"})
            listed.add(d.name)
    failed = {} if retry_failed else {e["video_id"]: e for e in _read_jsonl(out / "skipped.jsonl")}

    summary = Summary(out=str(out), videos=len(records))
    todo = []
    for r in records:
        if (out / "videos" / r.video_id / "meta.json").exists():
            summary.already_done += 1
        elif r.video_id in failed:
            summary.previously_skipped += 1
        else:
            todo.append(r)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, desc="preprocess")
    jobs = ((r.to_dict(), str(out), asdict(opts)) for r in todo)
    pool = None
    try:
        if workers > 1 and len(todo) > 1:
            pool = mp.get_context("spawn").Pool(min(workers, len(todo)))
            results = pool.imap_unordered(_worker, jobs, chunksize=1)
        else:
            results = map(_worker, jobs)
        for res in results:
            if res["ok"]:
                _append_jsonl(manifest_jsonl, res["entry"])
                summary.processed += 1
                summary.frames += res["frames"]
            else:
                item = {"video_id": res["video_id"], "path": res["path"], "reason": res["reason"]}
                if not res.get("retry"):
                    _append_jsonl(out / "skipped.jsonl", item)
                summary.skipped.append(item)
                log.warning("skipped %s: %s", res["video_id"], res["reason"])
            bar.update(1)
            bar.set_postfix(frames=summary.frames, skipped=len(summary.skipped))
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
        write_manifest(out)
    summary.seconds = time.perf_counter() - t0
    return summary


# -- CLI --------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = PreprocessOptions()
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("input", help="a video, a folder of videos (recursive) or a VoxCeleb id/video/clip tree")
    parser.add_argument("--out", required=True, help="output folder (resumable: rerun to continue)")
    parser.add_argument("--resolution", type=int, default=d.resolution, help="crop side S in pixels")
    parser.add_argument("--every", type=int, default=d.every, help="sample every n-th frame")
    parser.add_argument("--frames-per-video", type=int, default=d.frames_per_video,
                        help="at most this many sampled frames per video, evenly spaced (0 = all)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--split", default=None,
                        help="split file (JSON, see talkinghead.data.sources) or a bundled name, e.g. 'shared'")
    parser.add_argument("--layout", choices=["auto", "voxceleb", "folder"], default="auto")
    parser.add_argument("--identities", default=None, help="JSON file {file stem or relative path: identity}")
    parser.add_argument("--redetect-every", type=int, default=d.redetect_every)
    parser.add_argument("--segment-seconds", type=float, default=d.segment_seconds,
                        help="one stable crop per this many seconds (0 = one per clip)")
    parser.add_argument("--format", choices=["jpg", "png"], default=d.image_format, dest="image_format")
    parser.add_argument("--upsample", type=int, default=d.upsample, help="detector up-sampling for small faces")
    parser.add_argument("--retry-failed", action="store_true", help="retry videos skipped by an earlier run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    identities = None
    if args.identities:
        try:
            identities = json.loads(Path(args.identities).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TalkingHeadError(f"cannot read identities file {args.identities}: {e}") from None
    summary = preprocess(args.input, args.out, resolution=args.resolution, frames_per_video=args.frames_per_video,
                         workers=args.workers, every=args.every, split=args.split, layout=args.layout,
                         identities=identities, retry_failed=args.retry_failed, progress=not args.quiet,
                         redetect_every=args.redetect_every, segment_seconds=args.segment_seconds,
                         image_format=args.image_format, upsample=args.upsample)
    print(summary)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
    return 0

"""Videos -> per-video shards of aligned face crops + landmarks (the paper's training data, §4: frames x_i(t)
and landmarks of each video i); the `talkinghead preprocess` command is talkinghead/commands/preprocess.py.

For each video (or frame range of one, see data.sources split files): sample frames (every n-th, optionally
capped evenly to N), find the 68 landmarks in tracking mode (detector now and then, shape predictor in between),
choose one stable square crop per segment (a clip's head moves little within seconds), and write

    OUT/videos/<video_id>/frames/<frame index>.jpg   (S×S RGB, JPEG q95 or PNG)
    OUT/videos/<video_id>/landmarks.npy              (F, 68, 2) float32 in crop pixels
    OUT/videos/<video_id>/boxes.npy                  (F, 3) float32 crop box cx, cy, side in source pixels
    OUT/videos/<video_id>/meta.json                  source, identity, group, split, fps, frame indices, ...

Each shard is written into a temporary folder `.tmp-<video_id>-<pid>`, verified (`verify_shard`: every frame
file on disk, landmarks and boxes of the right shape) and renamed into place; the run verifies it again before
it enters the manifest. OUT/manifest.jsonl gets one line per finished shard as it finishes (incremental;
VoxCeleb-scale runs never hold the list in memory), OUT/skipped.jsonl one line per video that was skipped
(unreadable, no face), OUT/manifest.json is the sorted list of finished shards and OUT/summary.json the
run's summary, both rewritten at the end of each run. A rerun verifies the shards on disk (a broken one is
removed and redone), removes temporary folders of dead processes and skips the finished and the skipped
videos (`retry_failed` retries the latter). Parallel workers use spawn-safe multiprocessing and die with the
run (a killed run leaves no worker behind to race the next one). One run at a time per OUT folder (a lock).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from talkinghead.console import log, progress as progress_bar
from talkinghead.data.sources import VideoRecord, apply_split, find_videos
from talkinghead.errors import TalkingHeadError, VideoError

FORMAT_VERSION = 1
IMAGE_FORMATS = ("jpg", "png")
_STALE_TMP_SECONDS = 3600.0  # a temporary shard folder untouched this long is abandoned, whoever made it


def _opt(default, lo=None, hi=None, **kw):
    """A dataclass field whose allowed range [lo, hi] (None: open) is stored once, for the CLI and validate()."""
    return field(default=default, metadata={"range": (lo, hi), **kw})


@dataclass
class PreprocessOptions:
    resolution: int = _opt(256, 16, 4096)  # S, side of the crops
    every: int = _opt(3, 1)  # sample every n-th frame ...
    frames_per_video: int = _opt(0, 0)  # ... then at most this many, evenly spaced (0 = no cap)
    redetect_every: int = _opt(10, 1)  # tracking: full detection every n sampled frames
    segment_seconds: float = _opt(10.0, 0.0)  # one stable crop per this much video (0 = one crop per clip)
    image_format: str = "jpg"  # "jpg" (q95) | "png"
    quality: int = _opt(95, 1, 100)  # JPEG quality
    min_frames: int = _opt(2, 1)  # fewer frames with a face than this -> the video is skipped (K+1 needs several)
    margin: float = _opt(0.45, 0.0, 4.0)  # crop margin around the landmark extent (landmarks.align.landmark_box)
    upsample: int = _opt(0, 0, 4)  # dlib detector up-sampling (1 finds faces down to ~40 px, 4× slower)
    workers: int = _opt(1, 1, 1024)  # parallel processes (one video each)

    def validate(self) -> "PreprocessOptions":
        """Raises TalkingHeadError (one line) for a value out of its range; returns self."""
        if self.image_format == "jpeg":
            self.image_format = "jpg"
        if self.image_format not in IMAGE_FORMATS:
            raise TalkingHeadError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, "
                                   f"got {self.image_format!r}")
        for f in fields(self):
            if "range" not in f.metadata:
                continue
            v, (lo, hi) = getattr(self, f.name), f.metadata["range"]
            kind = int if f.type in ("int", int) else float
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)) \
                    or not np.isfinite(v):
                raise TalkingHeadError(f"{f.name} must be a {'whole ' if kind is int else ''}number, got {v!r}")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise TalkingHeadError(f"{f.name} = {v} is out of range {_range_text(lo, hi)}")
            setattr(self, f.name, kind(v))
        return self


def _range_text(lo, hi) -> str:
    if hi is None:
        return f"(must be >= {lo:g})"
    if lo is None:
        return f"(must be <= {hi:g})"
    return f"[{lo:g}, {hi:g}]"


def option_range(name: str) -> tuple:
    """(lo, hi) of a numeric PreprocessOptions field (None: open), e.g. for argparse's int_range."""
    for f in fields(PreprocessOptions):
        if f.name == name:
            return f.metadata["range"]
    raise KeyError(name)


def make_options(**values) -> PreprocessOptions:
    """PreprocessOptions from keyword values (unknown names: TypeError), validated."""
    names = {f.name for f in fields(PreprocessOptions)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown preprocess option(s): {', '.join(unknown)}")
    return PreprocessOptions(**values).validate()


@dataclass
class Summary:
    out: str
    videos: int = 0  # records considered
    processed: int = 0  # shards written in this run
    already_done: int = 0  # finished earlier (resumed)
    frames: int = 0  # frames written in this run
    skipped: list = field(default_factory=list)  # [{"video_id", "path", "reason"}] in this run
    previously_skipped: int = 0
    redone: list = field(default_factory=list)  # [{"video_id", "reason"}] broken shards found, removed, redone
    shards: int = 0  # finished shards in the manifest after this run
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [f"preprocess: {self.videos} videos: {self.processed} processed ({self.frames} frames, "
                 f"{fps:.1f} frames/s), {self.already_done} already done, {len(self.skipped)} skipped"
                 + (f", {self.previously_skipped} skipped earlier" if self.previously_skipped else "")
                 + (f", {len(self.redone)} broken shards redone" if self.redone else "")
                 + f"; {self.seconds:.1f} s -> {self.out}"]
        lines += [f"  skipped {s['video_id']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


# -- shard verification -------------------------------------------------------------------------------------
def verify_shard(path, full: bool = True) -> str | None:
    """None when the shard folder is complete, else what is wrong (one line): meta.json readable, a non-empty
    file for every frame it lists, landmarks.npy (F, 68, 2) and (full) boxes.npy (F, 3). Reads headers only."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        n = int(meta["num_frames"])
        names = {f"{int(i):06d}.{meta.get('image_format', 'jpg')}" for i in meta["frame_indices"]}
    except FileNotFoundError:
        return "no meta.json"
    except (OSError, ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        return f"unreadable meta.json ({type(e).__name__}: {' '.join(str(e).split())[:80]})"
    if len(names) != n:
        return f"meta.json lists {len(names)} frames but says {n}"
    try:
        have = sum(1 for e in os.scandir(path / "frames") if e.name in names and e.stat().st_size > 0)
    except OSError:
        have = 0
    if have != n:
        return f"{have} of {n} frames on disk"
    for name, shape in (("landmarks.npy", (n, 68, 2)), ("boxes.npy", (n, 3)))[:2 if full else 1]:
        try:
            shape_on_disk = np.load(path / name, mmap_mode="r").shape
        except (OSError, ValueError, EOFError) as e:
            return f"unreadable {name} ({type(e).__name__})"
        if shape_on_disk != shape:
            return f"{name} has shape {shape_on_disk}, expected {shape}"
    return None


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
    """Writes one shard; returns {"ok": True, "entry": manifest entry, "frames": n} or {"ok": False, "reason":
    ...} (with "retry": True when the failure is not the video's fault and a rerun should try again)."""
    from talkinghead.landmarks.align import segment_crops
    from talkinghead.landmarks.detect import VideoLandmarkTracker
    from talkinghead.video import iter_indexed_frames, probe_video, write_image

    t0 = time.perf_counter()
    tmp = None
    try:
        info = probe_video(rec.path)
        stop = info.num_frames if rec.frame_stop is None else min(rec.frame_stop, info.num_frames)
        if rec.frame_stop is None and not info.num_frames:
            stop = 10**9  # unknown length: decode to the end
        indices = sample_indices(rec.frame_start, stop, opts.every, opts.frames_per_video)
        if not indices:
            return {"ok": False, "reason": f"no frames in range [{rec.frame_start}, {stop})"}
        # pass 1: landmarks on the sampled frames (tracking mode, no smoothing: exact per-frame targets).
        # A stream that stops well short of its header raises VideoError (truncated or corrupt).
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
        ext = opts.image_format
        lm = np.empty((len(found_idx), 68, 2), np.float32)
        boxes = np.empty((len(found_idx), 3), np.float32)
        pos = {f: k for k, f in enumerate(found_idx)}
        for i, frame in iter_indexed_frames(rec.path, indices=found_idx):
            k = pos[i]
            ct = crops[k]
            write_image(tmp / "frames" / f"{i:06d}.{ext}", ct.crop(frame), quality=opts.quality)
            lm[k] = ct.points_to_crop(pts[k])
            boxes[k] = (ct.cx, ct.cy, ct.side)
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
            "segments": len({(c.cx, c.cy, c.side) for c in crops}),
            "tracker": tracker.stats, "seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last
        problem = verify_shard(tmp)
        if problem:  # e.g. the video changed between the passes
            return {"ok": False, "reason": f"incomplete shard: {problem}", "retry": True}
        if _orphaned():  # the run is gone: never rename into a folder a newer run may own
            shutil.rmtree(tmp, ignore_errors=True)
            os._exit(1)
        _move_into_place(tmp, videos / rec.video_id)
        tmp = None
        entry = {k: meta[k] for k in ("video_id", "identity", "group", "split", "num_frames")}
        entry["path"] = f"videos/{rec.video_id}"
        return {"ok": True, "entry": entry, "frames": len(found_idx)}
    except VideoError as e:
        return {"ok": False, "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - one broken video must not stop a VoxCeleb-scale run
        # not remembered in skipped.jsonl: a bug or a transient failure, retried by the next run
        return {"ok": False, "reason": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", "retry": True,
                "detail": traceback.format_exc()}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Renames a verified temporary shard to `final`; a complete shard already there wins, a broken one is
    replaced."""
    if final.exists():
        if verify_shard(final) is None:  # finished meanwhile (an earlier run): keep it
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = final.parent / f".tmp-{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)


# -- worker processes ---------------------------------------------------------------------------------------
_PARENT_PID: int | None = None  # set in pool workers: the run's process


def _worker_init(parent_pid: int) -> None:
    """Pool initializer: the worker dies with the run. On Linux the kernel kills it when its parent exits
    (PR_SET_PDEATHSIG, even on kill -9); elsewhere `_orphaned` checks before a shard is renamed into place."""
    global _PARENT_PID
    _PARENT_PID = parent_pid
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if _orphaned():  # the parent died before the death signal was armed
        os._exit(1)


def _orphaned() -> bool:
    return _PARENT_PID is not None and os.getppid() != _PARENT_PID


def _start_pool(workers: int):
    return mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(os.getpid(),))


def _worker(args):
    rec_dict, out_dir, opts_dict = args
    if _orphaned():
        os._exit(1)
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


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def write_manifest(out: Path) -> list[dict]:
    """manifest.json from manifest.jsonl (deduplicated, only shards that exist), sorted by video_id."""
    entries = {}
    for e in _read_jsonl(out / "manifest.jsonl"):
        if (out / e["path"] / "meta.json").exists():
            entries[e["video_id"]] = e
    videos = [entries[k] for k in sorted(entries)]
    info = json.loads((out / "dataset.json").read_text()) if (out / "dataset.json").exists() else {}
    _write_json(out / "manifest.json", {**info, "videos": videos})
    return videos


def _lock(out: Path):
    """An exclusive lock on OUT for this run (released when the process ends, however it ends)."""
    f = open(out / ".lock", "a")
    try:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: no lock
        pass
    except OSError:
        f.close()
        raise TalkingHeadError(f"another preprocess run is writing to {out}; wait for it or use another --out") \
            from None
    return f


def _remove_stale_tmp(videos: Path) -> None:
    """Temporary shard folders `.tmp-<id>-<pid>` of processes that are gone (or untouched for an hour)."""
    from talkinghead.files import pid_alive

    for d in videos.glob(".tmp-*"):
        pid = d.name.rsplit("-", 1)[-1]
        try:
            age = time.time() - d.stat().st_mtime
        except OSError:
            continue
        if not pid.isdigit() or not pid_alive(int(pid)) or age > _STALE_TMP_SECONDS:
            shutil.rmtree(d, ignore_errors=True)


def _check_shards(out: Path, manifest_jsonl: Path, summary: Summary) -> None:
    """Verifies every shard on disk: a broken one is removed (to be redone), a complete one missing from the
    manifest (a crash between rename and listing) is listed."""
    listed = {e["video_id"] for e in _read_jsonl(manifest_jsonl)}
    for d in sorted((out / "videos").iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        problem = verify_shard(d)
        if problem:
            log.warning("broken shard %s (%s): removed, it will be redone", d.name, problem)
            summary.redone.append({"video_id": d.name, "reason": problem})
            shutil.rmtree(d, ignore_errors=True)
        elif d.name not in listed:
            m = json.loads((d / "meta.json").read_text())
            e = {k: m.get(k) for k in ("video_id", "identity", "group", "split", "num_frames")}
            _append_jsonl(manifest_jsonl, {**e, "path": f"videos/{d.name}"})
            listed.add(d.name)


def preprocess(input, out, split=None, layout: str = "auto", identities: dict | None = None,
               retry_failed: bool = False, progress: bool = True, require_usable: bool = False,
               **options) -> Summary:
    """Preprocesses every video under `input` into shards under `out` (see module doc); returns a Summary.

    `options`: PreprocessOptions fields (resolution, every, frames_per_video, workers, redetect_every, ...),
    checked against their ranges (TalkingHeadError). `require_usable`: raise TalkingHeadError when, after the
    run, `out` holds no usable shard at all (every video skipped)."""
    t0 = time.perf_counter()
    opts = make_options(**options)
    out = Path(out).expanduser().resolve()
    records = find_videos(input, layout=layout, identities=identities)
    if split is not None:
        records = apply_split(records, split, root=input)
    if not records:
        raise TalkingHeadError(f"no videos found in {input}")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        return _run(records, input, out, opts, retry_failed, progress, require_usable, t0)
    finally:
        lock.close()


def _run(records, input, out: Path, opts: PreprocessOptions, retry_failed: bool, progress: bool,
         require_usable: bool, t0: float) -> Summary:
    info = {"format_version": FORMAT_VERSION, "resolution": opts.resolution, "every": opts.every,
            "frames_per_video": opts.frames_per_video, "image_format": opts.image_format}
    info_path = out / "dataset.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if old.get("resolution") != opts.resolution:
            raise TalkingHeadError(f"{out} holds {old.get('resolution')}² crops; use another --out for "
                                   f"{opts.resolution}²")
    else:
        _write_json(info_path, info)
    _remove_stale_tmp(out / "videos")
    manifest_jsonl = out / "manifest.jsonl"
    summary = Summary(out=str(out), videos=len(records))
    _check_shards(out, manifest_jsonl, summary)
    failed = {} if retry_failed else {e["video_id"]: e for e in _read_jsonl(out / "skipped.jsonl")}

    todo = []
    for r in records:
        if (out / "videos" / r.video_id / "meta.json").exists():
            summary.already_done += 1
        elif r.video_id in failed:
            summary.previously_skipped += 1
        else:
            todo.append(r)

    jobs = ((r.to_dict(), str(out), asdict(opts)) for r in todo)
    pool = None
    try:
        with progress_bar(len(todo), desc="preprocess", unit="video", enabled=progress and bool(todo)) as bar:
            if opts.workers > 1 and len(todo) > 1:
                pool = _start_pool(min(opts.workers, len(todo)))
                results = pool.imap_unordered(_worker, jobs, chunksize=1)
            else:
                results = map(_worker, jobs)
            for res in results:
                if res["ok"]:
                    problem = verify_shard(out / res["entry"]["path"])
                    if problem:  # never list a shard that is not complete on disk
                        shutil.rmtree(out / res["entry"]["path"], ignore_errors=True)
                        res = {**res, "ok": False, "retry": True, "reason": f"shard failed verification: {problem}"}
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
                    if res.get("detail"):
                        log.debug("%s", res["detail"])
                bar.update(1)
                bar.set_postfix(frames=summary.frames, skipped=len(summary.skipped))
            if pool is not None:
                pool.close()
                pool.join()
    finally:
        if pool is not None:
            pool.terminate()
        summary.shards = len(write_manifest(out))
        summary.seconds = time.perf_counter() - t0
        _write_json(out / "summary.json", summary.to_dict())
    if require_usable and not summary.shards:
        raise TalkingHeadError(_none_usable(input, summary))
    return summary


def _none_usable(input, summary: Summary) -> str:
    why = "; ".join(f"{s['video_id']}: {s['reason']}" for s in summary.skipped[:3])
    more = len(summary.skipped) - 3
    text = f"no usable video in {input}" + (f" ({why}{f'; {more} more' if more > 0 else ''})" if why else "")
    if summary.previously_skipped:
        text += f"; {summary.previously_skipped} skipped by an earlier run (--retry-failed tries them again)"
    return text

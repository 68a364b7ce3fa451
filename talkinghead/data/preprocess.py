"""Videos -> per-video shards of aligned face crops + landmarks (the paper's training data, §4: frames x_i(t)
and landmarks of each video i); the `talkinghead preprocess` command is talkinghead/commands/preprocess.py.

For each video (or frame range of one, see data.sources split files): sample frames (every n-th, optionally
capped evenly to N), find the 68 landmarks in tracking mode (detector now and then, shape predictor in between),
choose one stable square crop per segment (a clip's head moves little within seconds), and write the shard
OUT/videos/<video_id>/ (frames/, landmarks.npy, boxes.npy, meta.json) through a temporary folder, verified
before it is renamed into place and again before it enters OUT/manifest.jsonl. The layout of OUT and what a
run may trust of it (verification, resume, stale temporary folders, the lock) are in talkinghead.data.shards.

A rerun skips the finished and the skipped videos (`retry_failed` retries the latter) and redoes broken shards.
Many machines: `part=(K, N)` processes a deterministic slice of the videos into OUT/parts/K-of-N/; a run without
`part` first adopts every part's verified shards (data.shards.adopt_parts), then does what no part did
(`merge=True`: nothing more, the videos left are reported).
Parallel workers use spawn-safe multiprocessing and die with the run (a killed run leaves no worker behind to
race the next one).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.config import CROP_SHIFT_Y
from talkinghead.console import log, progress as progress_bar
from talkinghead.data.shards import (FORMAT_VERSION, adopt_parts, append_jsonl, check_dataset_info, check_shards,
                                     in_part, list_shard, lock_out, manifest_entry, move_into_place, part_dir,
                                     read_jsonl, remove_stale_tmp, temp_shard_dir, verify_shard, write_json,
                                     write_manifest)
from talkinghead.data.options import PreprocessOptions, make_options
from talkinghead.data.sources import VideoRecord, apply_split, find_videos
from talkinghead.data.workers import orphaned, run_pooled, start_pool
from talkinghead.errors import TalkingHeadError

# a header count above this (or above what the duration allows) is checked by counting the packets
MAX_HEADER_FRAMES = 200_000


@dataclass
class Summary:
    out: str
    videos: int = 0  # records considered
    processed: int = 0  # shards written in this run
    already_done: int = 0  # finished earlier (resumed)
    frames: int = 0  # frames written in this run
    no_face_frames: int = 0  # sampled frames left out because no face was found in them
    cut_videos: int = 0  # videos with a shot change (each trimmed to its shot with the most face frames)
    trimmed_frames: int = 0  # face frames left out because they were in another shot
    skipped: list = field(default_factory=list)  # [{"video_id", "path", "reason"}] in this run
    previously_skipped: int = 0
    redone: list = field(default_factory=list)  # [{"video_id", "reason"}] broken shards found, removed, redone
    shards: int = 0  # finished shards in the manifest after this run
    adopted: int = 0  # shards taken over from OUT/parts/* (written by `--part K/N` runs)
    left: int = 0  # merge only: videos that no part has processed or skipped
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [f"preprocess: {self.videos} videos: {self.processed} processed ({self.frames} frames, "
                 f"{fps:.1f} frames/s), {self.already_done} already done, {len(self.skipped)} skipped"
                 + (f", {self.previously_skipped} skipped earlier" if self.previously_skipped else "")
                 + (f", {len(self.redone)} broken shards redone" if self.redone else "")
                 + (f", {self.adopted} adopted from parts" if self.adopted else "")
                 + (f", {self.left} left that no part processed" if self.left else "")
                 + f"; {self.no_face_frames} frames without a face left out, {self.cut_videos} videos with a "
                 f"shot change trimmed by {self.trimmed_frames} frames"
                 + f"; {self.seconds:.1f} s -> {self.out}"]
        lines += [f"  skipped {s['video_id']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


# -- one video (runs in a worker) -------------------------------------------------------------------------
_DETECTOR = None


def _detector(opts: PreprocessOptions):
    """The face-finding cascade for video frames (the driver of `animate` uses the same one): HOG from
    `opts.upsample` up-samplings, more for small frames."""
    global _DETECTOR
    if _DETECTOR is None or _DETECTOR.min_upsample != opts.upsample:
        from talkinghead.landmarks.cascade import video_cascade

        _DETECTOR = video_cascade(min_upsample=opts.upsample)
    return _DETECTOR


def sample_indices(start: int, stop: int, every: int, frames_per_video: int) -> list[int]:
    """Frame indices in [start, stop): every n-th, then at most frames_per_video of them, evenly spaced (only
    those picked are listed)."""
    idx = range(start, stop, max(1, every))
    if frames_per_video and len(idx) > frames_per_video:
        pick = np.linspace(0, len(idx) - 1, frames_per_video).round().astype(int)
        return [idx[int(i)] for i in pick]
    return list(idx)


@dataclass
class _Landmarks:
    """Pass 1's result: the sampled frames with a face, their landmarks, how many frames were decoded."""
    indices: list  # frame indices with a face, in the kept shot
    points: np.ndarray | None  # (F, 68, 2) in source pixels
    sampled: int  # frames decoded
    tracker_stats: dict
    shots: int = 1  # shots found (data/cuts.py); only the one with the most face frames is kept
    trimmed: int = 0  # face frames dropped because they belong to another shot


def process_video(rec: VideoRecord, out_dir: Path, opts: PreprocessOptions) -> dict:
    """Writes one shard; returns {"ok": True, "entry": manifest entry, "frames": n} or {"ok": False, "reason":
    ...} (with "retry": True when the failure is not the video's fault and a rerun should try again)."""
    from talkinghead.media.video import probe_video

    t0 = time.perf_counter()
    tmp = None
    try:
        info = probe_video(rec.path)
        frames = _frame_count(rec.path, info)
        stop = frames if rec.frame_stop is None else min(rec.frame_stop, frames)
        indices = sample_indices(rec.frame_start, stop, opts.every, opts.frames_per_video)
        if not indices:
            return {"ok": False, "reason": f"no frames in range [{rec.frame_start}, {stop})"}
        found = _find_landmarks(rec.path, indices, info.fps, opts)
        if found.sampled == 0:
            return {"ok": False, "reason": "no frames could be decoded"}
        if len(found.indices) < opts.min_frames:
            return {"ok": False, "reason": f"no face: found in {len(found.indices)} of {found.sampled} sampled "
                                           "frames"}
        tmp = temp_shard_dir(out_dir / "videos", rec.video_id)
        segments = _write_crops(rec.path, found, info, tmp, opts)
        meta = _shard_meta(rec, info, opts, found, segments, seconds=time.perf_counter() - t0)
        result = _finish_shard(tmp, meta, out_dir / "videos" / rec.video_id)
        if result["ok"]:
            tmp = None
        return result
    except TalkingHeadError as e:  # the video's fault (unreadable, frames too small to search): not retried
        return {"ok": False, "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - one broken video must not stop a VoxCeleb-scale run
        # not remembered in skipped.jsonl: a bug or a transient failure, retried by the next run
        return {"ok": False, "reason": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", "retry": True,
                "detail": traceback.format_exc()}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _frame_count(path, info) -> int:
    """The frames to sample from: the header's count where the duration bears it out, else the video packets
    counted (a missing or absurd count never sizes the work)."""
    from talkinghead.media.video import count_frames

    n = info.num_frames
    if 0 < n <= MAX_HEADER_FRAMES and n <= info.duration * info.fps * 1.5 + 25:
        return n
    return count_frames(path)


def _find_landmarks(path, indices: list[int], fps: float, opts: PreprocessOptions) -> _Landmarks:
    """Pass 1: landmarks on the sampled frames (tracking mode, no smoothing: exact per-frame targets). A shot
    change (data/cuts.py) restarts the tracker with a full detection, and the clip is trimmed to the shot with
    the most face frames, so one shard never mixes scenes. A stream that stops well short of its header raises
    VideoError (truncated or corrupt)."""
    from talkinghead.data.cuts import ShotTracker, longest_shot
    from talkinghead.landmarks.track import VideoLandmarkTracker
    from talkinghead.media.video import iter_indexed_frames

    detector = _detector(opts)
    detector.reset()  # a new video: the cascade starts at its first stage again
    # training targets: a frame whose face the detector lost is dropped, never given a held shape (max_hold=0); one
    # predictor pass per frame (box_scales=(1.0,)), as the data were made before the tracker's ensemble
    tracker = VideoLandmarkTracker(detector, redetect_every=opts.redetect_every, smoothing=0.0,
                                   fps=fps / opts.every, max_hold=0, box_scales=(1.0,))
    shots = ShotTracker()
    found = []  # (frame index, points, shot)
    n_sampled, shot = 0, 0
    for i, frame in iter_indexed_frames(path, indices=indices):
        n_sampled += 1
        if shots.update(frame) != shot:
            shot = shots.shot
            tracker.reset()  # a new scene: detect, never carry the last shape over the cut
        face = tracker.update(frame)
        if face is not None:
            found.append((i, face.points, shot))
    keep = longest_shot([f[2] for f in found]) if found else 0
    kept = [f for f in found if f[2] == keep]
    pts = np.stack([f[1] for f in kept]) if kept else None
    return _Landmarks([f[0] for f in kept], pts, n_sampled, tracker.stats, shots=shots.shot + 1,
                      trimmed=len(found) - len(kept))


def _write_crops(path, found: _Landmarks, info, tmp: Path, opts: PreprocessOptions) -> int:
    """Pass 2: one stable crop per segment, then every frame with a face cropped into tmp/frames, its landmarks
    (crop pixels) into landmarks.npy and its crop box (source pixels) into boxes.npy. Returns the number of
    distinct crops (segments)."""
    from talkinghead.landmarks.align import segment_crops
    from talkinghead.media.video import iter_indexed_frames
    from talkinghead.media.image_files import write_dataset_image

    pts = found.points
    seg_len = 0
    if opts.segment_seconds > 0:
        seg_len = max(1, int(round(opts.segment_seconds * info.fps / opts.every)))
    crops = segment_crops(pts, opts.resolution, seg_len or len(pts), margin=opts.margin,
                          image_shape=(info.height, info.width))
    lm = np.empty((len(found.indices), 68, 2), np.float32)
    boxes = np.empty((len(found.indices), 3), np.float32)
    pos = {f: k for k, f in enumerate(found.indices)}
    for i, frame in iter_indexed_frames(path, indices=found.indices):
        k = pos[i]
        ct = crops[k]
        write_dataset_image(tmp / "frames" / f"{i:06d}.{opts.image_format}", ct.crop(frame), quality=opts.quality)
        lm[k] = ct.points_to_crop(pts[k])
        boxes[k] = (ct.cx, ct.cy, ct.side)
    np.save(tmp / "landmarks.npy", lm)
    np.save(tmp / "boxes.npy", boxes)
    return len({(c.cx, c.cy, c.side) for c in crops})


def _shard_meta(rec: VideoRecord, info, opts: PreprocessOptions, found: _Landmarks, segments: int,
                seconds: float) -> dict:
    """The shard's meta.json."""
    return {
        "format_version": FORMAT_VERSION,
        "video_id": rec.video_id, "identity": rec.identity, "group": rec.group, "split": rec.split,
        "source": str(rec.path), "source_size": [info.width, info.height], "fps": info.fps,
        "frame_range": [rec.frame_start, rec.frame_stop], "every": opts.every,
        "resolution": opts.resolution, "image_format": opts.image_format,
        "frame_indices": [int(i) for i in found.indices], "num_frames": len(found.indices),
        "sampled": found.sampled, "no_face_frames": found.sampled - len(found.indices) - found.trimmed,
        "shots": found.shots, "trimmed_frames": found.trimmed,
        "segments": segments, "tracker": found.tracker_stats, "seconds": round(seconds, 3),
    }


def _finish_shard(tmp: Path, meta: dict, final: Path) -> dict:
    """Writes meta.json (last), verifies the temporary shard and renames it to `final`; process_video's
    result."""
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    problem = verify_shard(tmp)
    if problem:  # e.g. the video changed between the passes
        return {"ok": False, "reason": f"incomplete shard: {problem}", "retry": True}
    if orphaned():  # the run is gone: never rename into a folder a newer run may own
        shutil.rmtree(tmp, ignore_errors=True)
        os._exit(1)
    move_into_place(tmp, final)
    return {"ok": True, "entry": manifest_entry(meta, final.name), "frames": meta["num_frames"],
            "no_face_frames": meta["no_face_frames"], "shots": meta["shots"], "trimmed": meta["trimmed_frames"]}


# -- worker processes (talkinghead.data.workers) -------------------------------------------------------------
def _start_pool(workers: int):
    """A pool of spawn-started workers that die with the run."""
    return start_pool(workers)


def _worker(args):
    rec_dict, out_dir, opts_dict = args
    if orphaned():
        os._exit(1)
    rec = VideoRecord(**rec_dict)
    res = process_video(rec, Path(out_dir), PreprocessOptions(**opts_dict))
    res["video_id"], res["path"] = rec.video_id, rec.path
    return res


def _worker_died(args) -> dict:
    """The result of a video whose worker process died (killed for its memory, a crash in native code):
    remembered as skipped, since it would kill the next run's worker too."""
    rec = VideoRecord(**args[0])
    return {"ok": False, "video_id": rec.video_id, "path": rec.path,
            "reason": "its worker process died (out of memory, or a crash decoding it)"}


# -- the run ----------------------------------------------------------------------------------------------
def preprocess(input, out, split=None, layout: str = "auto", identities: dict | None = None,
               retry_failed: bool = False, progress: bool = True, require_usable: bool = False,
               part: tuple[int, int] | None = None, merge: bool = False, **options) -> Summary:
    """Preprocesses every video under `input` into shards under `out` (see module doc); returns a Summary.

    `options`: PreprocessOptions fields (resolution, every, frames_per_video, workers, redetect_every, ...),
    checked against their ranges (TalkingHeadError). `require_usable`: raise TalkingHeadError when, after the
    run, `out` holds no usable shard at all (every video skipped). `part` (K, N): only part K of N of the
    videos, into OUT/parts/K-of-N/; `merge`: adopt the parts' shards and process nothing."""
    t0 = time.perf_counter()
    opts = make_options(**options)
    out = Path(out).expanduser().resolve()
    records = find_videos(input, layout=layout, identities=identities)
    if split is not None:
        records = apply_split(records, split, root=input)
    if not records:
        raise TalkingHeadError(f"no videos found in {input}")
    if part is not None:
        if merge:
            raise TalkingHeadError("--merge gathers the parts: run it without --part")
        records = [r for r in records if in_part(r.video_id, part)]
        out = part_dir(out, part)
        if not records:  # a tiny tree over many machines: this part has nothing to do
            log.info("part %d/%d has no videos", *part)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    lock = lock_out(out)
    try:
        return _run(records, input, out, opts, retry_failed, progress, require_usable and part is None, t0,
                    adopt=part is None, merge=merge)
    finally:
        lock.close()


def _run(records, input, out: Path, opts: PreprocessOptions, retry_failed: bool, progress: bool,
         require_usable: bool, t0: float, adopt: bool = True, merge: bool = False) -> Summary:
    info = {"format_version": FORMAT_VERSION, "resolution": opts.resolution, "every": opts.every,
            "frames_per_video": opts.frames_per_video, "image_format": opts.image_format, "margin": opts.margin,
            "shift_y": CROP_SHIFT_Y}
    check_dataset_info(out, info)
    remove_stale_tmp(out / "videos")
    manifest_jsonl = out / "manifest.jsonl"
    summary = Summary(out=str(out), videos=len(records))
    if adopt:
        summary.adopted, parts = adopt_parts(out, info)
        if parts:
            log.info("adopted %d shards from %d parts (%s)", summary.adopted, len(parts), ", ".join(parts))
    summary.redone += check_shards(out, manifest_jsonl)
    failed = {} if retry_failed else {e["video_id"]: e for e in read_jsonl(out / "skipped.jsonl")}

    todo = []
    for r in records:
        if (out / "videos" / r.video_id / "meta.json").exists():
            summary.already_done += 1
        elif r.video_id in failed:
            summary.previously_skipped += 1
        else:
            todo.append(r)
    if merge:
        summary.left, todo = len(todo), []

    jobs = ((r.to_dict(), str(out), asdict(opts)) for r in todo)
    results = None
    try:
        with progress_bar(len(todo), desc="preprocess", unit="video", enabled=progress and bool(todo)) as bar:
            if opts.workers > 1 and len(todo) > 1:
                results = run_pooled(_worker, jobs, min(opts.workers, len(todo)), on_dead=_worker_died)
            else:
                results = map(_worker, jobs)
            for res in results:
                if res["ok"] and (problem := list_shard(out, res["entry"])):
                    res = {**res, "ok": False, "retry": True, "reason": f"shard failed verification: {problem}"}
                if res["ok"]:
                    summary.processed += 1
                    summary.frames += res["frames"]
                    summary.no_face_frames += res["no_face_frames"]
                    summary.cut_videos += res["shots"] > 1
                    summary.trimmed_frames += res["trimmed"]
                else:
                    item = {"video_id": res["video_id"], "path": res["path"], "reason": res["reason"]}
                    if not res.get("retry"):
                        append_jsonl(out / "skipped.jsonl", item)
                    summary.skipped.append(item)
                    log.warning("skipped %s: %s", res["video_id"], res["reason"])
                    if res.get("detail"):
                        log.debug("%s", res["detail"])
                bar.update(1)
                bar.set_postfix(frames=summary.frames, skipped=len(summary.skipped))
    finally:
        if hasattr(results, "close"):  # run_pooled's workers are stopped
            results.close()
        summary.shards = len(write_manifest(out))
        summary.seconds = time.perf_counter() - t0
        write_json(out / "summary.json", summary.to_dict())
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

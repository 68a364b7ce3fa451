"""Preprocessed shards on disk: the layout of an OUT folder, how a shard gets there, and what a run may trust.

Written by `talkinghead.data.preprocess`, read by `talkinghead.data.dataset`:

    OUT/videos/<video_id>/frames/<frame index>.jpg   (S×S RGB, 6-digit index, JPEG q95 or PNG)
    OUT/videos/<video_id>/landmarks.npy              (F, 68, 2) float32 in crop pixels
    OUT/videos/<video_id>/boxes.npy                  (F, 3) float32 crop box cx, cy, side in source pixels
    OUT/videos/<video_id>/meta.json                  source, identity, group, split, fps, frame indices, ...
    OUT/videos/.tmp-<video_id>-<pid>/                a shard being written by process <pid>
    OUT/manifest.jsonl   one line per finished shard, appended as it finishes (never held in memory)
    OUT/skipped.jsonl    one line per video skipped for its own fault (unreadable, no face)
    OUT/manifest.json    dataset.json's settings + the sorted, deduplicated list of finished shards
    OUT/dataset.json     the run's settings (format version, resolution, ...); OUT/summary.json the last run's
    OUT/.lock            held (flock) by the one run writing to OUT
    OUT/parts/K-of-N/    the same layout, written by `preprocess --part K/N` (one machine of a job array);
                         a run on OUT without --part adopts every part's verified shards (`adopt_parts`)

Guarantees:
- a shard is written into its temporary folder `.tmp-<video_id>-<pid>` (meta.json last), verified
  (`verify_shard`) and only then renamed into place (`move_into_place`: a complete shard already there wins);
- a shard enters manifest.jsonl only verified: the run verifies it again before listing it, and a rerun
  verifies every shard on disk (`check_shards`: a broken one is removed to be redone, a complete one missing
  from the manifest after a crash is listed);
- temporary folders of dead processes (or untouched for an hour) are removed by the next run
  (`remove_stale_tmp`);
- a line of a .jsonl file cut by a crash is ignored (`read_jsonl`); manifest.json, dataset.json and
  summary.json are replaced atomically (`write_json`);
- one run at a time per OUT folder (`lock_out`);
- `--part K/N` takes a deterministic slice of the videos (`in_part`: a hash of the video id, so N machines
  listing the same tree split it alike, and a video added later does not move the others); the parts' shards,
  once adopted, are the same files one run would have written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np

from talkinghead.config import CROP_MARGIN, CROP_SHIFT_Y
from talkinghead.console import log
from talkinghead.errors import TalkingHeadError
from talkinghead.media.files import atomic_write

FORMAT_VERSION = 1
STALE_TMP_SECONDS = 3600.0  # a temporary shard folder untouched this long is abandoned, whoever made it
_ENTRY_KEYS = ("video_id", "identity", "group", "split", "num_frames")


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


def manifest_entry(meta: dict, video_id: str) -> dict:
    """The manifest line of a shard from its meta.json."""
    return {**{k: meta.get(k) for k in _ENTRY_KEYS}, "path": f"videos/{video_id}"}


def temp_shard_dir(videos: Path, video_id: str) -> Path:
    """This process's temporary folder for a shard, `videos/.tmp-<video_id>-<pid>`, new and empty (with frames/)."""
    tmp = videos / f".tmp-{video_id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "frames").mkdir(parents=True)
    return tmp


def move_into_place(tmp: Path, final: Path) -> None:
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


def remove_stale_tmp(videos: Path) -> None:
    """Temporary shard folders `.tmp-<id>-<pid>` of processes that are gone (or untouched for an hour)."""
    from talkinghead.media.files import pid_alive

    for d in videos.glob(".tmp-*"):
        pid = d.name.rsplit("-", 1)[-1]
        try:
            age = time.time() - d.stat().st_mtime
        except OSError:
            continue
        if not pid.isdigit() or not pid_alive(int(pid)) or age > STALE_TMP_SECONDS:
            shutil.rmtree(d, ignore_errors=True)


def check_dataset_info(out: Path, info: dict) -> None:
    """Writes OUT/dataset.json (the run's settings) for a new OUT; an existing one must hold crops of the same
    resolution (TalkingHeadError otherwise)."""
    path = out / "dataset.json"
    if not path.exists():
        write_json(path, info)
        return
    old = json.loads(path.read_text())
    if old.get("resolution") != info["resolution"]:
        raise TalkingHeadError(f"{out} holds {old.get('resolution')}² crops; use another --out for "
                               f"{info['resolution']}²")
    if "margin" in info and old.get("margin", CROP_MARGIN) != info["margin"]:
        raise TalkingHeadError(f"{out} holds crops with margin {old.get('margin', CROP_MARGIN)}; use another --out "
                               f"for margin {info['margin']}")


def dataset_framing(root) -> tuple[float, float]:
    """(margin, shift_y) of a preprocessed set's crops (config.CROP_MARGIN's framing; sets written before the
    framing was recorded used the defaults)."""
    path = Path(root) / "manifest.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    return float(info.get("margin", CROP_MARGIN)), float(info.get("shift_y", CROP_SHIFT_Y))


def check_shards(out: Path, manifest_jsonl: Path) -> list[dict]:
    """Verifies every shard on disk: a broken one is removed (to be redone), a complete one missing from the
    manifest (a crash between rename and listing) is listed. Returns [{"video_id", "reason"}] of the removed."""
    removed = []
    listed = {e["video_id"] for e in read_jsonl(manifest_jsonl)}
    for d in sorted((out / "videos").iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        problem = verify_shard(d)
        if problem:
            log.warning("broken shard %s (%s): removed, it will be redone", d.name, problem)
            removed.append({"video_id": d.name, "reason": problem})
            shutil.rmtree(d, ignore_errors=True)
        elif d.name not in listed:
            append_jsonl(manifest_jsonl, manifest_entry(json.loads((d / "meta.json").read_text()), d.name))
            listed.add(d.name)
    return removed


def list_shard(out: Path, entry: dict) -> str | None:
    """Appends a finished shard's entry to OUT/manifest.jsonl after verifying it; a shard that is not complete
    on disk is removed instead and what is wrong returned (never listed)."""
    problem = verify_shard(out / entry["path"])
    if problem:
        shutil.rmtree(out / entry["path"], ignore_errors=True)
        return problem
    append_jsonl(out / "manifest.jsonl", entry)
    return None


def lock_out(out: Path):
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


def read_jsonl(path: Path) -> list[dict]:
    """The objects of a .jsonl file ([] when there is none); a line cut by a crash is skipped."""
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


def append_jsonl(path: Path, obj: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()


def write_json(path: Path, obj) -> None:
    """Writes `obj` to `path` atomically (files.atomic_write: a partial file next to it, renamed)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)))


def write_manifest(out: Path) -> list[dict]:
    """manifest.json from manifest.jsonl (deduplicated, only shards that exist), sorted by video_id."""
    entries = {}
    for e in read_jsonl(out / "manifest.jsonl"):
        if (out / e["path"] / "meta.json").exists():
            entries[e["video_id"]] = e
    videos = [entries[k] for k in sorted(entries)]
    info = json.loads((out / "dataset.json").read_text()) if (out / "dataset.json").exists() else {}
    write_json(out / "manifest.json", {**info, "videos": videos})
    return videos


# -- parts of one dataset, written on many machines ------------------------------------------------------------
def parse_part(text: str) -> tuple[int, int]:
    """"K/N" (1 ≤ K ≤ N) -> (K, N); ValueError with a one-line reason otherwise."""
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"expected K/N, e.g. 3/8, got {text!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def in_part(video_id: str, part: tuple[int, int]) -> bool:
    """Whether `video_id` belongs to part K of N (a stable hash: the same on every machine and Python run)."""
    k, n = part
    return zlib.crc32(video_id.encode()) % n == k - 1


def part_dir(out: Path, part: tuple[int, int]) -> Path:
    return Path(out) / "parts" / f"{part[0]}-of-{part[1]}"


def adopt_parts(out: Path, info: dict) -> tuple[int, list[str]]:
    """Moves every part's verified shards (OUT/parts/*/videos/*) into OUT/videos and lists them, merges the
    parts' skipped.jsonl, and removes each part folder it emptied. A part must hold crops of OUT's settings
    `info` (its dataset.json) and not be written by a running process (TalkingHeadError). Returns (shards
    adopted, part names)."""
    parts_root = Path(out) / "parts"
    if not parts_root.is_dir():
        return 0, []
    adopted, names = 0, []
    skipped_here = {e["video_id"] for e in read_jsonl(out / "skipped.jsonl")}
    for part in sorted(d for d in parts_root.iterdir() if d.is_dir()):
        lock = lock_out(part)
        try:
            theirs = json.loads((part / "dataset.json").read_text()) if (part / "dataset.json").is_file() else {}
            differ = [k for k in info if k in theirs and theirs[k] != info[k]]
            if differ:
                raise TalkingHeadError(f"{part} was made with other settings ({', '.join(f'{k} {theirs[k]}' for k in differ)}); "
                                       f"rerun it with this run's or remove it")
            videos = part / "videos"
            for d in sorted(videos.iterdir()) if videos.is_dir() else []:
                if d.name.startswith(".") or not d.is_dir() or verify_shard(d):
                    continue  # a part's temporary or broken shard: this run redoes the video
                final = out / "videos" / d.name
                if not final.exists():
                    move_into_place(d, final)
                    adopted += 1
            for e in read_jsonl(part / "skipped.jsonl"):
                if e["video_id"] not in skipped_here and not (out / "videos" / e["video_id"]).exists():
                    append_jsonl(out / "skipped.jsonl", e)
                    skipped_here.add(e["video_id"])
        finally:
            lock.close()
        shutil.rmtree(part, ignore_errors=True)
        names.append(part.name)
    if not any(parts_root.iterdir()):
        parts_root.rmdir()
    return adopted, names

"""The evaluation data: the split's validation videos, preprocessed at the model's resolution, and the split of
each video into a shot part and a hold-out target part (paper §4)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from talkinghead.config import CROP_MARGIN
from talkinghead.errors import NoFaceError, TalkingHeadError
from talkinghead.evaluation.settings import SHOT_PART, TARGET_PART, EvalSettings


def split_video(num_frames: int, shots: int, targets: int, shot_part: float = SHOT_PART,
                target_part: float = TARGET_PART) -> tuple[list[int], list[int]]:
    """Positions (into a video's F stored frames) of T shots and of the hold-out targets (paper §4).

    Shots: evenly spread over the first `shot_part` of the frames, starting at frame 0 (so the T-shot sets
    are nested and the first shot is the same for every T). Targets: evenly spread over the last
    `target_part`. The parts never overlap; ValueError when the video is too short for T shots."""
    n_shot = int(num_frames * shot_part)
    start = num_frames - max(1, int(num_frames * target_part))
    if shots < 1 or targets < 1:
        raise ValueError("shots and targets must be >= 1")
    if start < n_shot or n_shot < 1:
        raise ValueError(f"parts overlap: {num_frames} frames, shot part {shot_part}, target part {target_part}")
    if shots > n_shot:
        raise ValueError(f"{num_frames} frames give {n_shot} in the shot part, fewer than T = {shots}")
    shot_pos = sorted({int(round(v)) for v in np.linspace(0, n_shot - 1, shots)})
    tgt_pos = sorted({int(round(v)) for v in np.linspace(start, num_frames - 1, min(targets, num_frames - start))})
    return shot_pos, tgt_pos


@dataclass
class EvalVideo:
    """One preprocessed validation video: the frames the protocol uses, as tensors in [-1, 1]."""

    video_id: str
    identity: str
    shard: object  # data.dataset.VideoShard
    target_pos: list[int]
    x_targets: torch.Tensor  # (n, 3, S, S) ground truth
    y_targets: torch.Tensor  # (n, 3, S, S) landmark images of the targets
    p_targets: np.ndarray  # (n, 68, 2) target landmarks, crop pixels
    shots: dict = field(default_factory=dict)  # T -> (positions, x (T,3,S,S), y (T,3,S,S), points (T,68,2))

    def frames(self, positions) -> list[int]:
        """Source-video frame indices of stored-frame positions."""
        return [int(self.shard.frame_indices[p]) for p in positions]


def _load_pairs(shard, positions, size):
    xs, ys = zip(*(shard.pair(p, size) for p in positions))
    pts = np.stack([shard.points(p, size) for p in positions]).astype(np.float32)
    return torch.stack(xs), torch.stack(ys), pts  # (n, 3, S, S) ×2, (n, 68, 2)


def select_records(data, split: str, max_videos: int = 0):
    """The split's validation videos found under `data` (sorted by frame-range start, then id: the cheapest
    to decode first, so --quick uses short clips), at most max_videos of them."""
    from talkinghead.data.sources import apply_split, find_videos, load_split

    root = Path(data).expanduser()
    if not root.is_dir():
        raise TalkingHeadError(f"--data must be a folder of videos: {root} is not a folder")
    spec = load_split(split) if split else {"default_split": "val", "videos": []}  # no split: all validation
    val = [e for e in spec.get("videos", []) if e.get("split") == "val"]
    if not val and spec.get("default_split") != "val":
        raise TalkingHeadError(f"split {split!r} has no validation videos")
    records = find_videos(root)
    if not records:
        raise TalkingHeadError(f"no videos found in {root}")
    records = [r for r in apply_split(records, spec, root=root) if r.split == "val"]
    if not records:
        names = ", ".join(str(e.get("path", e.get("id"))) for e in val)
        raise TalkingHeadError(f"none of the split's validation videos ({names}) is in {root}")
    records.sort(key=lambda r: (r.frame_start, r.video_id))
    return records[:max_videos] if max_videos else records


def _skip_reasons(cache: Path) -> dict[str, str]:
    """video_id -> reason, from the preprocessing's skipped.jsonl (unreadable lines ignored)."""
    reasons = {}
    path = cache / "skipped.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            e = json.loads(line)
            reasons[e["video_id"]] = e.get("reason", "")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return reasons


def prepare_videos(records, data, cache: Path, size: int, st: EvalSettings, progress: bool = True,
                   margin: float = CROP_MARGIN) -> tuple[list, list]:
    """Preprocesses the chosen records into `cache` (resumable) at the model's resolution and crop margin;
    returns the VideoShards found and the skipped videos [{video_id, reason}]; NoFaceError when none is usable."""
    from talkinghead.data.dataset import VideoShard
    from talkinghead.data.preprocess import preprocess

    root = Path(data).expanduser().resolve()
    spec = {"default_split": "skip", "videos": [
        {"path": Path(r.path).relative_to(root).as_posix(), "id": r.video_id, "identity": r.identity,
         "split": "val", "frames": [r.frame_start, r.frame_stop]} for r in records]}
    summary = preprocess(root, cache, resolution=size, frames_per_video=st.frames_per_video, every=st.every,
                         margin=margin, split=spec, progress=progress)
    shards, skipped = [], [dict(s) for s in summary.skipped]
    reasons = _skip_reasons(cache)
    for r in records:
        path = cache / "videos" / r.video_id
        if (path / "meta.json").exists():
            shards.append(VideoShard(path))
        elif not any(s["video_id"] == r.video_id for s in skipped):
            skipped.append({"video_id": r.video_id, "path": r.path, "reason": reasons.get(r.video_id, "not processed")})
    if not shards:
        why = "; ".join(f"{s['video_id']}: {s['reason']}" for s in skipped)
        raise NoFaceError(f"no usable validation video ({why})")
    return shards, skipped


def load_videos(shards, shots, targets: int, size: int) -> tuple[list[EvalVideo], list[dict]]:
    """The protocol's frames of each shard: its targets and, per T, its shots. Returns the videos and what
    was skipped ({video_id[, T], reason}: too short for the targets or for T shots); TalkingHeadError when no
    video is long enough."""
    videos, skipped = [], []
    for sh in shards:
        try:
            _, tgt = split_video(len(sh), 1, targets)
        except ValueError as e:
            skipped.append({"video_id": sh.video_id, "reason": str(e)})
            continue
        v = EvalVideo(sh.video_id, sh.identity, sh, tgt, *_load_pairs(sh, tgt, size))
        for T in shots:
            try:
                sp, _ = split_video(len(sh), T, targets)
            except ValueError as e:
                skipped.append({"video_id": sh.video_id, "T": T, "reason": str(e)})
                continue
            v.shots[T] = (sp, *_load_pairs(sh, sp, size))
        videos.append(v)
    if not videos:
        raise TalkingHeadError("no validation video has enough frames: "
                               + "; ".join(f"{s['video_id']}: {s['reason']}" for s in skipped))
    return videos, skipped

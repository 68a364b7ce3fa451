"""Episodes for meta-learning (paper §3.2): K shots + 1 target frame, all from one video i, with their landmark
images y_i(t) and the video's index i (its row in the discriminator's W).

Reads the shards written by `talkinghead.data.preprocess` (the layout on disk: `talkinghead.data.shards`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from talkinghead.data.shards import verify_shard
from talkinghead.errors import TalkingHeadError
from talkinghead.media.images import from_uint8
from talkinghead.landmarks.rasterize import rasterize
from talkinghead.landmarks.warp import texture_sources

_REDO = "rerun `talkinghead preprocess` with the same --out to redo it"


def _broken(path: Path, problem: str) -> TalkingHeadError:
    return TalkingHeadError(f"broken shard {path}: {problem}; {_REDO}")


class VideoShard:
    """One preprocessed video: its frames (S×S crops), landmarks in crop pixels and metadata.
    Used by the episode sampler, few-shot fine-tuning and evaluation. A shard broken on disk (unreadable
    meta.json, a frame or the landmarks missing) raises a one-line TalkingHeadError when that part is read."""

    def __init__(self, path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise TalkingHeadError(f"not a preprocessed video (no meta.json): {self.path}")
        try:
            self.meta: dict = json.loads(meta_path.read_text())
            int(self.meta["num_frames"]), list(self.meta["frame_indices"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise _broken(self.path, f"unreadable meta.json ({type(e).__name__})") from None
        self._landmarks = None

    @property
    def video_id(self) -> str:
        return self.meta["video_id"]

    @property
    def identity(self) -> str:
        return self.meta["identity"]

    @property
    def split(self) -> str:
        return self.meta.get("split", "train")

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def frame_indices(self) -> list[int]:
        """Index of each stored frame in the source video."""
        return self.meta["frame_indices"]

    @property
    def landmarks(self) -> np.ndarray:
        """(F, 68, 2) float32 in crop pixels (at `resolution`)."""
        if self._landmarks is None:
            try:
                lm = np.load(self.path / "landmarks.npy")
            except (OSError, ValueError, EOFError) as e:
                raise _broken(self.path, f"unreadable landmarks.npy ({type(e).__name__})") from None
            if lm.shape != (len(self), 68, 2):
                raise _broken(self.path, f"landmarks.npy has shape {lm.shape}, expected {(len(self), 68, 2)}")
            self._landmarks = lm
        return self._landmarks

    @property
    def boxes(self) -> np.ndarray:
        """(F, 3) float32 crop box (cx, cy, side) of each frame in source pixels."""
        return np.load(self.path / "boxes.npy")

    def __len__(self) -> int:
        return int(self.meta["num_frames"])

    def frame_path(self, i: int) -> Path:
        return self.path / "frames" / f"{self.frame_indices[i]:06d}.{self.meta.get('image_format', 'jpg')}"

    def frame(self, i: int, size: int | None = None) -> np.ndarray:
        """The i-th stored frame (0 <= i < len) as (S, S, 3) uint8 RGB, optionally resized to size."""
        path = self.frame_path(i)
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if size is not None and size != im.size[0]:
                    im = im.resize((size, size), Image.BICUBIC)
                return np.array(im)  # writable (np.asarray of a PIL image is read-only)
        except (OSError, SyntaxError, ValueError) as e:  # missing, cut or not an image (PIL raises OSError)
            raise _broken(self.path, f"cannot read frame {path.name} ({type(e).__name__})") from None

    def points(self, i: int, size: int | None = None) -> np.ndarray:
        """(68, 2) landmarks of the i-th frame in pixels of a size×size crop."""
        p = self.landmarks[i].astype(np.float32)
        if size is not None and size != self.resolution:
            s = size / self.resolution
            p = (p + 0.5) * s - 0.5
        return p

    def landmark_image(self, i: int, size: int | None = None) -> np.ndarray:
        """(S, S, 3) uint8 landmark image y(t) of the i-th frame."""
        size = size or self.resolution
        return np.array(rasterize(self.points(i, size), size))  # writable, like frame()

    def pair(self, i: int, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): frame and landmark image as (3, S, S) float32 in [-1, 1]."""
        size = size or self.resolution
        return from_uint8(self.frame(i, size)), from_uint8(self.landmark_image(i, size))


def read_manifest(root) -> dict:
    root = Path(root)
    p = root / "manifest.json"
    if not p.exists():
        raise TalkingHeadError(f"no manifest.json in {root}; run `talkinghead preprocess ... --out {root}` first")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise TalkingHeadError(f"corrupt manifest {p}: {e}") from None


class EpisodeDataset(Dataset):
    """Episodes of K shots + 1 target from one video (paper §3.2).

    Item: {"shots_x": (K, 3, S, S), "shots_y": (K, 3, S, S), "target_x": (3, S, S), "target_y": (3, S, S)}
    float32 in [-1, 1] (y = landmark images), and "video_index": int64 scalar, the video's row in the
    discriminator's W: its position among this split's videos in manifest order (sorted by video id), stable
    across runs as long as the manifest holds the same videos.

    Length = num_videos × episodes_per_video; item n is an episode of video n % num_videos. The K+1 frames
    are distinct and drawn by a generator seeded from (seed, epoch, n): reproducible, different every epoch
    (call `set_epoch`, as with DistributedSampler), and independent of DataLoader workers. Videos with fewer
    than K+1 frames are left out (they would need repeats; listed in `excluded`). Distribute with
    DistributedSampler as usual. group_by="group" makes one W row per manifest group instead of per shard
    (VoxCeleb: the YouTube video `id/video`, its clips pooled), as the paper's "video".

    warp: also give what the warp-guided generator needs (DESIGN.md §2): "source_index" (the shot nearest the
    target in pose, whose texture is warped), "coarse_grid" (S, S, 2), the classical landmark flow from the
    target's landmarks to that shot's (computed here, in the loader's workers), and "target_points" (68, 2).
    random_source: the probability that an episode's texture shot is one of its K shots drawn at random
    instead of the nearest in pose. The nearest shot needs only small corrections; a random one is what a
    user's single photo is to the driving frames (any head pose, the mouth closed while the driver's opens),
    so the generator is asked to fill what the photo cannot show (docs/experiments.md: 5,166 steps at 0.5
    changed nothing yet).

    verify: check every shard of the split on disk first (`verify_shard`: meta, every frame file, landmarks;
    file headers and a directory listing per shard), so a broken shard is a one-line TalkingHeadError here
    rather than a traceback in a DataLoader worker mid-training.
    """

    def __init__(self, root, shots: int, split: str | None = "train", image_size: int | None = None,
                 episodes_per_video: int = 1, seed: int = 0, min_frames: int | None = None,
                 group_by: str = "video", verify: bool = True, warp: bool = False,
                 random_source: float = 0.0):
        self.root = Path(root)
        self.shots = int(shots)
        if self.shots < 1:
            raise ValueError("shots must be >= 1")
        if group_by not in ("video", "group"):
            raise ValueError("group_by must be 'video' (one W row per shard) or 'group' (per manifest group, "
                             "e.g. a VoxCeleb YouTube video made of several clips)")
        manifest = read_manifest(self.root)
        entries = [e for e in manifest.get("videos", []) if split is None or e.get("split", "train") == split]
        # units of W: one shard each, or all shards of one group (frames drawn across its clips)
        units: dict[str, list[dict]] = {}
        for e in sorted(entries, key=lambda e: e["video_id"]):
            key = e["video_id"] if group_by == "video" else e.get("group") or e["video_id"]
            units.setdefault(key, []).append(e)
        need = self.shots + 1 if min_frames is None else int(min_frames)
        self.excluded = [k for k, es in units.items() if sum(e.get("num_frames", 0) for e in es) < need]
        self.video_ids = sorted(k for k in units if k not in self.excluded)
        if not self.video_ids:
            raise TalkingHeadError(f"no videos with >= {need} frames for split {split!r} in {self.root}")
        self.units = [units[k] for k in self.video_ids]
        self.entries = [e for es in self.units for e in es]
        if verify:
            self._verify()
        self.split = split
        self.group_by = group_by
        self.resolution = int(manifest.get("resolution") or VideoShard(self.root / self.entries[0]["path"]).resolution)
        self.image_size = int(image_size or self.resolution)
        self.episodes_per_video = max(1, int(episodes_per_video))
        self.seed = int(seed)
        self.epoch = 0
        self.warp = bool(warp)
        if not 0.0 <= random_source <= 1.0:
            raise ValueError("random_source is a probability (0 … 1)")
        self.random_source = float(random_source)
        self._shards: dict[str, VideoShard] = {}

    def _verify(self) -> None:
        broken = [(e["path"], p) for e in self.entries if (p := verify_shard(self.root / e["path"], full=False))]
        if broken:
            more = f" (and {len(broken) - 1} more broken shards)" if len(broken) > 1 else ""
            raise TalkingHeadError(f"broken shard {broken[0][0]}: {broken[0][1]}{more} in {self.root}; {_REDO}")

    @property
    def num_videos(self) -> int:
        return len(self.units)

    def __len__(self) -> int:
        return self.num_videos * self.episodes_per_video

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _shard(self, entry: dict) -> VideoShard:
        s = self._shards.get(entry["video_id"])
        if s is None:
            s = self._shards[entry["video_id"]] = VideoShard(self.root / entry["path"])
        return s

    def shard(self, video_index: int) -> VideoShard:
        """The (first) shard of video `video_index`."""
        return self._shard(self.units[video_index][0])

    def __getitem__(self, n: int) -> dict:
        if not 0 <= n < len(self):
            raise IndexError(n)
        v = n % self.num_videos
        shards = [self._shard(e) for e in self.units[v]]
        sizes = np.array([len(sh) for sh in shards])
        rng = np.random.default_rng([self.seed, self.epoch, n])
        picks = rng.choice(int(sizes.sum()), size=self.shots + 1, replace=False)
        starts = np.cumsum(sizes) - sizes
        s = self.image_size
        frames = []  # (shard, frame position in it) of the K shots and the target
        for p in picks:
            k = int(np.searchsorted(starts, p, side="right") - 1)
            frames.append((shards[k], int(p - starts[k])))
        xs, ys = zip(*(sh.pair(i, s) for sh, i in frames))
        item = {
            "shots_x": torch.stack(xs[:-1]),  # (K, 3, S, S)
            "shots_y": torch.stack(ys[:-1]),  # (K, 3, S, S)
            "target_x": xs[-1],  # (3, S, S)
            "target_y": ys[-1],  # (3, S, S)
            "video_index": torch.tensor(v, dtype=torch.int64),
        }
        if self.warp:
            pts = np.stack([sh.points(i, s) for sh, i in frames])  # (K+1, 68, 2) crop pixels
            src = None  # the nearest shot in pose; no draw at random_source 0: the same episodes
            if self.random_source > 0 and rng.random() < self.random_source:
                src = [int(rng.integers(self.shots))]
            index, grids = texture_sources(pts[:-1], pts[-1:], s, index=src)  # (1,), (1, S, S, 2)
            item.update(source_index=index[0], coarse_grid=grids[0],  # (), (S, S, 2)
                        target_points=torch.from_numpy(pts[-1].astype(np.float32)))
        return item

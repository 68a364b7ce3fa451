"""Crops around the eyes for the eyelid generator (DESIGN.md §2, "What the photo cannot show").

When the driver closes an eye that the photo shows open, the warp squashes the photo's iris into the driving
slit; what should be there is the lid's skin. A crop is a square centred on one eye's six points, levelled by
its corners, its side `scale` × the corners' distance; the left eye (42-47) is mirrored so that every crop
shows a right eye (36-41). The hole is the union of the target's eye opening and the reference's (its own
crop's coordinates are the target's: both are normalised by the eye's corners), grown by `dilate` pixels:
whatever either the photo or the driver shows of the eye is regenerated.

* ``eye_transform(points, eye, size, scale)``: the (2, 3) affine map frame pixels -> crop pixels.
* ``eye_openness(points)``: the eye aspect ratio (EAR) of each eye.
* ``shard_eyes(shard, ...)``: every frame's two eye crops (``ShardEyes``), cacheable like data/regions.py's.
* ``EyeCropDataset``: the item layout of data/regions.MouthCropDataset, closing eyes oversampled and open
  references, as a photo's eyes usually are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from talkinghead.data.dataset import VideoShard
from talkinghead.data.regions import apply_transform, cut_crop, load_shards
from talkinghead.landmarks.rasterize import rasterize
from talkinghead.media.images import from_uint8

EYES = ((36, 39), (42, 45))  # (outer-or-inner corner, the other corner) of the right and left eye
RING = (tuple(range(36, 42)), tuple(range(42, 48)))  # each eye's contour
LIDS = (((37, 41), (38, 40)), ((43, 47), (44, 46)))  # upper / lower lid point pairs


def eye_transform(points: np.ndarray, eye: int, size: int, scale: float = 2.4) -> np.ndarray:
    """(68, 2) frame pixels -> (2, 3) float64 affine M, crop = M·[x y 1]: the crop centred on eye `eye`'s six
    points (0 right, 1 left), its corners level, side = scale × their distance mapped to `size` pixels; the
    left eye mirrored left-right, so its outer corner (45) lands on the crop's left as the right eye's (36)."""
    p = np.asarray(points, np.float64)
    a, b = EYES[eye]
    d = p[b] - p[a]  # the corners' line, pointing right in the image
    dist = max(float(np.hypot(*d)), 1e-3)
    c, s = d / dist
    rot = (size / (scale * dist)) * np.array([[c, s], [-s, c]])  # rotation by −θ, then scale
    if eye == 1:
        rot = np.diag([-1.0, 1.0]) @ rot  # mirrored
    centre = p[list(RING[eye])].mean(axis=0)
    t = (size / 2 - 0.5) - rot @ centre
    return np.concatenate([rot, t[:, None]], axis=1)


def eye_openness(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (..., 2) eye aspect ratio of the right and left eye: the lids' mean gap over the
    corners' distance."""
    p = np.asarray(points, np.float64)
    out = []
    for (a, b), pairs in zip(EYES, LIDS):
        gap = np.mean([np.linalg.norm(p[..., u, :] - p[..., v, :], axis=-1) for u, v in pairs], axis=0)
        out.append(gap / np.maximum(np.linalg.norm(p[..., b, :] - p[..., a, :], axis=-1), 1e-3))
    return np.stack(out, axis=-1)


def polygon_mask(polygons, size: int, dilate: int = 2, supersample: int = 4) -> np.ndarray:
    """(K, 2) polygons in crop pixels -> (size, size) uint8 {0, 1}: their union (pixels at least half
    covered), grown by `dilate` pixels (a 3×3 dilation each)."""
    ss = supersample
    im = Image.new("L", (size * ss, size * ss))
    draw = ImageDraw.Draw(im)
    for poly in polygons:
        draw.polygon([tuple(q) for q in (np.asarray(poly, np.float64) + 0.5) * ss], fill=255, outline=255)
    cover = np.asarray(im, np.float32).reshape(size, ss, size, ss).mean(axis=(1, 3)) / 255.0
    mask = (cover >= 0.5).astype(np.uint8)
    if dilate > 0:
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=int(dilate))
    return mask


def eye_ring(points: np.ndarray, eye: int) -> np.ndarray:
    """(6, 2) the eye's contour among crop-pixel landmarks (68, 2) of its own crop."""
    return np.asarray(points, np.float64)[list(RING[eye])]


@dataclass
class ShardEyes:
    """Every frame of one shard as two eye crops (index 0 right, 1 left, mirrored)."""

    video_id: str
    identity: str
    crops: np.ndarray  # (F, 2, s, s, 3) uint8 real pixels
    lips: np.ndarray  # (F, 2, s, s, 3) uint8 landmark image in the crop (all 68 points)
    rings: np.ndarray  # (F, 2, 6, 2) float32 each eye's contour in its crop's pixels
    openness: np.ndarray  # (F, 2) float32 eye aspect ratio

    ARRAYS = ("crops", "lips", "rings", "openness")

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, video_id=self.video_id, identity=self.identity, **{k: getattr(self, k) for k in self.ARRAYS})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ShardEyes":
        with np.load(path) as z:
            return cls(str(z["video_id"]), str(z["identity"]), *(z[k] for k in cls.ARRAYS))


def eye_crop(frame: np.ndarray, points: np.ndarray, eye: int, size: int, scale: float):
    """One eye of a frame: (crop (s, s, 3), landmark image (s, s, 3) uint8, ring (6, 2), M (2, 3))."""
    m = eye_transform(points, eye, size, scale)
    p = apply_transform(m, points)
    return cut_crop(frame, m, size), rasterize(p, size), eye_ring(p, eye), m


def shard_eyes(shard: VideoShard, size: int, scale: float = 2.4) -> ShardEyes:
    n = len(shard)
    crops, lips = np.zeros((n, 2, size, size, 3), np.uint8), np.zeros((n, 2, size, size, 3), np.uint8)
    rings = np.zeros((n, 2, 6, 2), np.float32)
    for i in range(n):
        frame, pts = shard.frame(i), shard.points(i)
        for e in (0, 1):
            crops[i, e], lips[i, e], rings[i, e], _ = eye_crop(frame, pts, e, size, scale)
    ear = eye_openness(np.stack([shard.points(i) for i in range(n)])).astype(np.float32)  # (F, 2)
    return ShardEyes(shard.video_id, shard.identity, crops, lips, rings, ear)


def load_eyes(root, split: str | None, size: int, scale: float = 2.4, cache_dir=None) -> list[ShardEyes]:
    """`shard_eyes` of every shard of `split` (manifest order), read from / written to `cache_dir` if given."""
    cache = Path(cache_dir) / f"eyes_s{size}_c{scale:g}" if cache_dir else None
    return load_shards(root, split, cache, lambda sh: shard_eyes(sh, size, scale), ShardEyes.load)


class EyeCropDataset(Dataset):
    """Eye crops for the eyelid generator (DESIGN.md §2), items as data/regions.MouthCropDataset's ("crop",
    "mask", "blanked", "lips", "ref", "ref_lips", "openness", "index").

    A flat index runs over (frame, eye). Targets: closing eyes (EAR below `closing` × their video's median)
    drawn `closing_weight` times as often; references: the same person's same eye, open (EAR at least
    `open_ref` × its video's median) when there is one. The hole: the union of both openings, grown by
    `dilate`. Reproducible per (seed, epoch, n) like data/dataset.py.
    """

    def __init__(self, videos: list[ShardEyes], length: int | None = None, seed: int = 0,
                 closing: float = 0.6, closing_weight: float = 8.0, open_ref: float = 0.9, dilate: int = 2,
                 flip: bool = False):
        self.videos, self.dilate = videos, int(dilate)
        sizes = np.array([2 * len(v.crops) for v in videos])
        self.video_of = np.repeat(np.arange(len(videos)), sizes)  # (N,)
        self.item_of = np.concatenate([np.arange(k) for k in sizes])  # (N,): 2·frame + eye
        rel = np.concatenate([(v.openness / np.maximum(np.median(v.openness, axis=0), 1e-3)).reshape(-1)
                              for v in videos])  # (N,) EAR over its video's median, per eye
        self.relative = rel
        self.closing = rel < closing
        w = np.where(self.closing, float(closing_weight), 1.0)
        self.weights = w / w.sum()
        identities = sorted({v.identity for v in videos})
        person = np.array([identities.index(videos[v].identity) for v in self.video_of])
        eye = self.item_of % 2
        self.group_of = person * 2 + eye  # (N,) the same person's same eye
        self.members = {g: np.flatnonzero(self.group_of == g) for g in np.unique(self.group_of)}
        self.open_members = {g: m[rel[m] >= open_ref] for g, m in self.members.items()}
        self.identities = identities
        self.length = int(length or len(self.video_of))
        self.seed, self.epoch, self.flip = int(seed), 0, bool(flip)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def draw(self, n: int) -> tuple[int, int, bool]:
        rng = np.random.default_rng([self.seed, self.epoch, n])
        t = int(rng.choice(len(self.weights), p=self.weights))
        g = self.group_of[t]
        pool = self.open_members[g]
        pool = pool[pool != t] if len(pool[pool != t]) else self.members[g][self.members[g] != t]
        r = int(rng.choice(pool)) if len(pool) else t
        return t, r, bool(self.flip and rng.random() < 0.5)

    def arrays(self, k: int):
        """(crop, lips, ring, openness) of flat index k."""
        v = self.videos[self.video_of[k]]
        f, e = divmod(int(self.item_of[k]), 2)
        return v.crops[f, e], v.lips[f, e], v.rings[f, e], float(v.openness[f, e])

    def pair(self, t: int, r: int) -> dict:
        """The item of target t with reference r (no mirroring)."""
        (crop, lips, ring, ear), (ref, ref_lips, ref_ring, _) = self.arrays(t), self.arrays(r)
        size = crop.shape[0]
        mask = torch.from_numpy(polygon_mask([ring, ref_ring], size, self.dilate).astype(np.float32))[None]
        crop_t = from_uint8(crop)
        return {"crop": crop_t, "mask": mask, "blanked": crop_t * (1 - mask), "lips": from_uint8(lips),
                "ref": from_uint8(ref), "ref_lips": from_uint8(ref_lips), "openness": torch.tensor(ear),
                "index": torch.tensor([t, r], dtype=torch.int64)}

    def __getitem__(self, n: int) -> dict:
        if not 0 <= n < self.length:
            raise IndexError(n)
        t, r, flip = self.draw(n)
        item = self.pair(t, r)
        if flip:  # a vertical flip would turn lids upside down: mirror left-right only
            for k in ("crop", "mask", "blanked", "lips", "ref", "ref_lips"):
                item[k] = item[k].flip(-1)
        return item

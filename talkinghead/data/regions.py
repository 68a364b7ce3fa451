"""Crops around the mouth for the mouth-interior generator (DESIGN.md §2, "What the photo cannot show").

A crop is a square centred on the outer lips, rotated so that the mouth corners (points 48, 54) lie level,
its side `scale` × the corners' distance, resampled to `size`². In it: the hole (the inner-lip polygon 60-67,
grown by `dilate` pixels), the landmark image of paper §3.1 drawn in the crop's pixels, and the real pixels.

* ``crop_transform(points, size, scale)``: the (2, 3) affine map frame pixels -> crop pixels.
* ``hole_mask(points, size, dilate)``, ``openness(points)``: the hole and how far the lips are apart.
* ``shard_crops(shard, ...)``: every frame of a preprocessed shard as crops (``ShardCrops``), cacheable.
* ``MouthCropDataset``: items {blanked crop, hole mask, lip image, real crop, the person's own other crop and,
  with a teeth bank, the crop with another person's mouth pasted in} with open mouths oversampled;
  deterministic per (seed, epoch, index) like data/dataset.py.
* ``warped_crops(ds, items)``: the classical landmark warp's crop of the same items (the baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from talkinghead.data.dataset import VideoShard, read_manifest
from talkinghead.errors import TalkingHeadError
from talkinghead.landmarks.rasterize import rasterize
from talkinghead.landmarks.warp import warp_field
from talkinghead.media.images import from_uint8

CORNERS = (48, 54)  # iBUG mouth corners
OUTER = slice(48, 60)
INNER = slice(60, 68)
GAPS = ((61, 67), (62, 66), (63, 65))  # upper / lower inner-lip point pairs


def crop_transform(points: np.ndarray, size: int, scale: float = 1.9) -> np.ndarray:
    """(68, 2) frame pixels -> (2, 3) float64 affine M, crop = M·[x y 1]: the crop's centre on the outer lips'
    mean, the corners level, side = scale × the corners' distance mapped to `size` pixels (centres at k)."""
    p = np.asarray(points, np.float64)
    d = p[CORNERS[1]] - p[CORNERS[0]]
    dist = max(float(np.hypot(*d)), 1e-3)
    c, s = d / dist  # cos θ, sin θ of the corners' line
    k = size / (scale * dist)
    rot = k * np.array([[c, s], [-s, c]])  # rotation by −θ, then scale
    centre = p[OUTER].mean(axis=0)
    t = (size / 2 - 0.5) - rot @ centre
    return np.concatenate([rot, t[:, None]], axis=1)


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2, 3) affine applied to (..., 2) points."""
    return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


def cut_crop(frame: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) image -> (size, size, 3) of its dtype through the affine `m`; blurred first when it shrinks (only
    the window the crop samples, grown by the blur's reach: the same pixels as blurring the whole frame)."""
    shrink = 1.0 / float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # frame pixels per crop pixel
    if shrink > 1.2:
        sigma = 0.45 * shrink
        h, w = frame.shape[:2]
        corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
        m_inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        back = corners @ m_inv[:, :2].T + m_inv[:, 2]  # (4, 2) the crop's corners in the frame
        reach = int(np.ceil(4 * sigma)) + 2  # cv2's kernel radius for this sigma (4σ for float, 3σ for uint8) + 2
        x0, y0 = np.floor(back.min(axis=0)).astype(int) - reach
        x1, y1 = np.ceil(back.max(axis=0)).astype(int) + reach + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies off the frame: the whole frame, as before
            x0, y0, x1, y1 = 0, 0, w, h
        frame = cv2.GaussianBlur(np.ascontiguousarray(frame[y0:y1, x0:x1]), (0, 0), sigma)
        m = m.copy()
        m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # window pixels -> crop, as m maps frame pixels
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def hole_mask(points: np.ndarray, size: int, dilate: int = 1, supersample: int = 4) -> np.ndarray:
    """(68, 2) crop pixels -> (size, size) uint8 {0, 1}: the inner-lip polygon (pixels at least half
    covered), grown by `dilate` pixels (a 3×3 dilation each)."""
    ss = supersample
    im = Image.new("L", (size * ss, size * ss))
    poly = [tuple(q) for q in (np.asarray(points, np.float64)[INNER] + 0.5) * ss]
    ImageDraw.Draw(im).polygon(poly, fill=255, outline=255)
    cover = np.asarray(im, np.float32).reshape(size, ss, size, ss).mean(axis=(1, 3)) / 255.0
    mask = (cover >= 0.5).astype(np.uint8)
    if dilate > 0:
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=int(dilate))
    return mask


def mouth_inputs(image: np.ndarray, points: np.ndarray, cfg, bank=None, photo_lips=None) -> tuple:
    """What the mouth generator sees of one image: `image` (H, W, 3) float32 in [-1, 1], `points` (68, 2) in its
    pixels, cfg a RegionConfig -> (crop (s, s, 3) float32 in [-1, 1], hole mask (s, s) uint8, landmark image
    (s, s, 3) uint8, M (2, 3) image -> crop, base (s, s, 3) float32 in [-1, 1] or None): with a teeth bank
    (data/teeth_bank.py) the hole starts from its nearest mouth in the photo's lip colour `photo_lips` (3,)."""
    from talkinghead.landmarks.rasterize import rasterize

    s = cfg.crop_size
    m = crop_transform(points, s, cfg.crop_scale)
    pc = apply_transform(m, points)
    crop = cut_crop(image, m, s)
    base = None
    if bank is not None:
        base = (bank.base((crop + 1) * 127.5, pc, photo_lips) / 127.5 - 1).astype(np.float32)
    return crop, hole_mask(pc, s, cfg.dilate), rasterize(pc, s), m, base


def openness(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (...,) inner-lip gap (mean of three upper/lower pairs) / the corners' distance."""
    p = np.asarray(points, np.float64)
    gap = np.mean([np.linalg.norm(p[..., a, :] - p[..., b, :], axis=-1) for a, b in GAPS], axis=0)
    width = np.linalg.norm(p[..., CORNERS[1], :] - p[..., CORNERS[0], :], axis=-1)
    return gap / np.maximum(width, 1e-3)


@dataclass
class ShardCrops:
    """Every frame of one shard as mouth crops."""

    video_id: str
    identity: str
    crops: np.ndarray  # (F, s, s, 3) uint8 real pixels
    masks: np.ndarray  # (F, s, s) uint8 {0, 1} hole
    lips: np.ndarray  # (F, s, s, 3) uint8 landmark image in the crop
    points: np.ndarray  # (F, 68, 2) float32 crop pixels
    transforms: np.ndarray  # (F, 2, 3) float32 shard-frame pixels -> crop pixels
    openness: np.ndarray  # (F,) float32

    ARRAYS = ("crops", "masks", "lips", "points", "transforms", "openness")

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, video_id=self.video_id, identity=self.identity, **{k: getattr(self, k) for k in self.ARRAYS})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ShardCrops":
        with np.load(path) as z:
            return cls(str(z["video_id"]), str(z["identity"]), *(z[k] for k in cls.ARRAYS))


def shard_crops(shard: VideoShard, size: int, scale: float = 1.9, dilate: int = 1) -> ShardCrops:
    """Cuts the mouth crop, hole and lip image of every frame of `shard` (at the shard's resolution)."""
    n = len(shard)
    crops, lips = np.zeros((n, size, size, 3), np.uint8), np.zeros((n, size, size, 3), np.uint8)
    masks, pts = np.zeros((n, size, size), np.uint8), np.zeros((n, 68, 2), np.float32)
    ms = np.zeros((n, 2, 3), np.float32)
    for i in range(n):
        m = crop_transform(shard.points(i), size, scale)
        p = apply_transform(m, shard.points(i))
        crops[i] = cut_crop(shard.frame(i), m, size)
        masks[i], lips[i], pts[i], ms[i] = hole_mask(p, size, dilate), rasterize(p, size), p, m
    return ShardCrops(shard.video_id, shard.identity, crops, masks, lips, pts, ms, openness(pts).astype(np.float32))


def load_shards(root, split: str | None, cache, make, load) -> list:
    """`make(VideoShard)` of every shard of `split` (manifest order); with a `cache` folder each result is
    read from / written to CACHE/VIDEO_ID.npz (`load(path)`, `result.save(path)`)."""
    root = Path(root)
    entries = [e for e in read_manifest(root).get("videos", []) if split is None or e.get("split", "train") == split]
    if not entries:
        raise TalkingHeadError(f"no videos of split {split!r} in {root}")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
    out = []
    for e in sorted(entries, key=lambda e: e["video_id"]):
        path = Path(cache) / f"{e['video_id']}.npz" if cache else None
        if path is not None and path.exists():
            out.append(load(path))
            continue
        item = make(VideoShard(root / e["path"]))
        if path is not None:
            item.save(path)
        out.append(item)
    return out


def load_crops(root, split: str | None, size: int, scale: float = 1.9, dilate: int = 1,
               cache_dir=None) -> list[ShardCrops]:
    """`shard_crops` of every shard of `split` (manifest order), read from / written to `cache_dir` if given."""
    cache = Path(cache_dir) / f"s{size}_c{scale:g}_d{dilate}" if cache_dir else None
    return load_shards(root, split, cache, lambda sh: shard_crops(sh, size, scale, dilate), ShardCrops.load)


class MouthCropDataset(Dataset):
    """Mouth crops for the region generator (DESIGN.md §2).

    Item (float32 in [-1, 1] unless said): "crop" (3, s, s) real pixels (the target), "mask" (1, s, s) {0, 1}
    the hole, "blanked" (3, s, s) the crop with the hole set to 0, "lips" (3, s, s) the landmark image,
    "ref" / "ref_lips" (3, s, s) another frame of the same person (any of its videos; the frame itself when it
    has one only), "openness" () and "index" (2,) int64 the flat frame indices of the target and the reference.

    Length `length` (default: the number of frames); item n draws its target with open mouths (openness >
    open_threshold) `open_weight` times as likely (open_only: open mouths only) and its reference uniformly,
    from a generator seeded by (seed, epoch, n): reproducible, new every epoch (`set_epoch`). flip: mirror the
    item's crops with probability ½ (the same draw for all its images).
    """

    def __init__(self, videos: list[ShardCrops], length: int | None = None, seed: int = 0,
                 open_weight: float = 4.0, open_threshold: float = 0.08, open_only: bool = False,
                 flip: bool = False, bank=None):
        self.videos, self.bank = videos, bank
        sizes = np.array([len(v.crops) for v in videos])
        self.video_of = np.repeat(np.arange(len(videos)), sizes)  # (N,)
        self.frame_of = np.concatenate([np.arange(k) for k in sizes])  # (N,)
        self.open = np.concatenate([v.openness for v in videos]) > open_threshold  # (N,)
        w = np.where(self.open, float(open_weight), 1.0)
        if open_only:
            w = self.open.astype(np.float64)
            if not self.open.any():
                raise TalkingHeadError("no open mouths among these crops")
        self.weights = w / w.sum()
        identities = sorted({v.identity for v in videos})
        self.person_of = np.array([identities.index(videos[v].identity) for v in self.video_of])  # (N,)
        self.frames_of_person = [np.flatnonzero(self.person_of == k) for k in range(len(identities))]
        self.identities = identities
        self.length = int(length or len(self.video_of))
        self.seed, self.epoch, self.flip = int(seed), 0, bool(flip)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def draw(self, n: int) -> tuple[int, int, bool]:
        """(target, reference) flat frame indices and the mirror flag of item n."""
        rng = np.random.default_rng([self.seed, self.epoch, n])
        t = int(rng.choice(len(self.weights), p=self.weights))
        same = self.frames_of_person[self.person_of[t]]
        others = same[same != t]
        r = int(rng.choice(others)) if len(others) else t
        return t, r, bool(self.flip and rng.random() < 0.5)

    def arrays(self, k: int) -> ShardCrops:
        """Frame k's arrays (one-frame views of its video's ShardCrops)."""
        v, i = self.video_of[k], self.frame_of[k]
        sc = self.videos[v]
        return ShardCrops(sc.video_id, sc.identity, *(getattr(sc, a)[i] for a in ShardCrops.ARRAYS))

    def base(self, a: ShardCrops, b: ShardCrops) -> torch.Tensor:
        """(3, s, s) in [-1, 1]: target a's crop with the bank's mouth nearest to its inner lips (never of its
        own person) pasted in, colour-matched to reference b's lips (as a photo's at render time)."""
        from talkinghead.data.teeth_bank import lip_colour

        img = self.bank.base(a.crops, a.points, lip_colour(b.crops, b.points), exclude=(a.identity,))
        return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1

    def pair(self, t: int, r: int, flip: bool = False) -> dict:
        """The item of target t with reference r."""
        a, b = self.arrays(t), self.arrays(r)
        crop, lips, ref, ref_lips = (from_uint8(x) for x in (a.crops, a.lips, b.crops, b.lips))  # (3, s, s)
        mask = torch.from_numpy(a.masks.astype(np.float32))[None]  # (1, s, s)
        extra = {"base": self.base(a, b)} if self.bank is not None else {}
        item = {"crop": crop, "mask": mask, "lips": lips, "ref": ref, "ref_lips": ref_lips, **extra}
        if flip:
            item = {k: v.flip(-1) for k, v in item.items()}
        return {**item, "blanked": item["crop"] * (1 - item["mask"]), "openness": torch.tensor(float(a.openness)),
                "index": torch.tensor([t, r], dtype=torch.int64)}

    def __getitem__(self, n: int) -> dict:
        if not 0 <= n < self.length:
            raise IndexError(n)
        t, r, flip = self.draw(n)
        return self.pair(t, r, flip)


def warped_crops(ds: MouthCropDataset, root, items: list[tuple[int, int]], shards: dict | None = None
                 ) -> torch.Tensor:
    """The classical warp's answer for (target, reference) flat indices: the reference's full frame warped
    piecewise-affinely onto the target's landmarks (landmarks/warp.py), then cut as the target's crop ->
    (n, 3, s, s) in [-1, 1]. What the warp-guided G starts from in the hole."""
    root, shards = Path(root), {} if shards is None else shards
    entries = {e["video_id"]: e for e in read_manifest(root)["videos"]}
    out = []
    for t, r in items:
        (vt, it), (vr, ir) = ((ds.videos[ds.video_of[k]].video_id, int(ds.frame_of[k])) for k in (t, r))
        st, sr = (shards.setdefault(v, VideoShard(root / entries[v]["path"])) for v in (vt, vr))
        frame = sr.frame(ir)
        h, w = frame.shape[:2]
        field = warp_field(h, w, sr.points(ir), st.points(it)).astype(np.float32)  # (H, W, 2) target -> ref
        warped = cv2.remap(frame, field[..., 0], field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        m = ds.arrays(t).transforms.astype(np.float64)
        out.append(from_uint8(cut_crop(warped, m, ds.videos[0].crops.shape[1])))
    return torch.stack(out)

"""A teeth bank (Face2Face's mouth retrieval): the inner mouths of other people's training frames, retrieved by
inner-lip shape; pasted into a warped photo it is a no-training baseline for the mouth
(evaluation/baselines.teeth_bank_baseline), and the mouth-interior generator starts from it (``paste_mouth``).

Each entry is an open-mouth frame of a preprocessed training video (a VideoShard): its mouth cut out in a
normalised frame (a similarity that puts the mouth corners 48 and 54 at (∓0.5, 0)), the 8 inner-lip points
60-67 in that frame, the mean colour of its lips (the ring between the outer and inner lip contours), and who
and where it came from. Points are iBUG 0-based, (x, y) pixels with pixel centres at integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from talkinghead.errors import TalkingHeadError

OPEN_GAP = 0.1  # an open mouth: inner-lip gap over the inter-ocular distance at least this
CROP = 64  # side of a stored mouth crop
HALF = 0.8  # a crop spans [-HALF, HALF]² in mouth-width units around the corners' midpoint
MAX_ENTRIES = 2000
INNER = slice(60, 68)
UPPER, LOWER = [61, 62, 63], [67, 66, 65]  # facing points of the inner upper and lower lip


def lip_gap(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (...): mean inner-lip gap (61-63 to 67-65) over the inter-ocular distance (36-45)."""
    p = np.asarray(points, np.float64)
    gap = np.linalg.norm(p[..., UPPER, :] - p[..., LOWER, :], axis=-1).mean(-1)
    return gap / np.linalg.norm(p[..., 36, :] - p[..., 45, :], axis=-1).clip(1e-6)


def mouth_frame(points: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(68, 2) -> (centre (2,), mouth width d, rotation R (2, 2)): u = R (p - centre) / d is the normalised frame."""
    p = np.asarray(points, np.float64)
    a, b = p[48], p[54]
    v = b - a
    d = float(np.linalg.norm(v)) or 1.0
    c, s = v / d
    return (a + b) / 2, d, np.array([[c, s], [-s, c]])


def normalise(points: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks -> (68, 2) in the mouth frame (corners 48/54 at (∓0.5, 0))."""
    centre, d, rot = mouth_frame(points)
    return (np.asarray(points, np.float64) - centre) @ rot.T / d


def to_crop(u: np.ndarray, size: int = CROP) -> np.ndarray:
    """Normalised mouth-frame points (..., 2) -> pixel coordinates of a size² crop."""
    return (np.asarray(u) / (2 * HALF) + 0.5) * size - 0.5


def cut_mouth(image: np.ndarray, points: np.ndarray, size: int = CROP) -> np.ndarray:
    """The normalised mouth crop (size, size, 3) uint8 of an (H, W, 3) uint8 image with landmarks (68, 2)."""
    h, w = image.shape[:2]
    centre, d, rot = mouth_frame(points)
    t = (np.arange(size) + 0.5) / size * 2 * HALF - HALF  # (size,) normalised coordinates of the crop pixels
    uu = np.stack(np.meshgrid(t, t), -1)  # (size, size, 2) (x, y)
    xy = uu @ rot * d + centre  # (size, size, 2) image pixels
    grid = torch.from_numpy(xy * [2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)] - 1.0).float()[None]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def polygon_mask(polygons, size) -> np.ndarray:
    """(H, W) bool: pixel centres inside the first polygon (K, 2) and outside the others (PIL's fill)."""
    h, w = (size, size) if isinstance(size, int) else size
    im = Image.new("L", (w, h))
    draw = ImageDraw.Draw(im)
    for i, poly in enumerate(polygons):
        draw.polygon([tuple(q) for q in np.asarray(poly, np.float64)], fill=255 if i == 0 else 0)
    return np.asarray(im) > 0


def lip_colour(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(3,) mean RGB (0-255) of the lips: inside the outer lip contour 48-59, outside the inner one 60-67."""
    p = np.asarray(points, np.float64)
    ring = polygon_mask([p[48:60], p[60:68]], image.shape[:2])
    if ring.sum() < 4:  # too small to hold lips: the whole mouth box
        ring = polygon_mask([p[48:60]], image.shape[:2])
    if ring.sum() == 0:
        return np.asarray(image, np.float64).reshape(-1, 3).mean(0)
    return np.asarray(image, np.float64)[ring].mean(0)


def farthest_points(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of k rows of x (N, D) chosen greedily far from each other, starting from the one nearest the mean."""
    if len(x) <= k:
        return np.arange(len(x))
    chosen = [int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))]
    d = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(k - 1):
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, ((x - x[i]) ** 2).sum(1))
    return np.sort(np.array(chosen))


@dataclass
class TeethBank:
    """N inner mouths of training frames, queried by inner-lip shape."""

    crops: np.ndarray  # (N, C, C, 3) uint8 normalised mouth crops
    shapes: np.ndarray  # (N, 8, 2) float32 inner lips 60-67 in the mouth frame
    lips: np.ndarray  # (N, 3) float32 mean lip colour (0-255)
    identity: np.ndarray  # (N,) str
    video: np.ndarray  # (N,) str
    frame: np.ndarray  # (N,) int: the stored-frame position in its shard

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def crop_size(self) -> int:
        return int(self.crops.shape[1])

    def query(self, shape: np.ndarray, exclude=(), k: int = 1) -> np.ndarray:
        """The k entries nearest to an inner-lip shape (8, 2) in the mouth frame, nearest first (k,) int,
        among those whose identity and video are not in `exclude` (a name or names); fewer when fewer remain."""
        exclude = {exclude} if isinstance(exclude, str) else {str(e) for e in exclude if e is not None}
        ok = ~(np.isin(self.identity, list(exclude)) | np.isin(self.video, list(exclude)))  # (N,)
        idx = np.flatnonzero(ok)
        d = ((self.shapes[idx] - np.asarray(shape, np.float32)[None]) ** 2).sum((1, 2))  # (M,)
        return idx[np.argsort(d, kind="stable")[:k]]

    @classmethod
    def of_generator(cls, G) -> "TeethBank":
        """The bank a mouth-interior generator (nn/regions.py) keeps in its buffers (who and where unknown)."""
        n = int(G.bank_crops.shape[0])
        return cls(G.bank_crops.cpu().numpy(), G.bank_shapes.float().cpu().numpy(), G.bank_lips.float().cpu().numpy(),
                   np.full(n, "", dtype=str), np.full(n, "", dtype=str), np.zeros(n, np.int64))

    def into_generator(self, G) -> None:
        """Copies the bank into a generator's buffers (its cfg.teeth_bank entries of cfg.teeth_bank_crop²)."""
        if tuple(G.bank_crops.shape) != tuple(self.crops.shape):
            raise TalkingHeadError(f"a bank of {self.crops.shape} does not fit the generator's {tuple(G.bank_crops.shape)}")
        with torch.no_grad():
            G.bank_crops.copy_(torch.from_numpy(self.crops))
            G.bank_shapes.copy_(torch.from_numpy(self.shapes.astype(np.float32)))
            G.bank_lips.copy_(torch.from_numpy(self.lips.astype(np.float32)))

    def base(self, crop: np.ndarray, points: np.ndarray, photo_lips: np.ndarray, exclude=()) -> np.ndarray:
        """(H, W, 3) float 0-255: `crop` (uint8 or float 0-255) with the entry nearest to its inner lips (points
        (68, 2)) pasted in, colour-matched to `photo_lips` (3,); the crop itself when no entry is left."""
        idx = self.query(normalise(points)[INNER], exclude, 1)
        if not len(idx):
            return np.asarray(crop, np.float64)
        return paste_mouth(crop, points, self, int(idx[0]), lip_gain(photo_lips, self.lips[idx[0]]))

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to another suffix
            np.savez_compressed(f, crops=self.crops, shapes=self.shapes, lips=self.lips,
                                identity=self.identity.astype(str), video=self.video.astype(str), frame=self.frame)
        return path

    @classmethod
    def load(cls, path) -> "TeethBank":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["crops"], z["shapes"], z["lips"], z["identity"], z["video"], z["frame"])
        except (OSError, ValueError, KeyError) as e:
            raise TalkingHeadError(f"cannot read the teeth bank {path}: {type(e).__name__}: {e}") from None

    @classmethod
    def from_frames(cls, frames, size: int = CROP) -> "TeethBank":
        """From (image (H, W, 3) uint8, points (68, 2), identity, video, frame) tuples (open mouths only)."""
        rows = list(frames)
        if not rows:
            raise TalkingHeadError("no open-mouth frames to build a teeth bank from")
        crops = np.stack([cut_mouth(im, p, size) for im, p, *_ in rows])
        shapes = np.stack([normalise(p)[INNER] for _, p, *_ in rows]).astype(np.float32)
        lips = np.stack([lip_colour(im, p) for im, p, *_ in rows]).astype(np.float32)
        ids, vids, fr = zip(*[r[2:5] for r in rows])
        return cls(crops, shapes, lips, np.array(ids, str), np.array(vids, str), np.array(fr, np.int64))


def build_teeth_bank(data, split: str = "train", max_entries: int = MAX_ENTRIES, open_gap: float = OPEN_GAP,
                     size: int = CROP) -> TeethBank:
    """A bank from a preprocessed folder's shards of `split` (its manifest): every frame whose inner-lip gap is
    at least open_gap is a candidate; at most max_entries of them are kept, spread over inner-lip shapes."""
    from talkinghead.data.dataset import VideoShard, read_manifest

    root = Path(data)
    shards = [VideoShard(root / e["path"]) for e in read_manifest(root)["videos"] if e.get("split") == split]
    cand = []  # (shard, position, normalised inner lips (8, 2))
    for sh in shards:
        lm = sh.landmarks
        for i in np.flatnonzero(lip_gap(lm) >= open_gap):
            cand.append((sh, int(i), normalise(lm[i])[INNER]))
    if not cand:
        raise TalkingHeadError(f"no {split} frame of {root} has an open mouth (inner-lip gap >= {open_gap:g})")
    keep = farthest_points(np.stack([c[2].ravel() for c in cand]), max_entries)
    rows = ((sh.frame(i), sh.points(i), sh.identity, sh.video_id, i) for sh, i, _ in (cand[j] for j in keep))
    return TeethBank.from_frames(rows, size)


def fan_map(target: np.ndarray, source: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Piecewise-affine map of points xy (N, 2) from the fan of triangles (centre, t_i, t_i+1) over the polygon
    `target` (K, 2) to the same fan over `source` (K, 2); a point outside the fan uses its nearest triangle."""
    t = np.concatenate([target, target.mean(0, keepdims=True)])  # (K+1, 2), the centre last
    s = np.concatenate([source, source.mean(0, keepdims=True)])
    k = len(target)
    tri = np.array([[k, i, (i + 1) % k] for i in range(k)])  # (K, 3)
    a, b, c = t[tri[:, 0]], t[tri[:, 1]], t[tri[:, 2]]  # (K, 2) each
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # (K,)
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)
    r = xy[:, None, :] - a[None]  # (N, K, 2)
    l1 = (r[..., 0] * e2[:, 1] - r[..., 1] * e2[:, 0]) / det  # (N, K)
    l2 = (e1[:, 0] * r[..., 1] - e1[:, 1] * r[..., 0]) / det
    bary = np.stack([1 - l1 - l2, l1, l2], -1)  # (N, K, 3)
    best = bary.min(-1).argmax(1)  # (N,) the triangle each point is most inside
    w = bary[np.arange(len(xy)), best]  # (N, 3)
    return np.einsum("nj,njd->nd", w, s[tri[best]])  # (N, 2)


def inner_mouth(bank, index: int, target_points: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Entry `index` of the bank warped onto the target's inner-lip contour: (xy (N, 2) int pixel positions,
    rgb (N, 3) float 0-255) for the pixels of the polygon's box, grown by 3 px."""
    h, w = size
    inner = np.asarray(target_points, np.float64)[INNER]  # (8, 2)
    x0, y0 = np.floor(inner.min(0) - 3).clip(0).astype(int)
    x1, y1 = np.minimum(np.ceil(inner.max(0) + 3), [w - 1, h - 1]).astype(int)
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    xy = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)  # (N, 2)
    c = bank.crop_size
    src = fan_map(inner, to_crop(bank.shapes[index].astype(np.float64), c), xy)  # (N, 2) crop pixels
    grid = torch.from_numpy(src * 2.0 / (c - 1) - 1.0).float().view(1, 1, -1, 2)
    crop = torch.from_numpy(bank.crops[index]).permute(2, 0, 1)[None].float()  # (1, 3, C, C)
    rgb = F.grid_sample(crop, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, :, 0].T
    return xy.astype(int), rgb.numpy().astype(np.float64)


def paste_mouth(image: np.ndarray, points: np.ndarray, bank: "TeethBank", index: int, gain: np.ndarray
                ) -> np.ndarray:
    """(H, W, 3) float 0-255 image with the bank's entry `index` warped onto its inner-lip contour (points
    (68, 2)) and multiplied by `gain` (3,) (the photo's lip colour over the entry's), inside the box of the
    contour: the teeth, tongue and cavity a generator refines. Returns a new float64 array."""
    out = np.array(image, np.float64)
    h, w = out.shape[:2]
    xy, rgb = inner_mouth(bank, int(index), points, (h, w))
    out[xy[:, 1], xy[:, 0]] = np.clip(rgb * np.asarray(gain, np.float64), 0, 255)
    return out


def lip_gain(photo_lips: np.ndarray, entry_lips: np.ndarray) -> np.ndarray:
    """(3,) the colour transfer from a bank entry to a photo: the ratio of their mean lip colours, bounded
    to [0.5, 2] (lighting and white balance, keeping the teeth/cavity contrast)."""
    return np.clip(np.asarray(photo_lips, np.float64) / np.maximum(np.asarray(entry_lips, np.float64), 1.0), 0.5, 2.0)

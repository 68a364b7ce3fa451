"""Face crops: square boxes from landmarks (VoxCeleb-style, room for hair and chin), crop/uncrop of points and
pixels, and feathered paste-back of an animated crop into the full frame (DESIGN.md §2, whole-image workflow).

Coordinates: points are in pixels with pixel centres at integers (dlib's convention). A box is its centre
(cx, cy) in those coordinates and its side; it spans [cx - side/2, cx + side/2] in continuous coordinates,
where pixel i covers [i - 0.5, i + 0.5].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from talkinghead.config import CROP_MARGIN, CROP_SHIFT_Y


_PASTE_ROWS = 256  # rows blended at a time by paste_back


@dataclass
class CropTransform:
    """A square box (centre cx, cy and side, in source pixels) resampled to an S×S crop."""

    cx: float
    cy: float
    side: float
    size: int  # S, output side in pixels

    @property
    def scale(self) -> float:
        """Crop pixels per source pixel."""
        return self.size / self.side

    @property
    def box(self) -> np.ndarray:
        """(4,) float32 x0, y0, x1, y1 in continuous source coordinates."""
        h = self.side / 2
        return np.array([self.cx - h, self.cy - h, self.cx + h, self.cy + h], np.float32)

    def to_dict(self) -> dict:
        return {k: float(v) if k != "size" else int(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "CropTransform":
        return cls(cx=float(d["cx"]), cy=float(d["cy"]), side=float(d["side"]), size=int(d["size"]))

    def resized(self, size: int) -> "CropTransform":
        return CropTransform(self.cx, self.cy, self.side, int(size))

    # -- points -------------------------------------------------------------------------------------------
    def points_to_crop(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) source pixels -> crop pixels."""
        pts = np.asarray(pts, np.float32)
        x0, y0 = self.cx - self.side / 2, self.cy - self.side / 2
        s = self.scale
        return np.stack([(pts[..., 0] - x0) * s - 0.5, (pts[..., 1] - y0) * s - 0.5], -1).astype(np.float32)

    def points_to_image(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) crop pixels -> source pixels."""
        pts = np.asarray(pts, np.float32)
        x0, y0 = self.cx - self.side / 2, self.cy - self.side / 2
        s = self.scale
        return np.stack([(pts[..., 0] + 0.5) / s + x0, (pts[..., 1] + 0.5) / s + y0], -1).astype(np.float32)

    # -- pixels -------------------------------------------------------------------------------------------
    def crop(self, image: np.ndarray, pad: str = "edge") -> np.ndarray:
        """(H, W, C) uint8 -> (S, S, C) crop; where the box leaves the image it is padded ("edge" replicates
        the border, "constant" fills zeros). Antialiased when shrinking."""
        h, w = image.shape[:2]
        # box edges in PIL coordinates (pixel i covers [i, i+1))
        ex0, ey0 = self.cx - self.side / 2 + 0.5, self.cy - self.side / 2 + 0.5
        ex1, ey1 = ex0 + self.side, ey0 + self.side
        rx0, ry0 = math.floor(ex0) - 2, math.floor(ey0) - 2
        rx1, ry1 = math.ceil(ex1) + 2, math.ceil(ey1) + 2
        sx0, sy0, sx1, sy1 = max(rx0, 0), max(ry0, 0), min(rx1, w), min(ry1, h)
        if sx0 >= sx1 or sy0 >= sy1:  # box entirely outside the image
            region = np.zeros((ry1 - ry0, rx1 - rx0) + image.shape[2:], image.dtype)
            if pad == "edge":
                cx, cy = min(max(int(self.cx), 0), w - 1), min(max(int(self.cy), 0), h - 1)
                region[...] = image[cy, cx]
        else:
            region = image[sy0:sy1, sx0:sx1]
            padw = ((sy0 - ry0, ry1 - sy1), (sx0 - rx0, rx1 - sx1)) + ((0, 0),) * (image.ndim - 2)
            if any(p for pair in padw for p in pair):
                region = np.pad(region, padw, mode="edge" if pad == "edge" else "constant")
        im = Image.fromarray(np.ascontiguousarray(region))
        out = im.resize((self.size, self.size), Image.BICUBIC,
                        box=(ex0 - rx0, ey0 - ry0, ex1 - rx0, ey1 - ry0))
        return np.asarray(out)

    def paste_back(self, image: np.ndarray, crop: np.ndarray, feather: float = 0.08) -> np.ndarray:
        """Blends an (S', S', 3) crop (any S', e.g. the generator's output) back into a copy of the full frame
        over this box. feather: width of the soft border as a fraction of the crop side (0 = hard edge)."""
        h, w = image.shape[:2]
        out = image.copy()
        crop = np.asarray(crop)
        cs = crop.shape[0]
        x0e, y0e = self.cx - self.side / 2 + 0.5, self.cy - self.side / 2 + 0.5  # PIL edge coordinates
        fx0, fy0 = max(math.floor(x0e), 0), max(math.floor(y0e), 0)
        fx1, fy1 = min(math.ceil(x0e + self.side), w), min(math.ceil(y0e + self.side), h)
        if fx0 >= fx1 or fy0 >= fy1:
            return out
        # the box is axis-aligned: a (antialiased) resize of the crop region covering the frame region; the crop
        # is padded (2 px and one frame pixel's worth, k) so the region may overhang it by up to a frame pixel
        # (masked out below)
        k = cs / self.side  # crop pixels per frame pixel
        pad = 2 + math.ceil(k)
        src = Image.fromarray(np.pad(crop, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
        bx0, by0, bx1 = (fx0 - x0e) * k + pad, (fy0 - y0e) * k + pad, (fx1 - x0e) * k + pad
        # mask: 1 inside, a linear ramp over the feather band at the box border, 0 outside (separable)
        ux = (np.arange(fx0, fx1, dtype=np.float32) + 0.5 - x0e) / self.side  # (fw,) position in the box, 0..1
        uy = (np.arange(fy0, fy1, dtype=np.float32) + 0.5 - y0e) / self.side  # (fh,)

        def ramp(u):
            d = np.minimum(u, 1 - u)
            return np.clip(d / feather, 0, 1) if feather > 0 else (d >= 0).astype(np.float32)

        mx, my = ramp(ux)[None, :, None], ramp(uy)
        # the resize in two passes, the vertical one and the blend in bands of rows: a face box thousands of
        # pixels wide in a large photo would otherwise need GBs of float copies of it
        src = src.resize((fx1 - fx0, src.height), Image.BICUBIC, box=(bx0, 0, bx1, src.height))
        for r0 in range(fy0, fy1, _PASTE_ROWS):
            r1 = min(r0 + _PASTE_ROWS, fy1)
            box = (0, by0 + (r0 - fy0) * k, src.width, by0 + (r1 - fy0) * k)
            warped = np.asarray(src.resize((fx1 - fx0, r1 - r0), Image.BICUBIC, box=box), np.float32)
            region = out[r0:r1, fx0:fx1].astype(np.float32)
            blended = region + my[r0 - fy0:r1 - fy0, None, None] * mx * (warped - region)
            out[r0:r1, fx0:fx1] = np.clip(np.rint(blended), 0, 255).astype(out.dtype)
        return out


def landmark_box(points: np.ndarray, margin: float = CROP_MARGIN, shift_y: float = CROP_SHIFT_Y) -> tuple[float, float, float]:
    """(cx, cy, side) of the VoxCeleb-style square box for one face: the landmarks' extent grown by `margin`
    of it on each side (by default side = 1.9 × extent), shifted up by `shift_y` × extent for forehead and hair."""
    pts = np.asarray(points, np.float32)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext = float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0))
    cx, cy = float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2 + shift_y * ext
    return cx, cy, ext * (1 + 2 * margin)


def crop_from_landmarks(points: np.ndarray, out_size: int, margin: float = CROP_MARGIN, shift_y: float = CROP_SHIFT_Y) -> CropTransform:
    """The crop of one face from its (68, 2) landmarks (see landmark_box)."""
    cx, cy, side = landmark_box(points, margin, shift_y)
    return CropTransform(cx, cy, side, int(out_size))


def clip_crop(points_seq, out_size: int, margin: float = CROP_MARGIN, shift_y: float = CROP_SHIFT_Y,
              max_growth: float = 1.3, coverage: float = 0.95, image_shape=None) -> CropTransform:
    """One stable crop for a whole clip (as in VoxCeleb-style preprocessing): the box covering the per-frame
    boxes of (nearly) all frames (`coverage` quantile, robust to outliers), made square, its side capped at
    `max_growth` × the median per-frame side so a moving head isn't shrunk to a dot. With `image_shape`
    (H, W, ...) the box is shifted to stay inside the image where it fits (less padding).
    points_seq: (T, 68, 2) or a list with None for frames without a face."""
    boxes = []
    for p in points_seq:
        if p is None:
            continue
        p = np.asarray(p, np.float32)
        if not np.isfinite(p).all():
            continue
        cx, cy, side = landmark_box(p, margin, shift_y)
        boxes.append((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, side))
    if not boxes:
        raise ValueError("clip_crop: no frame has landmarks")
    b = np.array(boxes, np.float64)  # (T, 5)
    q = (1 - coverage) * 100
    x0, y0 = np.percentile(b[:, 0], q), np.percentile(b[:, 1], q)
    x1, y1 = np.percentile(b[:, 2], 100 - q), np.percentile(b[:, 3], 100 - q)
    side = max(x1 - x0, y1 - y0)
    side = min(side, max_growth * float(np.median(b[:, 4])))
    ct = CropTransform(float(x0 + x1) / 2, float(y0 + y1) / 2, float(side), int(out_size))
    return keep_inside(ct, image_shape) if image_shape is not None else ct


def keep_inside(ct: CropTransform, image_shape) -> CropTransform:
    """Shifts the box (same side) so that it lies inside the image along each axis where it fits; where it
    is larger than the image it is centred on it along that axis."""
    h, w = image_shape[:2]
    half = ct.side / 2

    def fit(c, n):  # continuous extent of the image is [-0.5, n - 0.5]
        lo, hi = -0.5 + half, n - 0.5 - half
        return (lo + hi) / 2 if lo > hi else min(max(c, lo), hi)

    return CropTransform(float(fit(ct.cx, w)), float(fit(ct.cy, h)), ct.side, ct.size)


def segment_crops(points_seq, out_size: int, segment_len: int, **kwargs) -> list[CropTransform | None]:
    """A stable crop per segment of `segment_len` frames (clip_crop on each); None for segments without faces.
    Returns one CropTransform (shared within its segment) per frame."""
    seq = list(points_seq)
    out: list[CropTransform | None] = []
    n = max(1, int(segment_len))
    for s in range(0, len(seq), n):
        part = seq[s:s + n]
        try:
            ct = clip_crop(part, out_size, **kwargs)
        except ValueError:
            ct = None
        out.extend([ct] * len(part))
    return out

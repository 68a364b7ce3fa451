"""The paper's landmark image y_i(t) (§3.1): the 68 facial landmarks drawn as coloured line segments on black,
one colour per face part, at any resolution. Also image <-> tensor helpers ([-1, 1] float, CHW).

Lines are drawn with PIL at `supersample`× the target size and box-downscaled, which antialiases them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from talkinghead.media.images import from_uint8


@dataclass(frozen=True)
class Part:
    name: str
    start: int  # first point index (inclusive)
    stop: int  # last point index + 1
    color: tuple[int, int, int]  # RGB
    closed: bool  # polygon (True) or open polyline


# iBUG 68-point markup; "right"/"left" are the subject's. Colours: distinct, saturated, on black.
PARTS: tuple[Part, ...] = (
    Part("jaw", 0, 17, (255, 255, 255), False),
    Part("right_brow", 17, 22, (255, 128, 0), False),
    Part("left_brow", 22, 27, (255, 255, 0), False),
    Part("nose_bridge", 27, 31, (0, 0, 255), False),
    Part("nostrils", 30, 36, (255, 0, 255), False),
    Part("right_eye", 36, 42, (0, 255, 0), True),
    Part("left_eye", 42, 48, (0, 255, 255), True),
    Part("outer_lips", 48, 60, (255, 0, 0), True),
    Part("inner_lips", 60, 68, (128, 128, 255), True),
)


def default_thickness(height: int, width: int) -> float:
    """Line width in output pixels: ~2.7 px at 256², ~1.3 px at 128² (scaled with the image size)."""
    return max(1.0, min(height, width) / 96.0)


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _draw(draw: ImageDraw.ImageDraw, points: np.ndarray, width: int, scale: float, offset: float) -> None:
    pts = np.asarray(points, np.float64)[:, :2] * scale + offset  # (68, 2)
    if not np.isfinite(pts).all():
        return
    r = width / 2.0
    for part in PARTS:
        seg = [tuple(p) for p in pts[part.start:part.stop]]
        if part.closed:
            seg.append(seg[0])
        draw.line(seg, fill=part.color, width=width)
        if width > 2:  # round joints so thick polylines have no notches
            for x, y in seg:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=part.color)


def rasterize(points: np.ndarray, size, thickness: float | None = None, supersample: int | None = None) -> np.ndarray:
    """(68, 2) landmarks in target pixel coordinates -> landmark image (H, W, 3) uint8 RGB on black.

    size: S or (H, W). thickness: line width in output pixels (default scales with the size).
    supersample: antialiasing factor (default 4, 3 above 192 px).
    """
    h, w = _size_hw(size)
    points = np.asarray(points)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points.shape}")
    t = default_thickness(h, w) if thickness is None else float(thickness)
    ss = (4 if max(h, w) <= 192 else 3) if supersample is None else max(1, int(supersample))
    im = Image.new("RGB", (w * ss, h * ss))
    # a point at pixel centre x maps to supersampled centre (x + 0.5) * ss - 0.5
    _draw(ImageDraw.Draw(im), points, max(1, round(t * ss)), ss, (ss - 1) / 2.0)
    if ss > 1:
        im = im.reduce(ss)
    return np.asarray(im)


def draw_landmarks(image: np.ndarray, points: np.ndarray, thickness: float | None = None,
                   dots: bool = True) -> np.ndarray:
    """Debug overlay: the landmark lines (and points) drawn over a copy of an (H, W, 3) uint8 image."""
    h, w = image.shape[:2]
    lines = rasterize(points, (h, w), thickness=thickness or max(1.0, min(h, w) / 200.0))
    out = image.copy()
    mask = lines.max(axis=2, keepdims=True) > 0
    out = np.where(mask, lines, out)
    if dots:
        im = Image.fromarray(out)
        d = ImageDraw.Draw(im)
        r = max(1.0, min(h, w) / 250.0)
        for x, y in np.asarray(points, np.float64):
            d.ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255))
        out = np.asarray(im)
    return out


def landmark_image_tensor(points, size, thickness: float | None = None) -> torch.Tensor:
    """(68, 2) -> (3, S, S), or (B, 68, 2) -> (B, 3, S, S); float32 in [-1, 1] (black = -1)."""
    pts = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if pts.ndim == 2:
        return from_uint8(rasterize(pts, size, thickness))
    return from_uint8(np.stack([rasterize(p, size, thickness) for p in pts]))


MOUTH = slice(48, 68)  # iBUG outer + inner lips
EYES = slice(36, 48)  # iBUG right + left eye


def part_box(points: np.ndarray, part: slice, margin: float) -> np.ndarray:
    """(68, 2) or (B, 68, 2) landmarks -> (4,) or (B, 4) box (x0, y0, x1, y1) around the points `part`, grown by
    `margin` of their width on every side."""
    pts = np.asarray(points, np.float32)[..., part, :]  # (..., k, 2)
    lo, hi = pts.min(axis=-2), pts.max(axis=-2)  # (..., 2)
    pad = margin * (hi[..., :1] - lo[..., :1])  # (..., 1), from the width
    return np.concatenate([lo - pad, hi + pad], axis=-1)


def mouth_box(points: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """(68, 2) or (B, 68, 2) landmarks -> (4,) or (B, 4) box (x0, y0, x1, y1) around the lips, grown by
    `margin` of the lips' width on every side (the region a warp cannot fill when the mouth opens)."""
    return part_box(points, MOUTH, margin)


def eye_box(points: np.ndarray, margin: float = 0.15) -> np.ndarray:
    """(68, 2) or (B, 68, 2) landmarks -> (4,) or (B, 4) box (x0, y0, x1, y1) around both eyes, grown by
    `margin` of the eyes' width (outer corner to outer corner) on every side (the lids a warp cannot close)."""
    return part_box(points, EYES, margin)


def mouth_square(points: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """(68, 2) or (B, 68, 2) landmarks -> (4,) or (B, 4) square box (x0, y0, x1, y1) centred on `mouth_box`,
    its side the box's longer side (the mouth discriminator's crop, nn/mouth.py)."""
    box = mouth_box(points, margin)
    centre = (box[..., :2] + box[..., 2:]) / 2  # (..., 2)
    half = np.maximum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])[..., None] / 2  # (..., 1)
    return np.concatenate([centre - half, centre + half], axis=-1).astype(np.float32)


def box_mask(boxes: np.ndarray, size: int) -> torch.Tensor:
    """(B, 4) boxes (x0, y0, x1, y1) in pixels -> (B, 1, S, S) float mask, 1 on pixel centres inside."""
    b = torch.as_tensor(np.asarray(boxes, np.float32)).view(-1, 4)
    c = torch.arange(size, dtype=torch.float32)
    inside_x = (c[None] >= b[:, 0:1]) & (c[None] <= b[:, 2:3])  # (B, S)
    inside_y = (c[None] >= b[:, 1:2]) & (c[None] <= b[:, 3:4])  # (B, S)
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]  # (B, 1, S, S)

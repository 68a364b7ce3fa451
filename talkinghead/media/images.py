"""Images between the networks and the user: [-1, 1] tensors ↔ uint8 arrays, PNG grids and PNG bytes.

Networks see (…, 3, H, W) float tensors in [-1, 1] (paper §3: tanh outputs); files and the user see (H, W, 3)
uint8 arrays. Every conversion in the package goes through these functions.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (B, 3, H, W) in [-1, 1] -> (H, W, 3) or (B, H, W, 3) uint8 (rounded, clamped)."""
    t = ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return t.movedim(-3, -1).cpu().numpy()


def from_uint8(a: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 -> (3, H, W) or (B, 3, H, W) float32 in [-1, 1]."""
    a = np.asarray(a)
    a = a if a.flags.writeable and a.flags.c_contiguous else np.array(a)  # torch wants a writeable buffer
    return torch.from_numpy(a).movedim(-1, -3).float() * (1 / 127.5) - 1.0


def to_pixel_scale(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 255] as floats (what networks trained on 8-bit pixels expect), differentiable."""
    return (x + 1.0) * 127.5


def resize_square(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), bilinear, antialiased when shrinking; unchanged if size is None or
    already there. Differentiable."""
    import torch.nn.functional as F

    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def grid(rows: Sequence[Sequence[torch.Tensor | np.ndarray]]) -> np.ndarray:
    """Tiles (each a (3, S, S) tensor in [-1, 1] or an (S, S, 3) uint8 array, all one size) -> one uint8
    image, one row per inner sequence; short rows are padded with black."""
    rows = [[to_uint8(t) if isinstance(t, torch.Tensor) else np.asarray(t, np.uint8) for t in r] for r in rows]
    h, w = rows[0][0].shape[:2]
    n = max(len(r) for r in rows)
    out = np.zeros((h * len(rows), w * n, 3), np.uint8)
    for i, r in enumerate(rows):
        for j, tile in enumerate(r):
            out[i * h:(i + 1) * h, j * w:(j + 1) * w] = tile
    return out


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Writes an (H, W, 3) uint8 image as PNG (atomically; parent folders created) with the invisible mark of
    talkinghead.media.watermark: the grids of training, fine-tuning and evaluation hold generated faces too, and a
    cut-out tile of one is an output like any other."""
    from PIL import Image

    from talkinghead.media import watermark
    from talkinghead.media.files import atomic_write

    path = Path(path)
    marked = watermark.embed(np.asarray(image))
    atomic_write(path, lambda tmp: Image.fromarray(marked).save(tmp, format="PNG"))
    return path


def save_grid(path: str | os.PathLike, rows: Sequence[Sequence[torch.Tensor | np.ndarray]]) -> Path:
    """`grid(rows)` written as a PNG."""
    return save_png(path, grid(rows))


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def png_decode(data: bytes) -> np.ndarray:
    """PNG file bytes -> (H, W, 3) uint8."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).copy()

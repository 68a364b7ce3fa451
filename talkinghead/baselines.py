"""Classical baselines of the evaluation protocol (DESIGN §6), scored by the same metrics as the model:

- `copy_source`: the source shot itself, unchanged (what a model scores when it ignores the driver).
- `warp_baseline`: a landmark-driven piecewise-affine warp of the source frame — Delaunay triangulation
  (scipy.spatial.Delaunay) of the 68 *target* landmarks plus fixed anchor points on the image border (so the
  whole frame moves smoothly and the border stays put); each output pixel is mapped backward into the source
  by the barycentric coordinates of its target triangle, then sampled bilinearly (torch grid_sample, border
  padding). Vectorised numpy/torch; ~10 ms at 256² on one CPU core (measured in tests/test_baselines.py).

Points are (x, y) pixel coordinates with pixel centres at integers (dlib's convention, as Face.points).
Images are uint8 (H, W, 3) RGB arrays or float tensors (3, H, W) / (1, 3, H, W); the result has the input's
type, dtype and shape.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import Delaunay


def copy_source(source_frame, source_points=None, target_points=None):
    """Baseline (a): the source frame unchanged (a copy), whatever the driving landmarks are."""
    if isinstance(source_frame, torch.Tensor):
        return source_frame.clone()
    return np.array(source_frame, copy=True)


def border_anchors(h: int, w: int, per_side: int = 4) -> np.ndarray:
    """(4·per_side, 2) points on the image border (half a pixel outside the pixel centres)."""
    t = np.linspace(0.0, 1.0, per_side + 1)[:-1]
    x0, y0, x1, y1 = -0.5, -0.5, w - 0.5, h - 0.5
    top = np.stack([x0 + t * (x1 - x0), np.full_like(t, y0)], 1)
    right = np.stack([np.full_like(t, x1), y0 + t * (y1 - y0)], 1)
    bottom = np.stack([x1 - t * (x1 - x0), np.full_like(t, y1)], 1)
    left = np.stack([np.full_like(t, x0), y1 - t * (y1 - y0)], 1)
    return np.concatenate([top, right, bottom, left]).astype(np.float64)


@functools.lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    g = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)], 1).astype(np.float64)  # (N, 3)
    g.setflags(write=False)
    return g


def warp_field(h: int, w: int, source_points: np.ndarray, target_points: np.ndarray,
               anchors_per_side: int = 4) -> np.ndarray:
    """Backward map (h, w, 2): for each output pixel, the (x, y) source position it samples.

    Piecewise-affine over the Delaunay triangulation of target points + border anchors; pixels outside every
    triangle (only possible when landmarks lie far outside the frame) map to themselves."""
    src = np.asarray(source_points, np.float64).reshape(-1, 2)
    dst = np.asarray(target_points, np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"source and target points differ in shape: {src.shape} vs {dst.shape}")
    anchors = border_anchors(h, w, anchors_per_side)
    src_all, dst_all = np.concatenate([src, anchors]), np.concatenate([dst, anchors])  # (P, 2)
    tri = Delaunay(dst_all)  # duplicate points (closed lips) are dropped by qhull, never referenced
    # Per-triangle affine map dst → src: [x y 1] @ M_k = (x', y'), M_k (3, 2) = [D_k 1]⁻¹ S_k.
    simp = tri.simplices  # (K, 3)
    dh = np.concatenate([dst_all[simp], np.ones((len(simp), 3, 1))], 2)  # (K, 3, 3)
    m = np.linalg.pinv(dh) @ src_all[simp]  # (K, 3, 2); pinv: safe for sliver triangles
    pix = _pixel_grid(h, w)  # (N, 3) homogeneous pixel centres
    simplex = tri.find_simplex(pix[:, :2])  # (N,), -1 outside the hull
    m = np.concatenate([m, np.eye(3)[None, :, :2]])  # index -1 → identity
    out = np.einsum("nk,nkd->nd", pix, m[simplex])  # (N, 2)
    return out.reshape(h, w, 2)


def warp_baseline(source_image, source_points, target_points, anchors_per_side: int = 4):
    """Baseline (b): the source image warped so its landmarks `source_points` (68, 2) move to `target_points`.

    source_image: uint8 (H, W, 3) or float tensor (3, H, W) / (1, 3, H, W). Returns the same type/shape."""
    is_np = not isinstance(source_image, torch.Tensor)
    if is_np:
        arr = np.asarray(source_image)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an (H, W, 3) image, got {arr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float()  # (1, C, H, W)
    else:
        x = source_image if source_image.dim() == 4 else source_image[None]
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(source_image.shape)}")
    h, w = x.shape[-2:]
    field = torch.from_numpy(warp_field(h, w, source_points, target_points, anchors_per_side))  # (H, W, 2)
    grid = torch.empty(1, h, w, 2, dtype=torch.float32)  # normalised, align_corners=True
    grid[0, ..., 0] = field[..., 0] * (2.0 / max(w - 1, 1)) - 1
    grid[0, ..., 1] = field[..., 1] * (2.0 / max(h - 1, 1)) - 1
    y = F.grid_sample(x.float(), grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=True)
    if is_np:
        y = y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        return y if arr.dtype == np.uint8 else y.astype(arr.dtype)
    y = y.to(source_image.dtype)
    return y if source_image.dim() == 4 else y[0]


def warp_sequence(source_image, source_points, target_points_seq, anchors_per_side: int = 4) -> list:
    """warp_baseline for each of T target landmark sets (T, 68, 2); returns a list of T images."""
    return [warp_baseline(source_image, source_points, t, anchors_per_side) for t in target_points_seq]

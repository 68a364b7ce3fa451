"""The classical landmark warp (DESIGN.md §2, §6): a backward map that moves an image so its landmarks land on
other landmarks — piecewise-affine over the Delaunay triangulation of the *target* landmarks plus fixed anchor
points on the image border (so the whole frame moves smoothly and the border stays put), except on the
lips: Delaunay may join the mouth corners across an open mouth (a triangle from the upper to the lower outer
lip), so the opening would sample lip texture and the lips lose their thickness; the outer-lip polygon is
therefore always cut by one fixed triangulation (`MOUTH_TRIANGLES`: the lip band as strips between the outer
and inner lip contours, the opening between the inner lips; DESIGN.md §2, "What the photo cannot show"). It is
the evaluation's warp baseline and the coarse flow of the warp-guided generator (`flow_grid`).

Points are (x, y) pixel coordinates with pixel centres at integers (dlib's convention, as Face.points).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy.spatial import Delaunay


def border_anchors(h: int, w: int, per_side: int = 4) -> np.ndarray:
    """(4·per_side, 2) points on the image border (half a pixel outside the pixel centres)."""
    t = np.linspace(0.0, 1.0, per_side + 1)[:-1]
    x0, y0, x1, y1 = -0.5, -0.5, w - 0.5, h - 0.5
    top = np.stack([x0 + t * (x1 - x0), np.full_like(t, y0)], 1)
    right = np.stack([np.full_like(t, x1), y0 + t * (y1 - y0)], 1)
    bottom = np.stack([x1 - t * (x1 - x0), np.full_like(t, y1)], 1)
    left = np.stack([np.full_like(t, x0), y1 - t * (y1 - y0)], 1)
    return np.concatenate([top, right, bottom, left]).astype(np.float64)


def _zip_chains(a: list[int], b: list[int]) -> list[tuple[int, int, int]]:
    """Triangles of the strip between two point chains that start and end together (by chain fraction)."""
    tris, i, j = [], 0, 0
    while i < len(a) - 1 or j < len(b) - 1:
        if j == len(b) - 1 or (i < len(a) - 1 and (i + 1) / (len(a) - 1) <= (j + 1) / (len(b) - 1)):
            tris.append((a[i], a[i + 1], b[j]))
            i += 1
        else:
            tris.append((a[i], b[j], b[j + 1]))
            j += 1
    return tris


# iBUG 68: outer lips 48-59 (corners 48, 54), inner lips 60-67 (corners 60, 64; pairs 61-67, 62-66, 63-65).
MOUTH_TRIANGLES = np.array(
    _zip_chains(list(range(48, 55)), list(range(60, 65)))  # upper lip band
    + _zip_chains([54, 55, 56, 57, 58, 59, 48], [64, 65, 66, 67, 60])  # lower lip band
    + [(60, 61, 67), (61, 62, 67), (62, 66, 67), (62, 63, 66), (63, 65, 66), (63, 64, 65)]  # the opening
)  # (K, 3)


def _affine_maps(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """(K, 3, 2) target and source triangles -> (K, 3, 2) maps M_k with [x y 1] @ M_k = source (x', y')."""
    dh = np.concatenate([dst, np.ones((len(dst), 3, 1))], 2)  # (K, 3, 3)
    return np.linalg.pinv(dh) @ src  # pinv: safe for sliver triangles


def _mouth_override(out: np.ndarray, src: np.ndarray, dst: np.ndarray, h: int, w: int) -> None:
    """Re-map, in place, the pixels (N = h·w, row-major) inside the target's `MOUTH_TRIANGLES` with those
    triangles' maps; where they overlap (a lip folded over), the first triangle holding the pixel."""
    tri_d = dst[MOUTH_TRIANGLES]  # (K, 3, 2)
    e = tri_d[:, [1, 2, 0]] - tri_d  # (K, 3, 2) edge vectors
    solid = np.flatnonzero(np.abs(e[:, 0, 0] * e[:, 2, 1] - e[:, 0, 1] * e[:, 2, 0]) > 1e-9)  # not degenerate
    k, rows, x0, x1 = _spans(tri_d[solid], h, w)
    if not len(k):
        return
    label = np.full(h * w, -1, np.int64)
    for kk, start, stop in zip(solid[k][::-1], (rows * w + x0)[::-1], (rows * w + x1)[::-1]):
        label[start:stop] = kk  # the last triangles first: the first one holding a pixel writes last
    inside = np.flatnonzero(label >= 0)
    m = _affine_maps(tri_d, src[MOUTH_TRIANGLES])  # (K, 3, 2)
    out[inside] = np.einsum("nk,nkd->nd", _pixel_grid(h, w)[inside], m[label[inside]])


@functools.lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    g = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)], 1).astype(np.float64)  # (N, 3)
    g.setflags(write=False)
    return g


def _spans(tri: np.ndarray, h: int, w: int):
    """The pixel-centre runs of K triangles (K, 3, 2) on each row of an h×w image: (triangle, row, x0, x1)
    arrays of the non-empty half-open runs [x0, x1), rows [⌈y_min⌉, ⌈y_max⌉) — so triangles of one
    triangulation share no pixel, an edge's crossing being computed from its endpoints in one fixed order."""
    a, b = tri, tri[:, [1, 2, 0]]  # (K, 3, 2) edges a -> b
    swap = (a[..., 1] > b[..., 1]) | ((a[..., 1] == b[..., 1]) & (a[..., 0] > b[..., 0]))
    p, q = np.where(swap[..., None], b, a), np.where(swap[..., None], a, b)  # p above q
    y0 = np.ceil(tri[..., 1].min(1)).clip(0, h).astype(np.int64)
    n = (np.ceil(tri[..., 1].max(1)).clip(0, h).astype(np.int64) - y0).clip(0)  # (K,) rows
    k = np.repeat(np.arange(len(tri)), n)  # (M,) a triangle per (triangle, row)
    rows = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n - y0, n)  # (M,)
    y = rows[:, None].astype(np.float64)
    pk, qk = p[k], q[k]  # (M, 3, 2)
    dy = qk[..., 1] - pk[..., 1]
    crosses = (pk[..., 1] <= y) & (y <= qk[..., 1]) & (dy > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = pk[..., 0] + (y - pk[..., 1]) * (qk[..., 0] - pk[..., 0]) / dy  # (M, 3) crossings
    x0 = np.ceil(np.where(crosses, x, np.inf).min(1).clip(0, w)).astype(np.int64)
    x1 = np.ceil(np.where(crosses, x, -np.inf).max(1).clip(0, w)).astype(np.int64)
    keep = x1 > x0
    return k[keep], rows[keep], x0[keep], x1[keep]


def _piecewise_affine(tri_dst: np.ndarray, maps: np.ndarray, h: int, w: int) -> np.ndarray | None:
    """(h·w, 2) [x y 1] @ maps[k] for every pixel centre, k the triangle of `tri_dst` (K, 3, 2) holding it —
    run by run along the rows (`_spans`); None when the runs do not tile the image exactly (let find_simplex
    decide)."""
    k, rows, x0, x1 = _spans(tri_dst, h, w)
    order = np.lexsort((x0, rows))
    k, rows, x0, x1 = k[order], rows[order], x0[order], x1[order]
    first = np.r_[True, rows[1:] != rows[:-1]]
    last = np.r_[rows[1:] != rows[:-1], True]
    tiles = (first.sum() == h and (x0[first] == 0).all() and (x1[last] == w).all()
             and (x0[~first] == x1[np.flatnonzero(~first) - 1]).all())
    if not tiles:
        return None
    length = x1 - x0
    xs = np.arange(h * w, dtype=np.float64) % w  # (N,) pixel x, row-major
    out = np.empty((h * w, 2))
    for d in range(2):  # along a run: slope·x + (maps[k, 1]·y + maps[k, 2])
        slope = np.repeat(maps[k, 0, d], length)
        out[:, d] = slope * xs + np.repeat(maps[k, 1, d] * rows + maps[k, 2, d], length)
    return out


def warp_field(h: int, w: int, source_points: np.ndarray, target_points: np.ndarray,
               anchors_per_side: int = 4) -> np.ndarray:
    """Backward map (h, w, 2): for each output pixel, the (x, y) source position it samples.

    Piecewise-affine over the Delaunay triangulation of target points + border anchors, the lips (68 points)
    over `MOUTH_TRIANGLES`; pixels outside every triangle (only possible when landmarks lie far outside the
    frame) map to themselves."""
    src = np.asarray(source_points, np.float64).reshape(-1, 2)
    dst = np.asarray(target_points, np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"source and target points differ in shape: {src.shape} vs {dst.shape}")
    anchors = border_anchors(h, w, anchors_per_side)
    src_all, dst_all = np.concatenate([src, anchors]), np.concatenate([dst, anchors])  # (P, 2)
    tri = Delaunay(dst_all)  # duplicate points (closed lips) are dropped by qhull, never referenced
    # Per-triangle affine map dst → src: [x y 1] @ M_k = (x', y'), M_k (3, 2) = [D_k 1]⁻¹ S_k.
    simp = tri.simplices  # (K, 3)
    m = _affine_maps(dst_all[simp], src_all[simp])  # (K, 3, 2)
    out = _piecewise_affine(dst_all[simp], m, h, w)  # each pixel's triangle found by rows, not searched
    if out is None:
        pix = _pixel_grid(h, w)  # (N, 3) homogeneous pixel centres
        simplex = tri.find_simplex(pix[:, :2])  # (N,), -1 outside the hull
        m = np.concatenate([m, np.eye(3)[None, :, :2]])  # index -1 → identity
        out = np.einsum("nk,nkd->nd", pix, m[simplex])  # (N, 2)
    if len(src) == 68:
        _mouth_override(out, src, dst, h, w)
    return out.reshape(h, w, 2)


def flow_grid(source_points, target_points, size: int | tuple[int, int], anchors_per_side: int = 4) -> torch.Tensor:
    """`warp_field` as grid_sample's sampling grid (H, W, 2), normalised with align_corners=True: the backward
    flow from the target (driving) landmarks to the source's; size: S (square crops) or (H, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    field = torch.from_numpy(warp_field(h, w, source_points, target_points, anchors_per_side))  # (H, W, 2)
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=torch.float64)
    return (field * scale - 1.0).float()


def _normalised(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> centred and scaled to unit RMS radius (position and size of the face removed)."""
    p = np.asarray(points, np.float64)
    c = p - p.mean(axis=-2, keepdims=True)
    return c / np.sqrt((c ** 2).sum(axis=(-2, -1), keepdims=True) / p.shape[-2]).clip(1e-8)


def nearest_pose(candidates: np.ndarray, target: np.ndarray) -> int:
    """Index of the candidate landmark set (K, 68, 2) closest in pose and expression to target (68, 2): the
    source whose texture needs the least warping (and hallucination) to show the target frame."""
    d = ((_normalised(candidates) - _normalised(target)[None]) ** 2).sum(axis=(-2, -1))  # (K,)
    return int(np.argmin(d))


def texture_sources(shot_points, target_points, size: int, index=None, exclude_self: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The warp-guided G's texture (DESIGN.md §2) for n targets: which of T shots each target's texture comes
    from and the landmark flow from the target to it — the one place meta-learning's episodes, fine-tuning's
    pairs, evaluation and animation choose them.

    shot_points (T, 68, 2), target_points (n, 68, 2) crop pixels of S = `size`. index: the shots to use (n,)
    instead of the nearest in pose (`nearest_pose`); exclude_self: target i is shot i (fine-tuning's pairs),
    so it is drawn from the nearest *other* shot (itself when T = 1). Returns (index (n,) int64, grids
    (n, S, S, 2) backward, target -> its shot, as `flow_grid`)."""
    shots = np.asarray(shot_points).reshape(-1, 68, 2)
    targets = np.asarray(target_points).reshape(-1, 68, 2)
    if index is None:
        index = []
        for i, p in enumerate(targets):
            others = ([j for j in range(len(shots)) if j != i] or [i]) if exclude_self else list(range(len(shots)))
            index.append(others[nearest_pose(shots[others], p)])
    index = torch.as_tensor(index, dtype=torch.int64).view(-1)  # (n,)
    grids = torch.stack([flow_grid(shots[j], p, size) for j, p in zip(index.tolist(), targets)])  # (n, S, S, 2)
    return index, grids

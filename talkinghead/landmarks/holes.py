"""The warp's holes (DESIGN.md §2, "What the photo cannot show"): the parts of the driving frame that the
photo's own texture does not contain, so a generator must fill them and no warp may stretch texture into them.

A hole is an opening — the inner mouth (iBUG 68 inner lips 60-67) or an eye (36-41, 42-47) — that the driver
shows more open than the photo does. The photo's opening is mapped into the driving frame column by column:
each upper/lower contour pair keeps its driving midpoint, its gap is the photo's (scaled by the ratio of the
faces' sizes) and never more than the driver's. The hole is the driving opening minus that mapped one, so equal
landmarks give no hole and a closed photo mouth under an open driving mouth gives the whole opening.
(Mapping the photo's polygon by the landmark warp itself cannot show this: it sends the inner-lip points onto
the driver's, whatever the photo shows between them.)

Masks are float (S, S) in [0, 1] in the target (driving) frame, antialiased by supersampled coverage; points
are (x, y) pixel coordinates with pixel centres at integers (as Face.points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Opening:
    """An opening of the face: its contour (ring order) and which contour points face each other."""

    name: str
    ring: tuple[int, ...]  # contour indices in order around the opening
    pairs: tuple[tuple[int, int], ...]  # (upper, lower) points facing each other; the rest are corners


MOUTH = Opening("mouth", tuple(range(60, 68)), ((61, 67), (62, 66), (63, 65)))
EYES = (Opening("right_eye", tuple(range(36, 42)), ((37, 41), (38, 40))),
        Opening("left_eye", tuple(range(42, 48)), ((43, 47), (44, 46))))
CLOSED = 0.05  # an opening's gap below this fraction of the eye distance shows nothing (a lid or lip line)
SUPERSAMPLE = 4  # coverage samples per pixel side


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))


def polygon_coverage(polygon: np.ndarray, size, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """(K, 2) polygon -> (H, W) float32: the fraction of each pixel inside it (even-odd rule), from
    supersample² samples per pixel."""
    h, w = _size_hw(size)
    out = np.zeros((h, w), np.float32)
    poly = np.asarray(polygon, np.float64)
    if not np.isfinite(poly).all():
        return out
    x0, y0 = np.floor(poly.min(0)).astype(int) - 1
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return out
    ss = max(1, int(supersample))
    off = (np.arange(ss) + 0.5) / ss - 0.5  # sample offsets around a pixel centre
    xs = (np.arange(x0, x1)[:, None] + off[None]).ravel()  # (nx·ss,)
    ys = (np.arange(y0, y1)[:, None] + off[None]).ravel()  # (ny·ss,)
    px, py = np.meshgrid(xs, ys)  # (ny·ss, nx·ss)
    inside = np.zeros(px.shape, bool)
    for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0)):
        if ay == by:
            continue
        crosses = (ay > py) != (by > py)
        x_at = ax + (py - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (px < x_at)
    cov = inside.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    out[y0:y1, x0:x1] = cov
    return out


def shown_polygon(opening: Opening, source_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """(len(ring), 2): the photo's opening mapped into the driving frame — the driving contour with each
    pair's gap narrowed about its midpoint to the photo's (scaled) gap; the driving contour itself where the
    photo is at least as open. A photo gap within `CLOSED` of the driver's closing shows nothing."""
    src, dst = np.asarray(source_points, np.float64), np.asarray(target_points, np.float64)
    scale = _eye_distance(dst) / max(_eye_distance(src), 1e-6)
    tol = CLOSED * _eye_distance(dst)
    out = {i: dst[i] for i in opening.ring}
    for up, lo in opening.pairs:
        g_t = float(np.linalg.norm(dst[lo] - dst[up]))
        g_s = float(np.linalg.norm(src[lo] - src[up])) * scale
        erode = tol * float(np.clip((g_t - g_s) / max(tol, 1e-9), 0.0, 1.0))  # only where the driver opens more
        f = 1.0 if g_s >= g_t else float(np.clip(g_s - erode, 0.0, g_t)) / max(g_t, 1e-9)
        mid = (dst[up] + dst[lo]) / 2
        out[up], out[lo] = mid + f * (dst[up] - mid), mid + f * (dst[lo] - mid)
    return np.stack([out[i] for i in opening.ring])


def opening_hole(opening: Opening, source_points, target_points, size) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the driving opening's coverage minus the photo's mapped opening's."""
    dst = np.asarray(target_points, np.float64)
    shown = shown_polygon(opening, source_points, dst)
    ring = dst[list(opening.ring)]
    if np.allclose(shown, ring, rtol=0.0, atol=1e-9):
        return np.zeros(_size_hw(size), np.float32)
    return np.clip(polygon_coverage(ring, size) - polygon_coverage(shown, size), 0.0, 1.0)


def hole_masks(source_points, target_points, size) -> dict[str, np.ndarray]:
    """The holes of warping the photo (landmarks `source_points` (68, 2)) onto a driving frame
    (`target_points` (68, 2)), in the driving frame of S = `size` (or (H, W)) pixels: {"mouth", "eyes",
    "all"} -> (H, W) float32 in [0, 1]; 1 where the driver opens what the photo shows closed."""
    src, dst = np.asarray(source_points, np.float64), np.asarray(target_points, np.float64)
    if src.shape != (68, 2) or dst.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {src.shape} and {dst.shape}")
    mouth = opening_hole(MOUTH, src, dst, size)
    eyes = np.maximum(*(opening_hole(e, src, dst, size) for e in EYES))
    return {"mouth": mouth, "eyes": eyes, "all": np.maximum(mouth, eyes)}


def hole_mask_tensor(source_points, target_points, size: int, part: str = "all") -> torch.Tensor:
    """Batched `hole_masks`: (B or 1, 68, 2) source and (B, 68, 2) target landmarks (arrays or tensors) ->
    (B, 1, S, S) float32 mask of `part` ("mouth", "eyes" or "all")."""
    def as_np(p):
        p = p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p)
        return p.reshape(-1, 68, 2)

    src, dst = as_np(source_points), as_np(target_points)
    if len(src) not in (1, len(dst)):
        raise ValueError(f"{len(src)} source landmark sets for {len(dst)} targets")
    src = np.broadcast_to(src, dst.shape)
    masks = [hole_masks(s, t, size)[part] for s, t in zip(src, dst)]
    return torch.from_numpy(np.stack(masks))[:, None]  # (B, 1, S, S)

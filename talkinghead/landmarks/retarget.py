"""Driving landmarks → landmarks for the source face (DESIGN.md §2, cross-identity driving).

The paper (§3.1, §4 "puppeteering") feeds the driver's own landmarks to G, so the driver's face *shape* leaks
into the output (a thin-faced driver makes a round face thin). `retarget` instead transfers the driver's
*relative* motion: for every frame, the head pose change (a similarity transform fitted on rigid points)
and the expression deltas (pose-free point offsets from the driver's reference frame) — both relative to the
driver's reference frame (first or most neutral) — and applies them to the source's own landmarks. The
driver's deltas are carried into the source's frame by a Procrustes similarity and scaled per axis by the
ratio of the two faces' extents, so a mouth opening by a third of the driver's face height opens the source's
mouth by a third of *its* face height. Relative deltas alone cannot open a closed mouth further than the driver
opens it beyond its reference, and a driver who grins throughout has a grinning reference: so the inner lips
are never shown closer than the driver's own gap, scaled the same way (`open_mouth_floor`). `absolute=True` is
the paper's raw mode: the driver's landmarks mapped by one similarity transform (driver reference → source)
into the source crop.

All points are (x, y) pixels, numpy float arrays; the transforms are 2×3 matrices M with p' = p @ M[:, :2].T
+ M[:, 2].
"""

from __future__ import annotations

import numpy as np

# Points that move little with expression (iBUG 68): jaw ends at the ears, nose bridge and tip, eye corners.
RIGID = np.array([0, 1, 15, 16, 27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45])


def procrustes(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity transform (scale, rotation, translation; no reflection) taking points a onto
    b (Umeyama 1991). a, b: (K, 2) -> M (2, 3) with b ≈ a @ M[:, :2].T + M[:, 2]."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"procrustes needs two (K, 2) arrays of the same shape, got {a.shape} and {b.shape}")
    w = np.ones(len(a)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    ma, mb = w @ a, w @ b  # (2,)
    a0, b0 = a - ma, b - mb
    cov = (b0 * w[:, None]).T @ a0  # (2, 2)
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    dm = np.diag([1.0, d])
    r = u @ dm @ vt  # rotation
    var_a = float((w * (a0 ** 2).sum(axis=1)).sum())
    scale = float(np.trace(np.diag(s) @ dm)) / max(var_a, 1e-12)
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = mb - m[:, :2] @ ma
    return m


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(…, K, 2) points through a 2×3 matrix."""
    return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


def invert_transform(m: np.ndarray) -> np.ndarray:
    a_inv = np.linalg.inv(m[:, :2])
    return np.concatenate([a_inv, (-a_inv @ m[:, 2])[:, None]], axis=1)


def compose(m2: np.ndarray, m1: np.ndarray) -> np.ndarray:
    """The transform applying m1, then m2."""
    return np.concatenate([m2[:, :2] @ m1[:, :2], (m2[:, :2] @ m1[:, 2] + m2[:, 2])[:, None]], axis=1)


def mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap (points 61-63 vs 67-65) over the outer-eye-corner distance."""
    gap = np.linalg.norm(points[[61, 62, 63]] - points[[67, 66, 65]], axis=1).mean()
    return float(gap / max(np.linalg.norm(points[36] - points[45]), 1e-6))


def neutral_index(seq: np.ndarray, max_frames: int | None = None) -> int:
    """Index of the most neutral frame of a (T, 68, 2) sequence: mouth closed and face frontal
    (nose tip centred between the eye corners), ties to the earliest. max_frames: only look at the first ones."""
    seq = np.asarray(seq, np.float64)[:max_frames]
    scores = []
    for p in seq:
        iod = max(np.linalg.norm(p[36] - p[45]), 1e-6)
        mid = (p[36] + p[45]) / 2
        yaw = abs(float(np.dot(p[30] - mid, (p[45] - p[36]) / iod))) / iod  # nose offset along the eye line
        scores.append(mouth_opening(p) + yaw)
    return int(np.argmin(scores))


INNER_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper / lower inner-lip points facing each other
UPPER_LIP = ((61, 50), (62, 51), (63, 52))  # each inner upper point with the outer point above it
LOWER_LIP = ((67, (58,)), (66, (57,)), (65, (56,)))  # each inner lower point with the outer ones below it
CHIN = (6, 7, 8, 9, 10)
UPPER_SHARE = 0.3  # of a missing opening, the share the upper lip rises; the lower lip and jaw take the rest


def open_mouth_floor(moved: np.ndarray, driver: np.ndarray, k_y: float, axes: np.ndarray) -> np.ndarray:
    """`moved` (68, 2): the retargeted source in the driver's reference frame; `driver` (68, 2): the driver
    with its pose removed, in the same frame; k_y: the faces' height ratio; axes: the face's axes (rows).
    Where an inner-lip pair of `moved` is closer than k_y × the driver's gap (along the face's vertical
    axis), the lips open to it: the upper lip rises by UPPER_SHARE of the difference, the lower lip and the
    chin drop by the rest (the chin by half of it), each lip keeping its thickness."""
    out = moved.copy()
    down = axes[1]  # the face's vertical axis (towards the chin)
    extra = []
    for (up, low), (_, outer_up), (_, outer_low) in zip(INNER_PAIRS, UPPER_LIP, LOWER_LIP):
        want = k_y * float(np.dot(driver[low] - driver[up], down))
        have = float(np.dot(moved[low] - moved[up], down))
        d = max(want - have, 0.0)
        extra.append(d)
        out[[up, outer_up]] -= UPPER_SHARE * d * down
        out[[low, *outer_low]] += (1 - UPPER_SHARE) * d * down
    d = float(np.mean(extra))
    if d > 0:
        out[[60, 64, 48, 54]] += 0.5 * (1 - 2 * UPPER_SHARE) * d * down  # the corners follow the middle a little
        out[[49, 53]] -= 0.5 * UPPER_SHARE * d * down
        out[[55, 59]] += 0.5 * (1 - UPPER_SHARE) * d * down
        out[list(CHIN)] += 0.5 * (1 - UPPER_SHARE) * d * down
    return out


def _extent(points: np.ndarray) -> np.ndarray:
    """(width, height) of a face: outer eye-corner / jaw span, and brow-to-chin height."""
    width = np.ptp(points[0:17, 0])
    height = points[8, 1] - 0.5 * (points[19, 1] + points[24, 1])
    return np.array([max(width, 1e-6), max(abs(height), 1e-6)])


def _face_axes(points: np.ndarray) -> np.ndarray:
    """Rotation (2, 2) whose rows are the face's horizontal (outer eye corners 36 -> 45) and vertical axes."""
    d = points[45] - points[36]
    c, s = d / max(float(np.linalg.norm(d)), 1e-9)
    return np.array([[c, s], [-s, c]])


def retarget(source_points: np.ndarray, driver_seq: np.ndarray, driver_ref: np.ndarray | None = None,
             absolute: bool = False, expression_scale: float = 1.0, mouth_floor: bool = True) -> np.ndarray:
    """Landmarks for the source face following the driver (DESIGN.md §2).

    source_points: (68, 2) the source's landmarks (e.g. in its crop); driver_seq: (T, 68, 2) the driver's,
    any coordinates; driver_ref: (68, 2) the driver's reference (neutral) pose, default the first frame.
    Relative (default): out_t = A ∘ P_t (A⁻¹(source) + k ⊙ d_t), where A is the Procrustes similarity taking
    driver_ref to the source, P_t the driver's pose change (similarity fitted on rigid points, ref → t),
    d_t = P_t⁻¹(driver_t) − driver_ref the pose-free expression deltas and k the ratio of the faces' widths
    and heights (source over driver, along the face's own axes in the driver's frame; `expression_scale`
    multiplies it); mouth_floor: then `open_mouth_floor` (the inner lips at least the driver's gap apart, scaled
    by k). Absolute: out_t = A(driver_t).
    Returns (T, 68, 2) float32.
    """
    src = np.asarray(source_points, np.float64)
    seq = np.asarray(driver_seq, np.float64)
    if seq.ndim == 2:
        seq = seq[None]
    if src.shape != (68, 2) or seq.shape[1:] != (68, 2):
        raise ValueError(f"expected (68, 2) source and (T, 68, 2) driver landmarks, got {src.shape}, {seq.shape}")
    ref = seq[0] if driver_ref is None else np.asarray(driver_ref, np.float64)
    a = procrustes(ref[RIGID], src[RIGID])  # driver reference frame -> source frame
    if absolute:
        return apply_transform(a, seq).astype(np.float32)
    a_inv = invert_transform(a)
    src_in_ref = apply_transform(a_inv, src)  # (68, 2), the source drawn in the driver's reference frame
    rot = _face_axes(ref)  # (2, 2) rows: the face's x (eye line) and y axes in the reference frame
    k = _extent(src_in_ref @ rot.T) / _extent(ref @ rot.T)  # (2,) proportions of the two faces, face axes
    scale = rot.T @ np.diag(k * expression_scale) @ rot  # (2, 2): scales deltas along the face's axes
    out = np.empty_like(seq)
    for t, drv in enumerate(seq):
        p = procrustes(ref[RIGID], drv[RIGID])  # pose change ref -> t
        delta = apply_transform(invert_transform(p), drv) - ref  # (68, 2) expression, pose removed
        moved = src_in_ref + delta @ scale.T
        if mouth_floor:
            moved = open_mouth_floor(moved, ref + delta, k[1] * expression_scale, rot)
        out[t] = apply_transform(compose(a, p), moved)
    return out.astype(np.float32)

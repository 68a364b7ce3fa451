"""The warp's holes (landmarks/holes.py) and the lips' own triangulation (landmarks/warp.py), on synthetic
68-point faces."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from matplotlib.path import Path as MplPath

from talkinghead.evaluation.baselines import warp_baseline, warp_with_holes
from talkinghead.landmarks.holes import hole_mask_tensor, hole_masks
from talkinghead.landmarks.warp import warp_field
from helpers import synthetic_face

S = 200


def face(mouth_open=0.0, eye_open=1.0):
    return synthetic_face(120, 100, mouth_open, cx=100, cy=60, eye_open=eye_open)


def inside(polygon: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(..., 2) points -> (...) bool: inside the polygon (K, 2) (matplotlib's test, independent of holes.py)."""
    q = np.asarray(q, np.float64)
    return MplPath(np.asarray(polygon, np.float64)).contains_points(q.reshape(-1, 2)).reshape(q.shape[:-1])


def distance_to_contour(polygon: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(..., 2) points -> (...) distance to the closed contour (K, 2)."""
    q = np.asarray(q, np.float64)
    dist = np.full(q.shape[:-1], np.inf)
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        t = np.clip(((q - a) @ (b - a)) / max((b - a) @ (b - a), 1e-12), 0, 1)
        dist = np.minimum(dist, np.linalg.norm(q - (a + t[..., None] * (b - a)), axis=-1))
    return dist


def inside_and_distance(polygon: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) bool: pixel centre inside the polygon, and (S, S) distance to its edges."""
    ys, xs = np.mgrid[0:size, 0:size]
    q = np.stack([xs, ys], -1).astype(np.float64)  # (S, S, 2)
    return inside(polygon, q), distance_to_contour(polygon, q)


def area(polygon: np.ndarray) -> float:
    x, y = np.asarray(polygon, np.float64).T
    return 0.5 * abs(x @ np.roll(y, -1) - y @ np.roll(x, -1))


def test_open_driving_mouth_over_closed_photo_is_the_inner_mouth_polygon():
    src, dst = face(0.0), face(0.15)
    m = hole_masks(src, dst, S)
    inner = dst[60:68].astype(np.float64)
    inside, dist = inside_and_distance(inner, S)
    assert (m["mouth"][inside & (dist > 1.0)] > 0.99).all()
    assert (m["mouth"][~inside & (dist > 1.0)] == 0).all()
    assert abs(m["mouth"].sum() - area(inner)) < 0.05 * area(inner)
    assert m["eyes"].max() == 0  # the eyes are equal
    np.testing.assert_array_equal(m["all"], np.maximum(m["mouth"], m["eyes"]))
    for v in m.values():
        assert v.shape == (S, S) and v.dtype == np.float32 and v.min() >= 0 and v.max() <= 1


@pytest.mark.parametrize("mouth_open, eye_open", [(0.0, 1.0), (0.15, 1.0), (0.05, 0.2)])
def test_equal_landmarks_give_no_hole(mouth_open, eye_open):
    p = face(mouth_open, eye_open)
    assert all(v.max() == 0 for v in hole_masks(p, p, S).values())


def test_equally_open_photo_gives_almost_no_hole():
    dst = face(0.15)
    src = (dst - dst.mean(0)) * 1.3 + dst.mean(0) + [5, -8]  # the same face, larger and elsewhere
    assert hole_masks(src, dst, S)["all"].max() < 1e-6
    src = face(0.14)  # a little less open
    assert hole_masks(src, dst, S)["mouth"].sum() < 0.2 * area(dst[60:68])


def test_eye_hole_only_where_the_driver_opens_the_eye_more():
    half, open_ = face(0.0, eye_open=0.1), face(0.0, eye_open=1.0)
    m = hole_masks(half, open_, S)
    assert m["mouth"].max() == 0
    for ring in (slice(36, 42), slice(42, 48)):
        inside, dist = inside_and_distance(open_[ring].astype(np.float64), S)
        assert (m["eyes"][inside & (dist > 1.0)] > 0.99).all()
        assert abs(m["eyes"][inside].sum() - area(open_[ring])) < 0.1 * area(open_[ring])
    near_eyes = np.zeros((S, S), bool)
    for ring in (slice(36, 42), slice(42, 48)):
        inside_eye, dist = inside_and_distance(open_[ring].astype(np.float64), S)
        near_eyes |= inside_eye | (dist <= 1.0)
    assert m["eyes"][~near_eyes].max() == 0
    assert hole_masks(open_, half, S)["all"].max() == 0  # the photo shows more eye than the driver needs


def test_tensor_variant_matches_numpy():
    src = np.stack([face(0.0), face(0.1, eye_open=0.3)])
    dst = np.stack([face(0.15), face(0.1)])
    t = hole_mask_tensor(torch.from_numpy(src), torch.from_numpy(dst), S)
    assert t.shape == (2, 1, S, S) and t.dtype == torch.float32
    for i in range(2):
        np.testing.assert_array_equal(t[i, 0].numpy(), hole_masks(src[i], dst[i], S)["all"])
    one = hole_mask_tensor(src[:1], dst, S, part="mouth")  # one source for the batch
    np.testing.assert_array_equal(one[1, 0].numpy(), hole_masks(src[0], dst[1], S)["mouth"])


def test_warp_with_holes_fills_the_hole_with_the_mean_colour():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    src, dst = face(0.0), face(0.15)
    mask = hole_masks(src, dst, S)["all"]
    out, plain = warp_with_holes(img, src, dst), warp_baseline(img, src, dst)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[mask == 0], plain[mask == 0])
    np.testing.assert_allclose(out[mask == 1], np.broadcast_to(img.reshape(-1, 3).mean(0), out[mask == 1].shape),
                               atol=0.51)
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1
    t = warp_with_holes(x, src, dst, fill=0.0)
    assert t.shape == x.shape and (t[:, torch.from_numpy(mask == 1)] == 0).all()
    np.testing.assert_array_equal(warp_with_holes(img, dst, dst), warp_baseline(img, dst, dst))


# A grinning driver's lips (48-67, centred): wide corners, the inner corners close to the outer ones.
GRIN = np.array([[-33.9, -4.9], [-20.9, -12.6], [-6.8, -13.6], [2.5, -12.0], [10.6, -12.6], [20.9, -9.3],
                 [29.1, 1.0], [19.9, 12.4], [9.0, 15.7], [-0.2, 15.7], [-9.5, 14.1], [-22.5, 7.6],
                 [-30.1, -4.9], [-7.3, -7.7], [1.9, -6.6], [10.1, -6.0], [25.8, 0.5], [9.0, 8.6], [0.8, 8.1],
                 [-8.4, 6.5]])


def test_lips_keep_their_texture_and_the_opening_samples_the_photos_opening():
    """A grin's pixels of the driving opening sample inside the photo's (closed) inner-lip contour and the
    driving lip band's inside the photo's lip band: no triangle across the opening mixes the two (Delaunay
    joins 49 and 59 across this mouth's corner)."""
    dst = face(0.15)
    dst[48:68] = GRIN + dst[48:68].mean(0)
    src = dst.copy()
    src[[65, 66, 67]] = src[[63, 62, 61]] + [0, 0.5]  # the photo's mouth closed
    src[55:60, 1] -= 10
    field = warp_field(S, S, src, dst)  # (S, S, 2)
    inner, d_inner = inside_and_distance(dst[60:68].astype(np.float64), S)
    outer, d_outer = inside_and_distance(dst[48:60].astype(np.float64), S)
    assert (distance_to_contour(src[60:68], field[inner & (d_inner > 1.0)]) < 0.6).all()  # the lip line
    sampled_band = field[outer & ~inner & (d_inner > 1.0) & (d_outer > 1.0)]  # (n, 2)
    assert inside(src[48:60], sampled_band).all()
    assert not (inside(src[60:68], sampled_band) & (distance_to_contour(src[60:68], sampled_band) > 0.25)).any()

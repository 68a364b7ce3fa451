"""Evaluation baselines: copy-the-source and the landmark-driven piecewise-affine warp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.evaluation.baselines import copy_source, warp_baseline, warp_sequence
from talkinghead.landmarks.warp import warp_field


def face_points(size=256, seed=0) -> np.ndarray:
    """68 scattered (x, y) points in the middle of the frame, standing in for a face's landmarks."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.25 * size, 0.75 * size, (68, 2))


def smooth_image(size=256, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.uniform(0, 255, (1, 3, 8, 8))).float()
    big = torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)
    return big[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()


def test_copy_source_returns_unchanged_copy():
    img = smooth_image(64)
    out = copy_source(img, face_points(64), face_points(64, 1))
    assert np.array_equal(out, img) and out is not img
    t = torch.rand(3, 8, 8)
    assert torch.equal(copy_source(t), t)


def test_warp_identity_when_points_do_not_move():
    img, pts = smooth_image(), face_points()
    assert np.array_equal(warp_baseline(img, pts, pts), img)
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W)
    out = warp_baseline(t, pts, pts)
    assert out.shape == t.shape and torch.allclose(out, t, atol=1e-5)
    assert warp_baseline(t[None], pts, pts).shape == (1, 3, 256, 256)


def test_warp_moves_marked_pixel_with_landmarks():
    size = 256
    img = np.zeros((size, size, 3), np.uint8)
    pts = face_points(size)
    c = pts.mean(0)
    p = np.round(c).astype(int)  # marked pixel at the middle of the "face" (inside the landmarks' hull)
    img[p[1], p[0]] = 255
    # translation of all landmarks: the face moves rigidly, the marked pixel with it
    out = warp_baseline(img, pts, pts + np.array([7.0, -5.0]))
    y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    assert (x, y) == (p[0] + 7, p[1] - 5) and out[y, x, 0] == 255
    # scaling about the centre by 1.2: the pixel goes to c + 1.2 (p − c)
    field = warp_field(size, size, pts, c + 1.2 * (pts - c))
    q = c + 1.2 * (p - c)
    qi = np.round(q).astype(int)
    src = field[qi[1], qi[0]]  # source position sampled by the output pixel nearest q
    assert np.allclose(src, c + (qi - c) / 1.2, atol=1e-6)
    # the border (almost) stays put: anchors half a pixel outside are fixed
    assert np.allclose(field[0, 0], [0, 0], atol=0.5) and np.allclose(field[-1, -1], [size - 1, size - 1], atol=0.5)


def test_warp_handles_closed_lips_and_sequences():
    pts = face_points(128)
    pts[65:68] = pts[61:64]  # coincident inner-lip points (closed mouth): duplicate vertices
    img = smooth_image(128)
    outs = warp_sequence(img, pts, [pts, pts + 1.0])
    assert len(outs) == 2 and outs[0].shape == img.shape
    assert np.array_equal(outs[0], img)


@pytest.mark.media
def test_warp_beats_copy_on_real_self_reenactment(media):
    """Source frame 10 of franck driven to frame 300's landmarks: the warp follows the pose, the copy doesn't."""
    import av

    from talkinghead.metrics import akd, psnr
    from talkinghead.metrics._faces import landmarks68

    frames = {}
    with av.open(str(media / "videos" / "franck.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in (10, 300):
                frames[i] = f.to_ndarray(format="rgb24")
            if i >= 300:
                break
    src, drv = frames[10], frames[300]
    warped = warp_baseline(src, landmarks68(src), landmarks68(drv))
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1  # noqa: E731
    akd_copy, akd_warp = akd(t(copy_source(src)), t(drv)).akd.item(), akd(t(warped), t(drv)).akd.item()
    assert akd_warp < 0.05 < akd_copy  # measured: 0.008 vs 0.28
    assert psnr(t(warped), t(drv)).item() > psnr(t(src), t(drv)).item() + 2  # measured: 21.8 vs 16.1 dB


def test_warp_field_by_rows_is_the_searched_piecewise_affine_map():
    """warp_field finds each pixel's triangle run by run along the rows: the same map as looking every pixel up
    with qhull's find_simplex and taking the first lip triangle holding it (within 1e-9 px) — faces moved,
    scaled, with open, closed and folded lips, landmarks beyond the frame, square and oblong images."""
    from scipy.spatial import Delaunay

    from talkinghead.landmarks.warp import MOUTH_TRIANGLES, _affine_maps, _pixel_grid, border_anchors

    def searched(h, w, src, dst):
        anchors = border_anchors(h, w)
        s_all, d_all = np.concatenate([src, anchors]), np.concatenate([dst, anchors])
        tri = Delaunay(d_all)
        pix = _pixel_grid(h, w)
        m = np.concatenate([_affine_maps(d_all[tri.simplices], s_all[tri.simplices]), np.eye(3)[None, :, :2]])
        out = np.einsum("nk,nkd->nd", pix, m[tri.find_simplex(pix[:, :2])])
        td = dst[MOUTH_TRIANGLES]
        e = td[:, [1, 2, 0]] - td
        rel = pix[:, None, None, :2] - td[None]  # (N, K, 3, 2)
        cross = e[None, ..., 0] * rel[..., 1] - e[None, ..., 1] * rel[..., 0]
        inside = ((cross >= 0).all(-1) | (cross <= 0).all(-1))
        inside &= np.abs(e[:, 0, 0] * e[:, 2, 1] - e[:, 0, 1] * e[:, 2, 0])[None] > 1e-9
        hit = inside.any(1)
        lip_maps = _affine_maps(td, src[MOUTH_TRIANGLES])
        out[hit] = np.einsum("nk,nkd->nd", pix[hit], lip_maps[inside.argmax(1)[hit]])
        return out.reshape(h, w, 2)

    rng = np.random.default_rng(0)
    for trial in range(12):
        h, w = [(64, 64), (48, 80), (90, 60)][trial % 3]
        src = face_points(64, seed=trial) * np.array([w, h]) / 64
        dst = (src - src.mean(0)) * rng.uniform(0.6, 1.5) + src.mean(0) + rng.normal(0, 8, 2)
        dst = dst + rng.normal(0, 1.5, dst.shape)
        if trial % 4 == 1:
            dst[65:68] = dst[61:64]  # closed lips: coincident points
        if trial % 4 == 2:
            dst[[61, 62, 63]], dst[[67, 66, 65]] = dst[[67, 66, 65]].copy(), dst[[61, 62, 63]].copy()  # folded
        if trial % 4 == 3:
            dst[:17] += np.array([w, 0])  # the jaw beyond the frame
        assert np.abs(warp_field(h, w, src, dst) - searched(h, w, src, dst)).max() < 1e-9

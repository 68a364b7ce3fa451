"""Mouth discriminator (DESIGN.md §2; not in the paper): an adversary that looks only at the mouth.

The warp-guided G's frames are the source's own texture moved by a flow, so the paper's whole-image D finds
almost nothing to tell them from real frames (docs/experiments.md) and the
mouth — where a warp cannot show teeth or the mouth's interior — gets no adversarial signal; the L1 on the
mouth box alone pulls towards the mean, a dark gap. This D sees a square crop around the target's lips of the
image and of the driving landmark image (where the inner lips say how far the mouth is open) and scores
patches of it, so "lips apart but no interior drawn" is what it can learn to reject. Training only: model
files do not keep it.

* ``crop_boxes(images, boxes, size)``: differentiable square crops (bilinear, zero outside the image).
* ``MouthDiscriminator``: ``forward(x_crop, y_crop) -> (patch scores (B, P), features)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import sn


def crop_boxes(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """images (B, C, H, W), boxes (B, 4) as (x0, y0, x1, y1) in pixels (pixel centres at integers) ->
    (B, C, size, size) bilinear samples of each box (its corners at the outer output pixels' edges; zero
    outside the image). Gradients flow to `images`."""
    b, _, h, w = images.shape
    boxes = boxes.to(images.device, images.dtype)
    x0, y0, x1, y1 = boxes.unbind(dim=1)  # (B,) each
    # output pixel k's centre maps to x0 + (k + 0.5)·(x1 − x0)/size; grid_sample (align_corners=False) reads
    # pixel centre c at normalised (2c + 1)/W − 1
    t = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size  # (size,)
    xs = x0[:, None] + t[None] * (x1 - x0)[:, None]  # (B, size)
    ys = y0[:, None] + t[None] * (y1 - y0)[:, None]  # (B, size)
    gx = (2 * xs + 1) / w - 1
    gy = (2 * ys + 1) / h - 1
    grid = torch.stack([gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class MouthDiscriminator(nn.Module):
    """PatchGAN-style D on (mouth crop of the image, same crop of the landmark image): 6 channels in, three
    stride-2 convolutions (c, 2c, 4c) with leaky ReLU, a 3×3 conv to one score per patch.

    No spectral normalisation by default (unlike the paper's D): the output's mouth differs from the real one
    by little, and a 1-Lipschitz D can only score such close inputs a little apart (docs/experiments.md
    compares the two). The hinge loss stops pushing scores past ±1, which keeps them bounded without it.

    ``forward(x, y) -> (scores (B, (size/8)²), [block features])``; x, y: (B, 3, size, size) crops in [-1, 1].
    """

    def __init__(self, channels: int = 32, spectral_norm: bool = False):
        super().__init__()
        c = channels

        def conv(ci: int, co: int, k: int, stride: int) -> nn.Module:
            layer = nn.Conv2d(ci, co, k, stride=stride, padding=1)
            if spectral_norm:
                return sn(layer)
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
            return layer

        self.blocks = nn.ModuleList(conv(ci, co, 4, 2) for ci, co in ((6, c), (c, 2 * c), (2 * c, 4 * c)))
        self.head = conv(4 * c, 1, 3, 1)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        h, feats = torch.cat([x, y], dim=1), []  # (B, 6, s, s)
        for block in self.blocks:
            h = F.leaky_relu(block(h), 0.2)  # (B, c·2^i, s/2^(i+1), ·)
            feats.append(h)
        return self.head(h).flatten(1), feats  # (B, (s/8)²)

"""Motion for the warp-guided generator (DESIGN.md §2): refine a landmark-driven backward flow and predict
where the source can be trusted.

The coarse flow comes from the landmarks alone (`talkinghead.landmarks.warp.flow_grid`: piecewise-affine
over the 68 points and fixed border anchors, the classical warp of the evaluation's baseline) as a sampling
grid: for every pixel of the driving frame, the position in the source frame it shows. `MotionRefiner` looks
at the source, both landmark images and the coarsely warped source and returns
- a residual flow, added to the coarse grid (its last layer starts at zero: training starts from the
  classical warp);
- an occlusion map that gates the warped source features (1: the source shows this pixel);
- a blend mask: output = mask·warp(source) + (1 − mask)·generated (the generator's RGB head starts at zero
  over the warped source, so the untrained generator is the classical warp whatever the mask).
Grids are in grid_sample's normalised coordinates with align_corners=True (pixel centres at −1 … 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import conv3


def warp(x: Tensor, grid: Tensor) -> Tensor:
    """Backward warp: x (B, C, h, w) sampled at grid (B, H, W, 2) -> (B, C, H, W); bilinear, border padding."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def resize_grid(grid: Tensor, size: int) -> Tensor:
    """A sampling grid (B, H, W, 2) at another output size (B, size, size, 2) (values stay normalised)."""
    if grid.shape[1] == size:
        return grid
    g = grid.permute(0, 3, 1, 2)  # (B, 2, H, W)
    g = F.interpolate(g, size=(size, size), mode="bilinear", align_corners=True)
    return g.permute(0, 2, 3, 1)


def grid_at_size(grid: Tensor, size: int) -> Tensor:
    """A backward grid (B, S, S, 2) between two S² crops of the same boxes -> the same map between R² crops
    (B, R, R, 2), both in grid_sample's align_corners=True units. Pixel centres sit at (i + 0.5)/S of the box
    at S and at (j + 0.5)/R at R, so the grid is resampled at R's pixel centres (align_corners=False) and its
    values moved from S-pixel to R-pixel units through box fractions: identity stays identity. (`resize_grid`
    keeps the values and resamples corner-aligned: what the trained generator's feature pyramid uses.)"""
    g = F.interpolate(grid.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False)
    return grid_units_at_size(g, grid.shape[1], size).permute(0, 2, 3, 1)


def grid_units_at_size(values: Tensor, s: int, size: int) -> Tensor:
    """Grid values in align_corners=True units of S² crops -> of R² crops of the same boxes (any shape): the box
    fraction ((v + 1)/2·(S − 1) + 0.5)/S taken back to R's units, one affine map a·v + b."""
    a = (s - 1) * size / (s * (size - 1))
    b = (2 * size * ((s - 1) / 2 + 0.5) / s - 1) / (size - 1) - 1
    return values * a + b


def identity_grid(batch: int, size: int, device=None, dtype=torch.float32) -> Tensor:
    """The grid that samples every pixel at itself: (B, S, S, 2)."""
    t = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx, yy], dim=-1).expand(batch, size, size, 2)


def resize(x: Tensor, size: int) -> Tensor:
    """(B, C, H, W) -> (B, C, size, size), bilinear (area when shrinking by an integer factor)."""
    if x.shape[-1] == size:
        return x
    if x.shape[-1] % size == 0:
        return F.avg_pool2d(x, x.shape[-1] // size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv3(cin, cout)
        self.norm = nn.InstanceNorm2d(cout, affine=True)

    def forward(self, x: Tensor) -> Tensor:  # (B, cin, H, W) -> (B, cout, H/2, W/2)
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv3(cin, cout)
        self.norm = nn.InstanceNorm2d(cout, affine=True)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:  # (B, cin, H, W), skip (B, cs, 2H, 2W)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return torch.cat([F.relu(self.norm(self.conv(x))), skip], dim=1)


class MotionRefiner(nn.Module):
    """Hourglass at `size` (the generator's S/2): in = concat(source, source landmarks, driving landmarks,
    coarsely warped source) (B, 12, size, size); out: residual grid (B, S, S, 2), occlusion (B, 1, S, S) and
    blend mask (B, 1, S, S) in (0, 1), upsampled to the generator's size S.

    levels: halvings in the hourglass; ch: channels after the first conv (doubling per level, ≤ 4·ch).
    mask_bias: initial logit of the blend mask (0: an even blend of the warp and its correction);
    occlusion_bias: initial logit of the occlusion map (≈ 1: every source feature passes).
    """

    def __init__(self, size: int, ch: int = 32, levels: int = 3, in_ch: int = 12, mask_bias: float = 0.0,
                 occlusion_bias: float = 4.0):
        super().__init__()
        self.size = size
        self.stem = conv3(in_ch, ch)
        chs = [min(ch * 2 ** (i + 1), 4 * ch) for i in range(levels)]
        self.downs = nn.ModuleList(_Down(c_in, c_out) for c_in, c_out in zip([ch] + chs[:-1], chs))
        skips = [ch] + chs[:-1]  # channels of the skip entering each up block (deepest first when reversed)
        ups, c = [], chs[-1]
        for s in reversed(skips):
            ups.append(_Up(c, s))
            c = 2 * s
        self.ups = nn.ModuleList(ups)
        # heads: plain convs (spectral norm of a zero matrix is undefined); zero weights = constant start
        self.head = nn.Conv2d(c, 4, 3, padding=1)  # [flow dx, flow dy, occlusion logit, mask logit]
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([0.0, 0.0, occlusion_bias, mask_bias]))

    def forward(self, source: Tensor, source_y: Tensor, driving_y: Tensor, coarse: Tensor,
                out_size: int) -> tuple[Tensor, Tensor, Tensor]:
        h = torch.cat([resize(t, self.size) for t in (source, source_y, driving_y, coarse)], dim=1)
        h = F.relu(self.stem(h))  # (B, ch, size, size)
        skips = []
        for down in self.downs:
            skips.append(h)
            h = down(h)
        for up in self.ups:
            h = up(h, skips.pop())
        out = self.head(h)  # (B, 4, size, size)
        if out_size != self.size:
            out = F.interpolate(out, size=(out_size, out_size), mode="bilinear", align_corners=False)
        residual = out[:, :2].permute(0, 2, 3, 1)  # (B, S, S, 2)
        return residual, torch.sigmoid(out[:, 2:3]), torch.sigmoid(out[:, 3:4])

"""Region generators (DESIGN.md §2, "What the photo cannot show"): a slim U-Net that fills a hole in a crop
around one region of the face — the mouth interior (teeth, tongue, cavity) first.

The person enters as in paper §3.2: an embedding ê (here from a small encoder of the person's own crops of
the region, ``embed``), projected by P to ψ = P·ê, the AdaIN parameters of the U-Net's bottleneck and decoder;
so FF (ψ from ê) and FT (ψ' fine-tuned from P·ê) of §3.3 keep their meaning. The network sees the crop with
the hole blanked (or holding a `base` to refine: the mouth of a teeth bank, data/teeth_bank.py), the hole mask,
the crop's landmark image and a reference crop of the same person, and makes a colour and an alpha; the hole
gets alpha·colour + (1 − alpha)·base, every pixel outside it stays the crop's.

* ``RegionGenerator(cfg)``: ``embed(ref, ref_lips) -> ê (B, N)``, ``psi(ê) -> (B, P)``,
  ``fill(crop, mask, lips, ref, psi, base=None) -> RegionOutput``, ``render(GenInputs) -> GenOutput``.
* ``composite(crop, mask, colour, alpha)``: the blend, exact outside the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import RegionConfig
from .interface import GenInputs, GenOutput
from .layers import AdaIN, adain_layout


def composite(crop: Tensor, mask: Tensor, colour: Tensor, alpha: Tensor) -> Tensor:
    """crop, colour (B, 3, s, s), mask, alpha (B, 1, s, s) -> the crop with the hole filled: inside,
    alpha·colour + (1 − alpha)·crop; outside, the crop itself (bit for bit: a select, not a blend)."""
    inside = alpha * colour + (1 - alpha) * crop  # (B, 3, s, s)
    return torch.where(mask > 0.5, inside, crop)


@dataclass
class RegionOutput:
    image: Tensor  # (B, 3, s, s) the composite
    colour: Tensor  # (B, 3, s, s) in [-1, 1]
    alpha: Tensor  # (B, 1, s, s) in [0, 1]


def _conv(ci: int, co: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    """k×k conv keeping the size (k odd) or halving it (k = 4, stride 2)."""
    return nn.Conv2d(ci, co, k, stride=stride, padding=(k - 1) // 2 if k % 2 == 0 else k // 2)


class _Down(nn.Module):
    """stride-2 conv → IN → ReLU → conv → IN → ReLU: (B, ci, h, w) -> (B, co, h/2, w/2)."""

    def __init__(self, ci: int, co: int):
        super().__init__()
        self.body = nn.Sequential(_conv(ci, co, 4, 2), nn.InstanceNorm2d(co, affine=True), nn.ReLU(),
                                  _conv(co, co), nn.InstanceNorm2d(co, affine=True), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _AdaBlock(nn.Module):
    """AdaIN → ReLU → conv3 → AdaIN → ReLU → conv3 (+ 1×1 shortcut when widths differ), ψ slices as paper §3.2."""

    def __init__(self, ci: int, co: int):
        super().__init__()
        self.norm1, self.conv1 = AdaIN(ci), _conv(ci, co)
        self.norm2, self.conv2 = AdaIN(co), _conv(co, co)
        self.skip = nn.Conv2d(ci, co, 1) if ci != co else nn.Identity()

    def forward(self, x: Tensor, params: Tensor) -> Tensor:  # (B, ci, h, w) -> (B, co, h, w)
        p1, p2 = params.split([self.norm1.num_params, self.norm2.num_params], dim=1)
        h = self.conv1(F.relu(self.norm1(x, p1)))
        h = self.conv2(F.relu(self.norm2(h, p2)))
        return h + self.skip(x)


class RefEncoder(nn.Module):
    """ê of a person from K of their region crops (with their landmark images): a stride-2 conv stack,
    global average pooling, a linear layer; averaged over the K crops as E's embeddings are (paper §3.2)."""

    def __init__(self, cfg: RegionConfig):
        super().__init__()
        c, layers, ci = cfg.ref_channels, [], 6
        for i in range(4):  # s -> s/16
            co = c * 2 ** min(i, 2)
            layers += [_conv(ci, co, 4, 2), nn.LeakyReLU(0.2)]
            ci = co
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(ci, cfg.embed_dim)

    def forward(self, ref: Tensor, ref_lips: Tensor) -> Tensor:
        """ref, ref_lips (B, 3, s, s) or (B, K, 3, s, s) -> ê (B, N)."""
        k = ref.shape[1] if ref.dim() == 5 else 1
        x = torch.cat([ref, ref_lips], dim=-3).flatten(0, ref.dim() - 4)  # (B·K, 6, s, s)
        e = self.out(self.body(x).mean(dim=(2, 3)))  # (B·K, N)
        return e.view(-1, k, e.shape[-1]).mean(dim=1)  # (B, N)


class RegionGenerator(nn.Module):
    """U-Net over [blanked crop (3), mask (1), landmark image (3), reference crop (3)] at cfg.crop_size:
    a plain-IN encoder to s/8, cfg.bottleneck_blocks AdaIN blocks there, an AdaIN decoder with skips, and a
    head to colour (tanh) and alpha (sigmoid). ψ = P·ê drives every AdaIN."""

    needs_texture = False
    in_channels = 10

    def __init__(self, cfg: RegionConfig):
        super().__init__()
        if cfg.crop_size % 8:
            raise ValueError(f"crop_size must be a multiple of 8, got {cfg.crop_size}")
        self.cfg = cfg
        c0, c1, c2, c3 = cfg.channels
        self.stem = nn.Sequential(_conv(self.in_channels, c0), nn.InstanceNorm2d(c0, affine=True), nn.ReLU())
        self.downs = nn.ModuleList([_Down(c0, c1), _Down(c1, c2), _Down(c2, c3)])  # s -> s/8
        self.mid = nn.ModuleList([_AdaBlock(c3, c3) for _ in range(cfg.bottleneck_blocks)])
        self.ups = nn.ModuleList([_AdaBlock(c3 + c2, c2), _AdaBlock(c2 + c1, c1), _AdaBlock(c1 + c0, c0)])
        self.head_norm = AdaIN(c0)
        self.head = _conv(c0, 4)
        named = [(f"mid.{i}", b) for i, b in enumerate(self.mid)] + [(f"ups.{i}", b) for i, b in enumerate(self.ups)]
        self.slices, self.layout = adain_layout(named + [("head_norm", self.head_norm)])
        self.num_psi = sum(self.slices)
        n, c = cfg.teeth_bank, cfg.teeth_bank_crop  # the teeth bank's entries (data/teeth_bank.py), if any
        self.register_buffer("bank_crops", torch.zeros(n, c, c, 3, dtype=torch.uint8))  # normalised mouths
        self.register_buffer("bank_shapes", torch.zeros(n, 8, 2))  # their inner lips in the mouth frame
        self.register_buffer("bank_lips", torch.zeros(n, 3))  # their mean lip colours (0-255)
        self.encoder = RefEncoder(cfg)
        self.P = nn.Linear(cfg.embed_dim, self.num_psi)  # ψ̂ = P·ê (paper §3.2)
        nn.init.normal_(self.P.weight, std=0.02)
        nn.init.zeros_(self.P.bias)

    def embed(self, ref: Tensor, ref_lips: Tensor) -> Tensor:
        """(B, [K,] 3, s, s) the person's own crops and their landmark images -> ê (B, N)."""
        return self.encoder(ref, ref_lips)

    def psi(self, e: Tensor) -> Tensor:
        """ê (B, N) -> ψ̂ (B, num_psi)."""
        return self.P(e)

    def fill(self, crop: Tensor, mask: Tensor, lips: Tensor, ref: Tensor, psi: Tensor,
             base: Tensor | None = None) -> RegionOutput:
        """crop, lips, ref (B, 3, s, s), mask (B, 1, s, s), ψ (B or 1, num_psi) -> the filled crop; base
        (B, 3, s, s): what the hole starts from (default: nothing, 0). Whatever `crop` holds inside the hole
        (the warp's pixels) is never seen."""
        b = crop.shape[0]
        psi = psi.expand(b, -1) if psi.shape[0] == 1 else psi
        crop = crop * (1 - mask) if base is None else crop * (1 - mask) + base * mask  # the hole: 0 or base
        x = torch.cat([crop, mask, lips, ref], dim=1)  # (B, 10, s, s)
        skips = [self.stem(x)]  # (B, c0, s, s)
        for down in self.downs:
            skips.append(down(skips[-1]))  # (B, c1..c3, s/2..s/8)
        params = list(psi.split(self.slices, dim=1))
        h = skips.pop()  # (B, c3, s/8, s/8)
        for block in self.mid:
            h = block(h, params.pop(0))
        for block in self.ups:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1), params.pop(0))  # (B, c2..c0, s/4..s)
        out = self.head(F.relu(self.head_norm(h, params.pop(0))))  # (B, 4, s, s)
        colour, alpha = torch.tanh(out[:, :3]), torch.sigmoid(out[:, 3:])
        return RegionOutput(composite(crop, mask, colour, alpha), colour, alpha)

    def forward(self, crop: Tensor, mask: Tensor, lips: Tensor, ref: Tensor, ref_lips: Tensor,
                base: Tensor | None = None) -> RegionOutput:
        """FF in one call: ψ̂ = P·embed(ref, ref_lips), then `fill`."""
        return self.fill(crop, mask, lips, ref if ref.dim() == 4 else ref[:, 0], self.psi(self.embed(ref, ref_lips)),
                         base)

    def render(self, inputs: GenInputs) -> GenOutput:
        """The generators' one call (nn/interface.py): y = the crop's landmark image, ψ as given; `extra`
        holds "crop", "mask" and "ref" (B, ·, s, s). GenOutput.image is the composite, .generated the colour,
        .mask the alpha."""
        ex = inputs.extra
        out = self.fill(ex["crop"], ex["mask"], inputs.y, ex["ref"], inputs.psi)
        return GenOutput(image=out.image, generated=out.colour, mask=out.alpha)

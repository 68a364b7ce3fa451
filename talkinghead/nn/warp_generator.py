"""Warp-guided generator (DESIGN.md §2): texture comes from the source photo, the network generates only what
the photo cannot show.

Paper §3.2's G hallucinates every pixel from ê. Here the driving frame is rendered by moving the source's
own texture (after first-order-model's occlusion-aware generator and Samsung's bi-layer model; our code):
1. coarse flow from the landmarks (a backward sampling grid, driving → source, given by the caller) refined by
   `MotionRefiner` (residual flow, occlusion map, blend mask);
2. the source's encoder features, warped by the flow at every scale and gated by the occlusion map;
3. a decoder whose AdaIN parameters are ψ̂ = P·ê, as in the paper (FF and FT of §3.3 work unchanged), fed
   the gated features and the driving landmark image at every scale;
4. output = mask·warp(source) + (1 − mask)·generated, where the decoder's RGB head draws `generated` as a
   correction of the warped source: generated = clamp(warp(source) + Δ, −1, 1).
The refiner's residual-flow head and the RGB head Δ start at zero, so the untrained generator *is* the
classical warp (exactly, whatever the blend mask). An earlier design started the mask at σ(4) ≈ 0.98 over an
absolute RGB head instead: the saturated sigmoid damped the decoder's and the mask's gradients ~50×, and 700
CPU steps left the output equal to the warp (content loss ratio 1.000).

ψ layout as `Generator`: the AdaIN layers in forward order (bottleneck res blocks, up blocks, out_norm), each
[scale deltas (C) | biases (C)].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .generator import AdaINDecoder
from .interface import GenInputs, GenOutput, Texture
from .layers import ResBlockDown, conv1, down_channels
from .motion import MotionRefiner, resize, resize_grid, warp


class WarpGenerator(AdaINDecoder):
    """G for `model.generator = "warp"`.

    ``render(GenInputs) -> GenOutput`` (the interface of every G; `inp.texture` required);
    ``forward(y, psi, source, source_y, coarse_grid) -> (B, 3, S, S)``; ``encode(source) -> [features]``
    (cacheable per avatar: the source does not change while animating); ``project(e) -> psi``. y, source_y:
    landmark images (B, 3, S, S); source: (B, 3, S, S) in [-1, 1]; coarse_grid: (B, S, S, 2) backward grid
    from the driving landmarks to the source's.
    """

    needs_texture = True  # GenInputs.texture: the source photo and the landmark flow to it

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.check_sizes(cfg)
        self.cfg = cfg
        s, nd = cfg.image_size, cfg.num_down
        chs = down_channels(nd, cfg.base_channels, cfg.max_channels)  # encoder outputs: S/2 … bottleneck
        self.encoder = nn.ModuleList(ResBlockDown(c_in, c_out, norm=True, preact=i > 0)
                                     for i, (c_in, c_out) in enumerate(zip([3] + chs[:-1], chs)))
        self.motion = MotionRefiner(s // 2, cfg.motion_channels, levels=max(1, min(3, nd)),
                                    mask_bias=cfg.mask_bias)
        up_out = chs[-2::-1] + [cfg.base_channels]
        self.build_decoder(cfg, chs[-1], up_out)
        # RGB head Δ over the warped source: a plain conv at zero (spectral norm of a zero matrix is undefined)
        self.out_conv = nn.Conv2d(cfg.base_channels, 3, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        # gated warped features + the driving landmark image (+ occlusion) enter at every scale (1×1 convs):
        # the encoder's feature at the bottleneck and at each up block's output scale, the source itself at S
        skip_in = chs[-2::-1] + [3]
        self.inject = nn.ModuleList([conv1(chs[-1] + 4, chs[-1])]
                                    + [conv1(oc + sc + 4, oc) for oc, sc in zip(up_out, skip_in)])

    def encode(self, source: Tensor) -> list[Tensor]:
        """Source features at S/2, S/4, …, bottleneck: [(B, c_i, S/2^(i+1), ·)]."""
        feats, h = [], source
        for block in self.encoder:
            h = block(h)
            feats.append(h)
        return feats

    def render(self, inp: GenInputs) -> GenOutput:
        """Steps 1-4 of the module docstring for B driving frames."""
        if inp.texture is None:
            raise ValueError("the warp-guided generator needs GenInputs.texture (source and flow grid)")
        t = inp.texture
        return self._render(inp.y, inp.psi, t.x, t.y, t.grid, t.features)

    def _render(self, y: Tensor, psi: Tensor, source: Tensor, source_y: Tensor, coarse_grid: Tensor,
                features: list[Tensor] | None) -> GenOutput:
        b, size = y.shape[0], y.shape[-1]
        parts = self.psi_parts(psi, b)
        source, source_y = (t.expand(b, -1, -1, -1) if t.shape[0] != b else t for t in (source, source_y))
        feats = self.encode(source) if features is None else features
        feats = [f.expand(b, -1, -1, -1) if f.shape[0] != b else f for f in feats]
        coarse = warp(source, coarse_grid)  # (B, 3, S, S)
        residual, occlusion, mask = self.motion(source, source_y, y, coarse, size)
        grid = coarse_grid + residual  # (B, S, S, 2)
        warped = warp(source, grid)  # (B, 3, S, S)

        def gated(t: Tensor) -> Tensor:  # t (B, C, s, s) of the source -> warped, gated, + landmarks/occlusion
            s = t.shape[-1]
            occ = resize(occlusion, s)
            return torch.cat([warp(t, resize_grid(grid, s)) * occ, resize(y, s), occ], dim=1)

        h = self.inject[0](gated(feats[-1]))  # (B, C, bottleneck, bottleneck)
        for block in self.res:
            h = block(h, parts.pop(0))
        skips = feats[-2::-1] + [source]
        for block, inject, skip in zip(self.up, self.inject[1:], skips):
            h = block(h, parts.pop(0))
            h = h + inject(torch.cat([h, gated(skip)], dim=1))
        delta = self.out_conv(F.relu(self.out_norm(h, parts.pop(0))))  # (B, 3, S, S), 0 when untrained
        generated = (warped + delta).clamp(-1.0, 1.0)
        image = mask * warped + (1 - mask) * generated
        return GenOutput(image, warped, generated, mask, occlusion, grid, residual)

    def forward(self, y: Tensor, psi: Tensor, source: Tensor, source_y: Tensor, coarse_grid: Tensor,
                features: list[Tensor] | None = None) -> Tensor:
        return self.render(GenInputs(y, psi, Texture(source, source_y, coarse_grid, features))).image

"""Generator G(y, ê; ψ, P) (paper §3.2): landmark image → frame, person-specific via AdaIN parameters ψ̂ = P·ê.

Layout of ψ (deterministic; ``Generator.adain_layout`` lists it): the AdaIN layers in the order the forward
pass uses them —
  bottleneck ``res{j}.norm1``, ``res{j}.norm2`` for j = 0..num_res_blocks-1,
  ``up{j}.norm1`` (in channels), ``up{j}.norm2`` (out channels) for j = 0..num_down-1,
  ``out_norm`` (final AdaIN before ReLU → conv3 → tanh) —
each contributing 2·C entries ``[scale deltas (C) | biases (C)]``; AdaIN applies IN(x)·(1 + δ) + β.

Projection P: spectral-normalised Linear(N → num_adain_params) with a bias (init 0), xavier init. Because ψ
holds *deltas* to a scale of 1, ψ = 0 is plain instance norm and the freshly initialised G starts with
scales ≈ 1 (‖P‖₂ = 1 keeps ψ̂ small relative to ê). The bias lets G learn a person-independent average
style, so P·ê only has to encode the deviation from it; for fine-tuning (paper §3.3) ψ' is initialised from
``project(ê)`` (bias included) and used through ``forward(y, ψ')``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from ..config import ModelConfig
from .interface import GenInputs, GenOutput
from .layers import (AdaIN, ResBlock, ResBlockDown, ResBlockUp, SelfAttention, adain_layout, conv3,
                     down_channels, sn)


class AdaINDecoder(nn.Module):
    """What both generators share (paper §3.2): residual blocks with AdaIN at the bottleneck, up blocks with
    AdaIN to S, AdaIN → ReLU → conv3 → tanh, and the projection P with ψ̂ = P·ê sliced in forward order."""

    @staticmethod
    def check_sizes(cfg: ModelConfig) -> None:
        s, nd = cfg.image_size, cfg.num_down
        if nd < 1 or s != cfg.bottleneck_size * 2 ** nd:
            raise ValueError(f"image_size {s} must be bottleneck_size {cfg.bottleneck_size} times a power of 2")

    def build_decoder(self, cfg: ModelConfig, c: int, up_out: list[int]) -> None:
        """Bottleneck (c channels) -> up blocks with `up_out` channels -> RGB; then ψ's layout and P."""
        self.res = nn.ModuleList(ResBlock(c, adain=True) for _ in range(cfg.num_res_blocks))
        self.up = nn.ModuleList()
        for oc in up_out:
            self.up.append(ResBlockUp(c, oc))
            c = oc
        self.out_norm = AdaIN(c)
        self.out_conv = conv3(c, 3)
        # ψ layout: one slice per AdaIN-using block, in forward order (see module docstring).
        self._slices, self.adain_layout = adain_layout(
            [(f"res{j}", r) for j, r in enumerate(self.res)] + [(f"up{j}", u) for j, u in enumerate(self.up)]
            + [("out_norm", self.out_norm)])
        self.num_adain_params = int(sum(self._slices))
        # Projection P (paper §3.2): ψ̂ = P·ê.
        self.proj = sn(nn.Linear(cfg.embed_dim, self.num_adain_params, bias=True))

    def project(self, e: Tensor) -> Tensor:
        """ψ̂ = P·ê: (B, N) -> (B, num_adain_params)."""
        return self.proj(e)

    def psi_parts(self, psi: Tensor, batch: int) -> list[Tensor]:
        """ψ (B or 1, P) -> one slice per AdaIN-using block, in forward order (a single ψ serves a batch)."""
        if psi.shape[-1] != self.num_adain_params:
            raise ValueError(f"psi has {psi.shape[-1]} entries, expected {self.num_adain_params}")
        if psi.shape[0] != batch:
            psi = psi.expand(batch, -1)  # one ψ (1, P) for a batch of poses, e.g. a cached avatar
        return list(psi.split(self._slices, dim=1))

    def to_rgb(self, h: Tensor, part: Tensor) -> Tensor:
        """(B, base, S, S) -> (B, 3, S, S) in (-1, 1): AdaIN → ReLU → conv3 → tanh."""
        return torch.tanh(self.out_conv(F.relu(self.out_norm(h, part))))


class Generator(AdaINDecoder):
    """G: ResBlockDown ×num_down (instance norm) → ResBlock ×num_res_blocks (AdaIN) → ResBlockUp ×num_down
    (AdaIN) → AdaIN → ReLU → conv3 → tanh; self-attention after blocks whose output size is in
    ``cfg.attention_sizes``.

    ``forward(y (B,3,S,S), psi (B, num_adain_params)) -> (B,3,S,S)`` in (-1, 1); ``render(GenInputs) ->
    GenOutput`` (the interface of every G; needs no texture); ``project(e (B,N)) -> psi``;
    ``generate(y, e) = forward(y, project(e))``.
    """

    needs_texture = False  # every pixel comes from ê (paper §3.2)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.check_sizes(cfg)
        self.cfg = cfg
        s, nd = cfg.image_size, cfg.num_down
        att = tuple(cfg.attention_sizes)
        chs = down_channels(nd, cfg.base_channels, cfg.max_channels)  # outputs of the down blocks
        # Down path, S -> bottleneck.
        self.down, self.down_attn = nn.ModuleList(), nn.ModuleList()
        c = 3
        for i, oc in enumerate(chs):
            self.down.append(ResBlockDown(c, oc, norm=True, preact=i > 0))
            s //= 2
            self.down_attn.append(SelfAttention(oc) if s in att else nn.Identity())
            c = oc
        # Bottleneck and up path (mirrors the down path; the last up block ends at base_channels).
        up_out = chs[-2::-1] + [cfg.base_channels]
        self.build_decoder(cfg, c, up_out)
        self.up_attn = nn.ModuleList()
        for oc in up_out:
            s *= 2
            self.up_attn.append(SelfAttention(oc) if s in att else nn.Identity())

    def forward(self, y: Tensor, psi: Tensor) -> Tensor:
        parts = self.psi_parts(psi, y.shape[0])
        h = y  # (B, 3, S, S)
        for block, attn in zip(self.down, self.down_attn):
            h = attn(block(h))
        # h: (B, C, bottleneck, bottleneck)
        for block in self.res:
            h = block(h, parts.pop(0))
        for block, attn in zip(self.up, self.up_attn):
            h = attn(block(h, parts.pop(0)))
        return self.to_rgb(h, parts.pop(0))  # (B, 3, S, S)

    def render(self, inp: GenInputs) -> GenOutput:
        """x̂ = G(y, ψ) as a GenOutput: (B, 3, S, S) in its `image`; `inp.texture` is not used."""
        return GenOutput(self(inp.y, inp.psi))

    def generate(self, y: Tensor, e: Tensor) -> Tensor:
        """x̂ = G(y, ê) = forward(y, P·ê)."""
        return self(y, self.project(e))

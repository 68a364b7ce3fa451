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
from .layers import AdaIN, ResBlock, ResBlockDown, ResBlockUp, SelfAttention, conv3, down_channels, sn


class Generator(nn.Module):
    """G: ResBlockDown ×num_down (instance norm) → ResBlock ×num_res_blocks (AdaIN) → ResBlockUp ×num_down
    (AdaIN) → AdaIN → ReLU → conv3 → tanh; self-attention after blocks whose output size is in
    ``cfg.attention_sizes``.

    ``forward(y (B,3,S,S), psi (B, num_adain_params)) -> (B,3,S,S)`` in (-1, 1);
    ``project(e (B,N)) -> psi``; ``generate(y, e) = forward(y, project(e))``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        s, nd = cfg.image_size, cfg.num_down
        if nd < 1 or s != cfg.bottleneck_size * 2 ** nd:
            raise ValueError(f"image_size {s} must be bottleneck_size {cfg.bottleneck_size} times a power of 2")
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
        # Bottleneck with AdaIN.
        self.res = nn.ModuleList(ResBlock(c, adain=True) for _ in range(cfg.num_res_blocks))
        # Up path mirrors the down path; the last up block ends at base_channels.
        up_out = chs[-2::-1] + [cfg.base_channels]
        self.up, self.up_attn = nn.ModuleList(), nn.ModuleList()
        for oc in up_out:
            self.up.append(ResBlockUp(c, oc))
            s *= 2
            self.up_attn.append(SelfAttention(oc) if s in att else nn.Identity())
            c = oc
        self.out_norm = AdaIN(c)
        self.out_conv = conv3(c, 3)

        # ψ layout: one slice per AdaIN-using block, in forward order (see module docstring).
        self._slices = [r.num_adain_params for r in self.res] + [u.num_adain_params for u in self.up] + [
            self.out_norm.num_params]
        self.num_adain_params = int(sum(self._slices))
        self.adain_layout: list[tuple[str, int, int]] = []  # (AdaIN name, offset in ψ, channels)
        off = 0
        named = [(f"res{j}", r) for j, r in enumerate(self.res)] + [(f"up{j}", u) for j, u in enumerate(self.up)]
        for name, blk in named:
            for sub in ("norm1", "norm2"):
                ch = getattr(blk, sub).ch
                self.adain_layout.append((f"{name}.{sub}", off, ch))
                off += 2 * ch
        self.adain_layout.append(("out_norm", off, self.out_norm.ch))
        assert off + 2 * self.out_norm.ch == self.num_adain_params

        # Projection P (paper §3.2): ψ̂ = P·ê.
        self.proj = sn(nn.Linear(cfg.embed_dim, self.num_adain_params, bias=True))

    def project(self, e: Tensor) -> Tensor:
        """ψ̂ = P·ê: (B, N) -> (B, num_adain_params)."""
        return self.proj(e)

    def forward(self, y: Tensor, psi: Tensor) -> Tensor:
        if psi.shape[-1] != self.num_adain_params:
            raise ValueError(f"psi has {psi.shape[-1]} entries, expected {self.num_adain_params}")
        if psi.shape[0] != y.shape[0]:
            psi = psi.expand(y.shape[0], -1)  # one ψ (1, P) for a batch of poses, e.g. a cached avatar
        parts = list(psi.split(self._slices, dim=1))
        h = y  # (B, 3, S, S)
        for block, attn in zip(self.down, self.down_attn):
            h = attn(block(h))
        # h: (B, C, bottleneck, bottleneck)
        for block in self.res:
            h = block(h, parts.pop(0))
        for block, attn in zip(self.up, self.up_attn):
            h = attn(block(h, parts.pop(0)))
        h = F.relu(self.out_norm(h, parts.pop(0)))  # (B, base, S, S)
        return torch.tanh(self.out_conv(h))  # (B, 3, S, S)

    def generate(self, y: Tensor, e: Tensor) -> Tensor:
        """x̂ = G(y, ê) = forward(y, P·ê)."""
        return self(y, self.project(e))

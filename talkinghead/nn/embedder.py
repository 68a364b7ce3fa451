"""Embedder E(x, y; φ) (paper §3.2): a frame and its landmark image → embedding ê ∈ R^N."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .layers import DownTrunk


class Embedder(nn.Module):
    """E: concat(x, y) → residual down blocks (no norm) + self-attention → global sum pooling → ReLU
    (the ReLU only with cfg.embed_relu, see ModelConfig).

    ``forward(x (B,3,S,S), y (B,3,S,S)) -> (B, N)``; the caller (or :meth:`embed_shots`) averages over the K
    shots of one video (paper eq. 1).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = DownTrunk(cfg.image_size, 6, cfg.base_channels, cfg.max_channels, cfg.embed_dim,
                               tuple(cfg.attention_sizes))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h, _ = self.trunk(torch.cat([x, y], dim=1))  # (B, N, 4, 4)
        e = h.sum(dim=(2, 3))  # (B, N)
        return F.relu(e) if self.cfg.embed_relu else e

    def embed_shots(self, x: Tensor, y: Tensor, per_shot: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """ê = mean over K shots (paper eq. 1). x, y: (B, K, 3, S, S) -> (B, N) [, per-shot (B, K, N)]."""
        b, k = x.shape[:2]
        e = self(x.flatten(0, 1), y.flatten(0, 1)).view(b, k, -1)  # (B, K, N)
        return (e.mean(dim=1), e) if per_shot else e.mean(dim=1)

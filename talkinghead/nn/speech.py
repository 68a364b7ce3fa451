"""The speech → mouth network (DESIGN.md §2, "speech and text as drivers"; MakeItTalk's content branch, as a
temporal convolution instead of an LSTM): per-10-ms audio features in, the 37 mouth and jaw points' offsets from
the mouth at rest (face frame, inter-ocular units; landmarks/mouth_motion.py) out, at the same rate. Centred
(non-causal) dilated convolutions see about a quarter of a second on either side, so the lips may start to move
before the sound does, as real lips do."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.config import SpeechConfig
from talkinghead.media.audio import NUM_FEATURES, NUM_PHONES

NUM_POINTS = 37  # landmarks/mouth_motion.MOUTH_JAW


class _Block(nn.Module):
    def __init__(self, c: int, dilation: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(c, c, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(c, c, 1)
        self.norm = nn.LayerNorm(c)  # per frame: the output at t sees only its context, never the whole clip
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, F)
        h = self.norm(self.conv1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.conv2(self.drop(F.gelu(h)))


class SpeechToMouth(nn.Module):
    """(B, C, F) inputs (41 normalised features, then with cfg.phones the phone one-hot) -> (B, F, 37, 2) offsets."""

    def __init__(self, cfg: SpeechConfig):
        super().__init__()
        num_features = NUM_FEATURES + (NUM_PHONES if cfg.phones else 0)
        self.num_inputs = num_features
        c = cfg.channels
        self.inp = nn.Conv1d(num_features, c, 5, padding=2)
        self.blocks = nn.ModuleList([_Block(c, d, cfg.dropout) for d in cfg.dilations])
        k = cfg.components or NUM_POINTS * 2
        self.out = nn.Conv1d(c, k, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # starts at the rest mouth
        # components > 0: the output is a mix of the training offsets' principal components (set by the trainer)
        self.register_buffer("basis", torch.eye(k, NUM_POINTS * 2) if cfg.components else torch.zeros(0))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.inp(feats))  # (B, C, F)
        for block in self.blocks:
            x = block(x)
        y = self.out(x).transpose(1, 2)  # (B, F, K)
        if self.basis.numel():
            y = y @ self.basis  # (B, F, 74)
        return y.reshape(y.shape[0], y.shape[1], NUM_POINTS, 2)

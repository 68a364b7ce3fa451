"""The speech model file (DESIGN.md §2, "speech and text as drivers"): what `train --preset speech` writes and
`animate --audio/--say` loads.

* ``M.*``: the SpeechToMouth weights (nn/speech.py), its SpeechConfig in the metadata;
* ``motion.points`` (N, 68, 2) and ``motion.clips`` (C, 2) [start, length]: a bank of real head motion and blinks
  (training clips' tracked landmarks, each clip in its own face frame) that moves the head while speech moves
  the mouth, never a frozen head; ``motion.fps`` (C,);
* ``loudness.slope``/``loudness.offset`` (37, 2): the loudness baseline (offsets = slope × loudness + offset,
  least squares on the training clips), kept for `evaluate --audio`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import save_file

from talkinghead import __version__
from talkinghead.config import SpeechConfig
from talkinghead.errors import CheckpointError
from talkinghead.media.files import atomic_write
from talkinghead.persons.checkpoint import load_state, read_safetensors
from talkinghead.persons.validation import Invalid, parse_json

SPEECH_FORMAT = "talkinghead-speech"
SPEECH_FORMAT_VERSION = 1
NET_PREFIX = "M."


@dataclass
class MotionBank:
    """Real head motion: clips of (T, 68, 2) landmarks at their frame rates."""

    points: np.ndarray  # (N, 68, 2) float32, the clips one after another
    clips: np.ndarray  # (C, 2) int: start, length
    fps: np.ndarray  # (C,) float

    def clip(self, i: int) -> tuple[np.ndarray, float]:
        s, n = (int(v) for v in self.clips[i])
        return self.points[s:s + n].astype(np.float32), float(self.fps[i])

    def __len__(self) -> int:
        return len(self.clips)


@dataclass
class SpeechModel:
    cfg: SpeechConfig
    net: torch.nn.Module  # SpeechToMouth, eval mode
    motion: MotionBank
    loudness_slope: np.ndarray  # (37, 2)
    loudness_offset: np.ndarray  # (37, 2)
    info: dict = field(default_factory=dict)
    path: str | None = None

    @torch.no_grad()
    def predict(self, feats: np.ndarray, phones: np.ndarray | None = None) -> np.ndarray:
        """(F, 41) features and (F,) phone indices (media/audio.phones; needed by a model with cfg.phones) ->
        (F, 37, 2) float32 offsets from the mouth at rest."""
        from talkinghead.media.audio import model_inputs

        if self.cfg.phones and phones is None:
            raise ValueError("this speech model reads the phones too: give predict(feats, phones)")
        inputs = model_inputs(feats, phones if self.cfg.phones else None)  # (F, C)
        p = next(self.net.parameters())
        x = torch.as_tensor(inputs.T[None], device=p.device, dtype=p.dtype)  # (1, C, F)
        return self.net(x)[0].float().cpu().numpy()


def save_speech_model(path: str | os.PathLike, cfg: SpeechConfig, net: torch.nn.Module, motion: MotionBank,
                      loudness_slope: np.ndarray, loudness_offset: np.ndarray, info: dict | None = None) -> None:
    """Writes the model file atomically."""
    tensors = {NET_PREFIX + k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors["motion.points"] = torch.from_numpy(np.asarray(motion.points, np.float16))
    tensors["motion.clips"] = torch.from_numpy(np.asarray(motion.clips, np.int64))
    tensors["motion.fps"] = torch.from_numpy(np.asarray(motion.fps, np.float32))
    tensors["loudness.slope"] = torch.from_numpy(np.asarray(loudness_slope, np.float32))
    tensors["loudness.offset"] = torch.from_numpy(np.asarray(loudness_offset, np.float32))
    meta = {"format": SPEECH_FORMAT, "format_version": str(SPEECH_FORMAT_VERSION), "talkinghead_version": __version__,
            "config": json.dumps(cfg.to_dict()), "info": json.dumps(info or {})}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_speech_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> SpeechModel:
    """The model file's SpeechModel; a one-line CheckpointError for a missing, foreign or broken file."""
    from talkinghead.nn.speech import SpeechToMouth

    tensors, meta = read_safetensors(path, SPEECH_FORMAT, SPEECH_FORMAT_VERSION, "speech model file")
    try:
        cfg = SpeechConfig.from_dict(parse_json(meta.get("config"), "config"))
        info = parse_json(meta.get("info", "{}"), "info")
    except (Invalid, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    need = ("motion.points", "motion.clips", "motion.fps", "loudness.slope", "loudness.offset")
    missing = [k for k in need if k not in tensors]
    if missing:
        raise CheckpointError(f"{path}: speech model file without {', '.join(missing)}")
    try:
        net = SpeechToMouth(cfg)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: broken speech model ({type(e).__name__}: {e})") from None
    load_state(net, tensors, NET_PREFIX, path)
    clips = tensors["motion.clips"].numpy().astype(np.int64)
    points = tensors["motion.points"].float().numpy()
    if clips.ndim != 2 or clips.shape[1] != 2 or len(clips) == 0 or points.shape[1:] != (68, 2) \
            or int((clips[:, 0] + clips[:, 1]).max()) > len(points) or (clips[:, 1] < 1).any():
        raise CheckpointError(f"{path}: broken motion bank")
    motion = MotionBank(points, clips, tensors["motion.fps"].numpy().astype(np.float64))
    return SpeechModel(cfg, net.to(device).eval(), motion, tensors["loudness.slope"].numpy(),
                       tensors["loudness.offset"].numpy(), info, str(path))

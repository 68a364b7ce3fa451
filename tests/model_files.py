"""Randomly initialised model files for tests: the one helper every test module uses to get a model file."""

from __future__ import annotations

from pathlib import Path

import torch

from talkinghead.persons.checkpoint import save_model
from talkinghead.config import Config, tiny
from talkinghead.nn import build_models


def random_model_file(path, cfg: Config | None = None, seed: int = 0, discriminator: bool = True) -> Path:
    """Saves E, G (and D) of `cfg` (default the `tiny` preset), freshly built after torch.manual_seed(seed),
    as a model file at `path`; returns the path."""
    cfg = cfg or tiny()
    torch.manual_seed(seed)
    E, G, D = build_models(cfg.model)
    save_model(path, cfg, E, G, D if discriminator else None)
    return Path(path)

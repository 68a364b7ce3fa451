"""Region model files (DESIGN.md §2): one region generator (nn/regions.py) and its RegionConfig in a
safetensors file, rebuilt from the file alone as model files are (persons/checkpoint.py)."""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

from talkinghead import __version__
from talkinghead.config import RegionConfig
from talkinghead.errors import CheckpointError
from talkinghead.media.files import atomic_write
from talkinghead.persons.checkpoint import load_state, read_safetensors

REGION_FORMAT = "talkinghead-region"
REGION_FORMAT_VERSION = 1


def save_region_model(path: str | os.PathLike, cfg: RegionConfig, G: torch.nn.Module,
                      extra_metadata: dict[str, str] | None = None) -> None:
    """Writes G's weights with cfg in the metadata (atomically)."""
    meta = {"format": REGION_FORMAT, "format_version": str(REGION_FORMAT_VERSION),
            "talkinghead_version": __version__, "config": json.dumps(cfg.to_dict()), **(extra_metadata or {})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_region_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(RegionConfig, RegionGenerator in eval mode, metadata) from a region model file."""
    from talkinghead.nn.regions import RegionGenerator

    tensors, meta = read_safetensors(path, REGION_FORMAT, REGION_FORMAT_VERSION, "region model file")
    try:
        cfg = RegionConfig.from_dict(json.loads(meta["config"]))
        G = RegionGenerator(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: broken region model file ({type(e).__name__}: {e})") from None
    load_state(G, {f"G.{k}": v for k, v in tensors.items()}, "G.", path)
    return cfg, G.to(device).eval(), {k: v for k, v in meta.items() if k != "config"}

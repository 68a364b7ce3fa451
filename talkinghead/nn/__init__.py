"""Networks of Zakharov et al. 2019 (paper §3.2): embedder E, generator G (with projection P), discriminator D.

Pure ``nn.Module``s: no I/O, no device literals.
"""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from .discriminator import Discriminator
from .embedder import Embedder
from .generator import Generator
from .interface import GenInputs, GenOutput, Texture
from .layers import fold_spectral_norm, has_spectral_norm
from .warp_generator import WarpGenerator

__all__ = ["Embedder", "Generator", "WarpGenerator", "Discriminator", "build_models", "build_generator",
           "count_parameters", "fold_spectral_norm", "has_spectral_norm", "GenInputs", "GenOutput", "Texture",
           "needs_texture"]

GENERATORS = {"adain": Generator, "warp": WarpGenerator}


def build_generator(cfg: ModelConfig) -> nn.Module:
    """G of the kind cfg.generator names: "adain" (paper §3.2) or "warp" (warp-guided, DESIGN.md §2)."""
    try:
        return GENERATORS[cfg.generator](cfg)
    except KeyError:
        raise ValueError(f"unknown generator {cfg.generator!r}; choose one of {', '.join(GENERATORS)}") from None


def needs_texture(cfg: ModelConfig) -> bool:
    """Whether cfg's kind of G takes a `Texture` (the source photo and the landmark flow to it) in GenInputs."""
    return GENERATORS[cfg.generator].needs_texture


def build_models(cfg: ModelConfig) -> tuple[Embedder, nn.Module, Discriminator]:
    """(E, G, D) for ``cfg`` (D's W has cfg.num_videos rows)."""
    return Embedder(cfg), build_generator(cfg), Discriminator(cfg)


def count_parameters(module: nn.Module, trainable_only: bool = False, exclude: tuple[str, ...] = ()) -> int:
    """Number of parameter entries; ``exclude``: name prefixes to skip (e.g. ``("W.",)`` for D's trunk)."""
    return sum(p.numel() for name, p in module.named_parameters()
               if (p.requires_grad or not trainable_only) and not name.startswith(exclude))

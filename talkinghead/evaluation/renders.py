"""What evaluation renders (paper §4): a person's few-shot models (G, ψ) per mode on landmark images, the warp G's
textures for each target, and the copy and warp baselines."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from talkinghead.nn import GenInputs, Texture


@dataclass
class WarpSources:
    """The texture of the warp-guided G (DESIGN.md §2) for n targets: each target is drawn from the shot nearest
    to it in pose, moved along the landmark flow from the target to that shot (`landmarks.warp.texture_sources`)."""

    x: torch.Tensor  # (T, 3, S, S) the shots in [-1, 1]
    y: torch.Tensor  # (T, 3, S, S) their landmark images
    points: np.ndarray  # (T, 68, 2) their landmarks, crop pixels
    targets: np.ndarray  # (n, 68, 2) the targets' (or retargeted driving) landmarks, crop pixels
    source: torch.Tensor | None = None  # (n,) long: the shot each target is drawn from
    grids: torch.Tensor | None = None  # (n, S, S, 2) backward grids target -> its shot

    def __post_init__(self):
        from talkinghead.landmarks.warp import texture_sources

        self.points = np.asarray(self.points, np.float32).reshape(-1, 68, 2)
        self.targets = np.asarray(self.targets, np.float32).reshape(-1, 68, 2)
        self.source, self.grids = texture_sources(self.points, self.targets, self.x.shape[-1], index=self.source)

    def texture(self, i: int, j: int, device) -> Texture:
        """Targets i..j-1: their shots x, y (b, 3, S, S) and grids (b, S, S, 2)."""
        src = self.source[i:j]
        return Texture(self.x[src].to(device), self.y[src].to(device), self.grids[i:j].to(device))


@torch.no_grad()
def render(G: torch.nn.Module, psi: torch.Tensor, y: torch.Tensor, batch: int = 8,
           warp: WarpSources | None = None) -> torch.Tensor:
    """G(y, ψ) for landmark images y (n, 3, S, S), ψ (1, P) -> frames (n, 3, S, S) in [-1, 1] (paper §3.3).
    A G that needs a texture also takes each target's source and flow from `warp` (one per target of y)."""
    return render_modes({None: (G, psi)}, y, batch, warp)[None]


@torch.no_grad()
def render_modes(gens: dict, y: torch.Tensor, batch: int = 8, warp: WarpSources | None = None) -> dict:
    """`render` for several (G, ψ) of one person, {mode: (G, ψ)} -> {mode: (n, 3, S, S)}: the textures are
    made once per batch for all of them."""
    out = {mode: [] for mode in gens}
    for G, _ in gens.values():
        G.eval()
    for i in range(0, len(y), batch):
        texture = None
        for mode, (G, psi) in gens.items():
            dev = psi.device
            yb = y[i:i + batch].to(dev)  # (b, 3, S, S)
            if warp is not None and (texture is None or texture.x.device != dev):
                texture = warp.texture(i, i + len(yb), dev)
            inp = GenInputs(yb, psi.expand(len(yb), -1), texture)  # ψ (b, P)
            out[mode].append(G.render(inp).image.float().cpu())
    return {mode: torch.cat(frames).clamp(-1, 1) for mode, frames in out.items()}


def render_baselines(x_src: torch.Tensor, p_src: np.ndarray, p_targets: np.ndarray, teeth=None,
                     exclude=()) -> dict:
    """The baselines for n targets: {("copy", None): the source crop (3, S, S) unchanged n times,
    ("warp", None): it warped to each target's landmarks (n, 68, 2)}, each (n, 3, S, S) in [-1, 1]; with a
    TeethBank `teeth`, also ("teeth_bank", None): the warp with inner mouths from people not in `exclude`."""
    from talkinghead.evaluation.baselines import copy_source, teeth_bank_baseline, warp_baseline

    n = len(p_targets)
    out = {("copy", None): copy_source(x_src)[None].expand(n, -1, -1, -1).contiguous(),
           ("warp", None): torch.stack([warp_baseline(x_src, p_src, p) for p in p_targets]).clamp(-1, 1)}
    if teeth is not None:
        out[("teeth_bank", None)] = torch.stack([teeth_bank_baseline(x_src, p_src, p, teeth, exclude)
                                                 for p in p_targets]).clamp(-1, 1)
    return out


@dataclass
class PersonModels:
    """The few-shot models of one video at one T: (G, ψ) per mode, plus FT statistics."""

    gens: dict  # mode -> (G, psi (1, P))
    ft_stats: dict | None = None
    seconds: dict = field(default_factory=dict)
    shots: tuple | None = None  # warp G only: the T shots x, y (T, 3, S, S) and points (T, 68, 2)
    fills: dict = field(default_factory=dict)  # mode -> inference.regions' fills of the model's region generators

    def fill_regions(self, fake: torch.Tensor, target_points, warp: "WarpSources | None",
                     mode: str = "ff") -> torch.Tensor:
        """The region generators' holes of mode's frames (n, 3, S, S) filled, each against its texture shot."""
        for fill in self.fills.get(mode, []):
            fake = fill.fill(fake, target_points, warp.points[warp.source.numpy()])
        return fake

    def warp_sources(self, target_points) -> WarpSources | None:
        """The warp G's texture for targets (n, 68, 2): the nearest shot each; None for the paper's G."""
        return None if self.shots is None else WarpSources(*self.shots, target_points)

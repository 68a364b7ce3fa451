"""One call for every generator (paper §3.2's G and the warp-guided G, DESIGN.md §2): ``G.render(GenInputs) ->
GenOutput``. What a kind of G needs beyond the landmark image and ψ is an optional field of `GenInputs`; what
it makes beyond the frame, an optional field of `GenOutput`. Callers build the inputs the same way whatever
the kind (`texture` whenever ``G.needs_texture``) and read ``out.image``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from torch import Tensor


@dataclass
class Texture:
    """The source whose texture the warp-guided G moves (one per driving frame, or one for the batch)."""

    x: Tensor  # (B or 1, 3, S, S) the source photo in [-1, 1]
    y: Tensor  # (B or 1, 3, S, S) its landmark image
    grid: Tensor  # (B, S, S, 2) backward landmark flow, driving -> source (landmarks.warp.texture_sources)
    features: list[Tensor] | None = None  # the G's encoder features of x (cacheable while x stays)


@dataclass
class GenInputs:
    """G's inputs for B driving frames (paper §3.2: x̂ = G(y, ψ̂), ψ̂ = P·ê, or ψ' after fine-tuning §3.3)."""

    y: Tensor  # (B, 3, S, S) driving landmark images
    psi: Tensor  # (B or 1, P) AdaIN parameters
    texture: Texture | None = None  # the warp-guided G's source; None for the paper's G
    extra: dict[str, Tensor] = field(default_factory=dict)  # inputs of optional parts (e.g. region generators)


@dataclass
class GenOutput:
    """What one pass makes: the frame, and (warp-guided G) what the losses and full-size composition use."""

    image: Tensor  # (B, 3, S, S) in [-1, 1]
    warped: Tensor | None = None  # (B, 3, S, S) the source warped by the refined flow
    generated: Tensor | None = None  # (B, 3, S, S) the decoder's image: the warped source plus its correction
    mask: Tensor | None = None  # (B, 1, S, S) blend mask (1 = warped source)
    occlusion: Tensor | None = None  # (B, 1, S, S)
    grid: Tensor | None = None  # (B, S, S, 2) refined backward grid (driving -> source)
    residual: Tensor | None = None  # (B, S, S, 2) the refiner's correction of the coarse grid

    def tensors(self) -> tuple[Tensor, ...]:
        """The fields that are set, in order (a traced module's outputs)."""
        return tuple(t for t in (getattr(self, f.name) for f in fields(self)) if t is not None)

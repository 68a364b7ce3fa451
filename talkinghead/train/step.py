"""One training step for both stages (paper §3.2 meta-learning, §3.3 fine-tuning): the G/E phase, then the D
phase(s), each minimising the sum of a named dict of weighted losses (as rosinality's stylegan2 reduces its
`loss_dict`). The stages differ only in what they hand over: the phases' loss functions, optimisers and which
modules train; precision, clipping and the all-reduce of D's sparse W are the `StepRunner`'s.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from talkinghead.train import dist as tdist


@dataclass
class PhaseLosses:
    """What a phase's loss function returns."""

    terms: dict[str, Tensor]  # weighted scalar losses; the phase minimises their sum
    logs: dict[str, Tensor] = field(default_factory=dict)  # logged only (scores, norms)
    outputs: dict[str, Any] = field(default_factory=dict)  # what later phases use (the output x̂, crops)


@dataclass
class Phase:
    """One phase of a step: `losses(outputs of the earlier phases) -> PhaseLosses`, minimised by `optimizers`
    (the first steps the dense `params`, clipped and its gradient norm logged as `gnorm`; the others, e.g. the
    SparseAdam of W, step after it) with requires_grad set as `trains` says, in order, first."""

    total: str  # log name of the phase's total loss
    losses: Callable[[dict], PhaseLosses]
    optimizers: list[torch.optim.Optimizer]
    params: list[Tensor]
    trains: tuple[tuple[nn.Module | Tensor, bool], ...] = ()
    repeats: int = 1  # e.g. d_steps D updates per G update (on the same x̂)
    gnorm: str | None = None  # log name of the gradient norm of `params`, if wanted
    sparse: Tensor | None = None  # a parameter whose sparse gradient is all-reduced over ranks (D's W)


def grad_norm(params) -> float:
    sq = 0.0
    for p in params:
        if p.grad is not None:
            g = p.grad.coalesce().values() if p.grad.is_sparse else p.grad
            sq += float(g.detach().float().pow(2).sum())
    return math.sqrt(sq)


def reduce_loss_dict(values: dict[str, Tensor], info: tdist.DistInfo | None = None) -> dict[str, float]:
    """{name: scalar tensor} -> {name: float}, each the mean over ranks (one all-reduce for all of them)."""
    if not values:
        return {}
    stacked = torch.stack([v.detach().float() for v in values.values()])  # (n,)
    if info is not None:
        tdist.allreduce_mean_(stacked, info)
    return {k: float(v) for k, v in zip(values, stacked)}


class StepRunner:
    """Runs the phases of one step: precision (autocast, GradScaler), clipping, the sparse W's all-reduce."""

    def __init__(self, autocast=contextlib.nullcontext, scaler=None, grad_clip: float = 0.0,
                 info: tdist.DistInfo | None = None):
        self.autocast, self.scaler, self.grad_clip, self.info = autocast, scaler, grad_clip, info

    def step(self, phases: list[Phase]) -> tuple[dict[str, float], dict[str, float], dict]:
        """Every phase in order; returns (losses and logs by name, reduced over ranks; gradient norms; the
        phases' outputs). A phase's last repeat is the one logged."""
        outputs: dict = {}
        values: dict[str, Tensor] = {}
        norms: dict[str, float] = {}
        for phase in phases:
            for _ in range(phase.repeats):
                for module, flag in phase.trains:
                    module.requires_grad_(flag)
                for opt in phase.optimizers:
                    opt.zero_grad(set_to_none=True)
                with self.autocast():
                    res = phase.losses(outputs)
                    total = sum(res.terms.values())
                self._backward(total, phase.sparse)
                gn = self._clip_and_step(phase.optimizers, phase.params, phase.gnorm is not None)
            outputs.update(res.outputs)
            values.update({phase.total: total.detach(), **{k: v.detach() for k, v in res.terms.items()},
                           **{k: v.detach() for k, v in res.logs.items()}})
            if phase.gnorm:
                norms[phase.gnorm] = gn
        if self.scaler is not None:
            self.scaler.update()
        return reduce_loss_dict(values, self.info), norms, outputs

    def _backward(self, loss: Tensor, sparse: Tensor | None) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if sparse is not None and self.info is not None:
            tdist.allreduce_sparse_grad_(sparse, self.info)

    def _clip_and_step(self, optimizers: list, params: list, want_norm: bool) -> float:
        """Steps the first optimiser (dense `params` clipped to grad_clip; their gradient norm returned when
        clipped or wanted, else NaN), then the others unclipped."""
        first, *rest = optimizers
        if self.scaler is not None:
            self.scaler.unscale_(first)
        dense = [p for p in params if p.grad is not None and not p.grad.is_sparse]
        gn = math.nan
        if self.grad_clip > 0:
            gn = float(torch.nn.utils.clip_grad_norm_(dense, self.grad_clip))
        elif want_norm:
            gn = grad_norm(dense)
        (self.scaler.step if self.scaler is not None else lambda o: o.step())(first)
        for opt in rest:
            opt.step()
        return gn

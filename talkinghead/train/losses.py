"""Losses of the meta-learning and fine-tuning stages (paper §3.2, §3.3) as pure functions of tensors.

The Trainer owns the phases and the weights (LossConfig); here every function returns a scalar tensor:

* L_CNT  — ``content_loss``: Σ_backbones w · Σ_layers mean|φ_l(x̂) − φ_l(x)| (VGG19 / VGGFace in the paper;
  see talkinghead.backbones.perceptual for the bundled stand-ins).
* L_ADV  — ``generator_adv_loss`` (−D(x̂)) + λ_FM · ``feature_matching_loss`` (D's intermediate features).
* L_MCH  — ``embedding_match_loss`` ‖W_i − ê_i‖₁ (mean over elements, before λ_MCH).
* L_DSC  — ``hinge_d_loss``: max(0, 1 + D(x̂)) + max(0, 1 − D(x)).

For the warp-guided generator (DESIGN.md §2; not in the paper):
* ``flow_smoothness``: mean |∂x r| + |∂y r| of the refiner's residual flow r (no folding, no jitter);
* ``weighted_l1``: Σ w·|x̂ − x| / (3·Σ w) with a per-pixel weight map (extra weight on the mouth);
* the perceptual loss on the warped source is ``content_loss(warped, x, terms)`` (``content_losses`` computes it
  with the output's, the targets' features once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # losses stay importable without loading any backbone
    from talkinghead.backbones.perceptual import FeatureBackbone


def _l1(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


def content_loss(fake: Tensor, real: Tensor, terms: Sequence[tuple["FeatureBackbone", float]]) -> Tensor:
    """L_CNT (paper §3.2): Σ_(φ, w) w · Σ_l mean|φ_l(fake) − φ_l(real)|.

    fake, real: (B, 3, H, W) in [-1, 1]. Features of `real` are computed without grad; the backbones are frozen,
    so gradients flow only into `fake`.
    """
    return content_losses([fake], real, terms)[0]


def content_losses(fakes: Sequence[Tensor], real: Tensor, terms: Sequence[tuple["FeatureBackbone", float]]
                   ) -> list[Tensor]:
    """`content_loss(fake, real, terms)` for each of several fakes of the same targets (e.g. the output and
    the warped source), with the targets' features computed once and the fakes in one batched forward."""
    totals = [real.new_zeros(()) for _ in fakes]
    n = real.shape[0]
    for net, weight in terms:
        if weight == 0:
            continue
        with torch.no_grad():
            real_feats = net(real)  # list of (B, C_l, H_l, W_l)
        fake_feats = net(fakes[0] if len(fakes) == 1 else torch.cat(list(fakes)))  # list of (k·B, C_l, H_l, W_l)
        for i in range(len(fakes)):
            totals[i] = totals[i] + weight * sum(_l1(f[i * n:(i + 1) * n], r)
                                                 for f, r in zip(fake_feats, real_feats, strict=True))
    return totals


def hinge_d_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Discriminator hinge loss (paper §3.2): mean(relu(1 − D(x))) + mean(relu(1 + D(x̂)))."""
    return torch.relu(1.0 - real_scores).mean() + torch.relu(1.0 + fake_scores).mean()


def generator_adv_loss(fake_scores: Tensor) -> Tensor:
    """Adversarial term of L_ADV for G and E (paper §3.2): −mean D(x̂)."""
    return -fake_scores.mean()


def feature_matching_loss(real_feats: Sequence[Tensor], fake_feats: Sequence[Tensor]) -> Tensor:
    """L_FM (paper §3.2): Σ_l mean|D_l(x) − D_l(x̂)| over D's intermediate features; real features detached."""
    if len(real_feats) != len(fake_feats):
        raise ValueError(f"feature lists differ in length: {len(real_feats)} vs {len(fake_feats)}")
    if not fake_feats:
        raise ValueError("feature_matching_loss needs at least one layer")
    return sum(_l1(r.detach(), f) for r, f in zip(real_feats, fake_feats))


def embedding_match_loss(w: Tensor, e: Tensor) -> Tensor:
    """L_MCH before λ_MCH (paper §3.2): mean|W_i − ê_i| over batch and the N dimensions; grads reach both."""
    return _l1(w, e)


def pixel_l1(fake: Tensor, real: Tensor) -> Tensor:
    """Plain mean |x̂ − x| (optional, not in the paper)."""
    return _l1(fake, real)


def flow_smoothness(residual: Tensor) -> Tensor:
    """Total variation of a flow field, residual (B, H, W, 2): mean |r[:, :, j+1] − r[:, :, j]| over the
    horizontal neighbours plus the same over the vertical ones."""
    dx = (residual[:, :, 1:] - residual[:, :, :-1]).abs().mean()
    dy = (residual[:, 1:] - residual[:, :-1]).abs().mean()
    return dx + dy


def weighted_l1(fake: Tensor, real: Tensor, weight: Tensor) -> Tensor:
    """Σ w·|x̂ − x| / (C·Σ w): fake, real (B, C, H, W), weight (B, 1, H, W) ≥ 0 (e.g. 1 + λ·mouth mask).
    With weight ≡ 1 it is ``pixel_l1``."""
    w = weight.expand_as(fake)
    return (w * (fake - real).abs()).sum() / w.sum().clamp_min(1e-8)

"""The objective of both stages (paper §3.2 meta-learning, §3.3 fine-tuning), as two phase functions.

One G step and one D step (run by train/step.py) serve both stages (as stylegan3's loss phases do); only the
discriminator's projection vector differs: W_i + w0 for training video i while meta-learning, the free
w' = w0 + ê while fine-tuning. The embedding-match term λ_MCH·‖W_i − ê‖₁ exists only in meta-learning and is added there.

* `generator_terms`: L_CNT (+ optional pixel L1) + L_ADV = −D(x̂) + λ_FM·L_FM, with D's weights frozen.
* `discriminator_terms`: the hinge loss on (real, detached fake), one forward for both halves.
* `warp_terms`: what the warp-guided generator adds (DESIGN.md §2): L_CNT of the warped source alone, the
  smoothness of the residual flow, extra L1 on the target's mouth box (`mouth_term`, also fine-tuning's).
* `mouth_crops`, `mouth_generator_terms`, `mouth_discriminator_terms`: the mouth discriminator's two phases
  (nn/mouth.py) on square crops around the target's lips, the same crop of output, target and landmark image.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from talkinghead.train import losses
from talkinghead.config import LossConfig


def content_term(fake: Tensor, real: Tensor, content_terms, lc: LossConfig) -> Tensor:
    """L_CNT over the configured perceptual backbones, plus lc.pixel_l1_weight · mean|x̂ − x|.
    fake, real: (B, 3, S, S) in [-1, 1] -> scalar."""
    return content_terms_of([fake], real, content_terms, lc)[0]


def content_terms_of(fakes: list[Tensor], real: Tensor, content_terms, lc: LossConfig) -> list[Tensor]:
    """`content_term` of each fake against the same targets, the targets' features computed once."""
    out = losses.content_losses(fakes, real, content_terms) if content_terms else [f.new_zeros(()) for f in fakes]
    if lc.pixel_l1_weight > 0:
        out = [loss + lc.pixel_l1_weight * losses.pixel_l1(f, real) for loss, f in zip(out, fakes)]
    return out


def generator_terms(fake: Tensor, real: Tensor, y: Tensor, D: Callable | None, w: Tensor | None,
                    content_terms, lc: LossConfig, warped: Tensor | None = None) -> dict[str, Tensor]:
    """The G/E phase's terms (weighted): {"cnt", "adv", "fm"} (the phase minimises their sum with the
    stage's other terms, train/step.py), and "warp_cnt" (the unweighted content term of `warped`, computed
    with the output's; for `warp_terms`, not a term itself) when the warp-guided G's warped source is given.

    fake, real, y: (B, 3, S, S); D: the discriminator, called as D(x, y, w=w) -> (score (B,), features), or
    None (a model file without D: content only); w: (B, N) or (N,) projection vector(s). The caller freezes
    D's parameters: only `fake` (and so G, E, ψ) receives gradients from −D(x̂) and L_FM.
    """
    extra = {}
    if warped is None:
        cnt = content_term(fake, real, content_terms, lc)
    else:
        cnt, extra["warp_cnt"] = content_terms_of([fake, warped], real, content_terms, lc)
    if D is None:
        zero = fake.new_zeros(())
        return {"cnt": cnt, "adv": zero, "fm": zero, **extra}
    fake_score, fake_feats = D(fake, y, w=w)
    with torch.no_grad():
        _, real_feats = D(real, y, w=w)
    adv = lc.adv_weight * losses.generator_adv_loss(fake_score)
    fm = lc.fm_weight * losses.feature_matching_loss(real_feats, fake_feats)
    return {"cnt": cnt, "adv": adv, "fm": fm, **extra}


def discriminator_terms(D: Callable, real: Tensor, fake: Tensor, y: Tensor, video_index: Tensor | None = None,
                        w: Tensor | None = None) -> dict[str, Tensor]:
    """The D phase: hinge loss max(0, 1 − D(x)) + max(0, 1 + D(x̂)) on the detached fake (paper §3.2).

    real, fake, y: (B, 3, S, S); one D forward for both halves. The projection is W_i + w0 from
    video_index (B,) while meta-learning, or w' (N,) while fine-tuning. Returns {"loss", "real", "fake"}
    (the latter two: mean scores, for logging)."""
    idx = None if video_index is None else torch.cat([video_index, video_index])  # (2B,)
    scores, _ = D(torch.cat([real, fake.detach()]), torch.cat([y, y]), video_index=idx, w=w)  # (2B,)
    real_score, fake_score = scores.float().chunk(2)
    return {"loss": losses.hinge_d_loss(real_score, fake_score), "real": real_score.detach().mean(),
            "fake": fake_score.detach().mean()}


def build_content_terms(cfg, device) -> list:
    """[(backbone, weight)] for L_CNT from cfg.loss (backbones with an empty name or weight 0 are skipped)."""
    lc = cfg.loss
    specs = [(lc.imagenet_backbone, lc.imagenet_weight, lc.imagenet_path),
             (lc.face_backbone, lc.face_weight, lc.face_path)]
    specs = [s for s in specs if s[0] and s[1] > 0]
    if not specs:
        return []
    from talkinghead.backbones.perceptual import load_backbone

    return [(load_backbone(name, path, device=device), weight) for name, weight, path in specs]


def warp_terms(out, real: Tensor, target_points: Tensor, lc: LossConfig,
               warp_cnt: Tensor | None) -> dict[str, Tensor]:
    """Weighted extra terms of the warp-guided generator: {"warp", "smooth", "mouth"} (zero when weighted 0).

    out: the warp-guided G's nn.GenOutput of the batch; real: (B, 3, S, S) targets; target_points: (B, 68, 2)
    target landmarks in crop pixels, on any device (their mouth box gets the extra L1; the box is computed on
    the CPU, so the loader's CPU tensor serves best); warp_cnt: the warped source's content term, computed with
    the output's by `generator_terms(..., warped=out.warped)` (None when lc.warp_content_weight is 0)."""
    zero = real.new_zeros(())
    warp = lc.warp_content_weight * warp_cnt if lc.warp_content_weight > 0 else zero
    smooth = lc.flow_smooth_weight * losses.flow_smoothness(out.residual) if lc.flow_smooth_weight > 0 else zero
    return {"warp": warp, "smooth": smooth, "mouth": mouth_term(out.image, real, target_points, lc)}


def mouth_term(fake: Tensor, real: Tensor, target_points, lc: LossConfig) -> Tensor:
    """lc.mouth_weight · L1 on the target's mouth box (`rasterize.mouth_box`): fake, real (B, 3, S, S);
    target_points (B, 68, 2) crop pixels (tensor or array, any device) -> scalar (0 when weighted 0)."""
    from talkinghead.landmarks.rasterize import box_mask, mouth_box

    if lc.mouth_weight <= 0:
        return real.new_zeros(())
    pts = target_points.detach().cpu().numpy() if isinstance(target_points, Tensor) else target_points
    boxes = mouth_box(pts)  # (B, 4)
    mask = box_mask(boxes, real.shape[-1]).to(real.device, real.dtype)  # (B, 1, S, S)
    return lc.mouth_weight * losses.weighted_l1(fake, real, mask)


def mouth_crops(fake: Tensor, real: Tensor, y: Tensor, target_points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, 3, S, S) output, target and driving landmark image -> their (B, 3, S/4, S/4) crops of the square
    box around the target's lips (`rasterize.mouth_square`; target_points (B, 68, 2) crop pixels, any
    device). The output's crop keeps its gradient."""
    from talkinghead.landmarks.rasterize import mouth_square
    from talkinghead.nn.mouth import crop_boxes

    b, size = fake.shape[0], max(8, fake.shape[-1] // 4)
    boxes = torch.as_tensor(mouth_square(target_points.detach().cpu().numpy()))  # (B, 4)
    boxes = boxes.to(fake.device).repeat(3, 1)  # (3B, 4)
    crops = crop_boxes(torch.cat([fake, real.to(fake.dtype), y.to(fake.dtype)]), boxes, size)  # (3B, 3, s, s)
    return crops[:b], crops[b:2 * b].detach(), crops[2 * b:].detach()


def mouth_generator_terms(Dm: Callable, fake_crop: Tensor, real_crop: Tensor, y_crop: Tensor,
                          lc: LossConfig) -> dict[str, Tensor]:
    """G phase of the mouth discriminator (its weights frozen by the caller): {"mouth_adv":
    λ·(−mean Dm(x̂ crop)), "mouth_fm": λ_FM·L_FM over Dm's blocks}; crops (B, 3, s, s) from `mouth_crops`."""
    scores, fake_feats = Dm(fake_crop, y_crop)  # (B, P)
    with torch.no_grad():
        _, real_feats = Dm(real_crop, y_crop)
    return {"mouth_adv": lc.mouth_adv_weight * losses.generator_adv_loss(scores),
            "mouth_fm": lc.mouth_fm_weight * losses.feature_matching_loss(real_feats, fake_feats)}


def mouth_discriminator_terms(Dm: Callable, real_crop: Tensor, fake_crop: Tensor, y_crop: Tensor
                              ) -> dict[str, Tensor]:
    """D phase of the mouth discriminator: the hinge loss over every patch score of (real, detached fake)
    crops, one forward for both. {"loss", "real", "fake"} (mean scores for logging)."""
    scores, _ = Dm(torch.cat([real_crop, fake_crop.detach()]), torch.cat([y_crop, y_crop]))  # (2B, P)
    real_score, fake_score = scores.float().chunk(2)
    return {"loss": losses.hinge_d_loss(real_score, fake_score), "real": real_score.detach().mean(),
            "fake": fake_score.detach().mean()}

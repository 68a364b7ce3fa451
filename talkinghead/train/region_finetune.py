"""Fine-tuning a region generator's ψ to one person (paper §3.3's FT, for the mouth interior of DESIGN.md §2):
the person's shots that show an open mouth are filled from their own surroundings with the hole blanked, as in
training, the render-time reference (the first shot) beside them, and ψ′ — initialised to FF's P·ê — is fitted
to their real inner mouths by L1 in the hole. The generator's weights stay the model's: a few shots of one
person are too few for them. Shots with closed mouths say nothing about teeth; without an open one (besides the
reference) ψ′ is FF's ψ.
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead.data.regions import mouth_inputs, openness

FT_STEPS, FT_LR = 40, 3e-3


def _open_items(G, crops: np.ndarray, points: np.ndarray):
    """(crop, mask, lips, base) batches (n, ·, s, s) of the shots after the first with an open mouth, or None."""
    from talkinghead.data.teeth_bank import TeethBank, lip_colour

    cfg = G.cfg
    keep = [i for i in range(1, len(crops)) if float(openness(points[i])) > cfg.open_threshold]
    if not keep:
        return None
    bank = TeethBank.of_generator(G) if cfg.teeth_bank else None
    photo_lips = lip_colour(crops[0], points[0])
    items = [mouth_inputs(crops[i].astype(np.float32) / 127.5 - 1, points[i], cfg, bank, photo_lips) for i in keep]

    def t(k):
        return torch.from_numpy(np.stack([it[k] for it in items])).float().permute(0, 3, 1, 2)

    mask = torch.from_numpy(np.stack([it[1] for it in items]).astype(np.float32))[:, None]  # (n, 1, s, s)
    return t(0), mask, t(2).div(127.5).sub(1), (t(4) if bank is not None else None)


def finetune_mouth_psi(G, crops: np.ndarray, points: np.ndarray, psi: torch.Tensor, steps: int = FT_STEPS,
                       lr: float = FT_LR) -> tuple[torch.Tensor, dict]:
    """ψ′ (1, P) of the mouth generator G for a person of T shots (crops (T, S, S, 3) uint8, landmarks
    (T, 68, 2) in crop pixels), from ψ (1, P); and {"open_shots", "l1_ff", "l1_ft", "steps"}."""
    from talkinghead.persons.regions import mouth_reference

    crops, points = np.asarray(crops), np.asarray(points, np.float64)
    items = _open_items(G, crops, points)
    psi = psi.detach().view(1, -1)
    if items is None:
        return psi, {"open_shots": 0, "steps": 0}
    dev = next(G.parameters()).device
    crop, mask, lips, base = (None if v is None else v.to(dev) for v in items)
    ref = mouth_reference(crops[:1], points[:1], G.cfg)[0].to(dev).expand(len(crop), -1, -1, -1)
    was_training, flags = G.training, [q.requires_grad for q in G.parameters()]
    G.eval().requires_grad_(False)
    fitted = torch.nn.Parameter(psi.clone().to(dev))
    opt = torch.optim.Adam([fitted], lr=lr)

    def hole_l1(p):
        out = G.fill(crop * (1 - mask), mask, lips, ref, p, base).image
        return ((out - crop).abs() * mask).sum() / (3 * mask.sum()).clamp_min(1)

    with torch.no_grad():
        before = float(hole_l1(psi.to(dev)))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = hole_l1(fitted)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(hole_l1(fitted))
    for q, flag in zip(G.parameters(), flags):
        q.requires_grad_(flag)
    G.train(was_training)
    if after >= before:  # fitting made the shots' own mouths no better: keep FF's
        return psi, {"open_shots": len(crop), "l1_ff": before, "l1_ft": before, "steps": steps}
    return fitted.detach(), {"open_shots": len(crop), "l1_ff": before, "l1_ft": after, "steps": steps}

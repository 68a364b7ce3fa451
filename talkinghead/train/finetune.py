"""Few-shot stage (paper §3.3): make an avatar of a new person from T frames.

- FF (feed-forward): ê = mean_t E(x_t, y_t); G renders with ψ̂ = P·ê. No training (`avatar.make_ff_avatar`).
- FT (fine-tuning): G' = G with ψ' initialised to P·ê as a free parameter; D' = D with w' = w0 + ê in place
  of W_i + w0. G' (ψ' and all of G's weights) minimises L_CNT + L_ADV (−D'(x̂) + λ_FM·L_FM) (+ the warp-guided
  G's extra L1 on the mouth box, as in its meta-learning) and D' the hinge loss on the T shots — the same two
  phases as meta-learning (train/objective.py) — with cfg.finetune's learning rates, steps and batch size;
  early exit when the content loss stops improving for `patience` steps.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from talkinghead.media import images

from talkinghead.train import losses
from talkinghead.persons.avatar import Avatar, avatar_from_shots
from talkinghead.persons.checkpoint import LoadedModel, as_model
from talkinghead.config import FinetuneConfig
from talkinghead.console import progress as progress_bar
from talkinghead.errors import TalkingHeadError
from talkinghead.landmarks.warp import texture_sources
from talkinghead.nn import GenInputs, Texture, needs_texture
from talkinghead.persons.shots import DEFAULT_SHOTS, embed_person
from talkinghead.train.objective import (build_content_terms, content_term, discriminator_terms, generator_terms,
                                          mouth_term)
from talkinghead.train.run_folder import RunFolder
from talkinghead.train.step import Phase, PhaseLosses, StepRunner


class ShotRenderer:
    """G's inputs for shot i of the T shots (x, y: (T, 3, S, S)) from ψ — the training pairs of fine-tuning.

    The paper's G draws shot i from its landmark image y_i. A G that needs a texture (the warp-guided G,
    DESIGN.md §2) moves that of another shot j — the one nearest in pose (itself when T = 1,
    `landmarks.warp.texture_sources`) — along the landmark flow from shot i's landmarks to shot j's; `points`
    (T, 68, 2) are needed then. With one shot, the training pairs (`train=True`) take a randomly deformed copy
    of the shot as the source instead (train/augment.py), so fine-tuning learns to move this face rather than
    to copy it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, points=None, texture: bool = False, seed: int = 0):
        self.x, self.y = x, y
        self.source = self.grids = None
        self.points = None
        self.rng = np.random.default_rng(seed)
        if texture:
            if points is None:
                raise ValueError("the warp generator needs the shots' landmarks")
            pts = self.points = np.asarray(points, np.float32)
            self.source, grids = texture_sources(pts, pts, x.shape[-1], exclude_self=True)  # (T,), (T, S, S, 2)
            self.grids = grids.to(x.device)

    @property
    def one_shot(self) -> bool:
        """One photo and a G that needs a texture: pairs are deformed copies of the photo."""
        return self.points is not None and len(self.x) == 1

    def inputs(self, psi: torch.Tensor, idx, train: bool = False,
               rng: np.random.Generator | None = None) -> GenInputs:
        """G's inputs for the shots `idx` (a list/tensor of B indices); ψ (1, P). train: a fine-tuning step's
        pairs (one shot: from a deformed copy of itself, drawn from `rng`, default the renderer's own)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        y, psi = self.y[idx], psi.expand(len(idx), -1)  # (B, 3, S, S), (B, P)
        if self.source is None:
            return GenInputs(y, psi)
        if train and self.one_shot:
            from talkinghead.landmarks.rasterize import landmark_image_tensor
            from talkinghead.train.augment import deformed_sources

            src_x, src_pts, grids = deformed_sources(self.x[idx], self.points[idx.numpy()], rng or self.rng)
            src_y = landmark_image_tensor(src_pts, self.x.shape[-1]).to(self.x.device, self.x.dtype)
            return GenInputs(y, psi, Texture(src_x, src_y, grids))
        src = self.source[idx]  # (B,)
        return GenInputs(y, psi, Texture(self.x[src], self.y[src], self.grids[idx]))

    def __call__(self, G: nn.Module, psi: torch.Tensor, idx, train: bool = False,
                 rng: np.random.Generator | None = None) -> torch.Tensor:
        """x̂ of the shots `idx`: (B, 3, S, S) (`inputs` for the arguments)."""
        return G.render(self.inputs(psi, idx, train, rng)).image


DECODER_PARTS = ("res.", "up.", "out_norm.", "out_conv.", "inject.")  # the AdaIN decoder and RGB head of G


def trained_parameters(G: nn.Module, parts: str) -> list[nn.Parameter]:
    """G's weights fine-tuning updates besides ψ' (FinetuneConfig.train_parts); P never (ψ' replaces P·ê)."""
    if parts == "psi":
        return []
    return [p for n, p in G.named_parameters()
            if not n.startswith("proj.") and (parts == "all" or n.startswith(DECODER_PARTS))]


@torch.no_grad()
def evaluate_shots(G: nn.Module, psi: torch.Tensor, shots: ShotRenderer, terms, lc,
                   batch: int = 8) -> dict[str, float]:
    """Reconstruction of the shots (G in eval mode): {"content": L_CNT (+pixel), "l1": mean |x̂ − x|}. One photo
    with the warp-guided G: of 4 fixed deformed copies of it (the pairs fine-tuning learns from; the photo from
    itself would only measure copying)."""
    was = G.training
    G.eval()
    cnt, l1, n = 0.0, 0.0, 0
    one, T = shots.one_shot, len(shots.x)
    for idx in [[0] * 4] if one else [list(range(i, min(i + batch, T))) for i in range(0, T, batch)]:
        fake = shots(G, psi, idx, train=True, rng=np.random.default_rng(12345)) if one else shots(G, psi, idx)
        xb = shots.x[idx]
        cnt += float(content_term(fake, xb, terms, lc)) * len(xb)
        l1 += float(losses.pixel_l1(fake, xb)) * len(xb)
        n += len(xb)
    G.train(was)
    return {"content": cnt / n, "l1": l1 / n}


class _ShotBatches:
    """Batches of shot indices: a fresh random order each pass over the T shots."""

    def __init__(self, T: int, batch_size: int, seed: int, repeat: bool = False):
        # repeat: one shot drawn `batch_size` times a batch (as differently deformed pairs), else ≤ T a batch
        self.T, self.bs = T, max(1, batch_size if repeat else min(batch_size, T))
        self.g = torch.Generator().manual_seed(seed)
        self.order, self.pos = torch.randperm(T, generator=self.g), 0

    def next(self) -> torch.Tensor:
        if self.T == 1:
            return torch.zeros(self.bs, dtype=torch.long)
        if self.pos + self.bs > self.T:
            self.order, self.pos = torch.randperm(self.T, generator=self.g), 0
        idx = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return idx


def finetune_phases(shots: ShotRenderer, idx: torch.Tensor, G: nn.Module, psi: nn.Parameter, opt_g,
                    D: nn.Module | None, w: nn.Parameter | None, opt_d, terms, lc) -> list[Phase]:
    """One fine-tuning step's phases on the shots `idx` (B,) (paper §3.3, train/step.py): G' (ψ' and the
    trained weights) with D' frozen minimises L_CNT + L_ADV (+ the warp G's mouth L1, as in meta-learning);
    then D' (its trunk and w', not W) the hinge loss. No D in the model file: the G' phase alone, content only."""
    xb, yb = shots.x[idx], shots.y[idx]  # (B, 3, S, S)

    def g_phase(_) -> PhaseLosses:
        fake = shots(G, psi, idx, train=True)  # (B, 3, S, S)
        terms_g = generator_terms(fake, xb, yb, D, None if w is None else w.detach(), terms, lc)
        terms_g.pop("warp_cnt", None)
        if shots.points is not None:  # a textured G's extra weight on the mouth, as in meta-learning
            terms_g["mouth"] = mouth_term(fake, xb, shots.points[idx.numpy()], lc)
        return PhaseLosses(terms_g, outputs={"fake": fake})

    def d_phase(o) -> PhaseLosses:
        d = discriminator_terms(D, xb, o["fake"], yb, w=w)
        return PhaseLosses({"loss_d": d["loss"]})

    if D is None:
        return [Phase("loss_g", g_phase, [opt_g], [])]
    return [Phase("loss_g", g_phase, [opt_g], [], trains=((D, False),)),
            Phase("loss_d", d_phase, [opt_d], [], trains=((D, True), (D.W, False)))]


def finetune_generator(model: LoadedModel, x: torch.Tensor, y: torch.Tensor, e_hat: torch.Tensor,
                       ft: FinetuneConfig, device="cpu", progress: bool = True, seed: int = 0,
                       content_terms=None, log=None, points=None) -> tuple[nn.Module, torch.Tensor, dict]:
    """Paper §3.3. x, y: (T, 3, S, S) shots and landmark images; e_hat: (N,); points: (T, 68, 2) the shots'
    landmarks (needed by the warp-guided G). Returns (G' (eval), ψ' (1, P), stats with the shots'
    reconstruction losses before (= FF) and after (= FT) fine-tuning).
    log: optional callable receiving {"step", "cnt", "loss_g", "loss_d", "time"} after every step."""
    lc = model.cfg.loss
    betas = model.cfg.train.betas
    terms = build_content_terms(model.cfg, device) if content_terms is None else content_terms
    G = copy.deepcopy(model.G).to(device).train()
    e = e_hat.detach().to(device).view(1, -1)  # (1, N)
    with torch.no_grad():
        psi = nn.Parameter(G.project(e).detach().clone())  # ψ' (1, P) = P·ê
    shots = ShotRenderer(x, y, points, texture=needs_texture(model.cfg.model), seed=seed)
    stats: dict = {"ff": evaluate_shots(G, psi, shots, terms, lc)}
    parts = ft.train_parts if ft.train_parts != "auto" else ("psi" if shots.one_shot else "all")
    opt_g = torch.optim.Adam(trained_parameters(G, parts) + [psi], lr=ft.lr_g, betas=betas)
    D = w = opt_d = None
    if model.D is not None:
        D = copy.deepcopy(model.D).to(device).train()
        D.W.requires_grad_(False)
        w = nn.Parameter((D.w0.detach() + e[0]).clone())  # w' (N,) = w0 + ê
        opt_d = torch.optim.Adam([p for n, p in D.named_parameters() if not n.startswith("W.")] + [w],
                                 lr=ft.lr_d, betas=betas)
    # one photo, warp-guided G: each step's pairs are random deformations, two of them per step
    one_shot = shots.one_shot
    batches = _ShotBatches(len(x), min(2, ft.batch_size) if one_shot else ft.batch_size, seed, repeat=one_shot)
    best, best_step, ema, step = math.inf, 0, None, 0
    runner = StepRunner()
    t0 = time.time()
    with progress_bar(ft.steps, "fine-tune", "step", progress) as bar:
        for step in range(1, ft.steps + 1):
            idx = batches.next()
            values, _, _ = runner.step(finetune_phases(shots, idx, G, psi, opt_g, D, w, opt_d, terms, lc))
            loss_d = values.get("loss_d", 0.0)
            c = values["cnt"]
            if not math.isfinite(c):
                raise TalkingHeadError(f"fine-tuning diverged at step {step} (content loss {c})")
            ema = c if ema is None or (batches.bs == batches.T and not one_shot) else 0.7 * ema + 0.3 * c
            if ema < best * (1 - ft.min_delta):
                best, best_step = ema, step
            bar.set_postfix(cnt=f"{c:.4g}", d=f"{loss_d:.3g}", refresh=False)
            if log is not None:
                log({"step": step, "cnt": round(c, 5), "loss_g": round(values["loss_g"], 5),
                     "loss_d": round(loss_d, 5), "time": round(time.time() - t0, 2)})
            bar.update(1)
            if ft.patience and step - best_step >= ft.patience:
                break
    G.eval()
    stats["ft"] = evaluate_shots(G, psi, shots, terms, lc)
    stats.update(steps=step, max_steps=ft.steps, seconds=round(time.time() - t0, 2),
                 early_exit=step < ft.steps, adversarial=D is not None)
    return G, psi.detach(), stats


def make_avatar(images_or_video, model_path, mode: str = "ft", shots: int = DEFAULT_SHOTS, steps: int | None = None,
                face_index: int | None = None, device="cpu", progress: bool = True, detector=None,
                finetune: FinetuneConfig | None = None, seed: int = 0, run_dir=None, **overrides) -> Avatar:
    """An avatar of the person in `images_or_video` (paths/arrays of images, or one video path).

    mode "ff": ê only (paper §3.3 feed-forward); "ft": fine-tuned G' and ψ' (paper §3.3). steps,
    finetune (a FinetuneConfig) and keyword overrides (lr_g=..., batch_size=..., patience=...) replace the
    model config's `finetune` values. The avatar's `info["finetune"]` holds the losses on the shots before
    (FF) and after (FT) fine-tuning, the steps run and the seconds taken. run_dir: a run folder receiving
    config.json, log.jsonl (per step) and samples.png (rows: shot | landmarks | FF | FT), DESIGN.md §4.
    """
    if mode not in ("ff", "ft"):
        raise TalkingHeadError(f"mode must be 'ff' or 'ft', got {mode!r}")
    if steps is not None and steps < 1:
        raise TalkingHeadError(f"fine-tuning needs at least 1 step, got {steps}")
    t0 = time.time()
    model = as_model(model_path, device, with_discriminator=(mode == "ft"))
    sh, x, y, e_hat = embed_person(images_or_video, model, shots, face_index, detector, device)
    t_prep = time.time() - t0
    if mode == "ff":
        av = avatar_from_shots("ff", model, sh, e_hat)
        av.info = {"seconds_prepare": round(t_prep, 2)}
        return av
    ft = replace(finetune or model.cfg.finetune, **overrides)
    if steps is not None:
        ft = replace(ft, steps=int(steps))
    folder = None
    if run_dir is not None:
        folder = RunFolder(run_dir).open_log(append=False)
        cfg = model.cfg.to_dict()
        cfg["finetune"] = asdict(ft)
        folder.write_config({"config": cfg, "mode": mode, "shots": len(sh), "model": model.info(),
                             "sources": sh.hashes})
    try:
        G, psi, stats = finetune_generator(model, x, y, e_hat, ft, device=device, progress=progress, seed=seed,
                                           log=None if folder is None else folder.log, points=sh.points)
    finally:
        if folder is not None:
            folder.close()
    if run_dir is not None:
        shots_r = ShotRenderer(x, y, sh.points, texture=needs_texture(model.cfg.model))
        _save_samples(folder.path / "samples.png", model.G, G, e_hat, psi, shots_r)
    state = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
    av = avatar_from_shots("ft", model, sh, e_hat, psi=psi.cpu().view(-1), generator_state=state)
    av.config.finetune = ft
    fit_region_psi(av, model, sh)
    av.info = {"finetune": stats, "seconds_prepare": round(t_prep, 2)}
    return av


def fit_region_psi(av: Avatar, model: LoadedModel, shots) -> None:
    """FT of the avatar's mouth region: ψ′ fitted to the shots' own open mouths (train/region_finetune.py)."""
    from talkinghead.train.region_finetune import finetune_mouth_psi

    for name, r in av.regions.items():
        G = model.regions.get(name)
        if G is not None and G.cfg.region == "mouth" and r.psi is not None:
            dev = next(G.parameters()).device
            r.psi = finetune_mouth_psi(G, shots.crops, shots.points, r.psi.view(1, -1).to(dev))[0].view(-1).cpu()


@torch.no_grad()
def _save_samples(path: Path, G_ff: nn.Module, G_ft: nn.Module, e_hat, psi, shots: ShotRenderer,
                  max_rows: int = 8) -> None:
    """PNG grid, one row per shot: shot | landmark image | FF render | FT render."""
    idx = list(range(min(len(shots.x), max_rows)))
    G_ff.eval()
    ff = shots(G_ff, G_ff.project(e_hat.view(1, -1).to(shots.x.device)), idx)
    ft = shots(G_ft, psi, idx)
    images.save_grid(path, [[shots.x[i], shots.y[i], ff[i], ft[i]] for i in idx])

"""Few-shot stage (paper §3.3): make an avatar of a new person from T frames, and `talkinghead finetune`.

- FF (feed-forward): ê = mean_t E(x_t, y_t); G renders with ψ̂ = P·ê. No training.
- FT (fine-tuning): G' = G with ψ' initialised to P·ê as a free parameter; D' = D with w' = w0 + ê in place
  of W_i + w0. G' (ψ' and all of G's weights) minimises L_CNT + L_ADV (−D'(x̂) + λ_FM·L_FM) and D' the
  hinge loss on the T shots, with cfg.finetune's learning rates, steps and batch size; early exit when the
  content loss stops improving for `patience` steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from talkinghead import losses
from talkinghead.avatar import (AVATAR_SUFFIX, Avatar, LoadedModel, Shots, as_model, avatar_from_shots,
                                embed_shots, prepare_shots, resolve_model)
from talkinghead.config import FinetuneConfig
from talkinghead.errors import TalkingHeadError

def _content(fake, real, terms, pixel_weight: float):
    """L_CNT (+ the optional pixel L1 of the config): (B,3,S,S) ×2 -> scalar."""
    loss = losses.content_loss(fake, real, terms) if terms else fake.new_zeros(())
    if pixel_weight > 0:
        loss = loss + pixel_weight * losses.pixel_l1(fake, real)
    return loss


@torch.no_grad()
def evaluate_shots(G: nn.Module, psi: torch.Tensor, x: torch.Tensor, y: torch.Tensor, terms,
                   pixel_weight: float, batch: int = 8) -> dict[str, float]:
    """Reconstruction of the shots (G in eval mode): {"content": L_CNT (+pixel), "l1": mean |x̂ − x|}."""
    was = G.training
    G.eval()
    cnt, l1, n = 0.0, 0.0, 0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        fake = G(yb, psi.expand(len(yb), -1))
        cnt += float(_content(fake, xb, terms, pixel_weight)) * len(xb)
        l1 += float(losses.pixel_l1(fake, xb)) * len(xb)
        n += len(xb)
    G.train(was)
    return {"content": cnt / n, "l1": l1 / n}


def finetune_generator(model: LoadedModel, x: torch.Tensor, y: torch.Tensor, e_hat: torch.Tensor,
                       ft: FinetuneConfig, device="cpu", progress: bool = True, seed: int = 0,
                       content_terms=None, log=None) -> tuple[nn.Module, torch.Tensor, dict]:
    """Paper §3.3. x, y: (T, 3, S, S) shots and landmark images; e_hat: (N,). Returns (G' (eval), ψ' (1, P),
    stats with the shots' reconstruction losses before (= FF) and after (= FT) fine-tuning).
    log: optional callable receiving {"step", "cnt", "loss_g", "loss_d"} after every step."""
    from tqdm import tqdm

    from talkinghead.train.meta import build_content_terms

    cfg = model.cfg
    lc = cfg.loss
    terms = build_content_terms(cfg, device) if content_terms is None else content_terms
    g = torch.Generator().manual_seed(seed)
    G = copy.deepcopy(model.G).to(device).train()
    e = e_hat.detach().to(device).view(1, -1)  # (1, N)
    with torch.no_grad():
        psi = nn.Parameter(G.project(e).detach().clone())  # ψ' (1, P) = P·ê
    stats: dict = {"ff": evaluate_shots(G, psi, x, y, terms, lc.pixel_l1_weight)}
    opt_g = torch.optim.Adam([p for n, p in G.named_parameters() if not n.startswith("proj.")] + [psi],
                             lr=ft.lr_g, betas=cfg.train.betas)
    D = None
    if model.D is not None:
        D = copy.deepcopy(model.D).to(device).train()
        w = nn.Parameter((D.w0.detach() + e[0]).clone())  # w' (N,) = w0 + ê
        opt_d = torch.optim.Adam([p for n, p in D.named_parameters() if not n.startswith("W.")] + [w],
                                 lr=ft.lr_d, betas=cfg.train.betas)
    T = len(x)
    bs = max(1, min(ft.batch_size, T))
    best, best_step, ema = math.inf, 0, None
    t0 = time.time()
    step = 0
    order = torch.randperm(T, generator=g)
    pos = 0
    bar = tqdm(total=ft.steps, desc="fine-tune", unit="step", disable=not progress, dynamic_ncols=True,
               file=sys.stderr, leave=False)
    try:
        for step in range(1, ft.steps + 1):
            if pos + bs > T:
                order, pos = torch.randperm(T, generator=g), 0
            idx = order[pos:pos + bs]
            pos += bs
            xb, yb = x[idx], y[idx]  # (B, 3, S, S)
            # -- G' step: L_CNT + L_ADV (−D'(x̂) + λ_FM·L_FM), paper §3.3
            fake = G(yb, psi.expand(bs, -1))
            l_cnt = _content(fake, xb, terms, lc.pixel_l1_weight)
            loss_g = l_cnt
            if D is not None:
                D.requires_grad_(False)
                w.requires_grad_(False)
                fake_score, fake_feats = D(fake, yb, w=w)
                with torch.no_grad():
                    _, real_feats = D(xb, yb, w=w)
                loss_g = loss_g + lc.adv_weight * losses.generator_adv_loss(fake_score) \
                    + lc.fm_weight * losses.feature_matching_loss(real_feats, fake_feats)
                D.requires_grad_(True)
                D.W.requires_grad_(False)
                w.requires_grad_(True)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            # -- D' step: hinge loss
            loss_d = 0.0
            if D is not None:
                scores, _ = D(torch.cat([xb, fake.detach()]), torch.cat([yb, yb]), w=w)
                real_s, fake_s = scores.chunk(2)
                ld = losses.hinge_d_loss(real_s, fake_s)
                opt_d.zero_grad(set_to_none=True)
                ld.backward()
                opt_d.step()
                loss_d = float(ld.detach())
            c = float(l_cnt.detach())
            if not math.isfinite(c):
                raise TalkingHeadError(f"fine-tuning diverged at step {step} (content loss {c})")
            ema = c if ema is None or bs == T else 0.7 * ema + 0.3 * c
            if ema < best * (1 - ft.min_delta):
                best, best_step = ema, step
            bar.set_postfix(cnt=f"{c:.4g}", d=f"{loss_d:.3g}", refresh=False)
            if log is not None:
                log({"step": step, "cnt": round(c, 5), "loss_g": round(float(loss_g.detach()), 5),
                     "loss_d": round(loss_d, 5), "time": round(time.time() - t0, 2)})
            bar.update(1)
            if ft.patience and step - best_step >= ft.patience:
                break
    finally:
        bar.close()
    G.eval()
    stats["ft"] = evaluate_shots(G, psi, x, y, terms, lc.pixel_l1_weight)
    stats.update(steps=step, max_steps=ft.steps, seconds=round(time.time() - t0, 2),
                 early_exit=step < ft.steps, adversarial=D is not None)
    return G, psi.detach(), stats


def make_avatar(images_or_video, model_path, mode: str = "ft", shots: int = 8, steps: int | None = None,
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
    t0 = time.time()
    model = as_model(model_path, device, with_discriminator=(mode == "ft"))
    sh: Shots = prepare_shots(images_or_video, model.cfg.model.image_size, shots, face_index, detector)
    x, y = sh.tensors(device)  # (T, 3, S, S) each
    e_hat = embed_shots(model.E, x, y)  # (N,)
    t_prep = time.time() - t0
    if mode == "ff":
        av = avatar_from_shots("ff", model, sh, e_hat)
        av.info = {"seconds_prepare": round(t_prep, 2)}
        return av
    ft = replace(finetune or model.cfg.finetune, **overrides)
    if steps is not None:
        ft = replace(ft, steps=int(steps))
    log_f = None
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = model.cfg.to_dict()
        cfg["finetune"] = asdict(ft)
        (run_dir / "config.json").write_text(json.dumps(
            {"config": cfg, "mode": mode, "shots": len(sh), "model": model.info(), "sources": sh.hashes}, indent=2))
        log_f = open(run_dir / "log.jsonl", "w")
    try:
        G, psi, stats = finetune_generator(model, x, y, e_hat, ft, device=device, progress=progress, seed=seed,
                                           log=None if log_f is None else
                                           (lambda rec: log_f.write(json.dumps(rec) + "\n")))
    finally:
        if log_f is not None:
            log_f.close()
    if run_dir is not None:
        _save_samples(run_dir / "samples.png", model.G, G, e_hat, psi, x, y)
    state = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
    av = avatar_from_shots("ft", model, sh, e_hat, psi=psi.cpu().view(-1), generator_state=state)
    av.config.finetune = ft
    av.info = {"finetune": stats, "seconds_prepare": round(t_prep, 2)}
    return av


@torch.no_grad()
def _save_samples(path: Path, G_ff: nn.Module, G_ft: nn.Module, e_hat, psi, x, y, max_rows: int = 8) -> None:
    """PNG grid, one row per shot: shot | landmark image | FF render | FT render."""
    from PIL import Image

    n = min(len(x), max_rows)
    G_ff.eval()
    ff = G_ff(y[:n], G_ff.project(e_hat.view(1, -1).to(y.device)).expand(n, -1))
    ft = G_ft(y[:n], psi.expand(n, -1))
    grid = torch.cat([torch.cat([x[i], y[i], ff[i], ft[i]], dim=2) for i in range(n)], dim=1)  # (3, nS, 4S)
    img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(img).save(path)


# ---- CLI -------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Make an avatar of one person from 1..32 photos or a video (paper §3.3): feed-forward "
                     "(ff: the embedding only, instant) or fine-tuned (ft: G and D fine-tuned on the shots; "
                     "looks more like the person). The .avatar file is what `talkinghead animate` takes.")
    p.add_argument("sources", nargs="+", metavar="IMAGES_OR_VIDEO", help="photos of one person, or one video")
    p.add_argument("--model", help="model file (default: the bundled talkinghead/weights/model_small.safetensors)")
    p.add_argument("--out", "-o", required=True, help=f"avatar file to write (*{AVATAR_SUFFIX})")
    p.add_argument("--mode", choices=("ff", "ft"), default="ft", help="ff or ft [default: ft]")
    p.add_argument("--shots", type=int, default=8, help="T, frames used (evenly spread) [default: 8]")
    p.add_argument("--steps", type=int, help="fine-tuning steps (default: the model config's finetune.steps)")
    p.add_argument("--face-index", type=int, help="use the k-th largest face (default: largest, central)")
    p.add_argument("--run", metavar="DIR", help="also write a run folder: config.json, log.jsonl, samples.png")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... [default: cpu]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != AVATAR_SUFFIX:
        raise TalkingHeadError(f"--out should end in {AVATAR_SUFFIX} (got {out.name})")
    model = resolve_model(args.model)
    t0 = time.time()
    av = make_avatar(args.sources, model, mode=args.mode, shots=args.shots, steps=args.steps,
                     face_index=args.face_index, device=args.device, progress=not args.no_progress,
                     run_dir=args.run)
    av.save(out)
    msg = f"avatar ({args.mode.upper()}, T={av.shots}) written to {out} in {time.time() - t0:.1f} s"
    st = av.info.get("finetune")
    if st:
        msg += (f"; content loss on the shots {st['ff']['content']:.4g} (FF) -> {st['ft']['content']:.4g} (FT) "
                f"after {st['steps']} steps")
    print(msg)
    return 0

"""Meta-learning stage (paper §3.2): the Trainer and the `talkinghead train` command.

Each step draws a batch of episodes — K shots and one target frame of one video plus the video's index i —
and runs two phases:
1. G/E phase: ê = mean_k E(x_k, y_k); x̂ = G(y_t, P·ê); minimise
   L_CNT(x̂, x_t) + L_ADV (−D(x̂, y_t, i) + λ_FM·L_FM) + λ_MCH·‖W_i − ê‖₁ over E, G, P and W.
2. D phase: hinge loss max(0, 1 + D(x̂)) + max(0, 1 − D(x_t)) over D's trunk, w0, b and W.
W is a sparse embedding table updated with SparseAdam (only the batch's rows), so memory and optimiser
work do not grow with the number of training videos. Under torchrun the modules are DDP-wrapped; W's
sparse gradient is averaged by gathering (row, value) pairs (`dist.allreduce_sparse_grad_`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Sampler

from talkinghead import losses
from talkinghead.checkpoint import load_training_state, save_model, save_training_state
from talkinghead.config import Config, preset
from talkinghead.errors import TalkingHeadError
from talkinghead.nn import build_models
from talkinghead.train import dist as tdist

CHECKPOINT = "checkpoints/last.pt"
MODEL_FILE = "model.safetensors"


class EpisodeBatchSampler(Sampler):
    """Yields, for every step from `start_step`, the episode indices of this rank's batch.

    Episode index j of step s is a pure function of (s, rank, j), and the dataset draws an episode's
    frames from an RNG seeded by that index — so a resumed run sees exactly the batches it would have.
    """

    def __init__(self, dataset_len: int, batch_size: int, start_step: int, total_steps: int, rank: int = 0,
                 world_size: int = 1):
        self.dataset_len, self.batch_size = dataset_len, batch_size
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            base = (step * self.world_size + self.rank) * self.batch_size
            yield [(base + j) % self.dataset_len for j in range(self.batch_size)]


class GeneratorWithEmbedder(nn.Module):
    """E and G as one module so one DDP wrapper serves the G/E phase."""

    def __init__(self, E: nn.Module, G: nn.Module):
        super().__init__()
        self.E, self.G = E, G

    def forward(self, shots_x, shots_y, target_y):
        B, K = shots_x.shape[:2]
        e = self.E(shots_x.flatten(0, 1), shots_y.flatten(0, 1)).view(B, K, -1)  # (B, K, N)
        e_hat = e.mean(dim=1)  # (B, N), paper eq. (1)
        fake = self.G(target_y, self.G.project(e_hat))  # (B, 3, S, S)
        return fake, e_hat


def build_content_terms(cfg: Config, device) -> list:
    """[(backbone, weight)] for L_CNT from the loss config (empty names are skipped)."""
    terms = []
    lc = cfg.loss
    specs = [(lc.imagenet_backbone, lc.imagenet_weight, lc.imagenet_path),
             (lc.face_backbone, lc.face_weight, lc.face_path)]
    if any(name and w > 0 for name, w, _ in specs):
        from talkinghead.perceptual import load_backbone
        for name, weight, path in specs:
            if name and weight > 0:
                terms.append((load_backbone(name, path).to(device), weight))
    return terms


def grad_norm(params) -> float:
    sq = 0.0
    for p in params:
        if p.grad is not None:
            g = p.grad.coalesce().values() if p.grad.is_sparse else p.grad
            sq += float(g.detach().float().pow(2).sum())
    return math.sqrt(sq)


@dataclass
class StepResult:
    losses: dict[str, float]
    fake: torch.Tensor | None = None


class Trainer:
    """Owns the networks, optimisers, phases, precision, logging and checkpoints of one run folder."""

    def __init__(self, cfg: Config, run_dir: str | os.PathLike, data_root: str | os.PathLike | None = None,
                 dataset=None, device: str = "auto", resume: bool = False, progress: bool = True):
        self.info = tdist.init_distributed(device)
        self.device = self.info.device
        self.run_dir = Path(run_dir)
        self.progress = progress and self.info.is_main
        state = None
        ckpt = self.run_dir / CHECKPOINT
        if resume:
            if not ckpt.is_file():
                raise TalkingHeadError(f"--resume: no checkpoint in {self.run_dir} (looked for {ckpt})")
            state = load_training_state(ckpt, map_location="cpu")
            steps = cfg.train.steps
            cfg = Config.from_dict(state["config"])
            cfg.train.steps = max(steps, cfg.train.steps) if steps else cfg.train.steps
        elif ckpt.is_file():
            raise TalkingHeadError(f"{self.run_dir} already holds a run; pass --resume to continue it "
                                   "or choose another --run folder")
        self.cfg = cfg
        if dataset is None:
            if data_root is None:
                raise TalkingHeadError("no training data given (--data DIR)")
            from talkinghead.data.dataset import EpisodeDataset
            # many episodes per video: index n draws its frames from an RNG seeded by n (reproducible)
            dataset = EpisodeDataset(data_root, shots=cfg.train.shots, split="train",
                                     image_size=cfg.model.image_size, seed=cfg.train.seed,
                                     episodes_per_video=10**6)
        self.dataset = dataset
        if state is None:
            cfg.model.num_videos = int(dataset.num_videos)
        elif cfg.model.num_videos != int(dataset.num_videos):
            raise TalkingHeadError(f"the data has {dataset.num_videos} training videos but the run was "
                                   f"started with {cfg.model.num_videos}")

        torch.manual_seed(cfg.train.seed)  # same initial weights on every rank (W is not DDP-broadcast)
        E, G, D = build_models(cfg.model)
        torch.manual_seed(cfg.train.seed + 1 + self.info.rank)
        self.E, self.G, self.D = (m.to(self.device) for m in (E, G, D))
        self.EG = GeneratorWithEmbedder(self.E, self.G)
        self.content_terms = build_content_terms(cfg, self.device)

        t = cfg.train
        self.opt_ge = torch.optim.Adam(self.EG.parameters(), lr=t.lr_ge, betas=t.betas)
        d_params = [p for n, p in self.D.named_parameters() if not n.startswith("W.")]
        self.opt_d = torch.optim.Adam(d_params, lr=t.lr_d, betas=t.betas)
        self.opt_w = torch.optim.SparseAdam([self.D.W.weight], lr=t.lr_d, betas=t.betas)
        self.step = 0
        self.elapsed = 0.0
        if state is not None:
            self._load_state(state)

        self.EG_ddp, self.D_ddp = self.EG, self.D
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            dev_ids = [self.device.index] if self.device.type == "cuda" else None
            self.EG_ddp = DDP(self.EG, device_ids=dev_ids)
            DDP._set_params_and_buffers_to_ignore_for_model(self.D, ["W.weight"])
            self.D_ddp = DDP(self.D, device_ids=dev_ids)

        amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=amp_dtype)) if t.amp \
            else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler("cuda") if (t.amp and self.device.type == "cuda") else None

    # ---- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "E": self.E.state_dict(), "G": self.G.state_dict(), "D": self.D.state_dict(),
            "opt_ge": self.opt_ge.state_dict(), "opt_d": self.opt_d.state_dict(),
            "opt_w": self.opt_w.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }

    def _load_state(self, state: dict) -> None:
        self.E.load_state_dict(state["E"])
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_ge.load_state_dict(state["opt_ge"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def save_checkpoint(self) -> None:
        """Training state (exact resume) and the inference model file, both atomic; rank 0 only."""
        if not self.info.is_main:
            return
        save_training_state(self.run_dir / CHECKPOINT, self.state_dict())
        save_model(self.run_dir / MODEL_FILE, self.cfg, self.E, self.G, self.D,
                   extra_metadata={"step": str(self.step)})

    # ---- one step ----------------------------------------------------------------------------------
    def train_step(self, batch: dict, keep_output: bool = False) -> StepResult:
        """One G/E phase and one D phase on a batch of episodes (paper §3.2)."""
        cfg, lc = self.cfg, self.cfg.loss
        dev = self.device
        shots_x = batch["shots_x"].to(dev, non_blocking=True)  # (B, K, 3, S, S)
        shots_y = batch["shots_y"].to(dev, non_blocking=True)  # (B, K, 3, S, S)
        x = batch["target_x"].to(dev, non_blocking=True)  # (B, 3, S, S)
        y = batch["target_y"].to(dev, non_blocking=True)  # (B, 3, S, S)
        idx = batch["video_index"].to(dev, non_blocking=True).view(-1)  # (B,)

        # -- G/E phase: D's trunk is frozen (its gradients are not wanted), W_i learns from L_MCH only
        self.D.requires_grad_(False)
        self.D.W.weight.requires_grad_(True)
        self.opt_ge.zero_grad(set_to_none=True)
        self.opt_w.zero_grad(set_to_none=True)
        with self.autocast():
            fake, e_hat = self.EG_ddp(shots_x, shots_y, y)
            w_i = self.D.video_vectors(idx)  # (B, N)
            w_proj = w_i.detach() + self.D.w0  # score uses W_i + w0 without sending -D's gradient to W
            fake_score, fake_feats = self.D(fake, y, w=w_proj)
            with torch.no_grad():
                _, real_feats = self.D(x, y, w=w_proj)
            l_cnt = losses.content_loss(fake, x, self.content_terms) if self.content_terms \
                else fake.new_zeros(())
            if lc.pixel_l1_weight > 0:
                l_cnt = l_cnt + lc.pixel_l1_weight * losses.pixel_l1(fake, x)
            l_adv = lc.adv_weight * losses.generator_adv_loss(fake_score)
            l_fm = lc.fm_weight * losses.feature_matching_loss(real_feats, fake_feats)
            l_mch = lc.mch_weight * losses.embedding_match_loss(w_i, e_hat)
            loss_g = l_cnt + l_adv + l_fm + l_mch
        self._backward(loss_g)
        tdist.allreduce_sparse_grad_(self.D.W.weight, self.info)
        gn_g = self._clip_and_step(self.opt_ge, list(self.EG.parameters()))
        self.opt_w.step()
        self.D.requires_grad_(True)

        # -- D phase: hinge loss on real and (detached) fake, one forward through the DDP wrapper
        fake_d = fake.detach()
        gn_d = 0.0
        for _ in range(cfg.train.d_steps):
            self.opt_d.zero_grad(set_to_none=True)
            self.opt_w.zero_grad(set_to_none=True)
            with self.autocast():
                scores, _ = self.D_ddp(torch.cat([x, fake_d]), torch.cat([y, y]), torch.cat([idx, idx]))
                real_score, fake_score_d = scores.float().chunk(2)
                loss_d = losses.hinge_d_loss(real_score, fake_score_d)
            self._backward(loss_d)
            tdist.allreduce_sparse_grad_(self.D.W.weight, self.info)
            gn_d = self._clip_and_step(self.opt_d, [p for n, p in self.D.named_parameters()
                                                    if not n.startswith("W.")])
            self.opt_w.step()
        if self.scaler is not None:
            self.scaler.update()

        vals = torch.stack([loss_g.detach().float(), l_cnt.detach().float(), l_adv.detach().float(),
                            l_fm.detach().float(), l_mch.detach().float(), loss_d.detach().float(),
                            real_score.detach().mean(), fake_score_d.detach().mean(),
                            e_hat.detach().float().norm(dim=1).mean()])
        tdist.allreduce_mean_(vals, self.info)
        names = ["loss_g", "cnt", "adv", "fm", "mch", "loss_d", "d_real", "d_fake", "e_norm"]
        out = {n: float(v) for n, v in zip(names, vals)}
        out.update(gnorm_g=gn_g, gnorm_d=gn_d)
        return StepResult(out, fake.detach() if keep_output else None)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _clip_and_step(self, opt: torch.optim.Optimizer, params: list) -> float:
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        dense = [p for p in params if p.grad is not None and not p.grad.is_sparse]
        if self.cfg.train.grad_clip > 0:
            gn = float(torch.nn.utils.clip_grad_norm_(dense, self.cfg.train.grad_clip))
        else:
            gn = grad_norm(dense)
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()
        return gn

    # ---- the loop ----------------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        t = self.cfg.train
        sampler = EpisodeBatchSampler(len(self.dataset), t.batch_size, self.step, t.steps, self.info.rank, self.info.world_size)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=t.num_workers,
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=False, prefetch_factor=4 if t.num_workers else None)

    def train(self, max_steps: int | None = None, stop_after_seconds: float | None = None) -> dict:
        """Runs until cfg.train.steps (or max_steps more); checkpoints every N steps / M minutes.

        Returns the last logged losses. Safe to interrupt: the last checkpoint is always complete.
        """
        t = self.cfg.train
        end = t.steps if max_steps is None else min(t.steps, self.step + max_steps)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.info.is_main:
            (self.run_dir / "config.json").write_text(self.cfg.to_json())
        log_f = open(self.run_dir / "log.jsonl", "a") if self.info.is_main else None
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=t.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                       file=sys.stderr)
        last_ckpt_time = run_start = time.time()
        t0 = time.time()
        window_t, window_n = time.time(), 0
        last: dict = {}
        self.E.train(), self.G.train(), self.D.train()
        try:
            for batch in self.loader():
                if self.step >= end:
                    break
                want_sample = self.info.is_main and t.sample_every and (self.step + 1) % t.sample_every == 0
                res = self.train_step(batch, keep_output=want_sample)
                self.step += 1
                window_n += 1
                last = res.losses
                if not all(math.isfinite(v) for v in last.values()):
                    raise TalkingHeadError(f"training diverged at step {self.step}: {last}")
                if want_sample:
                    self.save_samples(batch, res.fake)
                if self.step % t.log_every == 0 or self.step == end:
                    now = time.time()
                    rate = window_n / max(now - window_t, 1e-9)
                    window_t, window_n = now, 0
                    if log_f:
                        rec = {"step": self.step, "time": round(self.elapsed + now - t0, 2),
                               "steps_per_s": round(rate, 4), **{k: round(v, 5) for k, v in last.items()}}
                        log_f.write(json.dumps(rec) + "\n")
                        log_f.flush()
                    if bar:
                        bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss_g", "cnt", "loss_d")},
                                        refresh=False)
                if bar:
                    bar.update(1)
                due_minutes = (time.time() - last_ckpt_time) / 60 >= t.ckpt_every_minutes
                if self.step % t.ckpt_every_steps == 0 or due_minutes or self.step == end:
                    self.elapsed += time.time() - t0
                    t0 = time.time()
                    self.save_checkpoint()
                    last_ckpt_time = time.time()
                if stop_after_seconds is not None and time.time() - run_start > stop_after_seconds:
                    break
        finally:
            if bar:
                bar.close()
            if log_f:
                log_f.close()
        return last

    def save_samples(self, batch: dict, fake: torch.Tensor) -> None:
        """PNG grid, one row per episode: shots | target landmarks | target | output."""
        from PIL import Image

        k = min(batch["shots_x"].shape[1], 4)
        rows = []
        for b in range(min(fake.shape[0], 4)):
            tiles = [batch["shots_x"][b, i] for i in range(k)]
            tiles += [batch["target_y"][b], batch["target_x"][b], fake[b].float().cpu()]
            rows.append(torch.cat([t.float().cpu() for t in tiles], dim=2))  # (3, S, S*(k+3))
        grid = torch.cat(rows, dim=1)
        img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        out = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(out)

    def close(self) -> None:
        tdist.shutdown(self.info)


# ---- CLI -------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Meta-learn the embedder E, generator G and discriminator D on a preprocessed set "
                     "of talking-head videos (made by `talkinghead preprocess`). Each step takes K shots "
                     "and a target frame from one video. Everything goes into the run folder: "
                     "config.json, log.jsonl, samples/*.png, checkpoints/last.pt and model.safetensors "
                     "(the file `finetune`/`animate` load). Multi-GPU: torchrun --nproc_per_node=N "
                     "-m talkinghead train ...")
    p.add_argument("--preset", default="small", help="tiny (tests, 64²), small (128², CPU hours), "
                   "paper (256², the paper's widths) [default: small]")
    p.add_argument("--data", help="preprocessed training set (folder with manifest.json)")
    p.add_argument("--run", required=True, help="run folder (created; holds checkpoints and logs)")
    p.add_argument("--steps", type=int, help="total number of steps to reach (default: the preset's)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its last checkpoint")
    p.add_argument("--batch-size", type=int, help="episodes per step and process")
    p.add_argument("--shots", type=int, help="K, frames per episode used by the embedder")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda [default: auto]")
    p.add_argument("--workers", type=int, help="data loader worker processes")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config value, e.g. --set loss.fm_weight=5 (repeatable)")
    p.add_argument("--minutes", type=float, help="stop (after a checkpoint) when this much time has passed")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def apply_overrides(cfg: Config, args: argparse.Namespace) -> Config:
    t = cfg.train
    if args.steps is not None:
        t.steps = args.steps
    if args.batch_size is not None:
        t.batch_size = args.batch_size
    if args.shots is not None:
        t.shots = args.shots
    if args.amp:
        t.amp = True
    if args.workers is not None:
        t.num_workers = args.workers
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        obj = getattr(cfg, section, None)
        if obj is None or not _ or not hasattr(obj, name):
            raise TalkingHeadError(f"--set {item!r}: no such config value (use SECTION.KEY=VALUE, "
                                   "e.g. loss.fm_weight=5)")
        current = getattr(obj, name)
        try:
            parsed = json.loads(value) if not isinstance(current, str) else value
        except json.JSONDecodeError:
            raise TalkingHeadError(f"--set {item!r}: cannot parse {value!r}") from None
        setattr(obj, name, tuple(parsed) if isinstance(parsed, list) else parsed)
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = apply_overrides(preset(args.preset), args)
    if args.dry_run:
        print(cfg.to_json())
        return 0
    if not args.resume and not args.data:
        raise TalkingHeadError("--data DIR is required (a folder made by `talkinghead preprocess`)")
    data = args.data
    if args.resume and not data:
        saved = Path(args.run) / "data_root.txt"
        data = saved.read_text().strip() if saved.is_file() else None
    if data and not (Path(data) / "manifest.json").is_file():
        raise TalkingHeadError(f"{data} is not a preprocessed set (no manifest.json); "
                               "run `talkinghead preprocess` first")
    trainer = Trainer(cfg, args.run, data_root=data, device=args.device, resume=args.resume,
                      progress=not args.no_progress)
    try:
        if trainer.info.is_main:
            Path(args.run).mkdir(parents=True, exist_ok=True)
            (Path(args.run) / "data_root.txt").write_text(str(Path(data).resolve()))
            print(f"run {args.run}: preset {trainer.cfg.name}, {trainer.cfg.model.num_videos} videos, "
                  f"step {trainer.step} → {trainer.cfg.train.steps}, device {trainer.device}, "
                  f"{trainer.info.world_size} process(es)", file=sys.stderr)
        stop = args.minutes * 60 if args.minutes else None
        try:
            last = trainer.train(stop_after_seconds=stop)
        except KeyboardInterrupt:
            trainer.save_checkpoint()  # Ctrl-C: keep the steps done so far; --resume continues from here
            print(f"interrupted: checkpoint at step {trainer.step} in {args.run}", file=sys.stderr)
            raise
        trainer.save_checkpoint()
        if trainer.info.is_main:
            print(f"step {trainer.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()),
                  file=sys.stderr)
            print(f"model: {Path(args.run) / MODEL_FILE}", file=sys.stderr)
    finally:
        trainer.close()
    return 0

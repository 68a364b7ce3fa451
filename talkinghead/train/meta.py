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

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from talkinghead.media import images

from talkinghead.train import losses
from talkinghead.persons.checkpoint import load_training_state, save_model, save_training_state
from talkinghead.config import Config
from talkinghead.console import log, progress
from talkinghead.errors import CheckpointError, TalkingHeadError
from talkinghead.nn import GenInputs, Texture, build_models, needs_texture
from talkinghead.train import dist as tdist
from talkinghead.train.interrupts import StepBoundary
from talkinghead.train.episodes import EpisodeBatchSampler, leave_interrupts_to_main
from talkinghead.train.resume import check_resume_config, init_from_model
from talkinghead.train.run_folder import RunFolder
from talkinghead.train.step import Phase, PhaseLosses, StepRunner
from talkinghead.train.objective import (build_content_terms, discriminator_terms, generator_terms,
                                         mouth_crops, mouth_discriminator_terms, mouth_generator_terms,
                                         warp_terms)

CHECKPOINT = "checkpoints/last.pt"
# what every step logs, in this order (then gnorm_g, gnorm_d); a term that is off logs 0
LOG_NAMES = ("loss_g", "cnt", "adv", "fm", "mch", "loss_d", "d_real", "d_fake", "e_norm", "warp", "smooth", "mouth",
             "mouth_adv", "mouth_fm", "loss_dm", "dm_real", "dm_fake")
MODEL_FILE = "model.safetensors"


class GeneratorWithEmbedder(nn.Module):
    """E and G as one module so one DDP wrapper serves the G/E phase.

    forward -> {"out": G's GenOutput (its image x̂ (B, 3, S, S)), "e_hat": ê (B, N)}. source_index (B,) and
    coarse_grid (B, S, S, 2), for a G that needs a texture: the shot whose texture is moved, and the landmark
    flow to it.
    """

    def __init__(self, E: nn.Module, G: nn.Module):
        super().__init__()
        self.E, self.G = E, G

    def forward(self, shots_x, shots_y, target_y, source_index=None, coarse_grid=None) -> dict:
        B, K = shots_x.shape[:2]
        e = self.E(shots_x.flatten(0, 1), shots_y.flatten(0, 1)).view(B, K, -1)  # (B, K, N)
        e_hat = e.mean(dim=1)  # (B, N), paper eq. (1)
        texture = None
        if source_index is not None:
            rows = torch.arange(B, device=shots_x.device)
            texture = Texture(shots_x[rows, source_index], shots_y[rows, source_index], coarse_grid)
        return {"out": self.G.render(GenInputs(target_y, self.G.project(e_hat), texture)), "e_hat": e_hat}


@dataclass
class StepResult:
    losses: dict[str, float]
    fake: torch.Tensor | None = None


class Trainer:
    """Owns the networks, optimisers, phases, precision, logging and checkpoints of one run folder.

    resume=True continues the run in `run_dir` from its checkpoint (`state`, if the caller already read it):
    the model and every weight come from the checkpoint, the training values (train, loss, finetune) from
    `cfg` — the command builds `cfg` from the saved config plus the options given. init: a new run starts
    from a model file's E, G and D trunk (`init_from_model`) instead of fresh weights.
    """

    def __init__(self, cfg: Config, run_dir: str | os.PathLike, data_root: str | os.PathLike | None = None,
                 dataset=None, device: str = "auto", resume: bool = False, progress: bool = True,
                 state: dict | None = None, init: str | os.PathLike | None = None):
        self.info = tdist.init_distributed(device)
        self.device = self.info.device
        self.run_dir = Path(run_dir)
        self.progress = progress and self.info.is_main
        ckpt = self.run_dir / CHECKPOINT
        if resume:
            if state is None:
                if not ckpt.is_file():
                    raise TalkingHeadError(f"--resume: no checkpoint in {self.run_dir} (looked for {ckpt})")
                state = load_training_state(ckpt, map_location="cpu")
            saved = Config.from_dict(state["config"])
            check_resume_config(saved, cfg)
            cfg.model = saved.model
        elif ckpt.is_file():
            raise TalkingHeadError(f"{self.run_dir} already holds a run; pass --resume to continue it "
                                   "or choose another --run folder")
        else:
            state = None
        self.cfg = cfg
        if dataset is None:
            if data_root is None:
                raise TalkingHeadError("no training data given (--data DIR)")
            from talkinghead.data.dataset import EpisodeDataset
            # many episodes per video: index n draws its frames from an RNG seeded by n (reproducible)
            dataset = EpisodeDataset(data_root, shots=cfg.train.shots, split="train",
                                     image_size=cfg.model.image_size, seed=cfg.train.seed,
                                     episodes_per_video=10**6, warp=needs_texture(cfg.model),
                                     random_source=cfg.train.random_source)
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
        lc = cfg.loss
        self.Dm = None  # the mouth discriminator (nn/mouth.py), warp-guided G with its weights > 0 only
        if needs_texture(cfg.model) and (lc.mouth_adv_weight > 0 or lc.mouth_fm_weight > 0):
            from talkinghead.nn.mouth import MouthDiscriminator

            self.Dm = MouthDiscriminator().to(self.device)
        if init is not None:
            if state is not None:
                raise TalkingHeadError("--init starts a new run; a resumed run keeps its own weights")
            init_from_model(self, init)

        t = cfg.train
        self.opt_ge = torch.optim.Adam(self.EG.parameters(), lr=t.lr_ge, betas=t.betas)
        self.opt_d = torch.optim.Adam(self._d_trunk_params(), lr=t.lr_d, betas=t.betas)
        self.opt_w = torch.optim.SparseAdam([self.D.W.weight], lr=t.lr_d, betas=t.betas)
        self.opt_dm = None if self.Dm is None else torch.optim.Adam(self.Dm.parameters(), lr=t.lr_d, betas=t.betas)
        self.step = 0
        self.elapsed = 0.0
        if state is not None:
            self._load_state(state)

        self.EG_ddp, self.D_ddp, self.Dm_ddp = self.EG, self.D, self.Dm
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            dev_ids = [self.device.index] if self.device.type == "cuda" else None
            self.EG_ddp = DDP(self.EG, device_ids=dev_ids)
            DDP._set_params_and_buffers_to_ignore_for_model(self.D, ["W.weight"])
            self.D_ddp = DDP(self.D, device_ids=dev_ids)
            if self.Dm is not None:
                self.Dm_ddp = DDP(self.Dm, device_ids=dev_ids)

        amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=amp_dtype)) if t.amp \
            else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler("cuda") if (t.amp and self.device.type == "cuda") else None

    def _d_trunk_params(self) -> list:
        """D's parameters except the sparse table W (θ, w0, b)."""
        return [p for n, p in self.D.named_parameters() if not n.startswith("W.")]

    # ---- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything an exact resume needs; only tensors and plain values (loaded with weights_only)."""
        np_state = np.random.get_state()
        return {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "E": self.E.state_dict(), "G": self.G.state_dict(), "D": self.D.state_dict(),
            "opt_ge": self.opt_ge.state_dict(), "opt_d": self.opt_d.state_dict(),
            "opt_w": self.opt_w.state_dict(),
            **({} if self.Dm is None else {"Dm": self.Dm.state_dict(), "opt_dm": self.opt_dm.state_dict()}),
            "rng": {"torch": torch.get_rng_state(),
                    "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
                    "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }

    def _load_state(self, state: dict) -> None:
        try:
            self.E.load_state_dict(state["E"])
            self.G.load_state_dict(state["G"])
            self.D.load_state_dict(state["D"])
            self.opt_ge.load_state_dict(state["opt_ge"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.opt_w.load_state_dict(state["opt_w"])
            if self.Dm is not None and "Dm" in state:  # else a mouth D switched on at resume starts fresh
                self.Dm.load_state_dict(state["Dm"])
                self.opt_dm.load_state_dict(state["opt_dm"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{self.run_dir / CHECKPOINT}: does not match its own config "
                                  f"({' '.join(str(e).split())[:200]})") from None
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        py = rng["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
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
        """One G/E phase and d_steps D phases (and the mouth D's) on a batch of episodes (paper §3.2,
        train/step.py, train/objective.py); the losses by name (LOG_NAMES, 0 where a term is off)."""
        dev = self.device
        b = {k: v.to(dev, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v) and k != "target_points"}
        x, y = b["target_x"], b["target_y"]  # (B, 3, S, S)
        idx = b["video_index"].view(-1)  # (B,)
        texture = "coarse_grid" in b  # source_index (B,), coarse_grid (B, S, S, 2)
        lc, D, W = self.cfg.loss, self.D, self.D.W.weight
        mouth = self.Dm is not None and texture

        def g_phase(_) -> PhaseLosses:  # E, G, P and W_i; D's trunk frozen, W_i learns from L_MCH only
            out = self.EG_ddp(b["shots_x"], b["shots_y"], y,  # shots (B, K, 3, S, S)
                              *((b["source_index"], b["coarse_grid"]) if texture else ()))
            gen, e_hat = out["out"], out["e_hat"]  # GenOutput (image (B, 3, S, S)), ê (B, N)
            w_i = D.video_vectors(idx)  # (B, N)
            warped = gen.warped if texture and lc.warp_content_weight > 0 else None
            # the score uses W_i + w0 without sending −D's gradient to W
            g = generator_terms(gen.image, x, y, D, w_i.detach() + D.w0, self.content_terms, lc, warped=warped)
            terms = {"cnt": g["cnt"], "adv": g["adv"], "fm": g["fm"],
                     "mch": lc.mch_weight * losses.embedding_match_loss(w_i, e_hat)}
            outputs = {"fake": gen.image}
            if texture:
                terms.update(warp_terms(gen, x, batch["target_points"], lc, g.get("warp_cnt")))
            if mouth:
                outputs["crops"] = mouth_crops(gen.image, x, y, batch["target_points"])
                terms.update(mouth_generator_terms(self.Dm, *outputs["crops"], lc))
            return PhaseLosses(terms, {"e_norm": e_hat.detach().float().norm(dim=1).mean()}, outputs)

        def d_phase(o) -> PhaseLosses:  # hinge loss on real and (detached) fake, one forward through DDP
            d = discriminator_terms(self.D_ddp, x, o["fake"], y, video_index=idx)
            return PhaseLosses({"loss_d": d["loss"]}, {"d_real": d["real"], "d_fake": d["fake"]})

        def dm_phase(o) -> PhaseLosses:  # the mouth D: hinge loss on the real and (detached) output crops
            fake_c, real_c, y_c = o["crops"]
            dm = mouth_discriminator_terms(self.Dm_ddp, real_c, fake_c, y_c)
            return PhaseLosses({"loss_dm": dm["loss"]}, {"dm_real": dm["real"], "dm_fake": dm["fake"]})

        phases = [Phase("loss_g", g_phase, [self.opt_ge, self.opt_w], list(self.EG.parameters()),
                        trains=((D, False), (W, True)) + (((self.Dm, False),) if mouth else ()),
                        gnorm="gnorm_g", sparse=W),
                  Phase("loss_d", d_phase, [self.opt_d, self.opt_w], self._d_trunk_params(), trains=((D, True),),
                        repeats=self.cfg.train.d_steps, gnorm="gnorm_d", sparse=W)]
        if mouth:
            phases.append(Phase("loss_dm", dm_phase, [self.opt_dm], list(self.Dm.parameters()),
                                trains=((self.Dm, True),)))
        runner = StepRunner(self.autocast, self.scaler, self.cfg.train.grad_clip, self.info)
        values, norms, outputs = runner.step(phases)
        logged = {n: values.get(n, 0.0) for n in LOG_NAMES}
        logged.update(norms)
        return StepResult(logged, outputs["fake"].detach() if keep_output else None)

    # ---- the loop ----------------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        t = self.cfg.train
        sampler = EpisodeBatchSampler(len(self.dataset), t.batch_size, self.step, t.steps, self.info.rank,
                                      self.info.world_size)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=t.num_workers,
                          pin_memory=self.device.type == "cuda", worker_init_fn=leave_interrupts_to_main,
                          persistent_workers=False, prefetch_factor=4 if t.num_workers else None)

    def train(self, max_steps: int | None = None, stop_after_seconds: float | None = None) -> dict:
        """Runs until cfg.train.steps (or max_steps more); checkpoints every N steps / M minutes.

        Returns the last logged losses. Ctrl-C or SIGTERM ends the running step, writes a checkpoint and
        then raises KeyboardInterrupt (Terminated for SIGTERM): the run resumes exactly from there.
        """
        t = self.cfg.train
        end = t.steps if max_steps is None else min(t.steps, self.step + max_steps)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_f = None
        if self.info.is_main:
            RunFolder(self.run_dir).write_config(self.cfg.to_dict())
            log_f = RunFolder(self.run_dir).open_log()
        bar = progress(t.steps, "train", "step", self.progress, initial=self.step, leave=True)
        last_ckpt_time = run_start = time.time()
        t0 = time.time()
        window_t, window_n = time.time(), 0
        last: dict = {}
        self.E.train(), self.G.train(), self.D.train()
        try:
            with StepBoundary() as boundary:
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
                            log_f.log(rec)
                        bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss_g", "cnt", "loss_d")},
                                        refresh=False)
                    bar.update(1)
                    due_minutes = (time.time() - last_ckpt_time) / 60 >= t.ckpt_every_minutes
                    stop = boundary.pending is not None or (
                        stop_after_seconds is not None and time.time() - run_start > stop_after_seconds)
                    if self.step % t.ckpt_every_steps == 0 or due_minutes or self.step == end or stop:
                        self.elapsed += time.time() - t0
                        t0 = time.time()
                        self.save_checkpoint()
                        last_ckpt_time = time.time()
                    if boundary.pending is not None:
                        log.info("interrupted: checkpoint at step %d in %s", self.step, self.run_dir)
                        boundary.raise_pending(boundary.pending)
                    if stop:
                        break
        finally:
            bar.close()
            if log_f:
                log_f.close()
        return last

    def save_samples(self, batch: dict, fake: torch.Tensor) -> None:
        """PNG grid, one row per episode: shots | target landmarks | target | output."""
        k = min(batch["shots_x"].shape[1], 4)
        rows = [[*(batch["shots_x"][b, i] for i in range(k)), batch["target_y"][b], batch["target_x"][b], fake[b]]
                for b in range(min(fake.shape[0], 4))]
        images.save_grid(self.run_dir / "samples" / f"step_{self.step:07d}.png", rows)

    def close(self) -> None:
        tdist.shutdown(self.info)

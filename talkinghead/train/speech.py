"""Training the speech → mouth model (`talkinghead train --preset speech`; DESIGN.md §2, "speech and text as
drivers"): windows of a few seconds of the training clips' audio features in, their tracked mouth and jaw
offsets from rest out (data/speech.py); L1 of the offsets (inner lips weighted up) plus L1 of their frame-to-frame
motion. The run folder holds config.json, log.jsonl (train loss; val L1, LMD and lip-gap correlation at every
checkpoint), checkpoints/last.pt and model.safetensors (with the motion bank and the loudness baseline,
persons/speech_model.py). Ctrl-C or SIGTERM ends the step, checkpoints and stops; --resume continues exactly.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from talkinghead.config import SpeechConfig
from talkinghead.console import log, progress as progress_bar
from talkinghead.errors import TalkingHeadError
from talkinghead.landmarks.mouth_motion import MOUTH, MOUTH_JAW, rows
from talkinghead.landmarks.openness import INNER_LIPS as INNER_LIP_PAIRS
from talkinghead.train.interrupts import StepBoundary
from talkinghead.train.run_folder import RunFolder

CHECKPOINT = "checkpoints/last.pt"
MODEL_FILE = "model.safetensors"
INNER_LIPS = rows(np.arange(60, 68))  # the inner lips' rows among the 37 mouth-and-jaw points
LIPS = rows(MOUTH)  # the 20 lip points' rows (LMD)
GAP_PAIRS = tuple((int(rows(up)[0]), int(rows(lo)[0])) for up, lo in INNER_LIP_PAIRS)  # upper, lower inner-lip rows


def offset_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: SpeechConfig) -> torch.Tensor:
    """(B, L, 37, 2) predicted and tracked offsets, (B, L) mask -> L1 + velocity_weight × L1 of the motion."""
    w = torch.ones(pred.shape[2], device=pred.device)
    w[torch.as_tensor(INNER_LIPS, device=pred.device)] = cfg.lips_weight
    w = w / w.mean()
    m = mask.float()
    err = ((pred - target).abs().sum(-1) * w).mean(-1)  # (B, L)
    loss = (err * m).sum() / m.sum().clamp(min=1)
    if cfg.velocity_weight > 0 and pred.shape[1] > 1:
        dm = m[:, 1:] * m[:, :-1]
        dv = (((pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])).abs().sum(-1) * w).mean(-1)
        loss = loss + cfg.velocity_weight * (dv * dm).sum() / dm.sum().clamp(min=1)
    return loss


def lip_gap(offsets: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """(..., 37, 2) offsets and the (68, 2) rest -> (...,) the inner-lip gap in the face frame (inter-ocular
    units): the mean vertical distance of 61-63 over 67-65, crossed lips 0."""
    pts = np.asarray(offsets) + rest[MOUTH_JAW]
    return np.mean([np.maximum(pts[..., lo, 1] - pts[..., up, 1], 0.0) for up, lo in GAP_PAIRS], axis=0)


def mouth_scores(pred: np.ndarray, clip) -> dict:
    """Self-reenactment scores of (F, 37, 2) offsets against a clip's tracked ones, on its tracked frames: l1,
    LMD (the mean distance of the 20 lip points, face frame = pose removed, inter-ocular units), LMD of the motion
    (each sequence's mean over the clip taken out: what relative retargeting transfers) and the Pearson
    correlation of the inner-lip gap."""
    m = clip.mask
    p, t = pred[m], clip.offsets[m]
    lmd = float(np.linalg.norm(p[:, LIPS] - t[:, LIPS], axis=-1).mean())
    dp, dt = p[:, LIPS] - p[:, LIPS].mean(0), t[:, LIPS] - t[:, LIPS].mean(0)  # the motion: each clip's mean out
    lmd_motion = float(np.linalg.norm(dp - dt, axis=-1).mean())
    gp, gt = lip_gap(p, clip.rest), lip_gap(t, clip.rest)
    corr = float(np.corrcoef(gp, gt)[0, 1]) if gp.std() > 1e-6 and gt.std() > 1e-6 else 0.0
    return {"l1": float(np.abs(p - t).sum(-1).mean()), "lmd": lmd, "lmd_motion": lmd_motion, "gap_corr": corr,
            "frames": int(m.sum())}


def pooled(scores: list[dict]) -> dict:
    """Frame-weighted means of per-clip scores."""
    w = np.array([s["frames"] for s in scores], np.float64)
    return {k: float(np.average([s[k] for s in scores], weights=w)) for k in ("l1", "lmd", "lmd_motion", "gap_corr")} | {
        "clips": len(scores), "frames": int(w.sum())}


def principal_components(clips, k: int) -> np.ndarray:
    """(k, 74): the top principal directions of the clips' tracked offsets (each scaled by its standard
    deviation, so that a coefficient of 1 is a typical movement)."""
    ys = np.concatenate([c.offsets[c.mask] for c in clips]).reshape(-1, 74).astype(np.float64)
    ys = ys - ys.mean(0)
    _, s, vt = np.linalg.svd(ys, full_matrices=False)
    return (vt[:k] * (s[:k, None] / np.sqrt(len(ys)))).astype(np.float32)


class SpeechTrainer:
    """One model, one optimiser; `train(stop_after_seconds)` runs to cfg.steps, checkpointing every
    cfg.checkpoint_every steps and at the end."""

    def __init__(self, cfg: SpeechConfig, run_dir, data_root, device: str = "cpu", resume: bool = False,
                 progress: bool = True, state: dict | None = None):
        from talkinghead.data.speech import load_clips
        from talkinghead.nn.speech import SpeechToMouth

        self.cfg, self.run = cfg, RunFolder(run_dir)
        self.device = torch.device("cpu" if device == "auto" and not torch.cuda.is_available()
                                   else ("cuda" if device == "auto" else device))
        self.progress = progress
        self.data_root = str(Path(data_root).resolve())
        clips = load_clips(data_root)
        self.train_clips = [c for c in clips if c.split == "train" and c.mask.any()]
        self.val_clips = [c for c in clips if c.split == "val" and c.mask.any()]
        if not self.train_clips:
            raise TalkingHeadError(f"{data_root} holds no training clip with speech")
        torch.manual_seed(cfg.seed)
        self.net = SpeechToMouth(cfg).to(self.device)
        if cfg.components and not resume:
            self.net.basis.copy_(torch.from_numpy(principal_components(self.train_clips, cfg.components)))
        self.ema = copy.deepcopy(self.net).eval()  # the weights' moving average: what is validated and saved
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.run.write_config({"preset": cfg.name, "speech": cfg.to_dict(), "data": self.data_root})
        self.run.open_log()
        if resume:
            state = state or torch.load(Path(run_dir) / CHECKPOINT, weights_only=False)
            self.net.load_state_dict(state["net"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step = int(state["step"])
            self.rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])

    @property
    def frames(self) -> int:
        from talkinghead.media.audio import FEATURE_RATE

        return int(round(self.cfg.window_s * FEATURE_RATE))

    def _lr(self) -> float:
        """Cosine decay to a tenth over cfg.steps."""
        t = min(self.step / max(self.cfg.steps, 1), 1.0)
        return self.cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t)))

    def train_step(self) -> float:
        from talkinghead.data.speech import sample_windows

        self.net.train()
        x, y, m = sample_windows(self.train_clips, self.cfg.batch_size, self.frames, self.rng, self.cfg.tempo,
                                 self.cfg.phones)
        x = torch.from_numpy(x).to(self.device)
        if self.cfg.noise > 0:
            x = x + self.cfg.noise * torch.randn_like(x)
        for g in self.opt.param_groups:
            g["lr"] = self._lr()
        loss = offset_loss(self.net(x), torch.from_numpy(y).to(self.device), torch.from_numpy(m).to(self.device),
                           self.cfg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.lerp_(p, 1 - self.cfg.ema)
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def predict(self, clip) -> np.ndarray:
        from talkinghead.data.speech import clip_inputs

        x = torch.from_numpy(clip_inputs(clip, self.cfg.phones).T[None].copy()).to(self.device)
        return self.ema(x)[0].cpu().numpy()

    def validate(self) -> dict:
        if not self.val_clips:
            return {}
        return {f"val_{k}": v for k, v in pooled([mouth_scores(self.predict(c), c) for c in self.val_clips]).items()}

    def save(self) -> None:
        from talkinghead.data.speech import fit_loudness, motion_bank_clips
        from talkinghead.media.files import atomic_write
        from talkinghead.persons.speech_model import MotionBank, save_speech_model

        ckpt = self.run.path / CHECKPOINT
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        state = {"net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                 "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "config": self.cfg.to_dict()}
        atomic_write(ckpt, lambda tmp: torch.save(state, tmp))
        if not hasattr(self, "_bank"):
            self._bank = MotionBank(*motion_bank_clips(self.train_clips))
            self._loud = fit_loudness(self.train_clips)
        val = self.validate()
        info = {"step": self.step, "train_clips": len(self.train_clips),
                "train_people": len({c.identity for c in self.train_clips}),
                "train_seconds": round(sum(len(c.feats) for c in self.train_clips) / 100, 1), **val}
        save_speech_model(self.run.path / MODEL_FILE, self.cfg, self.ema, self._bank, *self._loud, info)
        self.run.log({"step": self.step, "checkpoint": True, **val})
        if val:
            log.info("step %d: val L1 %.4f, LMD %.4f, lip-gap correlation %.3f", self.step, val["val_l1"],
                     val["val_lmd"], val["val_gap_corr"])

    def train(self, stop_after_seconds: float | None = None) -> dict:
        t0, losses, last = time.time(), [], {}
        started = t0
        try:
            with StepBoundary() as boundary, \
                    progress_bar(self.cfg.steps - self.step, "speech", "step", self.progress) as bar:
                while self.step < self.cfg.steps:
                    losses.append(self.train_step())
                    bar.update(1)
                    if self.step % 50 == 0:
                        rate = self.cfg.batch_size * 50 / max(time.time() - t0, 1e-9)
                        last = {"loss": float(np.mean(losses)), "windows_per_s": rate}
                        self.run.log({"step": self.step, **last})
                        losses, t0 = [], time.time()
                    if self.step % self.cfg.checkpoint_every == 0:
                        self.save()
                    if boundary.pending is not None:
                        self.save()
                        boundary.raise_pending(boundary.pending)
                    if stop_after_seconds is not None and time.time() - started >= stop_after_seconds:
                        break
            if self.step % self.cfg.checkpoint_every != 0 or self.step == 0:
                self.save()
        finally:
            self.run.close()
        return last | self.validate()

    def close(self) -> None:
        self.run.close()

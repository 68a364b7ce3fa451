"""What defines one evaluation run (EvalSettings) and the protocol's fixed choices (paper §4, DESIGN.md §6)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from talkinghead.config import Config, FinetuneConfig, set_value, validate
from talkinghead.errors import TalkingHeadError
from talkinghead.metrics import REGISTRY, get_metrics

ALL_METRICS = tuple(REGISTRY)  # ssim, psnr, lpips, csim, fid, akd
CROSS_METRICS = ("csim", "akd")  # the metrics that make sense without a ground-truth frame
CROSS_EXAMPLES = 24  # cross_examples.png: rows for the first pair of each source video, at most this many
MODES = ("ff", "ft")  # few-shot modes of the model (paper §3.3)
BASELINES = ("copy", "warp")  # always run
TEETH_BANK = "teeth_bank"  # the third baseline, run when EvalSettings.teeth_bank names a bank file
ALL_BASELINES = (*BASELINES, TEETH_BANK)
SHOT_PART = 0.5  # shots come from the first half of a video's frames ...
TARGET_PART = 0.25  # ... targets from its last quarter (a gap in between: targets are not near-copies of shots)
FID_MIN_FRAMES = 2  # FID needs at least 2 frames per set ...
FID_RELIABLE_FRAMES = 200  # ... and is marked unreliable below this many (rank-deficient covariances, N ≪ 2048)
QUICK_FT_STEPS = 10  # --quick: at most this many fine-tuning steps


@dataclass
class EvalSettings:
    """Everything that defines one evaluation run (saved in config.json and each JSONL line)."""

    shots: tuple[int, ...] = (1, 8, 32)
    modes: tuple[str, ...] = MODES
    metrics: tuple[str, ...] = ALL_METRICS
    split: str = ""  # a split file or bundled name; "" = every video under --data is a validation video
    quick: bool = False
    targets: int = 32  # hold-out target frames per video
    max_videos: int = 0  # 0 = every validation video
    ft_steps: int | None = None  # None = the model's FinetuneConfig.steps (quick: at most QUICK_FT_STEPS)
    ft_set: tuple[str, ...] = ()  # "KEY=VALUE" overrides of the model's FinetuneConfig (config.set_value)
    frames_per_video: int = 0  # preprocessing: at most this many frames per video (0 = all sampled)
    every: int = 3  # preprocessing: every n-th frame
    cross: bool = True
    seed: int = 0
    device: str = "cpu"
    teeth_bank: str = ""  # a TeethBank .npz (data.teeth_bank): adds the teeth-bank baseline

    @property
    def baselines(self) -> tuple[str, ...]:
        """The baselines this run scores."""
        return (*BASELINES, TEETH_BANK) if self.teeth_bank else BASELINES

    @classmethod
    def preset(cls, quick: bool, **overrides) -> "EvalSettings":
        """--quick: CI-sized (T ∈ {1, 8}, 5 targets, 2 videos, ≤ QUICK_FT_STEPS FT steps, 40 frames per video);
        full: T ∈ {1, 8, 32}, 32 targets, every video, the model's FT steps, every 3rd frame. Overrides that are
        None keep the preset's value."""
        base = (cls(shots=(1, 8), quick=True, targets=5, max_videos=2, frames_per_video=40)
                if quick else cls())
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def checked(self) -> "EvalSettings":
        """A copy with sorted unique shots and modes; TalkingHeadError (one line) for values no run can use."""
        get_metrics(list(self.metrics))  # unknown names -> one-line error listing the valid ones
        modes = tuple(dict.fromkeys(m for m in self.modes if m))
        check_modes(modes)
        shots = tuple(sorted({int(t) for t in self.shots}))
        if not shots or shots[0] < 1:
            raise TalkingHeadError(f"shots must be positive whole numbers, got {self.shots}")
        for name, lo in (("targets", 1), ("every", 1), ("max_videos", 0), ("frames_per_video", 0), ("seed", 0)):
            if getattr(self, name) < lo:
                raise TalkingHeadError(f"{name} must be at least {lo}, got {getattr(self, name)}")
        if self.ft_steps is not None and self.ft_steps < 1:
            raise TalkingHeadError(f"ft_steps must be at least 1, got {self.ft_steps}")
        finetune_config(FinetuneConfig(), self.ft_set)  # unknown keys, bad values: before anything is loaded
        return replace(self, shots=shots, modes=modes, metrics=tuple(self.metrics), ft_set=tuple(self.ft_set))


def finetune_config(ft: FinetuneConfig, overrides) -> FinetuneConfig:
    """A copy of `ft` with the "KEY=VALUE" overrides applied (evaluate --ft-set); TalkingHeadError (one line)
    for an unknown key or a value the config refuses."""
    cfg = Config(finetune=replace(ft))
    for item in overrides:
        set_value(cfg, item, flag="--ft-set", section="finetune")
    problems = [p for p in validate(cfg) if p.startswith("finetune.")]
    if problems:
        raise TalkingHeadError("--ft-set: " + "; ".join(problems))
    return cfg.finetune


def check_modes(modes) -> tuple[str, ...]:
    """The modes, or TalkingHeadError naming the unknown ones."""
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise TalkingHeadError(f"unknown mode(s) {', '.join(bad)}; valid: {', '.join(MODES)}")
    return tuple(modes)

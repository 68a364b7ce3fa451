"""`talkinghead train`: meta-learning (paper §3.2) into a run folder; the Trainer is talkinghead.train.meta.

A new run takes the preset plus the options given. `--resume` continues the run folder's checkpoint: the
model is the checkpoint's (changing `model.*` is an error), the training values (train, loss, finetune) are
the saved ones except those given on this command line, each of which is reported.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from talkinghead.commands.options import add_progress, float_range, int_range
from talkinghead.config import PRESETS, SPEECH_PRESETS, Config, SpeechConfig, preset, set_value, validate
from talkinghead.console import log
from talkinghead.errors import ExitStatus, TalkingHeadError

DEFAULT_PRESET = "warp"  # the bundled model's


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Meta-learn the embedder E, generator G and discriminator D on a preprocessed set "
                     "of talking-head videos (made by `talkinghead preprocess`). Each step takes K shots "
                     "and a target frame from one video. Everything goes into the run folder: "
                     "config.json, log.jsonl, samples/*.png, checkpoints/last.pt and model.safetensors "
                     "(the file `finetune`/`animate` load). Ctrl-C or SIGTERM finishes the step, writes a "
                     "checkpoint and stops; --resume continues exactly. Multi-GPU: torchrun "
                     "--nproc_per_node=N -m talkinghead train ...")
    p.add_argument("--preset", choices=sorted(PRESETS) + sorted(SPEECH_PRESETS),
                   help=f"tiny (tests, 64²), small (128², CPU hours), warp (the bundled model's: the warp-guided G at "
                   f"128²), paper (256², the paper's widths); speech: the speech → mouth model, on a set made by "
                   f"`preprocess --speech` "
                   f"[default: {DEFAULT_PRESET}; on --resume: the run's]")
    p.add_argument("--data", help="preprocessed training set (folder with manifest.json)")
    p.add_argument("--run", help="run folder (created; holds checkpoints and logs); not needed with --dry-run")
    p.add_argument("--steps", type=int_range(1), help="total number of steps to reach (default: the preset's; "
                   "on --resume: the run's)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its last checkpoint")
    p.add_argument("--init", metavar="MODEL", help="start a new run from a model file's E, G and D trunk (e.g. "
                   "talkinghead/weights/model_warp.safetensors with --preset warp) instead of fresh weights")
    p.add_argument("--batch-size", type=int_range(1, 4096), help="episodes per step and process")
    p.add_argument("--k-shots", dest="shots", type=int_range(1, 64), metavar="K",
                   help="K, frames per episode used by the embedder (T, the photos of an avatar, is --shots "
                   "of finetune and animate)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda [default: auto]")
    p.add_argument("--workers", type=int_range(0, 64), help="data loader worker processes")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config value, e.g. --set loss.fm_weight=5 (repeatable)")
    p.add_argument("--minutes", type=float_range(0, lo_open=True),
                   help="stop (after a checkpoint) when this much time has passed")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    add_progress(p)


def _flat(cfg: Config) -> dict[str, object]:
    return {f"{s}.{k}": v for s, sub in asdict(cfg).items() if isinstance(sub, dict) for k, v in sub.items()}


def apply_overrides(cfg: Config, args: argparse.Namespace) -> list[str]:
    """Applies the options given (--steps, --batch-size, --k-shots, --amp, --workers, --set) to cfg in place;
    returns the changes as "section.key: old -> new". TalkingHeadError for an unknown key or a bad value."""
    before = _flat(cfg)
    t = cfg.train
    for name, value in (("steps", args.steps), ("batch_size", args.batch_size), ("shots", args.shots),
                        ("num_workers", args.workers)):
        if value is not None:
            setattr(t, name, value)
    if args.amp:
        t.amp = True
    for item in args.set:
        set_value(cfg, item)
    problems = validate(cfg)
    if problems:
        raise TalkingHeadError("invalid config: " + "; ".join(problems))
    after = _flat(cfg)
    return [f"{k}: {before[k]} -> {after[k]}" for k in after if after[k] != before[k]]


def _resumed_config(args: argparse.Namespace, run: Path):
    """(cfg, state): the checkpoint's config with this command line's training values, and the state."""
    from talkinghead.persons.checkpoint import load_training_state
    from talkinghead.train.meta import CHECKPOINT
    from talkinghead.train.resume import check_resume_config

    ckpt = run / CHECKPOINT
    if not ckpt.is_file():
        raise TalkingHeadError(f"--resume: no checkpoint in {run} (looked for {ckpt})")
    state = load_training_state(ckpt)
    cfg = Config.from_dict(state["config"])
    if args.preset and args.preset != cfg.name:
        raise TalkingHeadError(f"--resume: {run} was started with preset {cfg.name}, not {args.preset}")
    changes = apply_overrides(cfg, args)
    check_resume_config(Config.from_dict(state["config"]), cfg)  # the Trainer's own check, before any work
    for c in changes:
        log.info("resume: %s (from the command line)", c)
    return cfg, state


def _data_root(args: argparse.Namespace, run: Path | None) -> str | None:
    data = args.data
    if args.resume and not data and run is not None:
        saved = run / "data_root.txt"
        data = saved.read_text().strip() if saved.is_file() else None
    if data is None:
        raise TalkingHeadError("--data DIR is required (a folder made by `talkinghead preprocess`)")
    if not (Path(data) / "manifest.json").is_file():
        raise TalkingHeadError(f"{data} is not a preprocessed set (no manifest.json); "
                               "run `talkinghead preprocess` first")
    return data


def _speech_config(args: argparse.Namespace, run: Path | None) -> tuple[SpeechConfig, dict | None]:
    """The speech preset (or a resumed run's config) with --steps, --batch-size and --set speech.KEY=VALUE."""
    state = None
    if args.resume:
        import torch

        from talkinghead.train.speech import CHECKPOINT

        if run is None or not (run / CHECKPOINT).is_file():
            raise TalkingHeadError(f"--resume: no speech checkpoint in {run}")
        state = torch.load(run / CHECKPOINT, weights_only=False)
        cfg = SpeechConfig.from_dict(state["config"])
    else:
        cfg = SPEECH_PRESETS[args.preset]()
    if args.steps is not None:
        cfg.steps = args.steps
    if args.batch_size is not None:
        cfg.batch_size = args.batch_size
    model = (cfg.channels, cfg.dilations, cfg.components, cfg.phones)
    for item in args.set:
        set_value(cfg, item)
    if state is not None and (cfg.channels, cfg.dilations, cfg.components, cfg.phones) != model:
        raise TalkingHeadError("a resumed run keeps its model: speech.channels, dilations, components and phones "
                               "are the checkpoint's")
    return cfg, state


def _is_speech_run(run: Path | None) -> bool:
    import json

    try:
        return json.loads((run / "config.json").read_text()).get("preset") in SPEECH_PRESETS
    except (TypeError, OSError, ValueError, AttributeError):
        return False


def _run_speech(args: argparse.Namespace, run_dir: Path | None) -> int:
    cfg, state = _speech_config(args, run_dir)
    if args.dry_run:
        import json

        print(json.dumps(cfg.to_dict(), indent=2))
        return ExitStatus.SUCCESS
    if run_dir is None:
        raise TalkingHeadError("--run DIR is required (the run folder for checkpoints and logs)")
    data = args.data
    if args.resume and not data:  # the run's own record of its data
        import json

        data = json.loads((run_dir / "config.json").read_text()).get("data")
    if data is None:
        raise TalkingHeadError("--data DIR is required (a folder made by `talkinghead preprocess --speech`)")
    from talkinghead.train.speech import MODEL_FILE, SpeechTrainer

    trainer = SpeechTrainer(cfg, run_dir, data, device=args.device, resume=args.resume,
                            progress=not args.no_progress, state=state)
    log.info("run %s: preset %s, %d training clips (%d val), step %d -> %d", run_dir, cfg.name,
             len(trainer.train_clips), len(trainer.val_clips), trainer.step, cfg.steps)
    last = trainer.train(stop_after_seconds=args.minutes * 60 if args.minutes else None)
    print(f"step {trainer.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()), file=sys.stderr)
    print(f"model: {run_dir / MODEL_FILE}")
    return ExitStatus.SUCCESS


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run) if args.run else None
    if args.preset in SPEECH_PRESETS or (args.resume and args.preset is None and _is_speech_run(run_dir)):
        if args.init or args.shots or args.amp or args.workers is not None:
            raise TalkingHeadError("--init, --k-shots, --amp and --workers are for meta-learning, not the speech preset")
        return _run_speech(args, run_dir)
    if args.resume and args.init:
        raise TalkingHeadError("--init starts a new run; --resume continues one with its own weights")
    if args.resume:
        if run_dir is None:
            raise TalkingHeadError("--resume needs --run DIR (the run folder to continue)")
        cfg, state = _resumed_config(args, run_dir)
    else:
        cfg, state = preset(args.preset or DEFAULT_PRESET), None
        apply_overrides(cfg, args)
    if args.dry_run:
        print(cfg.to_json())
        return ExitStatus.SUCCESS
    if run_dir is None:
        raise TalkingHeadError("--run DIR is required (the run folder for checkpoints and logs)")
    data = _data_root(args, run_dir)
    if not args.resume:  # the model records the framing of its data: photos are cropped the same way
        from talkinghead.data.shards import dataset_framing

        cfg.model.crop_margin, cfg.model.crop_shift_y = dataset_framing(data)

    from talkinghead.train.meta import MODEL_FILE, Trainer

    trainer = Trainer(cfg, run_dir, data_root=data, device=args.device, resume=args.resume,
                      progress=not args.no_progress, state=state, init=args.init)
    try:
        if trainer.info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "data_root.txt").write_text(str(Path(data).resolve()))
            log.info("run %s: preset %s, %d videos, step %d -> %d, device %s, %d process(es)", run_dir,
                     trainer.cfg.name, trainer.cfg.model.num_videos, trainer.step, trainer.cfg.train.steps,
                     trainer.device, trainer.info.world_size)
        last = trainer.train(stop_after_seconds=args.minutes * 60 if args.minutes else None)
        if trainer.info.is_main:
            print(f"step {trainer.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()), file=sys.stderr)
            print(f"model: {run_dir / MODEL_FILE}")
    finally:
        trainer.close()
    return ExitStatus.SUCCESS

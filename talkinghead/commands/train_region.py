"""`talkinghead train-region`: a region generator (the mouth interior, DESIGN.md §2) trained on crops of a
preprocessed set (talkinghead.train.regions), and attached to a model file so that its avatars use it."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from talkinghead.commands.options import float_range, int_range
from talkinghead.config import REGION_PRESETS
from talkinghead.console import log
from talkinghead.errors import ExitStatus, TalkingHeadError

REGION_FILE = "region.safetensors"
MODEL_FILE = "model.safetensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train a region generator (the mouth interior, or the eyelids with --preset eyes) on crops "
                     "of a preprocessed set (made by "
                     "`talkinghead preprocess`, best at --resolution 256, with train and val splits), and attach "
                     "it to a model file. The run folder gets config.json, log.jsonl, val.jsonl (the hole's L1 on "
                     "the val people beside fills that need no learning), samples/*.png, checkpoints/last.pt and "
                     f"{REGION_FILE}; with --attach MODEL also {MODEL_FILE}: MODEL with the region generator "
                     "in it, the file `finetune`, `animate` and `evaluate` take with --model.")
    p.add_argument("--data", help="preprocessed set (folder with manifest.json)")
    p.add_argument("--run", required=True, help="run folder (created; --resume continues it)")
    p.add_argument("--preset", default="mouth", choices=sorted(REGION_PRESETS),
                   help="mouth (64² mouth crops), mouth96, eyes (64² crops of each eye: the eyelids), "
                   "mouth_tiny and eyes_tiny (tests) [default: mouth]")
    p.add_argument("--minutes", type=float_range(0), default=40.0,
                   help="training time; 0: none (with --resume and --attach: attach the run's generator)")
    p.add_argument("--steps", type=int_range(0), default=0, help="stop after this many steps (0: by --minutes)")
    p.add_argument("--content-weight", type=float_range(0), help="weight of L_CNT on the crop (0: L1 only)")
    p.add_argument("--adv-weight", type=float_range(0), help="weight of a patch discriminator's hinge loss on "
                   "the crop beside its driving lips (0: none); it pulls the hole towards teeth, not a dark mean")
    p.add_argument("--eval-minutes", type=float_range(0, lo_open=True), default=4.0,
                   help="validate, save samples and a checkpoint this often")
    p.add_argument("--resume", action="store_true", help="continue the run's checkpoint")
    p.add_argument("--attach", metavar="MODEL", help="write RUN/model.safetensors: MODEL with this generator "
                   "(e.g. talkinghead/weights/model_warp.safetensors)")
    p.add_argument("--cache", help="folder for the cut crops (default: RUN/crops)")


def _command(args: argparse.Namespace) -> str:
    """The training command line of this run, as a user would type it again."""
    parts = ["talkinghead train-region", f"--preset {args.preset}", f"--data {shlex.quote(str(args.data))}",
             f"--run {shlex.quote(str(args.run))}", f"--minutes {args.minutes:g}"]
    parts += [f"--content-weight {args.content_weight:g}"] if args.content_weight is not None else []
    parts += [f"--adv-weight {args.adv_weight:g}"] if args.adv_weight is not None else []
    parts += [f"--steps {args.steps}"] if args.steps else []
    return " ".join(parts)


def _trained_by(run_dir: Path) -> str:
    """How the run was trained: its config.json's command and minutes (the run folder's name without one)."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return run_dir.name
    return config.get("command") or f"{run_dir.name} ({config.get('minutes', '?')} min)"


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    if args.minutes > 0 or args.steps:
        if not args.data or not (Path(args.data) / "manifest.json").is_file():
            raise TalkingHeadError(f"--data {args.data or '?'} is not a preprocessed set (no manifest.json); "
                                   "run `talkinghead preprocess` first")
        from talkinghead.train.regions import train_region

        cfg = REGION_PRESETS[args.preset]()
        if args.content_weight is not None:
            cfg.content_weight = args.content_weight
        if args.adv_weight is not None:
            cfg.adv_weight = args.adv_weight
        record = train_region(cfg, args.data, run_dir, args.minutes or 1e9, args.eval_minutes,
                              args.cache or run_dir / "crops", resume=args.resume, max_steps=args.steps,
                              command=_command(args))
        log.info("%s: step %d, val hole L1 %.4f (fills without learning: %s)", cfg.region, record["step"],
                 record["val_l1"], ", ".join(f"{k} {record[k]:.4f}" for k in ("warp", "ref_copy", "mean_fill")
                                             if k in record))
    if args.attach:
        from talkinghead.persons.regions import attach_regions, load_region_model

        region = run_dir / REGION_FILE
        if not region.is_file():
            raise TalkingHeadError(f"no {REGION_FILE} in {run_dir}: train first (--minutes)")
        cfg, G, meta = load_region_model(region)
        note = f"{cfg.region}: {_trained_by(run_dir)}, step {meta.get('step', '?')}"
        attach_regions(args.attach, run_dir / MODEL_FILE, {cfg.region: G}, note=note)
        print(run_dir / MODEL_FILE)
    return ExitStatus.SUCCESS

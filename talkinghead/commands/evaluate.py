"""`talkinghead evaluate`: the paper's evaluation protocol (talkinghead.evaluation) from the command line.

Defaults come from EvalSettings (full run) and EvalSettings.preset(quick=True) (--quick); every number is
range-checked by argparse, so a bad value is a one-line usage error before any work starts."""

from __future__ import annotations

import argparse
from pathlib import Path

from talkinghead.commands.options import (add_device, add_model, add_progress, default_of, int_list, int_range,
                                          name_list)
from talkinghead.evaluation import ALL_METRICS, MODES, EvalSettings
from talkinghead.evaluation.settings import QUICK_FT_STEPS, check_modes
from talkinghead.errors import ExitStatus, TalkingHeadError

_QUICK = EvalSettings.preset(quick=True)


def _check_metrics(names) -> None:
    from talkinghead.metrics import get_metrics

    get_metrics(list(names))


def _csv(values) -> str:
    return ",".join(map(str, values))


def _quick_or(name: str, full_text: str | None = None) -> str:
    """'[default: FULL; quick QUICK]' for a field the --quick preset changes."""
    full = default_of(EvalSettings, name)
    quick = getattr(_QUICK, name)
    show = (lambda v: _csv(v) if isinstance(v, tuple) else str(v))
    return f"[default: {full_text or show(full)}; quick {show(quick)}]"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("The paper's evaluation (§4) on held-out frames of the split's validation videos: "
                     "self-reenactment with T shots (FF and FT) against the copy-source and landmark-warp "
                     "baselines (SSIM, PSNR, LPIPS-like, CSIM, FID, AKD), plus cross-identity reenactment. "
                     "Writes results.jsonl (appended), report.md and PNG plots into --out.")
    add_model(p)
    p.add_argument("--data", required=True, help="folder of raw videos (e.g. ../shared/data/videos)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder (created)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true",
                   help=f"CI-sized: T={_csv(_QUICK.shots)}, {_QUICK.targets} targets and {_QUICK.max_videos} videos, "
                        f"<={QUICK_FT_STEPS} FT steps, {_QUICK.frames_per_video} frames per video (~1-3 min)")
    g.add_argument("--full", action="store_true", help="everything (default): every validation video")
    p.add_argument("--shots", type=int_list(1), metavar="T,...", help=f"T values, e.g. 1,8,32 {_quick_or('shots')}")
    p.add_argument("--modes", type=name_list(check_modes), default=default_of(EvalSettings, "modes"),
                   metavar="MODE,...", help=f"{', '.join(MODES)} [default: {_csv(default_of(EvalSettings, 'modes'))}]")
    p.add_argument("--metrics", type=name_list(_check_metrics), default=default_of(EvalSettings, "metrics"),
                   metavar="NAME,...", help=f"[default: {_csv(ALL_METRICS)}]")
    p.add_argument("--split", default=default_of(EvalSettings, "split"),
                   help="split: a JSON or CSV file (path,identity,split columns) or a bundled name (shared, "
                   "talking) [default: none: every video under --data is a validation video]")
    p.add_argument("--targets", type=int_range(1), help=f"hold-out target frames per video {_quick_or('targets')}")
    p.add_argument("--max-videos", type=int_range(0),
                   help=f"at most this many validation videos, 0 = all {_quick_or('max_videos', 'all')}")
    p.add_argument("--ft-steps", type=int_range(1),
                   help=f"fine-tuning steps [default: the model's finetune.steps; quick at most {QUICK_FT_STEPS}]")
    p.add_argument("--ft-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one of the model's fine-tuning values, e.g. --ft-set lr_g=2e-4 --ft-set "
                   "train_parts=all (repeatable) [default: the model's finetune config]")
    p.add_argument("--frames-per-video", type=int_range(0),
                   help=f"preprocessing: at most this many frames per video, 0 = all "
                        f"{_quick_or('frames_per_video', 'all')}")
    p.add_argument("--every", type=int_range(1), default=default_of(EvalSettings, "every"),
                   help="preprocessing: every n-th frame [default: %(default)s]")
    p.add_argument("--cache", help="folder for the preprocessed validation crops [default: REPORT_DIR/cache]")
    p.add_argument("--no-cross", action="store_true", help="skip cross-identity reenactment")
    p.add_argument("--teeth-bank", metavar="FILE",
                   help="also score the teeth-bank baseline (the warp with other people's inner mouths, nearest in "
                        "inner-lip shape) from this bank (.npz) [default: copy and warp only]")
    p.add_argument("--build-teeth-bank", metavar="TRAIN_DATA",
                   help="first build --teeth-bank FILE from the train split of this preprocessed folder "
                        "(`talkinghead preprocess --out TRAIN_DATA`), replacing it")
    p.add_argument("--audio", action="store_true",
                   help="instead: how well speech drives the mouth on the clips with audio (the val clips of "
                   "--split; --data may be a folder made by `preprocess --speech`): LMD and the lip-gap "
                   "correlation of the speech model against the loudness and still-mouth baselines -> speech.md")
    p.add_argument("--speech-model", metavar="FILE", help="with --audio: the speech model [default: the bundled one]")
    p.add_argument("--videos", type=int_range(0, 100), default=0, metavar="N",
                   help="with --audio: also render N clips as real | animated from its audio | difference")
    p.add_argument("--seed", type=int_range(0), default=default_of(EvalSettings, "seed"),
                   help="fine-tuning seed [default: %(default)s]")
    p.add_argument("--threads", type=int_range(1), help="torch CPU threads [default: torch's]")
    add_device(p, default_of(EvalSettings, "device"))
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from talkinghead.evaluation import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.audio:
        from talkinghead.evaluation.speech import evaluate_speech

        summary = evaluate_speech(args.data, args.out, split=args.split, speech_model=args.speech_model,
                                  model=args.model, videos=args.videos, device=args.device, cache=args.cache,
                                  progress=not args.no_progress)
        s = summary["speech"]
        print(f"evaluate --audio: {s['clips']} clips: LMD {s['lmd']:.4f} (loudness {summary['loudness']['lmd']:.4f}, "
              f"still {summary['still_first']['lmd']:.4f}), lip-gap r {s['gap_corr']:.3f} -> "
              f"{Path(args.out) / 'speech.md'}")
        return ExitStatus.SUCCESS
    if args.speech_model or args.videos:
        raise TalkingHeadError("--speech-model and --videos are options of --audio")
    if args.build_teeth_bank:
        from talkinghead.data.teeth_bank import build_teeth_bank

        if not args.teeth_bank:
            raise TalkingHeadError("--build-teeth-bank needs --teeth-bank FILE to write the bank to")
        bank = build_teeth_bank(args.build_teeth_bank)
        print(f"evaluate: teeth bank of {len(bank)} mouths from {len(set(bank.identity))} people -> "
              f"{bank.save(args.teeth_bank)}")
    st = EvalSettings.preset(args.quick, shots=args.shots, modes=args.modes, metrics=args.metrics, split=args.split,
                             targets=args.targets, max_videos=args.max_videos, ft_steps=args.ft_steps,
                             ft_set=tuple(args.ft_set),
                             frames_per_video=args.frames_per_video, every=args.every, cross=not args.no_cross,
                             seed=args.seed, device=args.device, teeth_bank=args.teeth_bank)
    res = evaluate(args.model, args.data, args.out, st, cache=args.cache, progress=not args.no_progress)
    report = Path(args.out) / "report.md"
    print(f"evaluate: {len(res['videos'])} video(s) in {res['seconds']['total']:.0f} s -> {report}")
    return ExitStatus.SUCCESS

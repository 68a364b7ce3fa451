"""`talkinghead finetune PHOTOS_OR_VIDEO... --out x.avatar`: a few-shot avatar (paper §3.3), FF or FT;
the work is talkinghead.train.finetune.make_avatar."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from talkinghead.commands.options import (add_device, add_face_index, add_manual_landmarks, add_model,
                                          add_progress, add_shots, int_range, manual_detector)
from talkinghead.errors import ExitStatus, NoFaceError, TalkingHeadError

MAX_SHOTS = 64


def add_arguments(p: argparse.ArgumentParser) -> None:
    from talkinghead.persons.avatar import AVATAR_SUFFIX

    p.description = ("Make an avatar of one person from 1..32 photos or a video (paper §3.3): feed-forward "
                     "(ff: the embedding only, instant) or fine-tuned (ft: G and D fine-tuned on the shots; "
                     "looks more like the person). The .avatar file is what `talkinghead animate` takes.")
    p.add_argument("sources", nargs="+", metavar="IMAGES_OR_VIDEO", help="photos of one person, or one video")
    add_model(p)
    p.add_argument("--out", "-o", required=True, help=f"avatar file to write (*{AVATAR_SUFFIX})")
    p.add_argument("--mode", choices=("ff", "ft"), default="ft", help="ff or ft [default: ft]")
    add_shots(p, "frames used (evenly spread)", hi=MAX_SHOTS)
    p.add_argument("--steps", type=int_range(1, 100_000),
                   help="fine-tuning steps (default: the model config's finetune.steps)")
    add_face_index(p, "in the photos or video")
    add_manual_landmarks(p)
    p.add_argument("--run", metavar="DIR", help="also write a run folder: config.json, log.jsonl, samples.png")
    add_device(p)
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    from talkinghead.persons.avatar import AVATAR_SUFFIX
    from talkinghead.persons.checkpoint import resolve_model
    from talkinghead.landmarks.cascade import NoFaceFoundError
    from talkinghead.train.finetune import make_avatar

    out = Path(args.out)
    if out.suffix != AVATAR_SUFFIX:
        raise TalkingHeadError(f"--out should end in {AVATAR_SUFFIX} (got {out.name})")
    for s in args.sources:
        if not Path(s).exists():
            raise TalkingHeadError(f"file not found: {s}")
    from talkinghead.media.files import refuse_overwriting_inputs

    run_files = [Path(args.run) / n for n in ("config.json", "log.jsonl", "samples.png")] if args.run else []
    refuse_overwriting_inputs([out, *run_files], [*args.sources, args.landmarks, args.model])
    manual = manual_detector(args)
    model = resolve_model(args.model)
    t0 = time.time()
    try:
        av = make_avatar(args.sources, model, mode=args.mode, shots=args.shots, steps=args.steps,
                         face_index=args.face_index, device=args.device, progress=not args.no_progress,
                         run_dir=args.run, detector=manual)
    except NoFaceFoundError as e:  # the command line's options for a face no detector finds
        raise NoFaceError(e.command_line_message()) from None
    av.save(out)
    msg = f"avatar ({args.mode.upper()}, T={av.shots}) written to {out} in {time.time() - t0:.1f} s"
    st = av.info.get("finetune")
    if st:
        msg += (f"; content loss on the shots {st['ff']['content']:.4g} (FF) -> {st['ft']['content']:.4g} (FT) "
                f"after {st['steps']} steps")
    print(msg)
    return ExitStatus.SUCCESS

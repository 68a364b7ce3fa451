"""`talkinghead animate SOURCE... DRIVING -o out.mp4`: a thin shell over talkinghead.pipeline (DESIGN.md §4).

SOURCE: an .avatar file (from `talkinghead finetune`), or photo(s) of one person (a feed-forward avatar is
made on the fly with the model, paper §3.3 FF).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from talkinghead.errors import TalkingHeadError

DEFAULT_MODEL_HELP = "talkinghead/weights/model_small.safetensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Make a portrait (or an avatar) talk like the person in a driving video: the driver's "
                     "head and face motion is transferred relative to its most neutral frame onto the source "
                     "face, rendered by the generator and pasted back into the source image. Writes an H.264 "
                     "mp4 at the driver's frame rate with the driver's audio.")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="one .avatar file (from `talkinghead finetune`), or one or more photos of one person")
    p.add_argument("driving", metavar="DRIVING", help="the driving video")
    p.add_argument("-o", "--out", required=True, help="output video (.mp4)")
    p.add_argument("--model", help=f"model file (default: the bundled {DEFAULT_MODEL_HELP})")
    p.add_argument("--absolute", action="store_true",
                   help="use the driver's landmarks as they are (the paper's mode; leaks the driver's face shape)")
    p.add_argument("--crop-only", action="store_true", help="write the animated face crop, not the whole image")
    p.add_argument("--side-by-side", action="store_true", help="driver | output side by side")
    p.add_argument("--frames", metavar="DIR", help="also write every output frame as a PNG into DIR")
    p.add_argument("--face-index", type=int,
                   help="use the k-th largest face in the source photos and the driver (default: largest)")
    p.add_argument("--shots", type=int, default=8, help="photos used for an on-the-fly avatar [default: 8]")
    p.add_argument("--batch-size", type=int, default=8, help="frames rendered per batch [default: 8]")
    p.add_argument("--fps", type=float, help="output frame rate (default: the driver's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... [default: cpu]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from talkinghead import video
    from talkinghead.avatar import (AVATAR_SUFFIX, BUNDLED_MODEL, Avatar, LoadedModel, make_ff_avatar,
                                    resolve_model)
    from talkinghead.pipeline import animate_video

    sources, driving = list(args.sources), args.driving
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise TalkingHeadError(f"the output should be an .mp4 file (got {out.name})")
    if not video.is_video_path(driving):
        raise TalkingHeadError(f"the last argument should be the driving video, got {driving}")
    if args.batch_size < 1:
        raise TalkingHeadError("--batch-size must be at least 1")
    for s in (*sources, driving):
        if not Path(s).exists():
            raise TalkingHeadError(f"file not found: {s}")
    # check the driver before any expensive work (probe raises a one-line VideoError)
    video.probe_video(driving)

    if len(sources) == 1 and sources[0].endswith(AVATAR_SUFFIX):
        avatar = Avatar.load(sources[0])
        model = None
        if args.model:
            model = LoadedModel.load(resolve_model(args.model), args.device, with_discriminator=False)
        elif avatar.mode == "ff" and not Path(avatar.model.get("path", "")).is_file() and BUNDLED_MODEL.is_file():
            model = LoadedModel.load(BUNDLED_MODEL, args.device, with_discriminator=False)
    else:
        if any(s.endswith(AVATAR_SUFFIX) for s in sources):
            raise TalkingHeadError("give one .avatar file or photos, not both")
        model = LoadedModel.load(resolve_model(args.model), args.device, with_discriminator=False)
        avatar = make_ff_avatar(sources, model, shots=args.shots, face_index=args.face_index, device=args.device)
    progress = not args.no_progress
    res = animate_video(avatar, driving, out, model=model, device=args.device, absolute=args.absolute,
                        crop_only=args.crop_only, sbs=args.side_by_side, frames_dir=args.frames,
                        face_index=args.face_index, batch_size=args.batch_size, fps=args.fps, progress=progress)
    print(f"wrote {res.out}: {res.frames} frames, {res.size[0]}x{res.size[1]}, {res.fps:.3g} fps"
          + (f", PNGs in {res.frames_dir}" if res.frames_dir else ""))
    print(f"{res.frames_per_second:.1f} frames/s ({res.seconds_total:.1f} s: landmarks "
          f"{res.seconds_landmarks:.1f} s, render + write {res.seconds_render:.1f} s)")
    return 0


"""`talkinghead animate SOURCE... DRIVING -o out.mp4`: a thin shell over talkinghead.inference.pipeline (DESIGN.md §4).

SOURCE: an .avatar file (from `talkinghead finetune`), or photo(s) of one person: a feed-forward avatar is
made on the fly with the model (paper §3.3 FF), or a fine-tuned one with `--finetune [STEPS]` (FT).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from talkinghead.commands.options import (add_device, add_face_index, add_manual_landmarks, add_model,
                                          add_mouth_fill, add_progress, add_shots, float_range, int_range,
                                          manual_detector, param_default)
from talkinghead.errors import ExitStatus, NoFaceError, TalkingHeadError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Make a portrait (or an avatar) talk like the person in a driving video: the driver's "
                     "head and face motion is transferred relative to its most neutral frame onto the source "
                     "face, rendered by the generator and pasted back into the source image. Writes an H.264 "
                     "mp4 at the driver's frame rate with the driver's audio. With --audio or --say, speech "
                     "drives the mouth (and the driving video, when given, the head and eyes).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="SOURCE... DRIVING: one .avatar file (from `talkinghead finetune`) or one or more photos of "
                   "one person, then the driving video (optional with --audio/--say)")
    p.add_argument("-o", "--out", required=True, help="output video (.mp4)")
    p.add_argument("--audio", metavar="SPEECH", help="speech drives the mouth (wav, mp3, m4a, flac, ogg or a video's "
                   "audio track) and is the output's audio; without a driving video the head moves and blinks as "
                   "in a real clip of the speech model's motion bank, with one the pose and eyes are the driver's")
    p.add_argument("--say", metavar="TEXT", help="like --audio with this sentence spoken by espeak-ng")
    p.add_argument("--voice", help="--say's espeak-ng voice (language), e.g. en, en-us, fr, de [default: en]")
    p.add_argument("--speech-model", metavar="FILE",
                   help="speech model file (from `train --preset speech`) [default: the bundled one]")
    from talkinghead.speech.drive import MOUTH_SCALE

    p.add_argument("--mouth-scale", type=float_range(0, 5), default=MOUTH_SCALE, metavar="S",
                   help="with --audio/--say: how far the mouth moves, × the speech model's prediction "
                   f"[default: {MOUTH_SCALE:g}]")
    p.add_argument("--motion", type=int_range(0, 999), default=0, metavar="K",
                   help="with --audio/--say and no driving video: the motion bank's clip K moves the head [default: 0]")
    add_model(p)
    p.add_argument("--absolute", action="store_true",
                   help="use the driver's landmarks as they are (the paper's mode; leaks the driver's face shape)")
    p.add_argument("--crop-only", action="store_true", help="write the animated face crop, not the whole image")
    p.add_argument("--side-by-side", action="store_true", help="driver | output side by side")
    p.add_argument("--frames", metavar="DIR", help="also write every output frame as a PNG into DIR")
    add_mouth_fill(p)
    add_face_index(p, extra="; the driver's face is its largest, then the one tracked")
    add_manual_landmarks(p)
    add_shots(p, "photos used for an on-the-fly avatar")
    p.add_argument("--finetune", nargs="?", type=int_range(1, 100_000), const=0, metavar="STEPS",
                   help="fine-tune the model on the photos first (paper §3.3 FT: seconds on a CPU; the bundled model "
                   "gains with several photos, from one it adapts ψ' alone) [STEPS: the model's default]; without "
                   "it the avatar is feed-forward (instant)")
    from talkinghead.inference.pipeline import render_stream

    batch = param_default(render_stream, "batch_size")
    p.add_argument("--batch-size", type=int_range(1, 256), default=batch,
                   help=f"frames rendered per batch [default: {batch}]")
    p.add_argument("--fps", type=float_range(0, 240, lo_open=True),
                   help="output frame rate, at most the driver's (default: the driver's; 25 for speech alone)")
    add_device(p)
    add_progress(p)


def _avatar_and_model(args: argparse.Namespace):
    """(avatar, model or None): the .avatar file given, or an FF avatar of the photos made with the model."""
    from talkinghead import bundled
    from talkinghead.persons.avatar import AVATAR_SUFFIX, Avatar, make_ff_avatar
    from talkinghead.persons.checkpoint import LoadedModel, resolve_model

    sources = list(args.sources)
    finetune = args.finetune
    manual = manual_detector(args)
    if len(sources) == 1 and sources[0].endswith(AVATAR_SUFFIX):
        if manual is not None:
            raise TalkingHeadError("--landmarks/--points are for a source photo; this avatar already has its face")
        if finetune is not None:
            raise TalkingHeadError("--finetune makes an avatar from photos; this avatar is already made "
                                   "(fine-tune photos with `talkinghead finetune`)")
        avatar = Avatar.load(sources[0])
        model = None
        if args.model:
            model = LoadedModel.load(resolve_model(args.model), args.device, with_discriminator=False)
        elif avatar.mode == "ff" and not Path(avatar.model.get("path", "")).is_file() and bundled.MODEL.is_file():
            model = LoadedModel.load(bundled.MODEL, args.device, with_discriminator=False)
        return avatar, model
    if any(s.endswith(AVATAR_SUFFIX) for s in sources):
        raise TalkingHeadError("give one .avatar file or photos, not both")
    if finetune is not None:
        from talkinghead.train.finetune import make_avatar

        model = LoadedModel.load(resolve_model(args.model), args.device, with_discriminator=True)
        avatar = make_avatar(sources, model, mode="ft", shots=args.shots, steps=finetune or None,
                             face_index=args.face_index, device=args.device, progress=not args.no_progress,
                             detector=manual)
        stats = avatar.info["finetune"]
        print(f"fine-tuned {stats['steps']} steps in {stats['seconds']:.1f} s: content loss on the photos "
              f"{stats['ff']['content']:.3f} -> {stats['ft']['content']:.3f}")
        return avatar, model
    model = LoadedModel.load(resolve_model(args.model), args.device, with_discriminator=False)
    avatar = make_ff_avatar(sources, model, shots=args.shots, face_index=args.face_index, device=args.device,
                            detector=manual)
    return avatar, model


def _split_inputs(args: argparse.Namespace) -> None:
    """args.inputs -> args.sources and args.driving (None: speech alone drives the face)."""
    from talkinghead.media import video

    speech = args.audio is not None or args.say is not None
    inputs = list(args.inputs)
    if args.audio is not None and args.say is not None:
        raise TalkingHeadError("give --audio or --say, not both")
    if args.voice is not None and args.say is None:
        raise TalkingHeadError("--voice is the voice of --say")
    if speech and (len(inputs) == 1 or not video.is_video_path(inputs[-1])):
        args.sources, args.driving = inputs, None
        return
    if len(inputs) < 2:
        raise TalkingHeadError("give the source (photos or an .avatar) and then the driving video, or speech "
                               "with --audio/--say")
    args.sources, args.driving = inputs[:-1], inputs[-1]
    if not video.is_video_path(args.driving):
        raise TalkingHeadError(f"the last argument should be the driving video, got {args.driving}")


def _speech(args: argparse.Namespace, tmp_dir: Path):
    """(Speech, SpeechModel, the audio file) of --audio or --say, checked before any rendering work."""
    from talkinghead import bundled
    from talkinghead.persons.speech_model import load_speech_model
    from talkinghead.speech.drive import read_speech

    if args.say is not None:
        from talkinghead.speech.tts import synthesize

        path = synthesize(args.say, tmp_dir / "say.wav", voice=args.voice or "en")
    else:
        path = Path(args.audio)
    speech = read_speech(path)
    model = load_speech_model(args.speech_model or bundled.SPEECH_MODEL, args.device)
    return speech, model, path


def run(args: argparse.Namespace) -> int:
    import tempfile

    from talkinghead.media import video
    from talkinghead.inference.pipeline import animate_video

    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise TalkingHeadError(f"the output should be an .mp4 file (got {out.name})")
    _split_inputs(args)
    for s in (*args.sources, *([args.driving] if args.driving else []), *([args.audio] if args.audio else [])):
        if not Path(s).exists():
            raise TalkingHeadError(f"file not found: {s}")
    from talkinghead.media.files import refuse_overwriting_inputs

    refuse_overwriting_inputs([out], [*args.sources, args.driving, args.audio, args.landmarks, args.model,
                                      args.speech_model])
    if args.driving is not None:
        info = video.probe_video(args.driving)  # check the driver before any expensive work (one-line VideoError)
        if args.fps and args.fps > info.fps:
            raise TalkingHeadError(f"--fps {args.fps:g} is above the driver's {info.fps:g} frames/s: the output "
                                   "can only drop driver frames, not invent new ones")
    from talkinghead.landmarks.cascade import NoFaceFoundError

    with tempfile.TemporaryDirectory(prefix="talkinghead-say-") as tmp:
        speech = None
        if args.audio is not None or args.say is not None:
            speech, speech_model, audio_path = _speech(args, Path(tmp))
        try:
            avatar, model = _avatar_and_model(args)
        except NoFaceFoundError as e:  # the command line's options for a face no detector finds
            raise NoFaceError(e.command_line_message()) from None
        track, audio_from = None, None
        if speech is not None:
            from talkinghead.inference.pipeline import track_driver
            from talkinghead.speech.drive import DEFAULT_FPS, speech_track

            driver = None if args.driving is None else track_driver(args.driving, fps=args.fps,
                                                                    progress=not args.no_progress)
            track = speech_track(speech_model, speech, fps=args.fps or DEFAULT_FPS, driver=driver, seed=args.motion,
                                 mouth_scale=args.mouth_scale)
            audio_from = audio_path
        res = animate_video(avatar, args.driving, out, model=model, device=args.device, absolute=args.absolute,
                            crop_only=args.crop_only, sbs=args.side_by_side, frames_dir=args.frames,
                            batch_size=args.batch_size, fps=args.fps, regions=not args.no_mouth_fill,
                            progress=not args.no_progress, track=track, audio_from=audio_from)
    print(f"wrote {res.out}: {res.frames} frames, {res.size[0]}x{res.size[1]}, {res.fps:.3g} fps"
          + (f", PNGs in {res.frames_dir}" if res.frames_dir else ""))
    print(f"{res.frames_per_second:.1f} frames/s ({res.seconds_total:.1f} s: landmarks "
          f"{res.seconds_landmarks:.1f} s, render + write {res.seconds_render:.1f} s)")
    return ExitStatus.SUCCESS

"""`talkinghead demo`: a feed-forward avatar of the bundled Mona Lisa (paper §3.3 FF, one shot) made with the
bundled model, animated with the bundled driving clip (relative motion, DESIGN.md §2), writing DIR/monalisa.mp4
(the whole painting), DIR/monalisa_side_by_side.mp4 (driver | output) and DIR/monalisa_says.mp4 (she says a
sentence: espeak-ng and the bundled speech model, DESIGN.md §2). `--mode ft` fine-tunes first (paper
§3.3 FT); from a single photo the bundled model adapts ψ' alone, which changes its output little, so the demo
does not spend the time by default.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from talkinghead.commands.options import add_device, add_model, add_progress, int_range
from talkinghead.errors import ExitStatus

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Make the bundled Mona Lisa talk with the bundled driving clip (a feed-forward avatar "
                     "from one photo, paper §3.3): writes monalisa.mp4, monalisa_side_by_side.mp4 and "
                     "monalisa.avatar. --mode ft fine-tunes on the photo first.")
    p.add_argument("--out", default="demo", help="output folder [default: ./demo]")
    add_model(p)
    p.add_argument("--mode", choices=("ff", "ft"), default="ff",
                   help="ff (feed-forward, instant) or ft (fine-tune on the photo first) [default: ff]")
    p.add_argument("--steps", type=int_range(1, 100_000),
                   help="with --mode ft: fine-tuning steps [default: the model's finetune.steps]")
    add_device(p)
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    from talkinghead.bundled import DRIVING, PORTRAIT
    from talkinghead.persons.checkpoint import LoadedModel, resolve_model
    from talkinghead.errors import TalkingHeadError
    from talkinghead.inference.pipeline import animate_video
    from talkinghead.train.finetune import make_avatar

    if args.steps is not None and args.mode != "ft":
        raise TalkingHeadError("--steps counts fine-tuning steps: add --mode ft")
    for f in (PORTRAIT, DRIVING):
        if not f.is_file():
            raise TalkingHeadError(f"bundled demo asset missing: {f} (reinstall talkinghead)")
    progress = not args.no_progress
    out = Path(args.out)
    model_path = resolve_model(args.model)
    t0 = time.time()
    model = LoadedModel.load(model_path, args.device, with_discriminator=args.mode == "ft")
    print(f"model {model_path.name} ({model.cfg.name}, {model.cfg.model.image_size}²); "
          f"{'fine-tuning' if args.mode == 'ft' else 'embedding'} the Mona Lisa ...", flush=True)
    avatar = make_avatar([str(PORTRAIT)], model, mode=args.mode, shots=1, steps=args.steps, device=args.device,
                         progress=progress)
    t1 = time.time()
    avatar.save(out / "monalisa.avatar")
    print("animating with the driving clip ...", flush=True)
    res = animate_video(avatar, DRIVING, out / "monalisa.mp4", sbs_out=out / "monalisa_side_by_side.mp4",
                        model=model, device=args.device, progress=progress)
    t2 = time.time()
    said = _say(avatar, model, out / "monalisa_says.mp4", args.device, progress)
    t3 = time.time()
    st = avatar.info.get("finetune")
    if st:
        print(f"fine-tune: {st['steps']} steps in {st['seconds']:.1f} s; content loss on the shot "
              f"{st['ff']['content']:.4g} (FF) -> {st['ft']['content']:.4g} (FT)")
    else:
        print("feed-forward avatar from one photo (--mode ft fine-tunes on it first)")
    print(f"animate: {res.frames} frames in {res.seconds_total:.1f} s ({res.frames_per_second:.1f} frames/s)")
    print(f"total {t3 - t0:.1f} s (avatar {t1 - t0:.1f} s, the sentence {t3 - t2:.1f} s)")
    for name in ("monalisa.mp4", "monalisa_side_by_side.mp4", "monalisa.avatar") + (("monalisa_says.mp4",) if said else ()):
        print(f"  {out / name}")
    return ExitStatus.SUCCESS


SENTENCE, VOICE = "Bonjour, je suis la Joconde.", "fr"


def _say(avatar, model, out: Path, device: str, progress: bool) -> bool:
    """The Mona Lisa says SENTENCE (espeak-ng, the bundled speech model); False, with the reason, where it cannot."""
    import tempfile

    from talkinghead.bundled import SPEECH_MODEL
    from talkinghead.errors import TalkingHeadError
    from talkinghead.inference.pipeline import animate_video
    from talkinghead.persons.speech_model import load_speech_model
    from talkinghead.speech.drive import read_speech, speech_track
    from talkinghead.speech.tts import synthesize

    print(f"saying {SENTENCE!r} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="talkinghead-demo-") as tmp:
        try:
            wav = synthesize(SENTENCE, Path(tmp) / "say.wav", voice=VOICE)
            track = speech_track(load_speech_model(SPEECH_MODEL, device), read_speech(wav))
        except TalkingHeadError as e:
            print(f"  skipped: {e}")
            return False
        res = animate_video(avatar, None, out, model=model, device=device, progress=progress, track=track,
                            audio_from=wav)
    print(f"say: {res.frames} frames in {res.seconds_total:.1f} s")
    return True

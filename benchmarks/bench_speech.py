"""Speech as a driver, end to end (`animate PHOTO --say TEXT`): about ten seconds of espeak-ng speech → a finished,
marked mp4 of the Mona Lisa (bundled model, FF, bundled speech model). Prints where the time goes — text to
speech, features and speech activity, the speech model per frame, landmarks → frames → H.264 — beside the target
(10 s of speech in under 30 s; the speech model under 1 ms per frame), and whether the mouth follows the speech:
the output track's inner-lip gap (face frame, inter-ocular units) where espeak speaks and where it pauses.

    python benchmarks/bench_speech.py [--text "..."] [--voice en] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXT = ("The Mona Lisa is a half-length portrait painting by the Italian artist Leonardo da Vinci. "
        "It has been described as the best known, the most visited and the most parodied work of art in the world.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", default=TEXT)
    ap.add_argument("--voice", default="en")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from talkinghead import bundled
    from talkinghead.errors import TalkingHeadError
    from talkinghead.inference.pipeline import animate_video
    from talkinghead.landmarks.mouth_motion import to_face_frame
    from talkinghead.landmarks.openness import mouth_gap
    from talkinghead.media import audio
    from talkinghead.persons.avatar import make_ff_avatar
    from talkinghead.persons.checkpoint import LoadedModel
    from talkinghead.persons.speech_model import load_speech_model
    from talkinghead.speech.drive import at_frames, read_speech, speech_track
    from talkinghead.speech.tts import synthesize

    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        try:
            wav = synthesize(args.text, tmp / "say.wav", voice=args.voice)
        except TalkingHeadError as e:
            print(f"bench_speech: skipped: {e}")
            return 0
        res["tts_s"] = time.perf_counter() - t
        t = time.perf_counter()
        speech = read_speech(wav)
        res["features_s"] = time.perf_counter() - t
        res["speech_s"] = speech.seconds
        sm = load_speech_model(bundled.SPEECH_MODEL)
        n_frames = int(round(speech.seconds * 25))
        sm.predict(speech.feats, speech.phones)  # warm-up
        t = time.perf_counter()
        for _ in range(5):
            sm.predict(speech.feats, speech.phones)
        res["speech_model_ms_per_frame"] = (time.perf_counter() - t) / 5 / n_frames * 1000
        t = time.perf_counter()
        track = speech_track(sm, speech)
        res["track_s"] = time.perf_counter() - t

        model = LoadedModel.load(bundled.MODEL, with_discriminator=False)
        t = time.perf_counter()
        avatar = make_ff_avatar([str(bundled.PORTRAIT)], model, shots=1)
        res["avatar_s"] = time.perf_counter() - t
        t = time.perf_counter()
        out = animate_video(avatar, None, tmp / "says.mp4", model=model, track=track, audio_from=wav, progress=False)
        res["render_s"] = time.perf_counter() - t
        res["frames"] = out.frames
        # the same from the command line's first step on: text -> mp4
        res["total_s"] = res["tts_s"] + res["features_s"] + res["track_s"] + res["avatar_s"] + res["render_s"]

        face, _ = to_face_frame(np.stack(track.points))
        gap = mouth_gap(face)  # (T,)
        active = at_frames(speech.active.astype(np.float32), len(gap), track.fps) > 0.5
        res["gap_speech"] = float(gap[active].mean())
        res["gap_pause"] = float(gap[~active].mean()) if (~active).any() else float("nan")
        res["gap_corr_activity"] = float(np.corrcoef(gap, active)[0, 1])
        res["loudness_corr"] = float(np.corrcoef(gap, at_frames(audio.loudness(speech.wave), len(gap), track.fps))[0, 1])

    print(f"{res['speech_s']:.1f} s of speech ({res['frames']} frames) -> mp4 in {res['total_s']:.1f} s "
          f"(target < {3 * res['speech_s']:.0f} s): tts {res['tts_s']:.2f} s, features + activity "
          f"{res['features_s']:.2f} s, speech model {res['speech_model_ms_per_frame']:.3f} ms/frame (target < 1), "
          f"track {res['track_s']:.2f} s, avatar {res['avatar_s']:.2f} s, render + encode {res['render_s']:.1f} s")
    print(f"inner-lip gap: {res['gap_speech']:.3f} with speech, {res['gap_pause']:.3f} in pauses; correlation "
          f"with speech activity {res['gap_corr_activity']:.2f}, with loudness {res['loudness_corr']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

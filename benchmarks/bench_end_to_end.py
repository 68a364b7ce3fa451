"""`animate` end to end on the demo's photo and clip (the bundled model, FF, the mouth and eye generators, paste-back
into the whole painting, H.264 with the driver's audio): the sequential path — one batch at a time on torch's
threads, then its frames pasted back and encoded, in one thread — against `animate_video`, which renders
batches in worker threads of one intra-op thread each (`render_stream`'s workers) and pastes back and encodes
in a writer thread meanwhile, and decodes the driver ahead while finding its landmarks. Both in one process,
alternating; the two paths' rendered frames are compared before encoding (largest pixel difference: x264 would
turn a 1/255 difference into larger ones). Frames per second = frames / (landmarks + render + write).

    python benchmarks/bench_end_to_end.py [--repeats 2] [--threads 2] [--json FILE]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import cpu_model  # noqa: E402  (before torch: idle OpenMP workers sleep, as in the CLI)


def sequential(avatar, animator, track, out: Path) -> int:
    """The loop as it was before the writer thread: render a batch, then paste back and encode its frames."""
    from talkinghead import bundled
    from talkinghead.inference.pipeline import SYNTHETIC_TAG, driving_targets, render_stream
    from talkinghead.media import video_writer

    targets = driving_targets(avatar, track)
    n = 0
    with video_writer.VideoWriter(out, track.fps, audio_from=bundled.DRIVING, metadata=SYNTHETIC_TAG,
                                  preset="veryfast") as w:
        for crop in render_stream(animator, targets, workers=1):
            frame = avatar.crop.paste_back(avatar.source_image, crop)
            w.write(frame)
            n += 1
    return n


def landmarks(path, read_ahead: bool):
    """track_driver as it is (frames decoded ahead in a thread) or with the frames decoded in the caller's."""
    from talkinghead.inference import pipeline
    from talkinghead.media import video

    if read_ahead:
        return pipeline.track_driver(path, progress=False)
    own, video.read_ahead = video.read_ahead, lambda frames, depth=8: frames
    try:
        return pipeline.track_driver(path, progress=False)
    finally:
        video.read_ahead = own


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from talkinghead import bundled
    from talkinghead.inference.animator import Animator
    from talkinghead.inference.pipeline import animate_video, driving_targets, render_stream
    from talkinghead.persons.avatar import make_ff_avatar
    from talkinghead.persons.checkpoint import LoadedModel

    model = LoadedModel.load(bundled.MODEL, with_discriminator=False)
    avatar = make_ff_avatar([str(bundled.PORTRAIT)], model, shots=1)
    animator = Animator(avatar, model=model)
    times = {"sequential": [], "overlapped": []}
    marks = {"sequential": [], "overlapped": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeats):
            for name in ("sequential", "overlapped"):
                t = time.perf_counter()
                track = landmarks(bundled.DRIVING, read_ahead=name == "overlapped")
                marks[name].append(time.perf_counter() - t)
                t = time.perf_counter()
                if name == "sequential":
                    n = sequential(avatar, animator, track, tmp / f"{name}{r}.mp4")
                else:
                    n = animate_video(avatar, bundled.DRIVING, tmp / f"{name}{r}.mp4", animator=animator,
                                      track=track, progress=False).frames
                times[name].append(time.perf_counter() - t)
    targets = driving_targets(avatar, track)
    one = np.stack(list(render_stream(animator, targets, workers=1)))
    many = np.stack(list(render_stream(animator, targets)))
    diff = int(np.abs(one.astype(int) - many.astype(int)).max())
    res = {"frames": n, "cpu": cpu_model(), "max_rendered_difference": diff}
    for name in times:
        lm, best = min(marks[name]), min(times[name])
        res[name] = {"landmarks_s": lm, "render_write_s": best, "end_to_end_fps": n / (lm + best)}
    s, o = res["sequential"], res["overlapped"]
    print(f"animate end to end, {n} frames ({res['cpu']}): sequential {s['end_to_end_fps']:.1f} frames/s "
          f"(landmarks {s['landmarks_s']:.2f} s, render + write {s['render_write_s']:.2f} s), overlapped "
          f"{o['end_to_end_fps']:.1f} frames/s ({o['landmarks_s']:.2f} s, {o['render_write_s']:.2f} s): "
          f"× {o['end_to_end_fps'] / s['end_to_end_fps']:.2f}; target 25 frames/s; rendered frames differ by at "
          f"most {diff}/255 (target 1)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

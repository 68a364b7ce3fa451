"""Few-shot and animation speed: FF vs FT avatar making, Animator frames/s (folded vs plain spectral norm,
batch sizes), and the whole driving-video pipeline (crop only vs paste-back) on the bundled clip.

Uses freshly initialised networks of a preset (speed does not depend on the weights) and the bundled assets.

    python benchmarks/bench_animate.py [--preset tiny|small] [--threads 1] [--ft-steps 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ft-steps", type=int, default=20)
    p.add_argument("--json")
    a = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from talkinghead.animate import Animator
    from talkinghead.avatar import LoadedModel
    from talkinghead.checkpoint import save_model
    from talkinghead.config import preset
    from talkinghead.demo import DRIVING, PORTRAIT
    from talkinghead.nn import build_models
    from talkinghead.pipeline import animate_video, track_driver
    from talkinghead.train.finetune import make_avatar

    res: dict = {"preset": a.preset, "threads": a.threads}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        cfg = preset(a.preset)
        E, G, D = build_models(cfg.model)
        save_model(Path(tmp) / "m.safetensors", cfg, E, G, D)
        model = LoadedModel.load(Path(tmp) / "m.safetensors")

        t = time.time()
        ff = make_avatar([str(PORTRAIT)], model, mode="ff", shots=1)
        res["ff_avatar_s"] = time.time() - t
        t = time.time()
        ft = make_avatar([str(PORTRAIT)], model, mode="ft", shots=1, steps=a.ft_steps, patience=0, progress=False)
        st = ft.info["finetune"]
        res.update(ft_avatar_s=time.time() - t, ft_steps_per_s=st["steps"] / st["seconds"],
                   ft_content_ff=st["ff"]["content"], ft_content_ft=st["ft"]["content"])

        s = cfg.model.image_size
        y = Animator(ff, model=model).landmark_images(np.repeat(ff.source_points[None], 32, 0))  # (32, 3, S, S)
        for fold in (False, True):
            an = Animator(ff, model=model, fold=fold)
            for bs in (1, 8, 32):
                an.render(y[:bs])  # warm-up
                t = time.time()
                for i in range(0, 32, bs):
                    an.render(y[i:i + bs])
                res[f"render_fps_{'folded' if fold else 'plain'}_bs{bs}"] = 32 / (time.time() - t)

        track = track_driver(DRIVING, progress=False)
        res["landmarks_fps"] = len(track.points) / track.seconds
        for crop in (True, False):
            r = animate_video(ff, DRIVING, Path(tmp) / "o.mp4", model=model, crop_only=crop, track=track,
                              progress=False)
            key = "crop_only" if crop else "paste_back"
            res[f"pipeline_{key}_render_write_fps"] = r.frames / r.seconds_render
            res[f"pipeline_{key}_end_to_end_fps"] = r.frames / (r.seconds_render + track.seconds)

    print(f"preset {a.preset} ({s}²), {a.threads} thread(s)")
    print(f"  avatar: FF {res['ff_avatar_s']:.1f} s; FT {a.ft_steps} steps {res['ft_avatar_s']:.1f} s "
          f"({res['ft_steps_per_s']:.2f} steps/s), content loss on the shot {res['ft_content_ff']:.4g} (FF) -> "
          f"{res['ft_content_ft']:.4g} (FT)")
    for bs in (1, 8, 32):
        pl, fo = res[f"render_fps_plain_bs{bs}"], res[f"render_fps_folded_bs{bs}"]
        print(f"  Animator.render batch {bs:2d}: plain {pl:7.1f} frames/s, folded {fo:7.1f} frames/s "
              f"(folded/plain {fo / pl:.2f}x)")
    print(f"  driver landmarks: {res['landmarks_fps']:.1f} frames/s")
    for key in ("crop_only", "paste_back"):
        print(f"  pipeline {key}: render+write {res[f'pipeline_{key}_render_write_fps']:.1f} frames/s, "
              f"end to end {res[f'pipeline_{key}_end_to_end_fps']:.1f} frames/s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

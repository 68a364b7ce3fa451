"""Few-shot and animation speed: FF vs FT avatar making, Animator frames/s (folded vs plain spectral norm,
batch sizes), the whole driving-video pipeline (crop only vs paste-back) on the bundled clip, and its
end-to-end stage shares (decode, landmarks with tracking, retarget, rasterize, G, paste-back, encode) for each
Animator backend, measured in one instrumented run per backend (wall and process-CPU time per stage).

Uses freshly initialised networks of a preset (speed does not depend on the weights) and the bundled assets.

    python benchmarks/bench_animate.py [--preset tiny|small] [--threads 1] [--ft-steps 20] [--json FILE]
                                       [--stages-only]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

# 2 shared cores: spinning OpenMP workers lose a scheduler slice per parallel op when the other core is busy
# (see bench_generator.py); must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]


class StageTimer:
    """Accumulates wall and process-CPU seconds of named stages by wrapping functions/methods in place
    (``wrap``: calls; ``wrap_iter``: each ``next`` of a returned iterator). ``restore()`` undoes it."""

    def __init__(self):
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._undo: list = []

    def _timed(self, stage, fn, *a, **k):
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            self.wall[stage] += time.perf_counter() - w
            self.cpu[stage] += time.process_time() - c

    def wrap(self, owner, attr: str, stage: str, static: bool = False) -> None:
        orig = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        fn = orig.__func__ if isinstance(orig, staticmethod) else orig

        def wrapper(*a, **k):
            return self._timed(stage, fn, *a, **k)

        setattr(owner, attr, staticmethod(wrapper) if static else wrapper)
        self._undo.append((owner, attr, orig))

    def wrap_iter(self, owner, attr: str, stage: str) -> None:
        orig = getattr(owner, attr)

        def wrapper(*a, **k):
            it = iter(orig(*a, **k))
            while True:
                try:
                    item = self._timed(stage, next, it)
                except StopIteration:
                    return
                yield item

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, orig))

    def restore(self) -> None:
        for owner, attr, orig in reversed(self._undo):
            setattr(owner, attr, orig)
        self._undo.clear()


def pipeline_stages(avatar, model, driving, out, backend: str) -> dict:
    """One instrumented run of pass 1 (track_driver) + pass 2 (animate_video, paste-back, mp4 with audio)."""
    from talkinghead import pipeline, video
    from talkinghead.animate import Animator
    from talkinghead.landmarks.align import CropTransform
    from talkinghead.landmarks.detect import DlibDetector, VideoLandmarkTracker

    animator = Animator(avatar, model=model, backend=backend)  # outside the timed run (export for onnx)
    st = StageTimer()
    st.wrap(DlibDetector, "__init__", "setup (dlib models)")  # once per video, not per frame
    st.wrap_iter(video, "iter_indexed_frames", "decode")
    st.wrap(VideoLandmarkTracker, "_step", "landmarks (tracked)")
    st.wrap(pipeline, "driving_targets", "retarget")
    st.wrap(Animator, "landmark_images", "rasterize")
    st.wrap(Animator, "render", "G")
    st.wrap(Animator, "to_uint8", "G", static=True)  # G's output to uint8 counts with G
    st.wrap(CropTransform, "paste_back", "paste-back")
    st.wrap(video.VideoWriter, "write", "encode")
    st.wrap(video.VideoWriter, "close", "encode")  # flush + audio remux
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        track = pipeline.track_driver(driving, progress=False)
        r = pipeline.animate_video(avatar, driving, out, animator=animator, track=track, progress=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        st.restore()
    stages = {k: {"wall_s": st.wall[k], "cpu_s": st.cpu[k]} for k in
              ("setup (dlib models)", "decode", "landmarks (tracked)", "retarget", "rasterize", "G", "paste-back", "encode")}
    stages["other"] = {"wall_s": wall - sum(st.wall.values()), "cpu_s": cpu - sum(st.cpu.values())}
    return {"backend": animator.backend, "frames": r.frames, "wall_s": wall, "cpu_s": cpu, "fps": r.frames / wall,
            "fps_cpu": r.frames / cpu, "stages": stages}


def print_stages(res: dict, threads: int) -> None:
    print(f"  end to end ({res['backend']} backend, {res['frames']} frames incl. decode, landmarks, encode): "
          f"{res['fps']:.1f} frames/s wall, {res['fps_cpu'] * threads:.1f} frames/s on process CPU time / "
          f"{threads} thread(s) [{res['fps_cpu']:.1f} frames per CPU-second]")
    for k, v in res["stages"].items():
        print(f"    {k:20s} {1e3 * v['wall_s'] / res['frames']:6.1f} ms/frame wall ({100 * v['wall_s'] / res['wall_s']:4.1f}%)"
              f"  {1e3 * v['cpu_s'] / res['frames']:6.1f} ms/frame CPU ({100 * v['cpu_s'] / res['cpu_s']:4.1f}%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ft-steps", type=int, default=20)
    p.add_argument("--json")
    p.add_argument("--stages-only", action="store_true", help="only the end-to-end stage shares")
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
        s = cfg.model.image_size
        for backend in ("torch", "onnx"):
            res[f"stages_{backend}"] = st = pipeline_stages(ff, model, DRIVING, Path(tmp) / "s.mp4", backend)
            if st["backend"] != backend:  # onnxruntime missing: fell back to torch
                del res[f"stages_{backend}"]
        if a.stages_only:
            print(f"preset {a.preset} ({s}²), {a.threads} thread(s), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
            for backend in ("torch", "onnx"):
                if f"stages_{backend}" in res:
                    print_stages(res[f"stages_{backend}"], a.threads)
            if a.json:
                Path(a.json).write_text(json.dumps(res, indent=2))
            return
        t = time.time()
        ft = make_avatar([str(PORTRAIT)], model, mode="ft", shots=1, steps=a.ft_steps, patience=0, progress=False)
        st = ft.info["finetune"]
        res.update(ft_avatar_s=time.time() - t, ft_steps_per_s=st["steps"] / st["seconds"],
                   ft_content_ff=st["ff"]["content"], ft_content_ft=st["ft"]["content"])

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

    print(f"preset {a.preset} ({s}²), {a.threads} thread(s), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
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
    for backend in ("torch", "onnx"):
        if f"stages_{backend}" in res:
            print_stages(res[f"stages_{backend}"], a.threads)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

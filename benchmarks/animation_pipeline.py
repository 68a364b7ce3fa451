"""The photo-to-video part of bench_animation.py (one preset, in its own process): FF vs FT avatar making
from the bundled portrait, the whole driving-video pipeline (crop only vs paste-back) on the bundled clip, and
its end-to-end stage shares for each Animator backend, measured in one instrumented run per backend.

Not a script of its own: bench_animation.py runs `pipeline_worker` in a child process and prints its result
with `print_pipeline`.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from timing import StageTimer, Stopwatch, peak_rss_mb

# stages of one instrumented run, in pipeline order (wall and process-CPU seconds each)
STAGES = ("setup (dlib models)", "decode", "landmarks (tracked)", "retarget", "rasterize", "G", "paste-back",
          "encode")


def pipeline_stages(avatar, model, driving, out: Path, backend: str) -> dict:
    """One instrumented run of pass 1 (track_driver) + pass 2 (animate_video: paste-back, mp4 with audio)."""
    from talkinghead.inference import pipeline
    from talkinghead.media import video, video_writer
    from talkinghead.inference.animator import Animator
    from talkinghead.landmarks.align import CropTransform
    from talkinghead.landmarks.detect import DlibDetector
    from talkinghead.landmarks.track import VideoLandmarkTracker

    animator = Animator(avatar, model=model, backend=backend)  # outside the timed run (export for onnx)
    st = StageTimer()
    st.wrap(DlibDetector, "__init__", "setup (dlib models)")  # once per video, not per frame
    st.wrap_iter(video, "iter_indexed_frames", "decode")
    st.wrap(VideoLandmarkTracker, "_step", "landmarks (tracked)")
    st.wrap(pipeline, "driving_targets", "retarget")
    st.wrap(Animator, "landmark_images", "rasterize")
    st.wrap(Animator, "render", "G")
    st.wrap(pipeline, "to_uint8", "G")  # G's output to uint8 counts with G
    st.wrap(CropTransform, "paste_back", "paste-back")
    st.wrap(video_writer.VideoWriter, "write", "encode")
    st.wrap(video_writer.VideoWriter, "close", "encode")  # flush + audio remux
    try:
        with Stopwatch() as total:
            track = pipeline.track_driver(driving, progress=False)
            r = pipeline.animate_video(avatar, driving, out, animator=animator, track=track, progress=False)
    finally:
        st.restore()
    stages = {k: {"wall_s": st.stages[k].wall, "cpu_s": st.stages[k].cpu} for k in STAGES}
    stages["other"] = {"wall_s": total.wall - sum(s.wall for s in st.stages.values()),
                       "cpu_s": total.cpu - sum(s.cpu for s in st.stages.values())}
    return {"backend": animator.backend, "frames": r.frames, "wall_s": total.wall, "cpu_s": total.cpu,
            "fps": r.frames / total.wall, "fps_cpu": r.frames / total.cpu, "stages": stages}


def make_avatars(model, portrait, ft_steps: int) -> tuple[object, dict]:
    """FF avatar and FT avatar (ft_steps steps, no early stop) of the portrait -> (FF avatar, timings)."""
    from talkinghead.train.finetune import make_avatar

    with Stopwatch() as ff_t:
        ff = make_avatar([str(portrait)], model, mode="ff", shots=1)
    with Stopwatch() as ft_t:
        ft = make_avatar([str(portrait)], model, mode="ft", shots=1, steps=ft_steps, patience=0, progress=False)
    st = ft.info["finetune"]
    return ff, {"ff_avatar_s": ff_t.wall, "ft_avatar_s": ft_t.wall, "ft_steps": st["steps"],
                "ft_steps_per_s": st["steps"] / st["seconds"], "ft_content_ff": st["ff"]["content"],
                "ft_content_ft": st["ft"]["content"]}


def pipeline_worker(preset_name: str, threads: int, ft_steps: int) -> dict:
    """Everything of the photo-to-video part on freshly initialised networks of a preset (speed does not
    depend on the weights)."""
    import torch

    torch.set_num_threads(threads)
    from talkinghead.bundled import DRIVING, PORTRAIT
    from talkinghead.persons.checkpoint import LoadedModel, save_model
    from talkinghead.config import preset
    from talkinghead.nn import build_models
    from talkinghead.inference.pipeline import animate_video, track_driver

    res: dict = {"preset": preset_name, "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        cfg = preset(preset_name)
        save_model(Path(tmp) / "m.safetensors", cfg, *build_models(cfg.model))
        model = LoadedModel.load(Path(tmp) / "m.safetensors")
        res["image_size"] = cfg.model.image_size
        ff, res["avatars"] = make_avatars(model, PORTRAIT, ft_steps)  # before an Animator folds G in place

        track = track_driver(DRIVING, progress=False)
        res["landmarks_fps"] = len(track.points) / track.seconds
        for crop in (True, False):
            r = animate_video(ff, DRIVING, Path(tmp) / "o.mp4", model=model, crop_only=crop, track=track,
                              progress=False)
            res["crop_only" if crop else "paste_back"] = {
                "render_write_fps": r.frames / r.seconds_render,
                "end_to_end_fps": r.frames / (r.seconds_render + track.seconds)}
        res["stages"] = {}
        for backend in ("torch", "onnx"):
            if backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
                res["stages"][backend] = {"skipped": "onnxruntime not installed (pip install -e .[fast])"}
                continue
            res["stages"][backend] = pipeline_stages(ff, model, DRIVING, Path(tmp) / "s.mp4", backend)
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def print_stages(res: dict, threads: int) -> None:
    print(f"  end to end ({res['backend']} backend, {res['frames']} frames incl. decode, landmarks, encode): "
          f"{res['fps']:.1f} frames/s wall, {res['fps_cpu'] * threads:.1f} frames/s on process CPU time / "
          f"{threads} thread(s) [{res['fps_cpu']:.1f} frames per CPU-second]")
    for k, v in res["stages"].items():
        print(f"    {k:20s} {1e3 * v['wall_s'] / res['frames']:6.1f} ms/frame wall "
              f"({100 * v['wall_s'] / res['wall_s']:4.1f}%)  {1e3 * v['cpu_s'] / res['frames']:6.1f} ms/frame CPU "
              f"({100 * v['cpu_s'] / res['cpu_s']:4.1f}%)")


def print_pipeline(res: dict) -> None:
    av, threads = res["avatars"], res["threads"]
    print(f"\nphoto to video, preset {res['preset']} ({res['image_size']}²), {threads} thread(s), bundled portrait "
          f"and driving clip; peak {res['peak_rss_mb']:.0f} MB")
    print(f"  avatar: FF {av['ff_avatar_s']:.1f} s; FT {av['ft_steps']} steps {av['ft_avatar_s']:.1f} s "
          f"({av['ft_steps_per_s']:.2f} steps/s), content loss on the shot {av['ft_content_ff']:.4g} (FF) -> "
          f"{av['ft_content_ft']:.4g} (FT)")
    print(f"  driver landmarks (detect + track): {res['landmarks_fps']:.1f} frames/s")
    for key in ("crop_only", "paste_back"):
        print(f"  pipeline {key}: render+write {res[key]['render_write_fps']:.1f} frames/s, "
              f"end to end {res[key]['end_to_end_fps']:.1f} frames/s")
    for backend, st in res["stages"].items():
        if "skipped" in st:
            print(f"  end to end ({backend} backend): skipped, {st['skipped']}")
        else:
            print_stages(st, threads)

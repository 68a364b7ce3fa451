"""Animation and few-shot speed and memory (paper §3.3 inference and fine-tuning), against the warp baseline.

Per model: each preset (freshly initialised networks at their sizes; speed does not depend on the weights)
and, when present, the bundled model (or any --model file), each in its own process so that its peak
resident memory is its own:
- animation ms/frame and frames/s per batch size, split into driver landmarks (dlib detect + track on the
  bundled driving clip, measured once), landmark images (rasterize), generator (Animator.render with spectral
  norm folded, the inference path, and plain) and video encode (H.264 veryfast of the S×S crops);
  the share of each stage and the folded/plain speed-up;
- the reference measured in the same run on the same landmarks: the landmark-driven warp baseline
  (talkinghead.evaluation.baselines.warp_baseline of one S×S source crop), and the ratios model / warp (wall and CPU);
- fine-tuning (FT, train.finetune.finetune_generator with the preset's L_CNT backbones) for T = 1/8/32
  shots: seconds per step over --ft-steps steps and the projected seconds for the preset's
  FinetuneConfig.steps (+ the before/after reconstruction passes over the T shots);
- peak resident memory of the process.
Photo to video (--pipeline PRESET, in its own process; animation_pipeline.py): FF vs FT avatar making from
the bundled portrait, driver landmarks frames/s, the whole pipeline crop-only vs paste-back, and its stage
shares (setup, decode, landmarks, retarget, rasterize, G, paste-back, encode) per Animator backend (torch;
onnx when onnxruntime is installed), wall and process-CPU time per stage.
Also the landmark image of one 256² frame (rasterize), ms.

    python benchmarks/bench_animation.py [--presets tiny,small,paper] [--model FILE] [--batches 1,8,32]
        [--frames 16] [--shots 1,8,32] [--ft-steps 2] [--ft-budget S] [--pipeline tiny] [--avatar-ft-steps 20]
        [--threads 2] [--json FILE]

On 2 shared cores timings swing by 2-10x between runs: read the ratios within one run (same conditions),
the CPU columns (process CPU time, steadier than wall time) and the FT seconds per step as order-of-magnitude
figures (the first step is excluded where more than one is measured).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from timing import Stopwatch, header, in_own_process, measure, peak_rss_mb, report

PRESETS = ("tiny", "small", "paper")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small,paper", help="comma-separated; '' for none")
    ap.add_argument("--model", action="append", default=[], help="also a model file (repeatable); the bundled "
                    "model is added when present (unless --no-bundled)")
    ap.add_argument("--no-bundled", action="store_true")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--frames", type=int, default=16, help="driving frames per measurement")
    ap.add_argument("--shots", default="1,8,32", help="T values for fine-tuning")
    ap.add_argument("--ft-steps", type=int, default=2, help="fine-tuning steps measured per T (>= 2)")
    ap.add_argument("--ft-budget", type=float, default=1e9,
                    help="seconds of fine-tuning measurement per model; larger T are skipped after it")
    ap.add_argument("--pipeline", default="tiny", help="preset of the photo-to-video part; '' to skip it")
    ap.add_argument("--avatar-ft-steps", type=int, default=20, help="FT steps of the photo-to-video avatar")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many timings")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="save results to this file (after each model)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--driver", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.batches = [int(b) for b in a.batches.split(",") if b]
    a.shots = [int(t) for t in a.shots.split(",") if t]
    return a


def driver_points(frames: int) -> dict:
    """Landmarks of the first `frames` frames of the bundled driving clip (detect + track, as the pipeline):
    {"points": (F, 68, 2) nested lists in clip pixels, "ms": per frame, "rasterize_256_ms": one 256² image}."""
    import numpy as np

    from talkinghead.bundled import DRIVING
    from talkinghead.landmarks.align import crop_from_landmarks
    from talkinghead.landmarks.detect import DlibDetector
    from talkinghead.landmarks.track import VideoLandmarkTracker
    from talkinghead.landmarks.rasterize import rasterize
    from talkinghead.media.video import iter_frames, probe_video

    imgs = list(iter_frames(DRIVING, max_frames=frames))
    tracker = VideoLandmarkTracker(DlibDetector(upsample=0, max_side=960), fps=probe_video(DRIVING).fps)
    t = measure(lambda: [tracker.update(im) for im in imgs], repeats=1, warmup=0, items=len(imgs))
    found = [f.points for f in t.out if f is not None]
    if not found:
        raise SystemExit("no face found in the bundled driving clip")
    pts = np.stack([np.asarray(f.points if f is not None else found[0], np.float32) for f in t.out])
    crop = crop_from_landmarks(pts[0], 256).points_to_crop(pts[0])  # (68, 2) in a 256² crop
    raster = measure(lambda: rasterize(crop, 256), repeats=20)
    return {"points": pts.tolist(), "ms": t.ms(), "rasterize_256_ms": raster.ms(), "rasterize_256_cpu_ms":
            raster.ms("cpu")}


def model_under_test(spec: str, tmp: Path):
    """A preset name (fresh networks, seed 0) or a model file -> (LoadedModel, label)."""
    import torch

    from talkinghead.persons.checkpoint import LoadedModel, save_model
    from talkinghead.config import preset
    from talkinghead.nn import build_models

    if spec not in PRESETS:
        return LoadedModel.load(spec), Path(spec).stem
    torch.manual_seed(0)
    cfg = preset(spec)
    save_model(tmp / f"{spec}.safetensors", cfg, *build_models(cfg.model))
    return LoadedModel.load(tmp / f"{spec}.safetensors"), spec


def finetune_rows(lm, pts, a) -> list[dict]:
    """FT seconds per step and projected FT seconds for each T in a.shots (stand-in shots: speed only)."""
    import numpy as np
    import torch

    from talkinghead.landmarks.rasterize import landmark_image_tensor
    from talkinghead.persons.shots import embed_shots
    from talkinghead.train.finetune import finetune_generator
    from talkinghead.train.objective import build_content_terms

    cfg, S = lm.cfg, lm.cfg.model.image_size
    terms = build_content_terms(cfg, "cpu")
    gen = torch.Generator().manual_seed(0)
    rows, spent = [], Stopwatch()
    for T in a.shots:
        if spent.wall > a.ft_budget:
            rows.append({"T": T, "skipped": f"--ft-budget {a.ft_budget:g} s used up"})
            continue
        with spent:
            x = torch.rand(T, 3, S, S, generator=gen) * 2 - 1  # (T, 3, S, S)
            y = landmark_image_tensor(pts[np.arange(T) % len(pts)], S)  # (T, 3, S, S)
            with Stopwatch() as t_embed:
                e_hat = embed_shots(lm.E, x, y)  # (N,)
            times: list[float] = []
            with Stopwatch() as t_ft:
                finetune_generator(lm, x, y, e_hat, replace(cfg.finetune, steps=a.ft_steps, patience=0),
                                   progress=False, content_terms=terms, log=lambda r: times.append(r["time"]))
        steps = np.diff([0.0] + times)
        per_step = float(statistics.median(steps[1:])) if len(steps) > 1 else float(steps[0])
        fixed = t_ft.wall - float(sum(steps))  # optimiser/copies + reconstruction passes over the T shots
        rows.append({"T": T, "embed_s": t_embed.wall, "steps_measured": len(times), "s_per_step": per_step,
                     "fixed_s": fixed, "measured_s": t_ft.wall + t_embed.wall, "config_steps": cfg.finetune.steps,
                     "projected_s": t_embed.wall + fixed + per_step * cfg.finetune.steps})
    return rows


def animation_times(lm, pts, a, tmp: Path) -> dict:
    """ms/frame (wall, and process CPU) of rasterize, G plain and folded per batch size, encode, warp."""
    import numpy as np
    import torch

    from talkinghead.inference.animator import Animator
    from talkinghead.persons.avatar import Avatar
    from talkinghead.evaluation.baselines import warp_baseline
    from talkinghead.media.images import from_uint8, to_uint8
    from talkinghead.landmarks.align import crop_from_landmarks
    from talkinghead.media.video_writer import VideoWriter

    cfg, S, F = lm.cfg, lm.cfg.model.image_size, len(pts)
    src = (np.random.default_rng(0).random((S, S, 3)) * 255).astype(np.uint8)  # stand-in source crop
    av = Avatar(mode="ff", config=cfg, embedding=torch.randn(cfg.model.embed_dim), model=lm.info(),
                source_image=src, crop=crop_from_landmarks(pts[0], S), source_crop=src, source_points=pts[0],
                shots=1)
    out: dict = {}

    def put(key, t):
        out[key] = {"ms": t.ms(), "cpu_ms": t.ms("cpu")}
        return t

    an = None
    for fold in (False, True):  # plain first: the folded Animator folds the model's G in place
        an = Animator(av, model=lm, fold=fold)
        y = an.landmark_images(pts)  # (F, 3, S, S)
        for bs in a.batches:
            put(f"generator_{'folded' if fold else 'plain'}_{bs}",
                measure(lambda: [an.render(y[i:i + bs]) for i in range(0, F, bs)], a.repeat, items=F,
                        warmup_fn=lambda: an.render(y[:bs])))
    put("rasterize", measure(lambda: an.landmark_images(pts), a.repeat, items=F))
    frames = to_uint8(an.render(an.landmark_images(pts[:8])))  # (≤8, S, S, 3)

    def encode():
        with VideoWriter(tmp / "o.mp4", 25, preset="veryfast") as w:
            for i in range(F):
                w.write(frames[i % len(frames)])

    put("encode", measure(encode, repeats=1, items=F))
    x_src = from_uint8(src)  # (3, S, S)
    put("warp", measure(lambda: [warp_baseline(x_src, pts[0], p) for p in pts], a.repeat, items=F))
    return out


def worker(spec: str, a) -> dict:
    """One model (a preset name or a model file) in this process."""
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    rss_import = peak_rss_mb()
    drv = json.loads(Path(a.driver).read_text())
    with tempfile.TemporaryDirectory(prefix="bench_animation_") as tmp:
        lm, label = model_under_test(spec, Path(tmp))
        S = lm.cfg.model.image_size
        pts_img = np.asarray(drv["points"], np.float32)  # (F, 68, 2) clip pixels
        from talkinghead.landmarks.align import crop_from_landmarks

        pts = crop_from_landmarks(pts_img[0], S).points_to_crop(pts_img)  # (F, 68, 2) crop pixels
        res = {"model": label, "file": None if spec in PRESETS else str(Path(spec).resolve()), "preset": lm.cfg.name,
               "image_size": S, "threads": a.threads, "frames": len(pts), "landmarks_ms": drv["ms"],
               "finetune": finetune_rows(lm, pts, a),  # before the Animator folds G's spectral norm in place
               "times": animation_times(lm, pts, a, Path(tmp))}
    res.update(peak_rss_mb=peak_rss_mb(), rss_after_imports_mb=rss_import)
    return res


def rows_for(r: dict) -> list[dict]:
    """Per batch size: ms/frame per stage, total, frames/s, shares and ratios against the warp baseline."""
    t, lm_ms, out = r["times"], r["landmarks_ms"], []
    warp = t["warp"]
    for bs in sorted({int(k.rsplit("_", 1)[1]) for k in t if k.startswith("generator_folded_")}):
        g, plain = t[f"generator_folded_{bs}"], t[f"generator_plain_{bs}"]
        stages = {"landmarks": lm_ms, "rasterize": t["rasterize"]["ms"], "generator": g["ms"],
                  "encode": t["encode"]["ms"]}
        total = sum(stages.values())
        out.append({"model": r["model"], "S": r["image_size"], "batch": bs, **{f"{k}_ms": v for k, v in stages.items()},
                    "total_ms": total, "fps": 1000 / total, **{f"share_{k}": v / total for k, v in stages.items()},
                    "generator_plain_ms": plain["ms"], "fold_speedup_cpu": plain["cpu_ms"] / g["cpu_ms"],
                    "warp_ms": warp["ms"], "render_vs_warp": (g["ms"] + t["rasterize"]["ms"]) / warp["ms"],
                    "generator_cpu_ms": g["cpu_ms"], "warp_cpu_ms": warp["cpu_ms"],
                    "generator_vs_warp_cpu": g["cpu_ms"] / warp["cpu_ms"],
                    "end_to_end_vs_warp": total / (lm_ms + warp["ms"] + t["encode"]["ms"])})
    return out


def print_models(results: list[dict], table: list[dict], a, drv: dict) -> None:
    print(f"\nanimation, {a.threads} torch threads, {a.frames} driving frames of the bundled clip (landmarks "
          f"measured once: {drv['ms']:.1f} ms/frame); one 256² landmark image: rasterize "
          f"{drv['rasterize_256_ms']:.2f} ms wall, {drv['rasterize_256_cpu_ms']:.2f} ms CPU")
    print(f"{'model':20} {'S':>4} {'batch':>5} {'landm':>6} {'raster':>6} {'G':>7} {'G plain':>7} {'fold×':>5} "
          f"{'encode':>6} {'total':>7} {'fps':>6} {'share lm/G/enc':>14} {'warp':>6} {'G÷warp':>6} {'e2e÷warp':>8} "
          f"{'G cpu':>7} {'warp cpu':>8} {'÷ cpu':>6}")
    for t in table:
        print(f"{t['model'][:20]:20} {t['S']:4d} {t['batch']:5d} {t['landmarks_ms']:6.1f} {t['rasterize_ms']:6.1f} "
              f"{t['generator_ms']:7.1f} {t['generator_plain_ms']:7.1f} {t['fold_speedup_cpu']:5.2f} "
              f"{t['encode_ms']:6.1f} {t['total_ms']:7.1f} {t['fps']:6.1f} {100 * t['share_landmarks']:4.0f}/"
              f"{100 * t['share_generator']:3.0f}/{100 * t['share_encode']:3.0f} % {t['warp_ms']:6.1f} "
              f"{t['render_vs_warp']:6.1f} {t['end_to_end_vs_warp']:8.2f} {t['generator_cpu_ms']:7.1f} "
              f"{t['warp_cpu_ms']:8.1f} {t['generator_vs_warp_cpu']:6.1f}")
    print("(ms per frame, best of --repeat; G: spectral norm folded (Animator's default), G plain: not folded, "
          "fold× = plain / folded on CPU time; G÷warp = (landmark image + G) / warp baseline; e2e÷warp = whole "
          "pipeline with the model / with the warp; G cpu, warp cpu: process CPU ms per frame, all threads; "
          "÷ cpu = their ratio)")
    print(f"\nfine-tuning (FT, {a.ft_steps} steps measured per T) and memory")
    print(f"{'model':20} {'T':>3} {'s/step':>7} {'fixed s':>8} {'measured s':>10} {'steps':>6} {'projected s':>11} "
          f"{'peak MB':>8}")
    for r in results:
        for f in r["finetune"]:
            if "skipped" in f:
                print(f"{r['model'][:20]:20} {f['T']:3d}  skipped: {f['skipped']}")
                continue
            print(f"{r['model'][:20]:20} {f['T']:3d} {f['s_per_step']:7.2f} {f['fixed_s']:8.2f} "
                  f"{f['measured_s']:10.1f} {f['config_steps']:6d} {f['projected_s']:11.1f} {r['peak_rss_mb']:8.0f}")


def worker_args(a) -> list[str]:
    return ["--batches", ",".join(map(str, a.batches)), "--frames", str(a.frames), "--shots",
            ",".join(map(str, a.shots)), "--ft-steps", str(a.ft_steps), "--threads", str(a.threads),
            "--ft-budget", str(a.ft_budget), "--repeat", str(a.repeat), "--avatar-ft-steps", str(a.avatar_ft_steps)]


def main() -> None:
    a = parse_args()
    if a.worker:
        if a.worker.startswith("pipeline:"):
            from animation_pipeline import pipeline_worker

            report(pipeline_worker(a.worker.split(":", 1)[1], a.threads, a.avatar_ft_steps))
        else:
            report(worker(a.worker, a))
        return
    from talkinghead.bundled import MODEL

    specs = [p for p in a.presets.split(",") if p] + a.model
    if specs and not a.no_bundled and MODEL.is_file() and str(MODEL) not in specs:
        specs.append(str(MODEL))
    print(header(a.threads), flush=True)
    out: dict = {"threads": a.threads, "frames": a.frames, "models": []}
    save = (lambda: Path(a.json).write_text(json.dumps(out, indent=2))) if a.json else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        out["driver"] = drv = driver_points(a.frames)
        (Path(tmp) / "driver.json").write_text(json.dumps(drv))
        for spec in specs:  # saved after each model: a run stopped early keeps what it measured
            with Stopwatch() as sw:
                try:
                    out["models"].append(in_own_process(__file__, ["--worker", spec, "--driver",
                                                                    str(Path(tmp) / "driver.json"), *worker_args(a)]))
                except RuntimeError as e:
                    print(f"{spec}: failed: {e}", file=sys.stderr)
            print(f"[{Path(spec).stem}] measured in {sw.wall:.0f} s", file=sys.stderr, flush=True)
            save()
    out["table"] = [row for r in out["models"] for row in rows_for(r)]
    if out["models"]:
        print_models(out["models"], out["table"], a, drv)
    if a.pipeline:
        from animation_pipeline import print_pipeline

        try:
            out["pipeline"] = in_own_process(__file__, ["--worker", f"pipeline:{a.pipeline}", *worker_args(a)])
            print_pipeline(out["pipeline"])
        except RuntimeError as e:
            print(f"photo to video ({a.pipeline}): failed: {e}", file=sys.stderr)
    save()
    if a.json:
        print(f"saved {a.json}")


if __name__ == "__main__":
    main()

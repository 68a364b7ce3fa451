"""Animation speed and memory per model preset (paper §3.3 inference), against the warp baseline.

For each preset (tiny, small, paper: freshly initialised networks at their sizes; speed does not depend on
the weights) and, when present, the bundled model (or any --model file), in its own process so that peak
resident memory (ru_maxrss) is its own:
- animation ms/frame and frames/s per batch size, split into driver landmarks (dlib detect + track on the
  bundled driving clip, measured once), landmark images (rasterize), generator (Animator.render, spectral norm
  folded) and video encode (H.264 veryfast of the S×S crops); the share of each;
- the reference measured in the same run on the same landmarks: the landmark-driven warp baseline
  (talkinghead.baselines.warp_baseline of one S×S source crop), and the ratios model / warp;
- fine-tuning (paper §3.3 FT, train.finetune.finetune_generator with the preset's L_CNT backbones) for
  T = 1/8/32 shots: seconds per step over --ft-steps steps and the projected seconds for the preset's
  FinetuneConfig.steps (+ the before/after reconstruction passes over the T shots);
- peak resident memory of the process.
Printed as tables and saved as JSON (--json). bench_animate.py covers FF/FT avatar making from a photo and
the paste-back pipeline; this script covers the per-preset breakdown.

    python benchmarks/bench_animation.py [--presets tiny,small,paper] [--model FILE] [--batches 1,8]
        [--frames 16] [--shots 1,8,32] [--ft-steps 2] [--ft-budget S] [--threads 2] [--json FILE]

On this 2-core machine shared with a training run, timings swing by 2-10x between runs (thread
oversubscription): read the ratios within one run (same conditions), and the FT seconds per step as
order-of-magnitude figures (2 steps measured, the first one excluded where possible).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "talkinghead" / "weights" / "model_small.safetensors"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def track_driver_points(frames: int) -> tuple[list, float]:
    """Landmarks of the first `frames` frames of the bundled driving clip (detect + track, as the pipeline)
    -> ((F, 68, 2) as nested lists in clip pixels, ms per frame)."""
    import numpy as np

    from talkinghead.demo import DRIVING
    from talkinghead.landmarks.detect import DlibDetector, VideoLandmarkTracker
    from talkinghead.video import iter_frames, probe_video

    info = probe_video(DRIVING)
    imgs = list(iter_frames(DRIVING, max_frames=frames))
    tracker = VideoLandmarkTracker(DlibDetector(upsample=0, max_side=960), fps=info.fps)
    t0 = time.perf_counter()
    pts = [tracker.update(im) for im in imgs]
    ms = 1000 * (time.perf_counter() - t0) / len(imgs)
    found = [p.points for p in pts if p is not None]
    if not found:
        raise SystemExit("no face found in the bundled driving clip")
    pts = [np.asarray(p.points if p is not None else found[0], np.float32) for p in pts]
    return np.stack(pts).tolist(), ms


CPU_TIMES: dict[str, float] = {}  # label -> process CPU ms per frame of the best run (robust to other load)


def _timed(fn, n_frames: int, repeat: int = 2, warmup=None, label: str | None = None) -> float:
    """Best-of-`repeat` wall ms per frame of fn() (which processes n_frames frames); one warm-up call first
    (of `warmup` if given, e.g. a single batch). The process CPU time of that run goes to CPU_TIMES[label]."""
    (warmup or fn)()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if dt < best:
            best, best_cpu = dt, dc
    if label:
        CPU_TIMES[label] = 1000 * best_cpu / n_frames
    return 1000 * best / n_frames


def worker(spec: str, a) -> dict:
    """One model (a preset name or a model file) in this process."""
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from talkinghead.animate import Animator
    from talkinghead.avatar import Avatar, LoadedModel, embed_shots
    from talkinghead.baselines import warp_baseline
    from talkinghead.checkpoint import save_model
    from talkinghead.config import preset
    from talkinghead.landmarks.align import crop_from_landmarks
    from talkinghead.nn import build_models
    from talkinghead.train.finetune import finetune_generator
    from talkinghead.train.meta import build_content_terms
    from talkinghead.video import VideoWriter

    rss_import = _rss_mb()
    drv = json.loads(Path(a.driver).read_text())
    tmp = Path(tempfile.mkdtemp(prefix="bench_animation_"))
    if Path(spec).suffix == ".safetensors":
        path, label = Path(spec), Path(spec).stem
    else:
        torch.manual_seed(0)
        cfg = preset(spec)
        E, G, D = build_models(cfg.model)
        path, label = tmp / f"{spec}.safetensors", spec
        save_model(path, cfg, E, G, D)
        del E, G, D
    lm = LoadedModel.load(path)
    cfg = lm.cfg
    S = cfg.model.image_size
    pts_img = np.asarray(drv["points"], np.float32)  # (F, 68, 2) clip pixels
    ct = crop_from_landmarks(pts_img[0], S)
    pts = ct.points_to_crop(pts_img)  # (F, 68, 2) crop pixels
    F = len(pts)
    res: dict = {"model": label, "file": str(path) if label not in ("tiny", "small", "paper") else None,
                 "preset": cfg.name, "image_size": S, "threads": a.threads, "frames": F,
                 "landmarks_ms": drv["ms"]}

    # -- fine-tuning (before the Animator folds G's spectral norm in place)
    terms = build_content_terms(cfg, "cpu")
    ft_rows = []
    gen = torch.Generator().manual_seed(0)
    t_ft = time.perf_counter()
    for T in a.shots:
        if time.perf_counter() - t_ft > a.ft_budget:
            ft_rows.append({"T": T, "skipped": f"--ft-budget {a.ft_budget:g} s used up"})
            continue
        x = torch.rand(T, 3, S, S, generator=gen) * 2 - 1  # (T, 3, S, S) stand-in shots (speed only)
        from talkinghead.landmarks.rasterize import landmark_image_tensor

        y = landmark_image_tensor(pts[np.arange(T) % F], S)  # (T, 3, S, S)
        t0 = time.perf_counter()
        e_hat = embed_shots(lm.E, x, y)  # (N,)
        t_embed = time.perf_counter() - t0
        times = []
        ft = replace(cfg.finetune, steps=a.ft_steps, patience=0)
        t0 = time.perf_counter()
        finetune_generator(lm, x, y, e_hat, ft, progress=False, content_terms=terms,
                           log=lambda r: times.append(r["time"]))
        total = time.perf_counter() - t0
        steps = np.diff([0.0] + times)
        per_step = float(statistics.median(steps[1:])) if len(steps) > 1 else float(steps[0])
        fixed = total - float(sum(steps))  # optimiser/copies + reconstruction passes over the T shots
        ft_rows.append({"T": T, "embed_s": t_embed, "steps_measured": len(times), "s_per_step": per_step,
                        "fixed_s": fixed, "measured_s": total + t_embed,
                        "config_steps": cfg.finetune.steps,
                        "projected_s": t_embed + fixed + per_step * cfg.finetune.steps})
    res["finetune"] = ft_rows
    del terms

    # -- animation: an FF avatar of a stand-in source crop; Animator folds spectral norm (inference path)
    src = (np.random.default_rng(0).random((S, S, 3)) * 255).astype(np.uint8)
    av = Avatar(mode="ff", config=cfg, embedding=torch.randn(cfg.model.embed_dim, generator=gen), model=lm.info(),
                source_image=src, crop=ct, source_crop=src, source_points=pts[0], shots=1)
    an = Animator(av, model=lm)
    res["rasterize_ms"] = _timed(lambda: an.landmark_images(pts), F, a.repeat)
    y = an.landmark_images(pts)  # (F, 3, S, S)
    res["generator_ms"] = {}
    for bs in a.batches:
        res["generator_ms"][str(bs)] = _timed(lambda: [an.render(y[i:i + bs]) for i in range(0, F, bs)], F,
                                              a.repeat, warmup=lambda: an.render(y[:bs]), label=f"generator_{bs}")
    frames = to_uint8(an.render(y[: min(F, 8)]))  # (≤8, S, S, 3)

    def encode():
        with VideoWriter(tmp / "o.mp4", 25, preset="veryfast") as w:
            for i in range(F):
                w.write(frames[i % len(frames)])

    res["encode_ms"] = _timed(encode, F, repeat=1)
    x_src = torch.from_numpy(src).permute(2, 0, 1).float() / 127.5 - 1  # (3, S, S)
    res["warp_ms"] = _timed(lambda: [warp_baseline(x_src, pts[0], p) for p in pts], F, a.repeat, label="warp")
    res["cpu_ms"] = dict(CPU_TIMES)  # process CPU time per frame (all threads)
    res["peak_rss_mb"] = _rss_mb()
    res["rss_after_imports_mb"] = rss_import
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return res


def rows_for(r: dict) -> list[dict]:
    """Per batch size: ms/frame per stage, total, frames/s, shares and ratios against the warp baseline."""
    out = []
    for bs, g in r["generator_ms"].items():
        stages = {"landmarks": r["landmarks_ms"], "rasterize": r["rasterize_ms"], "generator": g,
                  "encode": r["encode_ms"]}
        total = sum(stages.values())
        warp_total = r["landmarks_ms"] + r["warp_ms"] + r["encode_ms"]  # the same pipeline with the warp
        out.append({"model": r["model"], "S": r["image_size"], "batch": int(bs), **{f"{k}_ms": v for k, v in stages.items()},
                    "total_ms": total, "fps": 1000 / total,
                    **{f"share_{k}": v / total for k, v in stages.items()},
                    "warp_ms": r["warp_ms"], "render_vs_warp": (g + r["rasterize_ms"]) / r["warp_ms"],
                    "generator_cpu_ms": r["cpu_ms"][f"generator_{bs}"], "warp_cpu_ms": r["cpu_ms"]["warp"],
                    "generator_vs_warp_cpu": r["cpu_ms"][f"generator_{bs}"] / r["cpu_ms"]["warp"],
                    "end_to_end_vs_warp": total / warp_total})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small,paper")
    ap.add_argument("--model", action="append", default=[], help="also a model file (repeatable); the bundled "
                    "model is added when present")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--frames", type=int, default=16, help="driving frames per measurement")
    ap.add_argument("--shots", default="1,8,32", help="T values for fine-tuning")
    ap.add_argument("--ft-steps", type=int, default=2, help="fine-tuning steps measured per T (>= 2)")
    ap.add_argument("--ft-budget", type=float, default=1e9,
                    help="seconds of fine-tuning measurement per model; larger T are skipped after it")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many timings")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="save results to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--driver", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.batches = [int(b) for b in a.batches.split(",") if b]
    a.shots = [int(t) for t in a.shots.split(",") if t]
    if a.worker:
        print(json.dumps(worker(a.worker, a)))
        return
    specs = [p for p in a.presets.split(",") if p] + a.model
    if BUNDLED.is_file() and str(BUNDLED) not in specs:
        specs.append(str(BUNDLED))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        drv_file = Path(tmp) / "driver.json"
        pts, ms = track_driver_points(a.frames)
        drv_file.write_text(json.dumps({"points": pts, "ms": ms}))
        for spec in specs:
            t0 = time.time()
            cmd = [sys.executable, __file__, "--worker", spec, "--driver", str(drv_file), "--batches",
                   ",".join(map(str, a.batches)), "--frames", str(a.frames), "--shots", ",".join(map(str, a.shots)),
                   "--ft-steps", str(a.ft_steps), "--threads", str(a.threads), "--ft-budget", str(a.ft_budget),
                   "--repeat", str(a.repeat)]
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if p.returncode != 0:
                print(f"{spec}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(f"[{Path(spec).stem}] measured in {time.time() - t0:.0f} s", file=sys.stderr)
            if a.json:  # saved after each model: a run stopped early keeps what it measured
                Path(a.json).write_text(json.dumps({"threads": a.threads, "frames": a.frames, "landmarks_ms": ms,
                                                    "models": results}, indent=2))
    table = [row for r in results for row in rows_for(r)]
    print(f"\nanimation, {a.threads} torch threads, {a.frames} driving frames of the bundled clip "
          f"(landmarks measured once: {ms:.1f} ms/frame)")
    print(f"{'model':24} {'S':>4} {'batch':>5} {'landm':>7} {'raster':>7} {'G':>8} {'encode':>7} {'total':>8} "
          f"{'fps':>6}  {'share lm/G/enc':>15}  {'warp':>6} {'G÷warp':>7} {'e2e÷warp':>8} {'G cpu':>7} "
          f"{'warp cpu':>8} {'÷ cpu':>6}")
    for t in table:
        print(f"{t['model'][:24]:24} {t['S']:4d} {t['batch']:5d} {t['landmarks_ms']:7.1f} {t['rasterize_ms']:7.1f} "
              f"{t['generator_ms']:8.1f} {t['encode_ms']:7.1f} {t['total_ms']:8.1f} {t['fps']:6.1f}  "
              f"{100 * t['share_landmarks']:4.0f}/{100 * t['share_generator']:3.0f}/{100 * t['share_encode']:3.0f} %  "
              f"{t['warp_ms']:6.1f} {t['render_vs_warp']:7.1f} {t['end_to_end_vs_warp']:8.2f} "
              f"{t['generator_cpu_ms']:7.1f} {t['warp_cpu_ms']:8.1f} {t['generator_vs_warp_cpu']:6.1f}")
    print("(ms per frame; G÷warp = (landmark image + generator) / warp baseline; e2e÷warp = whole pipeline with "
          "the model / with the warp; G cpu, warp cpu: process CPU ms per frame, all threads — steadier than wall "
          "time on a shared machine; ÷ cpu = their ratio)")
    print(f"\nfine-tuning (FT, {a.ft_steps} steps measured per T) and memory")
    print(f"{'model':24} {'T':>3} {'s/step':>7} {'fixed s':>8} {'measured s':>10} {'steps':>6} {'projected s':>11} "
          f"{'peak MB':>8}")
    for r in results:
        for f in r["finetune"]:
            if "skipped" in f:
                print(f"{r['model'][:24]:24} {f['T']:3d}  skipped: {f['skipped']}")
                continue
            print(f"{r['model'][:24]:24} {f['T']:3d} {f['s_per_step']:7.2f} {f['fixed_s']:8.2f} "
                  f"{f['measured_s']:10.1f} {f['config_steps']:6d} {f['projected_s']:11.1f} {r['peak_rss_mb']:8.0f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"threads": a.threads, "frames": a.frames, "landmarks_ms": ms,
                                            "models": results, "table": table}, indent=2))
        print(f"saved {a.json}")


if __name__ == "__main__":
    main()

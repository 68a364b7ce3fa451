"""Speed targets of the warp-guided generator (DESIGN.md §2, the `warp` preset), measured side by side in one run.

Model: --model FILE (a warp-guided model file), by default a randomly initialised `warp` preset model (E, G
and D, seed 0) saved to a temporary file with checkpoint.save_model: speed does not depend on the weights. The
output's first lines say which one was used. Photo: --photo (default the bundled portrait); driving poses:
the first --frames frames of the bundled driving clip (dlib detect + track), retargeted to the photo's face
as the pipeline does (relative motion, first frame as the reference).

Rows (each printed as it is measured, then as one markdown table):
  1a  G forward per frame, paper-style G of the `small` preset (128², the old bundled model's architecture;
      random weights), batch 1 and --batch: spectral norm folded, ψ = P·ê computed once, torch.inference_mode,
      the driving poses' landmark images as input (bench_generator.py's "fold+inference_mode" variant).
  1b  G forward per frame, warp-guided G of the model under test (`nn.build_generator(cfg.model)` with the
      model's weights), batch 1 and --batch: `G(y, ψ, source, source_y, coarse_grid,
      features=G.encode(source))` with ψ and the source's encoder features computed once (as the Animator
      caches them), spectral norm folded, torch.inference_mode; the coarse landmark flow grids are computed
      beforehand (row 2 includes them). Target ≤ 25 ms/frame.
  2   the Animator's whole path per frame for the warp-guided G, batch 1 and --batch:
      `Animator.render_points(points)` (landmark images + landmarks.warp.flow_grid per pose + G.render with
      the cached source features) at S = 128, and `render_points(points, full_size=True)` which also
      composes the frame at the face's size R in the photo (the flow upsampled moves the photo's own pixels
      at R, plus the network's correction upsampled; R is reported). The stage shares (flow grid, landmark images, G, compose at R) come from
      wrapping those calls during the timed repeats (mean ms/frame). Below them, `flow_grid` alone per pose
      in this process and in a fresh one, both with OPENBLAS_NUM_THREADS=1 (timing.py, the CLI and the tests
      set it: on a loaded 2-core machine scipy's Delaunay.find_simplex stalled on OpenBLAS's worker threads,
      ~1 s per call instead of ~2 ms); the pair of rows shows that the process's state does not matter.
  3   avatars from one photo (T = 1). "FF avatar" is `avatar.make_ff_avatar([photo], model, shots=1)` with
      the model file loaded beforehand (its load is an info row): reading the photo, dlib's detector and
      shape predictor set-up (loaded once per thread and cached: only the cold "first call" pays it), face detection + landmarks, crop, E;
      target < 1 s. Its "after detection" sub-row is the part after the face is found (crop, landmark image,
      E, the avatar), and "first call" the same call cold (first in the process). "FT avatar" is
      `train.finetune.make_avatar([photo], model_path, mode="ft", shots=1)` with the model's default
      fine-tuning steps run to the end (patience 0: no early exit, the worst case), measured once, including
      the model file load and face detection (its note gives the seconds spent in flow_grid: with one photo
      every step deforms it with 4 flow grids); target < 30 s. --ft-steps N runs N steps instead and projects
      the time to the default steps from the measured seconds per step (the row says so).

Clocks, as the other benchmarks (timing.measure): "wall" is time.perf_counter(), "cpu/thr" time.process_time()
(all threads of this process) divided by --threads; medians over --repeats timed calls after one warm-up
(FT: one call). A target is checked on both clocks: on an idle machine wall time is the figure; on a shared
one a busy neighbour inflates wall time but not our CPU time, so "pass (cpu/thr), FAIL (wall)" points at the
load. cpu/thr understates single-threaded work (dlib's detection, Delaunay in flow_grid) by the thread count.
The load average is printed in the header.

    python benchmarks/bench_warp.py [--model FILE] [--photo IMAGE] [--threads 2] [--repeats 5] [--batch 8]
        [--frames 8] [--ft-steps N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from timing import StageTimer, Stopwatch, header, in_own_process, measure, report  # before torch: OpenMP workers wait passively

import numpy as np
import torch

G_TARGET_MS = 25.0  # warp-guided G forward, ms per frame
FF_TARGET_S = 1.0  # FF avatar from one photo, seconds
FT_TARGET_S = 30.0  # FT avatar from one photo (T = 1, default steps), seconds


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="warp-guided model file [default: a random-init `warp` preset model]")
    ap.add_argument("--photo", help="source photo [default: talkinghead.bundled.PORTRAIT]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    ap.add_argument("--batch", type=int, default=8, help="the batch size measured besides 1")
    ap.add_argument("--frames", type=int, default=8, help="driving poses (the first frames of the bundled clip)")
    ap.add_argument("--ft-steps", type=int, help="FT steps to run [default: the model's finetune.steps]; "
                    "fewer are projected to the default")
    ap.add_argument("--json", help="save the rows to this file")
    ap.add_argument("--flow-worker", help=argparse.SUPPRESS)  # JSON file of poses: time flow_grid, report
    a = ap.parse_args(argv)
    a.frames = max(a.frames, a.batch)
    return a


# -- inputs ------------------------------------------------------------------------------------------------
def model_file(a, tmp: Path) -> tuple[Path, str]:
    """(model file, how to describe it): --model, or a random-init `warp` preset model saved under tmp."""
    if a.model:
        return Path(a.model), f"model file {a.model}"
    from talkinghead.persons.checkpoint import save_model
    from talkinghead.config import preset
    from talkinghead.nn import build_models

    torch.manual_seed(0)
    cfg = preset("warp")
    path = tmp / "warp_random.safetensors"
    save_model(path, cfg, *build_models(cfg.model))  # with D, as training writes model files (FT uses it)
    return path, "randomly initialised `warp` preset model (seed 0, temp file; speed does not depend on the weights)"


def driving_points(avatar, frames: int) -> np.ndarray:
    """(F, 68, 2) driving poses in the avatar's crop pixels: the first `frames` frames of the bundled clip
    (detect + track), retargeted relative to its first frame (pipeline.driving_targets' maths)."""
    from talkinghead.bundled import DRIVING
    from talkinghead.landmarks.detect import DlibDetector
    from talkinghead.landmarks.track import VideoLandmarkTracker
    from talkinghead.landmarks.retarget import retarget
    from talkinghead.media.video import iter_frames, probe_video

    tracker = VideoLandmarkTracker(DlibDetector(upsample=0, max_side=960), fps=probe_video(DRIVING).fps)
    faces = [tracker.update(im) for im in iter_frames(DRIVING, max_frames=frames)]
    found = [np.asarray(f.points, np.float32) for f in faces if f is not None]
    if not found:
        raise SystemExit("no face found in the bundled driving clip")
    seq = np.stack([np.asarray(f.points, np.float32) if f is not None else found[0] for f in faces])
    return retarget(avatar.source_points, seq, seq[0])  # (F, 68, 2)


# -- rows ----------------------------------------------------------------------------------------------------
def row(num: str, what: str, t, threads: int, batch="", unit="ms", target=None, stat="median", **extra) -> dict:
    """A table row from a timing.Timing (ms per item, or seconds per call for unit "s")."""
    scale = 1.0 if unit == "ms" else 1e-3 * t.items
    r = {"row": num, "what": what, "batch": batch, "unit": unit,
         "wall": t.ms("wall", stat) * scale, "cpu_thr": t.ms("cpu", stat, threads) * scale, "target": target}
    r.update(extra)
    show(r)
    return r


def verdict(r: dict) -> str:
    if r.get("target") is None:
        return "—"
    ok = {c: r[c] <= r["target"] for c in ("wall", "cpu_thr")}
    if all(ok.values()):
        return "pass"
    if not any(ok.values()):
        return "FAIL"
    return "pass (cpu/thr), FAIL (wall)" if ok["cpu_thr"] else "pass (wall), FAIL (cpu/thr)"


def fmt(v: float, unit: str) -> str:
    return f"{v:.1f} ms" if unit == "ms" else f"{v:.2f} s"


def show(r: dict) -> None:
    tgt = "" if r["target"] is None else f"  target {'≤' if r['unit'] == 'ms' else '<'} {fmt(r['target'], r['unit'])}" \
                                        f" -> {verdict(r)}"
    bs = f" bs{r['batch']}" if r["batch"] != "" else ""
    note = f"  [{r['note']}]" if r.get("note") else ""
    print(f"  {r['row']:3} {r['what']}{bs}: wall {fmt(r['wall'], r['unit'])}, cpu/thr {fmt(r['cpu_thr'], r['unit'])}"
          f"{tgt}{note}", flush=True)


def generator_rows(lm, avatar, pts: np.ndarray, a) -> list[dict]:
    """Rows 1a (paper-style G of `small`) and 1b (the model's warp-guided G): ms/frame at batch 1 and a.batch."""
    from talkinghead.config import preset
    from talkinghead.media.images import from_uint8
    from talkinghead.landmarks.rasterize import landmark_image_tensor
    from talkinghead.landmarks.warp import flow_grid
    from talkinghead.nn import build_generator, fold_spectral_norm

    rows = []
    batches = sorted({1, a.batch})
    small = preset("small").model
    torch.manual_seed(0)
    G = fold_spectral_norm(build_generator(small).eval())
    y = landmark_image_tensor(pts, small.image_size)  # (F, 3, 128, 128)
    with torch.inference_mode():
        psi = G.project(torch.randn(1, small.embed_dim))  # (1, P), once per avatar
    for bs in batches:
        def f(bs=bs):
            with torch.inference_mode():
                return G(y[:bs], psi)
        rows.append(row("1a", f"G forward, paper-style G (`small` preset, {small.image_size}²)",
                        measure(f, a.repeats, items=bs), a.threads, bs))

    cfg = lm.cfg.model
    S = cfg.image_size
    G = build_generator(cfg)  # a copy of the model's G: the Animator of row 2 folds the model's own G in place
    G.load_state_dict(lm.G.state_dict())
    G = fold_spectral_norm(G.eval())
    y = landmark_image_tensor(pts, S)  # (F, 3, S, S)
    source = from_uint8(avatar.source_crop)[None]  # (1, 3, S, S)
    source_y = landmark_image_tensor(avatar.source_points, S)[None]  # (1, 3, S, S)
    grids = torch.stack([flow_grid(avatar.source_points, p, S) for p in pts])  # (F, S, S, 2)
    with torch.inference_mode():
        psi = G.project(avatar.embedding.view(1, -1))  # (1, P)
        feats = G.encode(source)  # once per avatar
    for bs in batches:
        def f(bs=bs):
            with torch.inference_mode():
                return G(y[:bs], psi, source, source_y, grids[:bs], features=feats)
        rows.append(row("1b", f"G forward, warp-guided G ({lm.cfg.name} config, {S}²)",
                        measure(f, a.repeats, items=bs), a.threads, bs, target=G_TARGET_MS))
    return rows


def time_flow_grid(source_points, pts, size: int, repeats: int):
    """timing.Timing of landmarks.warp.flow_grid per driving pose (items = poses)."""
    from talkinghead.landmarks.warp import flow_grid

    return measure(lambda: [flow_grid(source_points, p, size) for p in pts], repeats, items=len(pts))


def flow_worker(path: str) -> None:
    """--flow-worker: flow_grid per pose in this (fresh) process; the result as report()'s last line."""
    d = json.loads(Path(path).read_text())
    torch.set_num_threads(d["threads"])
    t = time_flow_grid(np.asarray(d["source"], np.float32), np.asarray(d["points"], np.float32), d["size"],
                       d["repeats"])
    report({"wall": t.ms("wall", "median"), "cpu": t.ms("cpu", "median")})


def flow_rows(avatar, pts: np.ndarray, a, tmp: Path) -> list[dict]:
    """Row 2's flow_grid alone: here (numpy/scipy's BLAS as loaded) and in a fresh process with one BLAS thread."""
    S = avatar.image_size
    rows = [row("2", "of which landmarks.warp.flow_grid alone, this process", time_flow_grid(
        avatar.source_points, pts, S, a.repeats), a.threads, 1)]
    job = tmp / "flow.json"
    job.write_text(json.dumps({"source": np.asarray(avatar.source_points).tolist(), "points": pts.tolist(),
                               "size": S, "repeats": a.repeats, "threads": a.threads}))
    old = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # inherited by the child only: this process's OpenBLAS is loaded
    try:
        d = in_own_process(Path(__file__), ["--flow-worker", str(job)])
    finally:
        if old is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = old
    rows.append({"row": "2", "what": "of which landmarks.warp.flow_grid alone, own process, OPENBLAS_NUM_THREADS=1",
                 "batch": 1, "unit": "ms", "wall": d["wall"], "cpu_thr": d["cpu"] / a.threads, "target": None})
    show(rows[-1])
    return rows


def animator_rows(lm, avatar, pts: np.ndarray, a) -> list[dict]:
    """Row 2: Animator.render_points per frame at S and at the face's size R, with stage shares."""
    from talkinghead.inference.animator import Animator
    from talkinghead.landmarks import warp as lwarp

    an = Animator(avatar, model=lm)  # folds spectral norm (of lm.G, in place)
    rows = []
    F = len(pts)
    for full in (False, True):
        size = f"R = {an.output_size}²" if full else f"S = {an.image_size}²"
        for bs in sorted({1, a.batch}):
            def f(bs=bs, full=full):
                return [an.render_points(pts[i:i + bs], full_size=full) for i in range(0, F - F % bs, bs)]
            n = F - F % bs
            f()  # warm-up (and the full-size source crop, made once per Animator)
            st = StageTimer()
            st.wrap(lwarp, "flow_grid", "flow grid")
            st.wrap(an, "landmark_images", "landmark images")
            st.wrap(an.G, "render", "G")
            if full:
                st.wrap(an, "compose_full", "compose at R")
            try:
                t = measure(f, a.repeats, warmup=0, items=n)
            finally:
                st.restore()
                for attr in ("landmark_images", "compose_full"):  # drop the instance attributes restore() left
                    an.__dict__.pop(attr, None)
                an.G.__dict__.pop("render", None)
            calls = a.repeats * n
            stages = {k: {"wall_ms": 1e3 * sw.wall / calls, "cpu_thr_ms": 1e3 * sw.cpu / calls / a.threads}
                      for k, sw in st.stages.items()}
            note = ", ".join(f"{k} {v['wall_ms']:.1f}" for k, v in stages.items()) + " ms/frame wall (mean)"
            rows.append(row("2", f"Animator.render_points, warp G, {size}" + (" (full_size)" if full else ""),
                            t, a.threads, bs, note=note, stages=stages, output_size=an.output_size if full else an.image_size))
    return rows


def ff_rows(lm, photo: Path, a, cold: Stopwatch) -> list[dict]:
    """Row 3, FF: median of a.repeats calls with the stages before and after detection; the cold first call
    (`cold`, timed by the caller) as an info row."""
    from talkinghead.persons import shots as shots_mod
    from talkinghead.media import video
    from talkinghead.persons.avatar import make_ff_avatar
    from talkinghead.landmarks.detect import DlibDetector

    st = StageTimer()
    st.wrap(video, "read_image", "read photo")
    st.wrap(DlibDetector, "__init__", "detector set-up")
    st.wrap(DlibDetector, "detect", "detection")
    st.wrap(shots_mod, "embed_shots", "E")
    try:
        t = measure(lambda: make_ff_avatar([str(photo)], lm, shots=1), a.repeats, warmup=0)
    finally:
        st.restore()
    n = a.repeats
    stages = {k: {"wall_s": sw.wall / n, "cpu_thr_s": sw.cpu / n / a.threads} for k, sw in st.stages.items()}
    note = ", ".join(f"{k} {v['wall_s'] * 1e3:.0f}" for k, v in stages.items()) + " ms wall (mean)"
    rows = [row("3", "FF avatar, 1 photo, incl. face detection", t, a.threads, unit="s", target=FF_TARGET_S,
                note=note, stages=stages)]
    before = ("read photo", "detector set-up", "detection")
    after = {c: statistics.mean(getattr(t, c)) - sum(getattr(st.stages[k], c) / n for k in before)
             for c in ("wall", "cpu")}
    rows.append(info_row("FF avatar, after detection (crop, landmark image, E, avatar; mean)", after["wall"],
                         after["cpu"], a.threads))
    rows.append(info_row("FF avatar, first call in the process (cold)", cold.wall, cold.cpu, a.threads))
    return rows


def ft_row(lm, model_path: Path, photo: Path, a) -> dict:
    """Row 3, FT: one make_avatar(mode="ft") with the model's default steps (or --ft-steps, projected)."""
    from talkinghead.train.finetune import make_avatar

    from talkinghead.landmarks import warp as lwarp
    from talkinghead.train import augment

    default = lm.cfg.finetune.steps
    st = StageTimer()  # flow grids: one-shot fine-tuning deforms the photo with them every step
    st.wrap(lwarp, "flow_grid", "flow grid")
    st.wrap(augment, "flow_grid", "flow grid")
    try:
        with Stopwatch() as sw:
            av = make_avatar([str(photo)], model_path, mode="ft", shots=1, steps=a.ft_steps or default, patience=0,
                             progress=False)
    finally:
        st.restore()
    fg = st.stages["flow grid"]
    info = av.info["finetune"]
    wall, cpu = sw.wall, sw.cpu
    what = f"FT avatar, 1 photo, {info['steps']} steps (model default {default}), incl. model load + detection"
    note = (f"{info['seconds'] / max(info['steps'], 1):.2f} s/step wall, prepare {av.info['seconds_prepare']:.2f} s, "
            f"flow_grid {fg.wall:.1f} s wall in {fg.count} calls")
    if info["steps"] < default:  # projected to the default steps at the measured seconds per step
        extra = (default - info["steps"]) * info["seconds"] / info["steps"]
        wall, cpu = wall + extra, cpu + extra * cpu / wall
        what = f"FT avatar, 1 photo, {default} steps PROJECTED from {info['steps']}, incl. model load + detection"
    r = {"row": "3", "what": what, "batch": "", "unit": "s", "wall": wall, "cpu_thr": cpu / a.threads,
         "target": FT_TARGET_S, "note": note, "ft_steps_run": info["steps"], "ft_default_steps": default,
         "ft_seconds": info["seconds"], "ft_flow_grid_s": fg.wall, "ft_flow_grid_calls": fg.count}
    show(r)
    return r


def info_row(what: str, wall: float, cpu: float, threads: int) -> dict:
    """A row of seconds without a target."""
    r = {"row": "3", "what": what, "batch": "", "unit": "s", "wall": wall, "cpu_thr": cpu / threads, "target": None}
    show(r)
    return r


def table(rows: list[dict]) -> str:
    out = ["| # | measurement | batch | wall | cpu/thr | target | result |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        per = "/frame" if r["unit"] == "ms" else ""
        tgt = "—" if r["target"] is None else f"{'≤' if r['unit'] == 'ms' else '<'} {fmt(r['target'], r['unit'])}{per}"
        out.append(f"| {r['row']} | {r['what']} | {r['batch']} | {fmt(r['wall'], r['unit'])}{per} | "
                   f"{fmt(r['cpu_thr'], r['unit'])}{per} | {tgt} | {verdict(r)} |")
    return "\n".join(out)


def main(argv=None) -> None:
    a = parse_args(argv)
    if a.flow_worker:
        return flow_worker(a.flow_worker)
    torch.set_num_threads(a.threads)
    from talkinghead.bundled import PORTRAIT
    from talkinghead.persons.checkpoint import LoadedModel

    photo = Path(a.photo) if a.photo else PORTRAIT
    load = os.getloadavg()
    print(header(a.threads))
    print(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min); median of {a.repeats} "
          f"timed calls after a warm-up; wall and process CPU / {a.threads} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_warp_") as tmp:
        path, described = model_file(a, Path(tmp))
        print(f"model: {described}\nphoto: {photo}", flush=True)
        with Stopwatch() as t_load:
            lm = LoadedModel.load(path, with_discriminator=False)
        if lm.cfg.model.generator != "warp":
            raise SystemExit(f"{path}: generator {lm.cfg.model.generator!r}; this benchmark measures the "
                             "warp-guided generator (model.generator = 'warp')")
        from talkinghead.persons.avatar import make_ff_avatar

        with Stopwatch() as cold:  # the first FF avatar of the process; rows 1b and 2 animate it
            avatar = make_ff_avatar([str(photo)], lm, shots=1)
        pts = driving_points(avatar, a.frames)
        print(f"driving poses: the first {len(pts)} frames of the bundled clip, retargeted to the photo's face",
              flush=True)
        rows = generator_rows(lm, avatar, pts, a)
        rows += animator_rows(lm, avatar, pts, a)  # folds lm.G in place (FF and FT avatars do not use it)
        rows += flow_rows(avatar, pts, a, Path(tmp))
        rows.append(info_row("model file load (before the FF avatar; not in its time)", t_load.wall, t_load.cpu,
                             a.threads))
        rows += ff_rows(lm, photo, a, cold)
        rows.append(ft_row(lm, path, photo, a))  # last: the slowest, loads its own copy of the model file
    print()
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps({"header": header(a.threads), "load_average": load, "model": described,
                                            "photo": str(photo), "threads": a.threads, "repeats": a.repeats,
                                            "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

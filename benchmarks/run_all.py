"""The benchmark suite in sequence with small settings (`make bench`): each script in its own process, its
output shown as it comes and kept in OUT/<script>.txt (JSON where the script writes one), then a summary of
wall times and exit codes. The whole run stays under --budget seconds (default 14 minutes): a script is
stopped at its own time limit or when the budget runs out, and the rest are listed as skipped.

    python benchmarks/run_all.py [--out runs/bench] [--budget 840] [--only animation,metrics]

One heavy process at a time; torch threads as each script's default (2 for model timings, 1 where the
scripts measure per-core costs). On a machine shared with training, timings are noisy: compare ratios measured
within one script (they share the conditions) rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# (name, script, arguments, time limit in seconds); {out} is replaced by the output folder. Every benchmark
# script of this folder is here (main() checks it); the limits add up to about the budget (14 minutes).
SUITE = [
    ("models", "nn_models.py", ["--presets", "tiny,small,paper", "--repeats", "2", "--threads", "2"], 60),
    ("metrics", "bench_metrics.py", ["--batch", "4", "--repeat", "1", "--threads", "1"], 75),
    ("perceptual", "bench_perceptual.py", ["--reps", "2"], 60),
    ("data", "bench_data.py", ["--frames", "40"], 60),
    ("generator", "bench_generator.py", ["--presets", "small", "--batches", "1", "--repeats", "2", "--threads", "2",
                                         "--json", "{out}/generator.json"], 60),
    ("train", "bench_train.py", ["--presets", "tiny", "--steps", "2", "--json", "{out}/train.json"], 60),
    # the warp-guided generator's speed targets; FT: 3 steps projected to the model's default (the standalone
    # run's default runs them all)
    ("warp", "bench_warp.py", ["--repeats", "1", "--batch", "4", "--frames", "4", "--ft-steps", "3", "--threads", "2",
                               "--json", "{out}/warp.json"], 75),
    # live puppeteering with the bundled clip as the camera (5 s in real time) and 48 frames back to back
    ("live", "bench_live.py", ["--cameras", "talkinghead/assets/driving.mp4", "--threads", "1",
                               "--capacity-frames", "48", "--json", "{out}/live.json"], 45),
    # driver landmarks: jitter, lag, occlusion of per-frame detection vs the old and new tracker (one clip, short)
    ("tracking", "bench_tracking.py", ["--clips", "videos/pexels_woman.mp4", "--frames", "120",
                                       "--json", "{out}/tracking.json"], 60),
    # face finding per detector stage and for the cascade: 7 images (3 with 68-point truth, a painting, the statue,
    # the cartoon, a mask no stage finds); the standalone run's default takes all of images/ (~5 min)
    ("detectors", "bench_detectors.py", ["--images", "breakingbad.jpg,einstein.jpg,takeo.png,monalisa.jpg,"
                                         "portraits/lp_s6.jpg,portraits/lp_s7.jpg,ironman.jpg",
                                         "--tilt-images", "chuck_crop.jpg,audrey_crop.jpg",
                                         "--json", "{out}/detectors.json"], 90),
    # the invisible mark: cost, and detection / false positives on a few real files (the standalone run's
    # defaults take every real video and image, ~15 min)
    ("watermark", "bench_watermark.py", ["--max-videos", "2", "--frames", "12", "--fp-max-files", "8",
                                         "--fp-frames", "20", "--null-frames", "0", "--repeats", "2",
                                         "--json", "{out}/watermark.json"], 60),
    # speech as the driver: ~10 s of espeak-ng speech -> the Mona Lisa's mp4, and the lip gap against speech activity
    ("speech", "bench_speech.py", ["--json", "{out}/speech.json"], 60),
    # animate end to end on the demo's photo and clip: the sequential loop against the writer thread
    ("end_to_end", "bench_end_to_end.py", ["--repeats", "1", "--json", "{out}/end_to_end.json"], 60),
    # teeth and blinks of animate's output against the bundled driver
    ("mouth_eyes", "bench_mouth_eyes.py", ["--quick", "--json", "{out}/mouth_eyes.json"], 90),
    # last: it takes what the budget leaves (its FT part stops after --ft-budget seconds per model). The paper
    # preset (256², ~3 s per frame and ~1 min per FT step here) is left to the standalone run's defaults.
    ("animation", "bench_animation.py", ["--presets", "tiny,small", "--frames", "8", "--batches", "1,8",
                                         "--ft-steps", "2", "--shots", "1,8,32", "--ft-budget", "20", "--repeat", "1",
                                         "--pipeline", "tiny", "--avatar-ft-steps", "5", "--threads", "2",
                                         "--json", "{out}/animation.json"], 150),
]
HELPERS = {"run_all.py", "timing.py", "animation_pipeline.py"}  # modules of the suite, not benchmarks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "runs" / "bench"), help="output folder [default: runs/bench]")
    ap.add_argument("--budget", type=float, default=840, help="seconds for the whole suite [default: 840]")
    ap.add_argument("--only", help="comma-separated names: " + ",".join(n for n, *_ in SUITE))
    a = ap.parse_args()
    missing = {p.name for p in HERE.glob("*.py")} - HELPERS - {script for _, script, *_ in SUITE}
    if missing:  # a benchmark added to the folder but not to the suite
        raise SystemExit(f"run_all.py: not in SUITE: {', '.join(sorted(missing))}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(a.only.split(",")) if a.only else None
    t_start = time.time()
    summary = []
    for name, script, args, limit in SUITE:
        if only is not None and name not in only:
            continue
        left = a.budget - (time.time() - t_start)
        if left < 20:
            summary.append({"name": name, "status": "skipped (budget)", "seconds": 0.0})
            continue
        cmd = [sys.executable, str(HERE / script), *[x.replace("{out}", str(out)) for x in args]]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.time()
        log = open(out / f"{name}.txt", "w")
        p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed = []
        timer = threading.Timer(min(limit, left), lambda: (killed.append(True), p.kill()))
        timer.start()
        try:
            for line in p.stdout:  # stream; the loop ends when the process closes its output
                sys.stdout.write(line)
                log.write(line)
            status = p.wait()
        finally:
            timer.cancel()
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
        dt = time.time() - t0
        timed_out = bool(killed)
        summary.append({"name": name, "status": "timeout" if timed_out else ("ok" if status == 0 else f"exit {status}"),
                        "seconds": round(dt, 1)})
    total = time.time() - t_start
    print(f"\n=== suite: {total:.0f} s (budget {a.budget:.0f} s) -> {out}")
    for s in summary:
        print(f"  {s['name']:12} {s['status']:18} {s['seconds']:7.1f} s")
    (out / "summary.json").write_text(json.dumps({"seconds": round(total, 1), "scripts": summary}, indent=2))
    return 0 if all(s["status"] == "ok" for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())

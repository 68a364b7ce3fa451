"""Training speed and memory: the Trainer vs a minimal hand-written loop over the same networks and losses.

Each (preset, loop) runs in its own process so that peak resident memory (ru_maxrss) is its own; both loops
run 2 warm-up steps, then --steps timed steps on synthetic episodes (the minimal loop's timing leaves out
fetching the batch; the Trainer's includes its data loader). Prints steps/s, ms/step on wall and process-CPU
time, peak RSS and the trainer/minimal ratios; `--json FILE` saves the table.

    python benchmarks/bench_train.py [--presets tiny,small] [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

from timing import Stopwatch, header, in_own_process, peak_rss_mb, report


def synthetic_dataset(cfg):
    import torch

    class Episodes(torch.utils.data.Dataset):
        num_videos = cfg.model.num_videos

        def __len__(self):
            return 1000

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            s, k = cfg.model.image_size, cfg.train.shots
            return {"shots_x": torch.rand(k, 3, s, s, generator=g) * 2 - 1,
                    "shots_y": torch.rand(k, 3, s, s, generator=g) * 2 - 1,
                    "target_x": torch.rand(3, s, s, generator=g) * 2 - 1,
                    "target_y": torch.rand(3, s, s, generator=g) * 2 - 1,
                    "video_index": torch.tensor(i % cfg.model.num_videos)}

    return Episodes()


def minimal_step(b, E, G, D, opts, terms, lc) -> None:
    """One hand-written meta-learning step (paper §3.2): G/E phase, then D phase (hinge)."""
    import torch

    from talkinghead.train import losses

    opt_g, opt_d, opt_w = opts
    B, K = b["shots_x"].shape[:2]
    e = E(b["shots_x"].flatten(0, 1), b["shots_y"].flatten(0, 1)).view(B, K, -1).mean(1)
    fake = G(b["target_y"], G.project(e))
    w_i = D.video_vectors(b["video_index"])
    fs, ff = D(fake, b["target_y"], w=w_i.detach() + D.w0)
    with torch.no_grad():
        _, rf = D(b["target_x"], b["target_y"], w=w_i.detach() + D.w0)
    lg = (losses.content_loss(fake, b["target_x"], terms) if terms else 0) \
        + lc.pixel_l1_weight * losses.pixel_l1(fake, b["target_x"]) \
        + losses.generator_adv_loss(fs) + lc.fm_weight * losses.feature_matching_loss(rf, ff) \
        + lc.mch_weight * losses.embedding_match_loss(w_i, e)
    opt_g.zero_grad(), opt_w.zero_grad(), opt_d.zero_grad()
    lg.backward()
    opt_g.step(), opt_w.step()
    opt_d.zero_grad(), opt_w.zero_grad()
    sc, _ = D(torch.cat([b["target_x"], fake.detach()]), torch.cat([b["target_y"]] * 2),
              torch.cat([b["video_index"]] * 2))
    r, f = sc.chunk(2)
    losses.hinge_d_loss(r, f).backward()
    opt_d.step(), opt_w.step()


def minimal_loop(cfg, ds, steps: int) -> Stopwatch:
    """2 warm-up steps, then `steps` timed steps of the minimal loop (batch fetching not timed)."""
    import torch

    from talkinghead.nn import build_models
    from talkinghead.train.objective import build_content_terms

    E, G, D = build_models(cfg.model)
    terms = build_content_terms(cfg, "cpu")
    opts = (torch.optim.Adam([*E.parameters(), *G.parameters()], lr=cfg.train.lr_ge),
            torch.optim.Adam([p for n, p in D.named_parameters() if n != "W.weight"], lr=cfg.train.lr_d),
            torch.optim.SparseAdam([D.W.weight], lr=cfg.train.lr_d))
    it = iter(torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size))
    sw = Stopwatch()
    for s in range(steps + 2):
        b = next(it)
        with sw if s >= 2 else contextlib.nullcontext():
            minimal_step(b, E, G, D, opts, terms, cfg.loss)
    return sw


def worker(preset: str, loop: str, steps: int, threads: int) -> dict:
    import torch

    from talkinghead.config import preset as get_preset
    from talkinghead.train.meta import Trainer

    torch.set_num_threads(threads)
    cfg = get_preset(preset)
    cfg.model.num_videos = 8
    cfg.train.num_workers = 0
    cfg.train.steps = steps + 2
    cfg.train.sample_every = 0
    cfg.train.ckpt_every_steps = 10**9
    cfg.train.ckpt_every_minutes = 10**9
    ds = synthetic_dataset(cfg)
    if loop == "trainer":
        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(cfg, d, dataset=ds, device="cpu", progress=False)
            tr.train(max_steps=2)  # warm-up
            with Stopwatch() as sw:
                tr.train(max_steps=steps)
    else:
        sw = minimal_loop(cfg, ds, steps)
    return {"preset": preset, "loop": loop, "steps": steps, "steps_per_s": steps / sw.wall,
            "ms_per_step": 1000 * sw.wall / steps, "cpu_ms_per_step": 1000 * sw.cpu / steps / threads,
            "peak_rss_mb": peak_rss_mb(), "batch": cfg.train.batch_size, "shots": cfg.train.shots,
            "image_size": cfg.model.image_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="save results to this file")
    ap.add_argument("--worker", nargs=2, metavar=("PRESET", "LOOP"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        report(worker(a.worker[0], a.worker[1], a.steps, a.threads))
        return
    print(header(a.threads), flush=True)
    rows = [in_own_process(__file__, ["--worker", p, loop, "--steps", str(a.steps), "--threads", str(a.threads)])
            for p in a.presets.split(",") for loop in ("minimal", "trainer")]
    print(f"{'preset':8} {'loop':8} {'size':>5} {'B×K':>5} {'steps/s':>8} {'ms/step':>9} {'cpu/thr ms':>10} "
          f"{'peak MB':>8}")
    for r in rows:
        print(f"{r['preset']:8} {r['loop']:8} {r['image_size']:5d} {r['batch']}×{r['shots']:<3} "
              f"{r['steps_per_s']:8.2f} {r['ms_per_step']:9.1f} {r['cpu_ms_per_step']:10.1f} {r['peak_rss_mb']:8.0f}")
    for p in a.presets.split(","):
        m, t = (next(r for r in rows if r["preset"] == p and r["loop"] == loop) for loop in ("minimal", "trainer"))
        print(f"{p}: trainer/minimal time per step = {t['ms_per_step'] / m['ms_per_step']:.3f} wall, "
              f"{t['cpu_ms_per_step'] / m['cpu_ms_per_step']:.3f} CPU")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

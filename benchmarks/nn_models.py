"""Parameter counts of E, G (incl. P), D (trunk; W per video) for each preset, and G forward time (batch 1).

    python benchmarks/nn_models.py [--threads 2] [--presets tiny,small,paper] [--repeats 5] [--fold]
"""

from __future__ import annotations

import argparse
import time

import torch

from talkinghead.config import preset
from talkinghead.nn import build_models, count_parameters, fold_spectral_norm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="tiny,small,paper")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-time", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.presets.split(","):
        cfg = preset(name).model
        torch.manual_seed(0)
        E, G, D = build_models(cfg)
        n = cfg.embed_dim
        print(f"[{name}] S={cfg.image_size} N={n}: E {count_parameters(E):,} | G {count_parameters(G):,} "
              f"(P {count_parameters(G.proj):,}, ψ {G.num_adain_params:,}) | "
              f"D trunk+w0+b {count_parameters(D, exclude=('W.',)):,} + W {n} per video")
        if args.no_time:
            continue
        dev = torch.device(args.device)
        G = G.to(dev).eval()
        y = torch.rand(1, 3, cfg.image_size, cfg.image_size, device=dev) * 2 - 1
        psi = G.project(torch.rand(1, n, device=dev))
        for label in ("spectral-norm", "folded"):
            if label == "folded":
                fold_spectral_norm(G)
            with torch.inference_mode():
                G(y, psi)  # warm-up
                ts = []
                for _ in range(args.repeats):
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    G(y, psi)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    ts.append(time.perf_counter() - t0)
            ts.sort()
            print(f"    G forward ({label}, batch 1, {args.threads} threads, {dev}): "
                  f"median {1e3 * ts[len(ts) // 2]:.1f} ms, min {1e3 * ts[0]:.1f} ms")


if __name__ == "__main__":
    main()

"""Parameter counts of E, G (incl. P), D (trunk; W per video) for each preset, and G forward time (batch 1).

    python benchmarks/nn_models.py [--threads 2] [--presets tiny,small,paper] [--repeats 5] [--no-time]
                                   [--device cpu|cuda]
"""

from __future__ import annotations

import argparse

from timing import header, measure  # before torch: OpenMP workers wait passively

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
    print(header(args.threads))
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
        sync = torch.cuda.synchronize if dev.type == "cuda" else None
        for label in ("spectral-norm", "folded"):
            if label == "folded":
                fold_spectral_norm(G)
            with torch.inference_mode():
                t = measure(lambda: G(y, psi), args.repeats, sync=sync)
            print(f"    G forward ({label}, batch 1, {args.threads} threads, {dev}): "
                  f"median {t.ms(stat='median'):.1f} ms, min {t.ms():.1f} ms wall; "
                  f"median {t.ms('cpu', 'median'):.1f} ms process CPU")


if __name__ == "__main__":
    main()

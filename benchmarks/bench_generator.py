"""Generator inference speed: the unoptimised forward vs optimised variants, side by side in one run.

For each preset (random weights; speed does not depend on them) and batch size, every variant renders the
same landmark images with the same person; reported per variant:
  ms/frame  median over --repeats timed calls, divided by the batch size; "wall" is time.perf_counter(),
            "cpu/thr" is time.process_time() (all threads of this process) divided by --threads, a fairer
            figure on a shared machine (a busy neighbour inflates wall time, not our CPU time);
  speedup   unoptimised / variant, on the same clock;
  max|Δ|, mean|Δ|  of the output (in [-1, 1]) against the unoptimised fp32 output.
Tolerance (--tol, default 1/255, i.e. half a level of the 8-bit frame the output becomes): max|Δ| ≤ tol
is "exact enough" (ok), else "LOSSY".

Variants (cumulative from "psi cached" on, each adds one thing to "fold+inference_mode" unless noted):
  unoptimised          spectral-norm parametrizations live, ψ = P·ê recomputed every call, torch.no_grad,
                       self-attention in one shot (the training form: a full HW × HW softmax)
  psi cached           ψ computed once per avatar (as Animator does)
  fold                 + spectral norm folded into plain weights
  fold+inference_mode  + torch.inference_mode instead of no_grad
  +chunked attention   + self-attention 512 queries at a time (SelfAttention's inference path; same maths)
  +chunked+channels_last  + channels-last memory format for weights and input
  +sdpa attention      + self-attention through F.scaled_dot_product_attention (scale 1, same maths)
  +channels_last       + channels-last memory format (one-shot attention)
  +bf16 autocast       + torch.autocast(cpu, bfloat16) (chunked attention)
  +fp16 autocast       + torch.autocast(cpu, float16) (chunked attention)
  +jit trace/freeze    + torch.jit.trace + torch.jit.freeze (chunked attention)
  onnxruntime          Animator(backend="onnx")'s session: folded G exported with ψ as an input (TorchScript
                       exporter, opset 17, one-shot attention), ORT CPU EP, --threads intra-op threads
  onnxruntime chunked  the same, exported under no_grad (chunked attention unrolled into the graph)

    python benchmarks/bench_generator.py [--presets paper,small] [--batches 1,4] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

# On a shared 2-core machine spinning OpenMP workers cost a scheduler slice (~13 ms) per parallel op when the
# other core is busy; passive waiting avoids it (set OMP_WAIT_POLICY=ACTIVE to compare). Before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

from talkinghead.animate import _onnx_session
from talkinghead.config import preset
from talkinghead.nn import Generator, fold_spectral_norm
from talkinghead.nn.layers import SelfAttention


def sdpa_attention_forward(self: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """SelfAttention.forward with the attention computed by F.scaled_dot_product_attention (scale 1, as
    SAGAN: softmax(qᵀk) without 1/√d): same maths, fused kernel, no (HW × HW) matrix kept in memory."""
    b, c, hh, ww = x.shape
    q = self.f(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, k)
    k = self.g(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, k)
    v = self.h(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, C)
    o = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, 1, HW, C)
    return x + self.gamma * o[:, 0].transpose(1, 2).reshape(b, c, hh, ww)


def use_sdpa(G: torch.nn.Module) -> torch.nn.Module:
    for m in G.modules():
        if isinstance(m, SelfAttention):
            m.forward = sdpa_attention_forward.__get__(m)
    return G


def timed(fn, repeats: int, warmup: int = 1) -> tuple[float, float, torch.Tensor]:
    """(median wall s, median process-CPU s, last output) of `repeats` calls after `warmup` calls."""
    out = None
    for _ in range(warmup):
        out = fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def one_shot_attention(G: torch.nn.Module, on: bool = True) -> torch.nn.Module:
    """Self-attention in one shot (the training form) also at inference, as before chunking existed."""
    for m in G.modules():
        if isinstance(m, SelfAttention):
            m.chunk = 1 << 30 if on else SelfAttention.chunk
    return G


def clone(G: Generator, cfg, chunked: bool = False) -> Generator:
    """An independent, spectral-norm-folded copy (copy.deepcopy shares the parametrized classes, so folding
    a deep copy would break the original's spectral norm)."""
    G2 = Generator(cfg).eval()
    G2.load_state_dict(G.state_dict())
    return one_shot_attention(fold_spectral_norm(G2), on=not chunked)


def compute_floor(G: Generator, size: int, threads: int) -> tuple[float, float, float]:
    """(GFLOP per frame of G's convolutions + attention products, fp32 GEMM GFLOP/s per CPU-second measured
    here, the resulting lower bound in ms/frame of CPU time / threads for an fp32 forward)."""
    macs = [0]

    def conv_hook(m, i, o):
        macs[0] += o.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def attn_hook(m, i, o):
        b, c, h, w = o.shape
        macs[0] += b * (h * w) ** 2 * (m.f.out_channels + c)  # qᵀk and v·attnᵀ

    hooks = [m.register_forward_hook(conv_hook) for m in G.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(attn_hook) for m in G.modules() if isinstance(m, SelfAttention)]
    with torch.inference_mode():
        G(torch.zeros(1, 3, size, size), torch.zeros(1, G.num_adain_params))
    for h in hooks:
        h.remove()
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    _, cpu, _ = timed(lambda: a @ b, 5)
    gemm = 2 * 2048 ** 3 / cpu / 1e9  # GFLOP per CPU-second (all threads)
    gflop = 2 * macs[0] / 1e9
    return gflop, gemm, 1e3 * gflop / gemm / threads


def bench_preset(name: str, batches: list[int], repeats: int, threads: int, only: set[str] | None,
                 tol: float) -> list[dict]:
    cfg = preset(name).model
    torch.manual_seed(0)
    G0 = one_shot_attention(Generator(cfg).eval())
    with torch.no_grad():  # random weights: give the self-attention a non-zero γ so its output matters
        for m in G0.modules():
            if isinstance(m, SelfAttention):
                m.gamma.fill_(0.5)
    e = torch.randn(1, cfg.embed_dim)
    s = cfg.image_size
    rows = []
    gflop, gemm, floor = compute_floor(clone(G0, cfg, chunked=True), s, threads)
    print(f"  {name} {s}²: {gflop:.1f} GFLOP/frame (convs + attention); fp32 GEMM here {gemm:.0f} GFLOP per "
          f"CPU-second -> fp32 floor {floor:.0f} ms/frame CPU time / thread count (at GEMM peak)", flush=True)
    for bs in batches:
        torch.manual_seed(1)
        y = (torch.rand(bs, 3, s, s) < 0.05).float() * 2 - 1  # sparse "landmark image"-like input in [-1, 1]
        eb = e.expand(bs, -1)

        # ---- variants: name -> (setup() -> fn) --------------------------------------------------------------
        def unopt():
            G = G0
            return lambda: G(y, G.project(eb))

        with torch.no_grad():
            psi = G0.project(eb).contiguous()  # (B, P)

        def cached():
            return lambda: G0(y, psi)

        folded = clone(G0, cfg)
        chunked = clone(G0, cfg, chunked=True)

        def fold():
            return lambda: folded(y, psi)

        def fold_im():
            def f():
                with torch.inference_mode():
                    return folded(y, psi)
            return f

        def chunk():
            def f():
                with torch.inference_mode():
                    return chunked(y, psi)
            return f

        def chunk_cl():
            Gc = clone(G0, cfg, chunked=True).to(memory_format=torch.channels_last)
            yc = y.contiguous(memory_format=torch.channels_last)

            def f():
                with torch.inference_mode():
                    return Gc(yc, psi).contiguous()
            return f

        def sdpa():
            Gs = use_sdpa(clone(G0, cfg))

            def f():
                with torch.inference_mode():
                    return Gs(y, psi)
            return f

        def chlast():
            Gc = clone(G0, cfg).to(memory_format=torch.channels_last)
            yc = y.contiguous(memory_format=torch.channels_last)

            def f():
                with torch.inference_mode():
                    return Gc(yc, psi).contiguous()
            return f

        def bf16():
            def f():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return chunked(y, psi).float()
            return f

        def fp16():
            def f():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
                    return chunked(y, psi).float()
            return f

        def jit():
            with torch.no_grad():
                tr = torch.jit.freeze(torch.jit.trace(clone(G0, cfg, chunked=True), (y, psi), check_trace=False))

            def f():
                with torch.inference_mode():
                    return tr(y, psi)
            return f

        def onnx(grad=True):
            with torch.set_grad_enabled(grad):
                sess = _onnx_session(clone(G0, cfg, chunked=True), psi, s)
            if sess is None:
                raise RuntimeError("onnxruntime/onnx not installed (pip install 'talkinghead[fast]')")
            feed = {"y": y.numpy(), "psi": psi.numpy()}
            return lambda: torch.from_numpy(sess.run(None, feed)[0])

        variants = [("unoptimised", unopt), ("psi cached", cached), ("fold", fold),
                    ("fold+inference_mode", fold_im), ("+chunked attention", chunk),
                    ("+chunked+channels_last", chunk_cl), ("+sdpa attention", sdpa), ("+channels_last", chlast),
                    ("+bf16 autocast", bf16), ("+fp16 autocast", fp16), ("+jit trace/freeze", jit), ("onnxruntime", onnx),
                    ("onnxruntime chunked", lambda: onnx(grad=False))]
        ref = None
        base = None
        for vname, setup in variants:
            if only and vname != "unoptimised" and vname not in only:
                continue
            row = {"preset": name, "size": s, "batch": bs, "variant": vname}
            try:
                fn = setup()
                with torch.no_grad():
                    wall, cpu, out = timed(fn, repeats)
            except Exception as ex:  # report and go on (e.g. onnxruntime not installed)
                row["error"] = f"{type(ex).__name__}: {str(ex).splitlines()[0][:100]}"
                rows.append(row)
                print(f"  {name} {s}² bs{bs} {vname:22s} n/a ({row['error']})", flush=True)
                continue
            out = out.float()
            if ref is None:
                ref, base = out, (wall, cpu)
            d = (out - ref).abs()
            row.update(wall_ms=1e3 * wall / bs, cpu_ms=1e3 * cpu / threads / bs, speedup_wall=base[0] / wall,
                       speedup_cpu=base[1] / cpu, max_abs=float(d.max()), mean_abs=float(d.mean()),
                       ok=bool(d.max() <= tol))
            rows.append(row)
            print(f"  {name} {s}² bs{bs} {vname:22s} wall {row['wall_ms']:7.1f} ms/frame ({row['speedup_wall']:4.2f}x)"
                  f"  cpu/thr {row['cpu_ms']:7.1f} ms/frame ({row['speedup_cpu']:4.2f}x)"
                  f"  max|Δ| {row['max_abs']:.1e} mean|Δ| {row['mean_abs']:.1e} {'ok' if row['ok'] else 'LOSSY'}",
                  flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="paper,small")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default="", help="comma-separated subset (the unoptimised one always runs)")
    ap.add_argument("--tol", type=float, default=1 / 255)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    only = set(v.strip() for v in a.variants.split(",") if v.strip()) or None
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; torch {torch.__version__}")
    print(f"G forward, random weights, {a.threads} threads, median of {a.repeats}; tolerance max|Δ| ≤ {a.tol:.2g} "
          f"(output in [-1, 1]); speedup = unoptimised / variant", flush=True)
    rows = []
    for name in a.presets.split(","):
        rows += bench_preset(name, [int(b) for b in a.batches.split(",")], a.repeats, a.threads, only, a.tol)
    # summary table (markdown)
    print("\n| preset | batch | variant | wall ms/frame | cpu/thr ms/frame | speedup (cpu) | max|Δ| | mean|Δ| |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['preset']} {r['size']}² | {r['batch']} | {r['variant']} | n/a | n/a | n/a | {r['error']} | |")
        else:
            print(f"| {r['preset']} {r['size']}² | {r['batch']} | {r['variant']} | {r['wall_ms']:.1f} | "
                  f"{r['cpu_ms']:.1f} | {r['speedup_cpu']:.2f}x | {r['max_abs']:.1e}{'' if r['ok'] else ' (lossy)'} | "
                  f"{r['mean_abs']:.1e} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

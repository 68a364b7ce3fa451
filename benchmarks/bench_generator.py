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
import contextlib
import json
from pathlib import Path
from typing import Callable

from timing import header, measure  # before torch: OpenMP workers wait passively

import torch
import torch.nn.functional as F

from talkinghead.inference.animator import _onnx_session
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
    cpu = measure(lambda: a @ b, 5).seconds("cpu", "median")
    gemm = 2 * 2048 ** 3 / cpu / 1e9  # GFLOP per CPU-second (all threads)
    gflop = 2 * macs[0] / 1e9
    return gflop, gemm, 1e3 * gflop / gemm / threads


def infer(G: torch.nn.Module, y: torch.Tensor, psi: torch.Tensor, dtype: torch.dtype | None = None,
          channels_last: bool = False):
    """fn() = G(y, ψ) under torch.inference_mode (+ CPU autocast to `dtype`, + channels-last weights and input)."""
    if channels_last:
        G, y = G.to(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)

    def f():
        with torch.inference_mode(), (torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()):
            return G(y, psi).contiguous().float()
    return f


def jit_fn(G: torch.nn.Module, y: torch.Tensor, psi: torch.Tensor):
    with torch.no_grad():
        tr = torch.jit.freeze(torch.jit.trace(G, (y, psi), check_trace=False))
    return infer(tr, y, psi)


def onnx_fn(G: torch.nn.Module, y: torch.Tensor, psi: torch.Tensor, grad: bool = True):
    with torch.set_grad_enabled(grad):
        sess = _onnx_session(G, psi, y.shape[-1])
    if sess is None:
        raise RuntimeError("onnxruntime/onnx not installed (pip install 'talkinghead[fast]')")
    feed = {"y": y.numpy(), "psi": psi.numpy()}
    return lambda: torch.from_numpy(sess.run(None, feed)[0])


def variants(G0: Generator, cfg, y: torch.Tensor, eb: torch.Tensor) -> list[tuple[str, Callable]]:
    """[(name, setup() -> fn)] in the order of the module docstring; fn() renders the batch once."""
    with torch.no_grad():
        psi = G0.project(eb).contiguous()  # (B, P)

    def folded(chunked=False):
        return clone(G0, cfg, chunked=chunked)

    return [("unoptimised", lambda: lambda: G0(y, G0.project(eb))),
            ("psi cached", lambda: lambda: G0(y, psi)),
            ("fold", lambda: lambda m=folded(): m(y, psi)),
            ("fold+inference_mode", lambda: infer(folded(), y, psi)),
            ("+chunked attention", lambda: infer(folded(True), y, psi)),
            ("+chunked+channels_last", lambda: infer(folded(True), y, psi, channels_last=True)),
            ("+sdpa attention", lambda: infer(use_sdpa(folded()), y, psi)),
            ("+channels_last", lambda: infer(folded(), y, psi, channels_last=True)),
            ("+bf16 autocast", lambda: infer(folded(True), y, psi, torch.bfloat16)),
            ("+fp16 autocast", lambda: infer(folded(True), y, psi, torch.float16)),
            ("+jit trace/freeze", lambda: jit_fn(folded(True), y, psi)),
            ("onnxruntime", lambda: onnx_fn(folded(True), y, psi)),
            ("onnxruntime chunked", lambda: onnx_fn(folded(True), y, psi, grad=False))]


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
    gflop, gemm, floor = compute_floor(clone(G0, cfg, chunked=True), s, threads)
    print(f"  {name} {s}²: {gflop:.1f} GFLOP/frame (convs + attention); fp32 GEMM here {gemm:.0f} GFLOP per "
          f"CPU-second -> fp32 floor {floor:.0f} ms/frame CPU time / thread count (at GEMM peak)", flush=True)
    rows = []
    for bs in batches:
        torch.manual_seed(1)
        y = (torch.rand(bs, 3, s, s) < 0.05).float() * 2 - 1  # sparse "landmark image"-like input in [-1, 1]
        ref = base = None
        for vname, setup in variants(G0, cfg, y, e.expand(bs, -1)):
            if only and vname != "unoptimised" and vname not in only:
                continue
            row = {"preset": name, "size": s, "batch": bs, "variant": vname}
            rows.append(row)
            try:
                fn = setup()
                with torch.no_grad():
                    t = measure(fn, repeats, items=bs)
            except Exception as ex:  # report and go on (e.g. onnxruntime not installed)
                row["error"] = f"{type(ex).__name__}: {str(ex).splitlines()[0][:100]}"
                print(f"  {name} {s}² bs{bs} {vname:22s} n/a ({row['error']})", flush=True)
                continue
            out = t.out.float()
            if ref is None:
                ref, base = out, t
            d = (out - ref).abs()
            row.update(wall_ms=t.ms("wall", "median"), cpu_ms=t.ms("cpu", "median", threads),
                       speedup_wall=base.seconds("wall", "median") / t.seconds("wall", "median"),
                       speedup_cpu=base.seconds("cpu", "median") / t.seconds("cpu", "median"),
                       max_abs=float(d.max()), mean_abs=float(d.mean()), ok=bool(d.max() <= tol))
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
    print(header(a.threads))
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

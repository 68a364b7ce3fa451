"""The evaluation report: means over videos, Markdown tables and the verdict against the baselines.

Metric headings and directions (higher/lower is better) come from the metrics registry
(`talkinghead.metrics.label`, `higher_is_better`); nothing here lists them again."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from talkinghead.evaluation.settings import ALL_BASELINES, FID_RELIABLE_FRAMES, SHOT_PART, TARGET_PART
from talkinghead.evaluation.subsets import DEFINITION as SUBSETS_DEFINITION
from talkinghead.metrics import higher_is_better, label

KEYS = ("ssim", "psnr", "lpips", "csim", "akd", "mouth", "mouth_l1", "akd_no_face_rate",
        "csim_no_face_rate")  # averaged per (method, T)
NAME = {"copy": "copy source (baseline)", "warp": "landmark warp (baseline)",
        "teeth_bank": "warp + teeth bank (baseline)", "ff": "model FF", "ft": "model FT"}


def nanmean(vals) -> float | None:
    """Mean of the values that are neither None nor NaN; None when there are none."""
    v = [x for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else None


def aggregate(rows: list[dict], methods, shots) -> dict:
    """{(method, T): {metric: mean over videos (of the per-video means), "videos": count, "frames": count}}."""
    out = {}
    for m in methods:
        for T in shots:
            sel = [r for r in rows if r["method"] == m and r["T"] == T]
            if not sel:
                continue
            agg = {k: nanmean([r["metrics"].get(k) for r in sel]) for k in KEYS
                   if any(k in r["metrics"] for r in sel)}
            agg["videos"] = len(sel)
            agg["frames"] = int(sum(r["metrics"].get("n", 0) or 0 for r in sel))
            out[(m, T)] = agg
    return out


SUBSETS = (("open_frames", ("mouth_open", "mouth_l1_open")), ("closing_frames", ("eyes_closing", "eyes_l1_closing")))
SUBSET_HEAD = ["mouth LPIPS-like (open) ↓", "mouth L1 (open) ↓", "open frames", "eyes LPIPS-like (closing) ↓",
               "eyes L1 (closing) ↓", "closing frames"]


def aggregate_subsets(rows: list[dict], methods, shots) -> dict:
    """{(method, T): {subset value: frame-weighted mean over videos, or None; "open_frames"/"closing_frames":
    the subset frames over all videos}} from the self-reenactment rows (evaluation.subsets)."""
    out = {}
    for m in methods:
        for T in shots:
            sel = [r for r in rows if r["method"] == m and r["T"] == T and "open_frames" in r]
            if not sel:
                continue
            agg = {}
            for frames, keys in SUBSETS:
                agg[frames] = int(sum(r[frames] or 0 for r in sel))
                for k in keys:
                    pairs = [(r[k], r[frames]) for r in sel if r[k] is not None and r[frames]]
                    n = sum(f for _, f in pairs)
                    agg[k] = sum(v * f for v, f in pairs) / n if n else None
            out[(m, T)] = agg
    return out


def subset_table(agg: dict, methods, shots) -> list[str]:
    """Markdown table of `aggregate_subsets`: one row per (method, T)."""
    lines = [_row(["method", "T", *SUBSET_HEAD]), "|" + "---|" * (2 + len(SUBSET_HEAD))]
    for m in methods:
        for T in shots:
            a = agg.get((m, T))
            if a is None:
                continue
            cells = [NAME.get(m, m), str(T)]
            for frames, keys in SUBSETS:
                cells += [fmt(a[k], k) for k in keys] + [str(a[frames])]
            lines.append(_row(cells))
    return lines


def per_video(rows: list[dict]) -> dict:
    return {(r["video"], r["method"], r["T"]): r["metrics"] for r in rows}


def fmt(v, k: str) -> str:
    """A table cell: – for missing, 2 decimals for dB/FID, percent for rates, else 4 decimals."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if k in ("psnr", "fid"):
        return f"{v:.2f}"
    if k.endswith("rate"):
        return f"{100 * v:.0f}%"
    return f"{v:.4f}"


def _columns(metrics, keys) -> list[str]:
    """The keys among `keys` that the run measured (a metric's second values — its no-face rate, mouth_l1 —
    come with it)."""
    return [c for c in keys if c in metrics or c.split("_")[0] in metrics]


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def table(agg, fid, methods, shots, cols, fid_col: bool) -> list[str]:
    """Markdown table: one row per (method, T) present in `agg`; FID cells starred when unreliable."""
    head = ["method", "T"] + [label(c) for c in cols] + ([label("fid")] if fid_col else []) + ["videos", "frames"]
    lines = [_row(head), "|" + "---|" * len(head)]
    for m in methods:
        for T in shots:
            a = agg.get((m, T))
            if a is None:
                continue
            cells = [NAME.get(m, m), str(T)] + [fmt(a.get(c), c) for c in cols]
            if fid_col:
                fr = fid.get((m, T), {})
                val = fmt(fr.get("fid"), "fid")
                cells.append(val + ("" if fr.get("fid_reliable") or val == "–" else "*"))
            lines.append(_row(cells + [str(a["videos"]), str(a["frames"])]))
    return lines


def _beats(a: float, b: float, key: str) -> bool:
    return a > b if higher_is_better(key) else a < b


def verdict(agg, fid, methods, shots, metrics) -> list[str]:
    """For each metric: the best model row vs each baseline — written whatever the numbers say."""
    lines = []
    models = [m for m in methods if m not in ALL_BASELINES]
    for k in metrics:
        def val(m, T):
            return (fid if k == "fid" else agg).get((m, T), {}).get(k)

        cand = [(val(m, T), m, T) for m in models for T in shots if val(m, T) is not None]
        if not cand:
            if any((m, T) in agg for m in models for T in shots):
                lines.append(f"- **{label(k)}**: no model row has a value (no face was detected in any "
                             "of its frames) — the model loses to every baseline that has one.")
            continue
        sign = 1 if higher_is_better(k) else -1
        best = max(cand, key=lambda c: sign * c[0])
        base = {b: nanmean([val(b, T) for T in shots]) for b in methods if b in ALL_BASELINES}
        base = {b: v for b, v in base.items() if v is not None}
        parts = [f"{'beats' if _beats(best[0], bv, k) else 'does NOT beat'} {b} ({fmt(bv, k)})"
                 for b, bv in base.items()]
        n_rows = sum(all(_beats(c[0], bv, k) for bv in base.values()) for c in cand)
        lines.append(f"- **{label(k)}**: best model row ({best[1].upper()}, T={best[2]}) = {fmt(best[0], k)} "
                     f"{' and '.join(parts)}; {n_rows} of {len(cand)} model rows beat every baseline.")
    return lines


def _header(res: dict, shots) -> list[str]:
    st, mi = res["settings"], res["model"]
    vids = ", ".join(f"{v['video_id']} ({v['identity']}, {v['frames']} frames, {v['targets']} targets)"
                     for v in res["videos"])
    ft_set = f" (--ft-set {' '.join(st['ft_set'])})" if st.get("ft_set") else ""
    return [
        f"# Evaluation — {'quick' if st['quick'] else 'full'} run {res['run_id']}",
        "",
        f"Model: `{Path(mi['path']).name}` sha256 `{mi['sha256'][:12]}` (preset {mi['preset']}, {mi['image_size']}², "
        f"training step {mi.get('step', '?')}). Protocol: paper §4 self-reenactment (DESIGN.md §6) on the "
        f"validation videos of split `{st['split']}`: {vids}.",
        f"Shots from the first {int(SHOT_PART * 100)}% of each video's frames (T = {', '.join(map(str, shots))}, "
        f"nested, first shot = the baselines' source), targets from the last {int(TARGET_PART * 100)}% "
        f"(never overlapping); each target rendered from its own landmarks. FT: {st['ft']['steps']} steps "
        f"(patience {st['ft']['patience']}), batch {st['ft']['batch_size']}, lr {st['ft']['lr_g']:g}, "
        f"weights {st['ft']['train_parts']}{ft_set}.",
    ]


def _self_section(res: dict, methods, shots) -> list[str]:
    metrics = res["settings"]["metrics"]
    fid_col = "fid" in metrics
    out = ["## Self-reenactment (means over videos of per-video means)", "",
           *table(res["self"], res["fid"], methods, shots,
                  _columns(metrics, ("ssim", "psnr", "lpips", "csim", "akd", "mouth", "mouth_l1", "akd_no_face_rate")),
                  fid_col),
           "",
           "Baselines use the first shot only: their rows are the same for every T. CSIM is to the ground-truth "
           "frame (dlib descriptors: different people still score ~0.8). AKD is in inter-ocular distances, over "
           "frames where a face was found; the no-face column is the share of generated frames without a "
           "detected face."]
    if fid_col:
        n_fid = max((v.get("fid_frames", 0) for v in res["fid"].values()), default=0)
        out.append(f"FID is per method × T over all videos' targets ({n_fid} frames per set); * = unreliable "
                   f"(fewer than {FID_RELIABLE_FRAMES} frames: strongly biased, compare only rows of equal size).")
    if res.get("zero_embeddings"):
        norms = ", ".join(f"{n:.3g}" for n in res["embedding_norms"])
        out += ["", f"**Warning: the model's embedder returns ê = 0 for {res['zero_embeddings']} of "
                f"{len(res['embedding_norms'])} shot sets** (‖ê‖ per video × T: {norms}; its output ReLU is dead "
                "there): FF then renders ψ̂ = P·0, the same for everyone and every T, and FT starts from that. "
                "A training problem, not an evaluation one."]
    return out + ["", "### Does the model beat the baselines?", "",
                  *(verdict(res["self"], res["fid"], methods, shots, metrics) or ["- (no model rows)"])]


def _cross_section(res: dict, methods, shots) -> list[str]:
    if not res["cross"]:
        return []
    metrics = res["settings"]["metrics"]
    return ["", "## Cross-identity reenactment (relative motion retargeting)", "",
            "Every ordered pair of validation videos of different people: source shots from one, driving "
            "frames (the other's targets) retargeted onto the source's first shot. CSIM to the source identity "
            "(its first shot; the copy baseline scores 1 by construction), AKD to the retargeted landmarks.", "",
            *table(res["cross"], {}, methods, shots, _columns(metrics, ("csim", "akd", "akd_no_face_rate")), False),
            "", *verdict(res["cross"], {}, methods, shots, [c for c in ("csim", "akd") if c in metrics])]


def _subsets_section(res: dict, methods, shots) -> list[str]:
    if not res.get("subsets"):
        return []
    return ["", "## Open mouth and closing eyes (self-reenactment subsets)", "",
            *subset_table(res["subsets"], methods, shots), "",
            f"Subsets of the targets: {SUBSETS_DEFINITION} Values: the mouth metric on the open-mouth targets, the "
            "same on a box around both eyes on the closing-eyes targets; means over those frames of all videos "
            "(–: no target qualifies, or the run does not measure the mouth metric)."]


def _per_video_section(res: dict, methods) -> list[str]:
    pcols = [c for c in ("ssim", "psnr", "lpips", "csim", "akd") if c in res["settings"]["metrics"]]
    head = ["video", "method", "T"] + [label(c) for c in pcols]
    out = ["", "## Per video (self-reenactment)", "", _row(head), "|" + "---|" * len(head)]
    for (vid, m, T), mm in sorted(res["per_video"].items(), key=lambda kv: (kv[0][0], kv[0][2],
                                                                             methods.index(kv[0][1]))):
        out.append(_row([vid, m, str(T)] + [fmt(mm.get(c), c) for c in pcols]))
    if res["skipped"]:
        out += ["", "Skipped: " + "; ".join(f"{s['video_id']}" + (f" T={s['T']}" if "T" in s else "")
                                            + f" ({s['reason']})" for s in res["skipped"])]
    return out


def _closing(res: dict) -> list[str]:
    sec = res["seconds"]
    figures = [f"- `{name}`: {caption}" for name, caption in res.get("figures", {}).items()]
    return (["", "## Figures", "", *figures] if figures else []) + [
        "", "## Timings", "",
        f"total {sec['total']:.0f} s: preprocessing {sec['preprocess']:.0f} s, self-reenactment {sec['self']:.0f} s "
        f"(metrics {sec['metrics_self']:.0f} s), cross-identity {sec['cross']:.0f} s, plots {sec['plots']:.0f} s"
        + (f"; fine-tuning {res['ft_seconds_mean']:.1f} s per avatar on average" if res["ft_seconds_mean"] else ""),
        "", "Files: " + ", ".join(f"`{f}`" for f in res["files"]), ""]


def markdown_report(res: dict, methods, shots) -> str:
    """report.md: header, self-reenactment table + verdict, the subsets, cross-identity, per video, figures,
    timings."""
    return "\n".join(_header(res, shots) + [""] + _self_section(res, methods, shots)
                     + _subsets_section(res, methods, shots) + _cross_section(res, methods, shots)
                     + _per_video_section(res, methods) + _closing(res))

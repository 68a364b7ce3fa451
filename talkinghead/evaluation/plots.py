"""The evaluation's figures: metrics vs T (matplotlib) and example grids (talkinghead.media.images PNG grids, their
layout described by the caption each function returns, which report.md prints)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.evaluation.report import NAME
from talkinghead.evaluation.settings import ALL_BASELINES
from talkinghead.media.files import atomic_write
from talkinghead.media.images import save_grid
from talkinghead.metrics import label


def plot_metrics(path: Path, agg, fid, methods, shots) -> str | None:
    """Metric vs T per method (models as lines, baselines as dashed levels) -> PNG; its caption (None: no data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("ssim", "psnr", "lpips", "csim", "akd") if any(k in a for a in agg.values())]
    keys += ["fid"] if fid else []
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False)
    for ax, k in zip(axes[0], keys):
        for m in methods:
            ys = [(fid if k == "fid" else agg).get((m, T), {}).get(k) for T in shots]
            if all(y is None for y in ys):
                continue
            ax.plot(shots, [np.nan if y is None else y for y in ys], "--" if m in ALL_BASELINES else "-o",
                    label=NAME.get(m, m))
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots)
        ax.set_xticklabels([str(t) for t in shots])
        ax.set_xlabel("T (shots)")
        ax.set_title(label(k))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
    return "self-reenactment metrics vs T (models as lines, baselines dashed)"


def _mosaic(xs: torch.Tensor) -> torch.Tensor:
    """Up to 4 shots (k, 3, S, S) tiled 2×2 (black where fewer) and shrunk into one (3, S, S) tile."""
    if len(xs) == 1:
        return xs[0]
    tiles = list(xs[:4]) + [torch.full_like(xs[0], -1.0)] * (4 - min(len(xs), 4))
    big = torch.cat([torch.cat(tiles[:2], 2), torch.cat(tiles[2:], 2)], 1)  # (3, 2S, 2S)
    return F.interpolate(big[None], size=tuple(xs.shape[-2:]), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def _method_cols(methods, shots, renders) -> list[tuple[str, int | None]]:
    cols = [(m, None) for m in ALL_BASELINES if (m, None) in renders]
    return cols + [(m, T) for T in shots for m in methods if m not in ALL_BASELINES and (m, T) in renders]


def _col_names(cols) -> list[str]:
    return [m if T is None else f"{m.upper()} T={T}" for m, T in cols]


def save_examples(path: Path, examples: dict, methods, shots, per_video: int = 2) -> str | None:
    """Rows: (video, target); columns: shots (2×2 mosaic of the largest T's first four) | driver landmark
    image | each method | ground truth -> PNG grid; its caption (None: no examples)."""
    rows, labels, cols = [], [], []
    for vid, ex in examples.items():
        cols = _method_cols(methods, shots, ex["renders"])
        n = len(ex["target"])
        for i in sorted({0, n // 2, n - 1})[:per_video]:
            rows.append([_mosaic(ex["shots"]), ex["driver"][i], *(ex["renders"][c][i] for c in cols), ex["target"][i]])
            labels.append(f"{vid} #{i}")
    if not rows:
        return None
    save_grid(path, rows)
    return (f"rows {', '.join(labels)}; columns: shots | driver (landmarks) | {' | '.join(_col_names(cols))} "
            "| ground truth")


def save_cross_examples(path: Path, cross: list[dict], methods, shots) -> str | None:
    """Rows: (source, driver); columns: source shot | driver frame | retargeted landmarks | each method -> PNG
    grid; its caption (None: no pairs)."""
    rows, labels, cols = [], [], []
    for ex in cross:
        cols = _method_cols(methods, shots, ex["renders"])
        i = len(ex["driver_frames"]) // 2
        rows.append([ex["shot"], ex["driver_frames"][i], ex["landmarks"][i], *(ex["renders"][c][i] for c in cols)])
        labels.append(f"{ex['source']} ← {ex['driver']}")
    if not rows:
        return None
    save_grid(path, rows)
    return f"rows {', '.join(labels)}; columns: source shot | driver | retargeted | {' | '.join(_col_names(cols))}"


def write_figures(out: Path, agg_self, fid, examples, cross_examples, methods, shots) -> dict[str, str]:
    """Every figure of the run into `out`: {file name: caption}."""
    made = {"metrics_vs_T.png": plot_metrics(out / "metrics_vs_T.png", agg_self, fid, methods, shots),
            "examples.png": save_examples(out / "examples.png", examples, methods, shots),
            "cross_examples.png": save_cross_examples(out / "cross_examples.png", cross_examples, methods, shots)}
    return {name: caption for name, caption in made.items() if caption}

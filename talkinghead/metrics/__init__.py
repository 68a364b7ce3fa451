"""Metrics registry (DESIGN §4, after stylegan3's metric_main): name → `Metric`.

Images everywhere are torch tensors (B, 3, H, W) float in [-1, 1].
- pair metrics compare each generated frame with its reference and give per-image values (B,):
  ssim, psnr, lpips (vs the ground-truth frame), csim (vs the *source* identity frame), akd (vs the driving
  frame; extra output akd_no_face, the share of which is the no-face rate).
- set metrics compare two sets: fid (use `FIDAccumulator` or `MetricSuite` to collect batch by batch).
- outside the registry: `eyes_metrics`, the mouth metric's LPIPS-like and L1 on the box around the target's
  eyes (the evaluation scores it on the frames where the eyes close, not on every frame).

    suite = MetricSuite(get_metrics("ssim,psnr,lpips,csim,fid,akd"))
    for fake, real, source in batches: suite.update(fake, real, source)
    suite.summary()  # {"ssim": 0.71, ..., "akd_no_face_rate": 0.0, "fid": 83.2, "n": 240}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from talkinghead.errors import TalkingHeadError
from talkinghead.metrics.akd import AKDResult, akd
from talkinghead.metrics.csim import csim
from talkinghead.metrics.fid import FIDAccumulator, fid, fid_from_features, inception_features
from talkinghead.metrics.lpips import lpips
from talkinghead.metrics.mouth import eyes_metrics, mouth_metrics
from talkinghead.metrics.ssim import PSNR_CAP, psnr, ssim


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    level: str  # "pair": per-image values (B,) | "set": one value for two sets (FID)
    reference: str  # what the fake is compared with: "real" (ground truth / driving frame) or "source"
    fn: Callable  # pair: fn(fake, ref, **opts) -> dict[str, Tensor (B,)]; set: fn(fake_set, real_set) -> float
    description: str = ""
    label: str = ""  # short name in tables and plots (default: the name in capitals)
    uses_points: bool = False  # takes the known target landmarks (real_points) when the caller has them

    @property
    def per_pair(self) -> bool:
        return self.level == "pair"


def _csim(fake, ref, **opts):
    sim, no_face = csim(fake, ref, return_no_face=True, **opts)
    return {"csim": sim, "csim_no_face": no_face.float()}


def _akd(fake, ref, **opts):
    r: AKDResult = akd(fake, ref, **opts)
    return {"akd": r.akd, "akd_no_face": r.no_face.float(), "akd_driving_missing": r.driving_missing.float()}


REGISTRY: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("ssim", True, "pair", "real", lambda f, r, **o: {"ssim": ssim(f, r, **o)},
               "SSIM, Gaussian 11/1.5, [0,1] range, mean over channels"),
        Metric("psnr", True, "pair", "real", lambda f, r, **o: {"psnr": psnr(f, r, **o)},
               f"PSNR dB on [0,1], capped at {PSNR_CAP:g}", "PSNR dB"),
        Metric("lpips", False, "pair", "real", lambda f, r, **o: {"lpips": lpips(f, r, **o)},
               "LPIPS-like (unit-normalised Inception features, equal weights; uncalibrated)", "LPIPS-like"),
        Metric("csim", True, "pair", "source", _csim, "cosine similarity of dlib 128-d face descriptors (PyTorch port by default)"),
        Metric("akd", False, "pair", "real", _akd,
               "mean landmark distance / driving inter-ocular distance; akd_no_face = no face on fake",
               uses_points=True),
        Metric("mouth", False, "pair", "real", lambda f, r, **o: mouth_metrics(f, r, **o),
               "LPIPS-like (and mouth_l1: L1) on the target's mouth box, 64² crops", "mouth LPIPS-like",
               uses_points=True),
        Metric("fid", False, "set", "real", fid, "FID, FID Inception-v3 pool features (2048-d)"),
    ]
}


def higher_is_better(key: str) -> bool:
    """Direction of a metric or summary key: a registry metric's own; the no-face / missing-driver rates
    (`akd_no_face_rate`, ...) are lower-is-better. KeyError for anything else."""
    if key in REGISTRY:
        return REGISTRY[key].higher_is_better
    base = key.split("_", 1)[0]
    if key.endswith("_rate") and base in REGISTRY:
        return False
    if base in REGISTRY and not key.endswith("_std"):  # a metric's second value (mouth_l1): its direction
        return REGISTRY[base].higher_is_better
    raise KeyError(f"no direction known for {key!r}")


def label(key: str) -> str:
    """Table/plot heading of a metric or summary key with its direction: "SSIM ↑", "no face (AKD) ↓"."""
    arrow = "↑" if higher_is_better(key) else "↓"
    if key in REGISTRY:
        return f"{REGISTRY[key].label or key.upper()} {arrow}"
    base, what = key.split("_", 1)
    if not key.endswith("_rate"):  # a metric's second value, e.g. mouth_l1 -> "mouth L1 ↓"
        return f"{base} {what.upper()} {arrow}"
    return f"{what.removesuffix('_rate').replace('_', ' ')} ({base.upper()}) {arrow}"


def get_metrics(names: str | list[str] | tuple[str, ...]) -> list[Metric]:
    """Metrics by name: "ssim,psnr,fid" or a list; unknown names raise TalkingHeadError listing valid ones."""
    if isinstance(names, str):
        names = [n for n in names.replace(" ", "").split(",") if n]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise TalkingHeadError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in dict.fromkeys(names)]


@torch.no_grad()
def compute_pairwise(names, fake: torch.Tensor, real: torch.Tensor, source: torch.Tensor | None = None,
                     options: dict[str, dict] | None = None, real_points=None) -> dict[str, torch.Tensor]:
    """Per-image values of pair metrics: {"ssim": (B,), ..., "akd_no_face": (B,)}.

    real: ground-truth / driving frames (B, 3, H, W); source: identity frames for CSIM (default: real).
    options: per-metric keyword arguments, e.g. {"csim": {"align": "resize"}}; real_points: optional known
    driving landmarks (B, 68, 2) in pixels of `real` for AKD (skips their detection). Set-level metrics (fid)
    raise: collect them with FIDAccumulator or MetricSuite."""
    metrics = get_metrics(names) if not (names and isinstance(names[0], Metric)) else list(names)
    options = options or {}
    out: dict[str, torch.Tensor] = {}
    for m in metrics:
        if not m.per_pair:
            raise TalkingHeadError(f"{m.name} is a set-level metric: use MetricSuite or FIDAccumulator")
        ref = source if (m.reference == "source" and source is not None) else real
        opts = dict(options.get(m.name, {}))
        if m.uses_points and real_points is not None:
            opts["real_points"] = real_points
        out.update({k: v.detach().float().cpu() for k, v in m.fn(fake, ref, **opts).items()})
    return out


@dataclass
class MetricSuite:
    """Accumulates pair metrics (per-image values) and set metrics (features) over batches."""

    metrics: list[Metric]
    options: dict[str, dict] = field(default_factory=dict)
    values: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    fid_acc: FIDAccumulator | None = None
    n: int = 0  # images seen

    def __post_init__(self):
        if isinstance(self.metrics, (str, list, tuple)) and not (self.metrics and isinstance(self.metrics[0], Metric)):
            self.metrics = get_metrics(self.metrics)
        if any(m.name == "fid" for m in self.metrics):
            self.fid_acc = FIDAccumulator(**self.options.get("fid", {}))

    @torch.no_grad()
    def update(self, fake: torch.Tensor, real: torch.Tensor, source: torch.Tensor | None = None,
               real_points=None) -> dict[str, torch.Tensor]:
        """Add a batch: fake/real (B, 3, H, W), source identity frames (B, 3, H, W) for CSIM (default real),
        real_points (B, 68, 2) known driving landmarks for AKD. Returns this batch's per-image values."""
        pair = [m for m in self.metrics if m.per_pair]
        vals = compute_pairwise(pair, fake, real, source, self.options, real_points) if pair else {}
        for k, v in vals.items():
            self.values.setdefault(k, []).append(v)
        if self.fid_acc is not None:
            self.fid_acc.update(fake, real)
        self.n += fake.shape[0]
        return vals

    def per_image(self) -> dict[str, torch.Tensor]:
        return {k: torch.cat(v) for k, v in self.values.items()}

    def summary(self) -> dict[str, float]:
        """Means over images (NaN-aware: AKD/CSIM over pairs with faces), rates of the no-face flags, FID."""
        out: dict[str, float] = {}
        for k, v in self.per_image().items():
            if k.endswith(("_no_face", "_driving_missing")):
                out[k + "_rate"] = float(v.mean()) if len(v) else math.nan
                continue
            ok = v[~torch.isnan(v)]
            out[k] = float(ok.mean()) if len(ok) else math.nan
            out[k + "_std"] = float(ok.std()) if len(ok) > 1 else math.nan
        if "akd_no_face" in self.values and "akd_driving_missing" in self.values:
            nf, dm = self.per_image()["akd_no_face"], self.per_image()["akd_driving_missing"]
            valid = dm == 0
            out["akd_no_face_rate"] = float(nf[valid].mean()) if valid.any() else math.nan
        if self.fid_acc is not None:
            nf, nr = self.fid_acc.counts
            out["fid"] = self.fid_acc.compute() if min(nf, nr) >= 2 else math.nan
        out["n"] = float(self.n)
        return out


__all__ = [
    "REGISTRY", "Metric", "MetricSuite", "get_metrics", "higher_is_better", "label", "compute_pairwise", "ssim", "psnr", "lpips", "csim",
    "akd", "AKDResult", "fid", "fid_from_features", "inception_features", "FIDAccumulator", "PSNR_CAP",
    "mouth_metrics", "eyes_metrics",
]

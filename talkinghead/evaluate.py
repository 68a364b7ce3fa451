"""`talkinghead evaluate`: the paper's evaluation protocol on our data (paper §4 "self-reenactment", DESIGN.md §6),
with the classical baselines scored in the same run on the same frames.

Self-reenactment (paper §4): for every validation video of the split, T ∈ shots frames taken from the *first*
part of the video (the first `SHOT_PART` of its preprocessed frames, evenly spread; the T-shot sets are nested
and all start at the first frame), and hold-out target frames from the *last* part (the last `TARGET_PART`,
evenly spread; never overlapping the shot part). Each target is rendered from its own ground-truth landmarks
(absolute, in its crop's pixels) by
- copy: the first shot unchanged (baselines.copy_source),
- warp: the first shot warped piecewise-affinely from its landmarks to the target's (baselines.warp_baseline),
- ff:   G with ψ̂ = P·ê, ê = mean of E over the T shots (paper §3.3 feed-forward),
- ft:   G' and ψ' fine-tuned on the T shots (paper §3.3; train.finetune.finetune_generator),
and scored against the ground-truth frame by the metrics registry (talkinghead.metrics): SSIM, PSNR, LPIPS-like,
CSIM (to the ground truth), AKD + no-face rate (vs the target's landmarks) per frame, FID per method × T over
all videos' targets (set level; strongly biased below a few hundred frames, flagged as unreliable).
The baselines use the first shot only, so their values do not depend on T (they are listed per T anyway).

Cross-identity (DESIGN.md §2): source video a's avatars driven by video b's target frames (a, b of different
identities), the driver's motion retargeted relative to its most neutral frame onto a's first shot
(landmarks.retarget); CSIM to a's first shot (the source identity) and AKD to the retargeted landmarks.

Output (a run folder, DESIGN.md §4): REPORT_DIR/results.jsonl (appended: one line per video × method × T ×
protocol, plus FID lines), report.md (tables of means over videos), config.json, metrics_vs_T.png,
examples.png (shots | driver | methods | ground truth), cross_examples.png; the preprocessed validation
crops are cached (resumable) under REPORT_DIR/cache or --cache.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import NoFaceError, TalkingHeadError

ALL_METRICS = ("ssim", "psnr", "lpips", "csim", "fid", "akd")
CROSS_METRICS = ("csim", "akd")  # the metrics that make sense without a ground-truth frame
SHOT_PART = 0.5  # shots come from the first half of a video's frames ...
TARGET_PART = 0.25  # ... targets from its last quarter (a gap in between: targets are not near-copies of shots)
FID_MIN_FRAMES = 2  # FID needs at least 2 frames per set ...
FID_RELIABLE_FRAMES = 200  # ... and is marked unreliable below this many (rank-deficient covariances, N ≪ 2048)
BASELINES = ("copy", "warp")
QUICK_FT_STEPS = 10  # --quick: at most this many fine-tuning steps


@dataclass
class EvalSettings:
    """Everything that defines one evaluation run (saved in config.json and each JSONL line)."""

    shots: tuple[int, ...] = (1, 8, 32)
    modes: tuple[str, ...] = ("ff", "ft")
    metrics: tuple[str, ...] = ALL_METRICS
    split: str = "shared"
    quick: bool = False
    targets: int = 32  # hold-out target frames per video
    max_videos: int = 0  # 0 = every validation video
    ft_steps: int | None = None  # None = the model's FinetuneConfig.steps
    frames_per_video: int = 0  # preprocessing: at most this many frames per video (0 = all sampled)
    every: int = 3  # preprocessing: every n-th frame
    cross: bool = True
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def preset(cls, quick: bool, **overrides) -> "EvalSettings":
        """--quick: CI-sized (T ∈ {1, 8}, 5 targets, 2 videos, ≤ QUICK_FT_STEPS FT steps, 40 frames per video);
        full: T ∈ {1, 8, 32}, 32 targets, every video, the model's FT steps, every 3rd frame."""
        base = (cls(shots=(1, 8), quick=True, targets=5, max_videos=2, frames_per_video=40)
                if quick else cls())
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ---- the split of one video into shot and target parts ------------------------------------------------------
def split_video(num_frames: int, shots: int, targets: int, shot_part: float = SHOT_PART,
                target_part: float = TARGET_PART) -> tuple[list[int], list[int]]:
    """Positions (into a video's F stored frames) of T shots and of the hold-out targets (paper §4).

    Shots: evenly spread over the first `shot_part` of the frames, starting at frame 0 (so the T-shot sets
    are nested and the first shot is the same for every T). Targets: evenly spread over the last
    `target_part`. The parts never overlap; ValueError when the video is too short for T shots."""
    n_shot = int(num_frames * shot_part)
    start = num_frames - max(1, int(num_frames * target_part))
    if shots < 1 or targets < 1:
        raise ValueError("shots and targets must be >= 1")
    if start < n_shot or n_shot < 1:
        raise ValueError(f"parts overlap: {num_frames} frames, shot part {shot_part}, target part {target_part}")
    if shots > n_shot:
        raise ValueError(f"{num_frames} frames give {n_shot} in the shot part, fewer than T = {shots}")
    shot_pos = sorted({int(round(v)) for v in np.linspace(0, n_shot - 1, shots)})
    tgt_pos = sorted({int(round(v)) for v in np.linspace(start, num_frames - 1, min(targets, num_frames - start))})
    return shot_pos, tgt_pos


# ---- data -------------------------------------------------------------------------------------------------
@dataclass
class EvalVideo:
    """One preprocessed validation video: the frames the protocol uses, as tensors in [-1, 1]."""

    video_id: str
    identity: str
    shard: object  # data.dataset.VideoShard
    target_pos: list[int]
    x_targets: torch.Tensor  # (n, 3, S, S) ground truth
    y_targets: torch.Tensor  # (n, 3, S, S) landmark images of the targets
    p_targets: np.ndarray  # (n, 68, 2) target landmarks, crop pixels
    shots: dict = field(default_factory=dict)  # T -> (positions, x (T,3,S,S), y (T,3,S,S), points (T,68,2))

    def frames(self, positions) -> list[int]:
        """Source-video frame indices of stored-frame positions."""
        return [int(self.shard.frame_indices[p]) for p in positions]


def _load_pairs(shard, positions, size):
    xs, ys = zip(*(shard.pair(p, size) for p in positions))
    pts = np.stack([shard.points(p, size) for p in positions]).astype(np.float32)
    return torch.stack(xs), torch.stack(ys), pts  # (n, 3, S, S) ×2, (n, 68, 2)


def select_records(data, split: str, max_videos: int = 0):
    """The split's validation videos found under `data` (sorted by frame-range start, then id: the cheapest
    to decode first, so --quick uses short clips), at most max_videos of them."""
    from talkinghead.data.sources import apply_split, find_videos, load_split

    root = Path(data).expanduser()
    if not root.is_dir():
        raise TalkingHeadError(f"--data must be a folder of videos: {root} is not a folder")
    spec = load_split(split)
    val = [e for e in spec.get("videos", []) if e.get("split") == "val"]
    if not val and spec.get("default_split") != "val":
        raise TalkingHeadError(f"split {split!r} has no validation videos")
    records = find_videos(root)
    if not records:
        raise TalkingHeadError(f"no videos found in {root}")
    records = [r for r in apply_split(records, spec, root=root) if r.split == "val"]
    if not records:
        names = ", ".join(str(e.get("path", e.get("id"))) for e in val)
        raise TalkingHeadError(f"none of the split's validation videos ({names}) is in {root}")
    records.sort(key=lambda r: (r.frame_start, r.video_id))
    return records[:max_videos] if max_videos else records


def prepare_videos(records, data, cache: Path, size: int, st: EvalSettings, progress: bool = True) -> tuple[list, list]:
    """Preprocesses the chosen records into `cache` (resumable) at the model's resolution; returns the
    VideoShards found and the skipped videos [{video_id, reason}]."""
    from talkinghead.data.dataset import VideoShard
    from talkinghead.data.preprocess import preprocess

    root = Path(data).expanduser().resolve()
    spec = {"default_split": "skip", "videos": [
        {"path": Path(r.path).relative_to(root).as_posix(), "id": r.video_id, "identity": r.identity,
         "split": "val", "frames": [r.frame_start, r.frame_stop]} for r in records]}
    summary = preprocess(root, cache, resolution=size, frames_per_video=st.frames_per_video, every=st.every,
                         split=spec, progress=progress)
    shards, skipped = [], [dict(s) for s in summary.skipped]
    reasons = {}
    if (cache / "skipped.jsonl").exists():
        for line in (cache / "skipped.jsonl").read_text().splitlines():
            try:
                e = json.loads(line)
                reasons[e["video_id"]] = e.get("reason", "")
            except (json.JSONDecodeError, KeyError):
                continue
    for r in records:
        path = cache / "videos" / r.video_id
        if (path / "meta.json").exists():
            shards.append(VideoShard(path))
        elif not any(s["video_id"] == r.video_id for s in skipped):
            skipped.append({"video_id": r.video_id, "path": r.path, "reason": reasons.get(r.video_id, "not processed")})
    if not shards:
        why = "; ".join(f"{s['video_id']}: {s['reason']}" for s in skipped)
        raise NoFaceError(f"no usable validation video ({why})")
    return shards, skipped


# ---- rendering ------------------------------------------------------------------------------------------
@torch.no_grad()
def render(G: torch.nn.Module, psi: torch.Tensor, y: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """G(y, ψ) for landmark images y (n, 3, S, S), ψ (1, P) -> frames (n, 3, S, S) in [-1, 1] (paper §3.3)."""
    G.eval()
    dev = psi.device
    out = [G(y[i:i + batch].to(dev), psi.expand(len(y[i:i + batch]), -1)).float().cpu()
           for i in range(0, len(y), batch)]
    return torch.cat(out).clamp(-1, 1)


def render_warp(x_src: torch.Tensor, p_src: np.ndarray, p_targets: np.ndarray) -> torch.Tensor:
    """Baseline (b): the source crop (3, S, S) warped to each target's landmarks (n, 68, 2) -> (n, 3, S, S)."""
    from talkinghead.baselines import warp_baseline

    return torch.stack([warp_baseline(x_src, p_src, p) for p in p_targets]).clamp(-1, 1)


def render_copy(x_src: torch.Tensor, n: int) -> torch.Tensor:
    """Baseline (a): the source crop (3, S, S) unchanged, n times -> (n, 3, S, S)."""
    from talkinghead.baselines import copy_source

    return copy_source(x_src)[None].expand(n, -1, -1, -1).contiguous()


@dataclass
class PersonModels:
    """The few-shot models of one video at one T: (G, ψ) per mode, plus FT statistics."""

    gens: dict  # mode -> (G, psi (1, P))
    ft_stats: dict | None = None
    seconds: dict = field(default_factory=dict)


# ---- the run ----------------------------------------------------------------------------------------------
def _summaries(names, fake, real, source=None, real_points=None) -> dict:
    """Per-frame values and means of the registry's pair metrics (NaN-aware, no-face rates)."""
    from talkinghead.metrics import MetricSuite

    names = [n for n in names if n != "fid"]
    if not names:
        return {"n": float(len(fake))}, {}
    suite = MetricSuite(names)
    suite.update(fake, real, source, real_points=None if real_points is None else list(real_points))
    per = {k: [None if math.isnan(float(v)) else round(float(v), 5) for v in t] for k, t in suite.per_image().items()}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in suite.summary().items()}, per


def _nanmean(vals):
    v = [x for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else None


def evaluate(model, data, out, settings: EvalSettings | None = None, cache=None, progress: bool = True,
             log=print) -> dict:
    """Runs the protocol (module doc) and writes the report into `out`; returns the aggregated results
    {"self": {(method, T): {metric: mean}}, "cross": ..., "fid": ..., "files": [...], "seconds": ...}."""
    from tqdm import tqdm

    from talkinghead.checkpoint import LoadedModel, resolve_model
    from talkinghead.shots import embed_shots
    from talkinghead.metrics import fid_from_features, get_metrics, inception_features

    st = settings or EvalSettings()
    t_start = time.time()
    get_metrics(list(st.metrics))  # unknown names -> one-line error before any work
    modes = tuple(m for m in st.modes if m)
    bad = [m for m in modes if m not in ("ff", "ft")]
    if bad:
        raise TalkingHeadError(f"unknown mode(s) {', '.join(bad)}; valid: ff, ft")
    shots = tuple(sorted({int(t) for t in st.shots}))
    if not shots or shots[0] < 1:
        raise TalkingHeadError(f"--shots must be positive integers, got {st.shots}")
    model_path = resolve_model(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(st.device)
    lm = LoadedModel.load(model_path, device, with_discriminator="ft" in modes)
    size = lm.cfg.model.image_size
    ft_cfg = lm.cfg.finetune
    if st.ft_steps is not None:
        ft_cfg = replace(ft_cfg, steps=int(st.ft_steps))
    elif st.quick:
        ft_cfg = replace(ft_cfg, steps=min(ft_cfg.steps, QUICK_FT_STEPS))
    run_id = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    model_info = {**lm.info(), "preset": lm.cfg.name, "image_size": size}
    settings_d = {**asdict(st), "shots": list(shots), "modes": list(modes), "metrics": list(st.metrics),
                  "ft": asdict(ft_cfg), "shot_part": SHOT_PART, "target_part": TARGET_PART}
    (out / "config.json").write_text(json.dumps({"run_id": run_id, "model": model_info, "settings": settings_d,
                                                 "data": str(Path(data).resolve())}, indent=2))

    # -- data
    t0 = time.time()
    records = select_records(data, st.split, st.max_videos)
    cache_dir = Path(cache) if cache else out / "cache"
    cache_dir = cache_dir / f"val_{size}px_every{st.every}_max{st.frames_per_video or 'all'}"
    shards, skipped = prepare_videos(records, data, cache_dir, size, st, progress)
    seconds = {"preprocess": time.time() - t0}
    videos: list[EvalVideo] = []
    for sh in shards:
        try:
            _, tgt = split_video(len(sh), 1, st.targets)
        except ValueError as e:
            skipped.append({"video_id": sh.video_id, "reason": str(e)})
            continue
        x, y, p = _load_pairs(sh, tgt, size)
        v = EvalVideo(sh.video_id, sh.identity, sh, tgt, x, y, p)
        for T in shots:
            try:
                sp, _ = split_video(len(sh), T, st.targets)
            except ValueError as e:
                skipped.append({"video_id": sh.video_id, "T": T, "reason": str(e)})
                continue
            v.shots[T] = (sp, *_load_pairs(sh, sp, size))
        videos.append(v)
    if not videos:
        raise TalkingHeadError("no validation video has enough frames: "
                               + "; ".join(f"{s['video_id']}: {s['reason']}" for s in skipped))
    for s in skipped:
        log(f"evaluate: skipped {s['video_id']}" + (f" T={s['T']}" if "T" in s else "") + f": {s['reason']}")

    # -- self-reenactment
    common = {"run_id": run_id, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "model": model_info, "settings": settings_d}
    rows: list[dict] = []
    pair_names = [m for m in st.metrics if m != "fid"]
    want_fid = "fid" in st.metrics
    fid_fake: dict[tuple[str, int], list] = {}
    fid_real: list = []
    persons: dict[tuple[str, int], PersonModels] = {}
    examples: dict[str, dict] = {}
    terms = None
    if "ft" in modes:
        from talkinghead.train.objective import build_content_terms

        terms = build_content_terms(lm.cfg, device)
    n_steps = sum(1 + len(v.shots) for v in videos)
    bar = tqdm(total=n_steps, desc="self-reenactment", unit="step", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    t0 = time.time()
    t_metrics = 0.0
    e_norms: list[float] = []  # ‖ê‖ per (video, T): all zero = a dead embedder (FF then ignores the person)
    for v in videos:
        first_T = min(v.shots) if v.shots else None
        if first_T is None:
            bar.update(1)
            continue
        sp0, xs0, ys0, ps0 = v.shots[first_T]
        n = len(v.target_pos)
        target_frames = v.frames(v.target_pos)
        renders: dict[tuple[str, int | None], torch.Tensor] = {
            ("copy", None): render_copy(xs0[0], n), ("warp", None): render_warp(xs0[0], ps0[0], v.p_targets)}
        base_frames = v.frames(sp0[:1])
        if want_fid:
            fid_real.append(inception_features(v.x_targets))
        for meth in BASELINES:
            tm = time.time()
            summ, per = _summaries(pair_names, renders[(meth, None)], v.x_targets, v.x_targets, v.p_targets)
            t_metrics += time.time() - tm
            feats = inception_features(renders[(meth, None)]) if want_fid else None
            for T in shots:
                if want_fid:
                    fid_fake.setdefault((meth, T), []).append(feats)
                rows.append({**common, "protocol": "self", "video": v.video_id, "identity": v.identity,
                             "method": meth, "T": T, "shots_used": 1, "shot_frames": base_frames,
                             "target_frames": target_frames, "metrics": summ, "per_frame": per})
        bar.set_postfix(video=v.video_id, refresh=False)
        bar.update(1)
        for T, (sp, xs, ys, ps) in sorted(v.shots.items()):
            e_hat = embed_shots(lm.E, xs.to(device), ys.to(device))  # (N,) ê, paper eq. 1
            e_norms.append(float(e_hat.norm()))
            pm = PersonModels({})
            if "ff" in modes:
                with torch.no_grad():
                    pm.gens["ff"] = (lm.G, lm.G.eval().project(e_hat.view(1, -1)))  # ψ̂ = P·ê (1, P)
            if "ft" in modes:
                from talkinghead.train.finetune import finetune_generator

                tf = time.time()
                G_ft, psi_ft, stats = finetune_generator(lm, xs.to(device), ys.to(device), e_hat, ft_cfg,
                                                         device=device, progress=False, seed=st.seed,
                                                         content_terms=terms)
                pm.gens["ft"] = (G_ft, psi_ft)
                pm.ft_stats = stats
                pm.seconds["ft"] = time.time() - tf
            persons[(v.video_id, T)] = pm
            for mode, (G, psi) in pm.gens.items():
                fake = render(G, psi, v.y_targets)  # (n, 3, S, S)
                renders[(mode, T)] = fake
                tm = time.time()
                summ, per = _summaries(pair_names, fake, v.x_targets, v.x_targets, v.p_targets)
                t_metrics += time.time() - tm
                if want_fid:
                    fid_fake.setdefault((mode, T), []).append(inception_features(fake))
                row = {**common, "protocol": "self", "video": v.video_id, "identity": v.identity, "method": mode,
                       "T": T, "shots_used": len(sp), "shot_frames": v.frames(sp), "target_frames": target_frames,
                       "metrics": summ, "per_frame": per, "embedding_norm": round(e_norms[-1], 6)}
                if mode == "ft":
                    row["finetune"] = {k: pm.ft_stats[k] for k in ("ff", "ft", "steps", "seconds", "early_exit")}
                rows.append(row)
            bar.set_postfix(video=v.video_id, T=T, refresh=False)
            bar.update(1)
        examples[v.video_id] = {"shots": v.shots[max(v.shots)][1], "target": v.x_targets, "driver": v.y_targets,
                                "renders": renders}
    bar.close()
    seconds["self"] = time.time() - t0
    seconds["metrics_self"] = t_metrics

    # -- FID per method × T over all videos (set level)
    fid_rows = []
    if want_fid and fid_real:
        real = np.concatenate(fid_real)
        for (meth, T), chunks in sorted(fid_fake.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            fake = np.concatenate(chunks)
            nmin = min(len(fake), len(real))
            val = fid_from_features(fake, real) if nmin >= FID_MIN_FRAMES else None
            fid_rows.append({**common, "protocol": "self", "video": "all", "method": meth, "T": T,
                             "metrics": {"fid": val, "fid_frames": int(nmin),
                                         "fid_reliable": bool(nmin >= FID_RELIABLE_FRAMES)}})

    # -- cross-identity reenactment
    cross_rows: list[dict] = []
    cross_examples: list[dict] = []
    t0 = time.time()
    cross_names = [m for m in st.metrics if m in CROSS_METRICS]
    pairs = [(a, b) for a in videos for b in videos if a.identity != b.identity and a.shots] if st.cross else []
    if pairs and cross_names:
        from talkinghead.landmarks.retarget import neutral_index, retarget

        for a, b in tqdm(pairs, desc="cross-identity", unit="pair", disable=not progress, file=sys.stderr,
                         dynamic_ncols=True):
            sp0, xs0, _, ps0 = a.shots[min(a.shots)]
            ref = int(neutral_index(b.p_targets))
            pts = retarget(ps0[0], b.p_targets, b.p_targets[ref])  # (n, 68, 2) in a's first-shot crop pixels
            n = len(pts)
            src = xs0[0][None].expand(n, -1, -1, -1)  # (n, 3, S, S) the source identity
            from talkinghead.landmarks.rasterize import landmark_image_tensor

            y = landmark_image_tensor(pts, size)  # (n, 3, S, S)
            rend = {("copy", None): render_copy(xs0[0], n), ("warp", None): render_warp(xs0[0], ps0[0], pts)}
            for T in a.shots:
                for mode, (G, psi) in persons[(a.video_id, T)].gens.items():
                    rend[(mode, T)] = render(G, psi, y)
            info = {"protocol": "cross", "video": a.video_id, "identity": a.identity, "driver": b.video_id,
                    "driver_identity": b.identity, "driver_frames": b.frames(b.target_pos),
                    "driver_reference_frame": b.frames([b.target_pos[ref]])[0], "retarget": "relative"}
            for (meth, T), fake in rend.items():
                summ, per = _summaries(cross_names, fake, b.x_targets, src, pts)
                for TT in (shots if T is None else (T,)):
                    cross_rows.append({**common, **info, "method": meth, "T": TT,
                                       "shots_used": 1 if T is None else len(a.shots[T][0]),
                                       "shot_frames": a.frames(sp0[:1] if T is None else a.shots[T][0]),
                                       "metrics": summ, "per_frame": per})
            cross_examples.append({"source": a.video_id, "driver": b.video_id, "shot": xs0[0],
                                   "driver_frames": b.x_targets, "landmarks": y, "renders": rend})
    seconds["cross"] = time.time() - t0

    # -- report
    with open(out / "results.jsonl", "a") as f:
        for r in rows + fid_rows + cross_rows:
            f.write(json.dumps(r) + "\n")
    methods = list(BASELINES) + list(modes)
    agg_self = aggregate(rows, methods, shots)
    agg_cross = aggregate(cross_rows, methods, shots)
    fid = {(r["method"], r["T"]): r["metrics"] for r in fid_rows}
    files = ["results.jsonl", "config.json", "report.md"]
    t0 = time.time()
    try:
        files += plot_metrics(out / "metrics_vs_T.png", agg_self, fid, methods, shots)
        files += plot_examples(out / "examples.png", examples, methods, shots)
        if cross_examples:
            files += plot_cross_examples(out / "cross_examples.png", cross_examples, methods, shots)
    except ImportError as e:  # matplotlib missing: the tables still stand
        log(f"evaluate: no plots ({e})")
    seconds["plots"] = time.time() - t0
    seconds["total"] = time.time() - t_start
    ft_seconds = [pm.seconds["ft"] for pm in persons.values() if "ft" in pm.seconds]
    result = {"run_id": run_id, "model": model_info, "settings": settings_d, "self": agg_self, "cross": agg_cross,
              "fid": fid, "videos": [{"video_id": v.video_id, "identity": v.identity, "frames": len(v.shard),
                                      "targets": len(v.target_pos)} for v in videos],
              "skipped": skipped, "seconds": seconds, "ft_seconds_mean": _nanmean(ft_seconds),
              "per_video": per_video(rows), "files": files,
              "embedding_norms": e_norms, "zero_embeddings": sum(n == 0.0 for n in e_norms)}
    if result["zero_embeddings"]:
        log(f"evaluate: warning: the embedder returns ê = 0 for {result['zero_embeddings']} of {len(e_norms)} shot "
            "sets (dead output ReLU?): FF renders of those ignore the person and T")
    (out / "report.md").write_text(markdown_report(result, methods, shots))
    return result


# ---- aggregation and report -------------------------------------------------------------------------------
KEYS = ("ssim", "psnr", "lpips", "csim", "akd", "akd_no_face_rate", "csim_no_face_rate")


def aggregate(rows: list[dict], methods, shots) -> dict:
    """{(method, T): {metric: mean over videos (of the per-video means)}, plus "videos": count}."""
    out = {}
    for m in methods:
        for T in shots:
            sel = [r for r in rows if r["method"] == m and r["T"] == T]
            if not sel:
                continue
            agg = {k: _nanmean([r["metrics"].get(k) for r in sel]) for k in KEYS
                   if any(k in r["metrics"] for r in sel)}
            agg["videos"] = len(sel)
            agg["frames"] = int(sum(r["metrics"].get("n", 0) or 0 for r in sel))
            out[(m, T)] = agg
    return out


def per_video(rows: list[dict]) -> dict:
    return {(r["video"], r["method"], r["T"]): r["metrics"] for r in rows}


HIGHER = {"ssim": True, "psnr": True, "lpips": False, "csim": True, "akd": False, "fid": False}
LABEL = {"ssim": "SSIM ↑", "psnr": "PSNR dB ↑", "lpips": "LPIPS-like ↓", "csim": "CSIM ↑", "fid": "FID ↓",
         "akd": "AKD ↓", "akd_no_face_rate": "no face (AKD) ↓"}
NAME = {"copy": "copy source (baseline)", "warp": "landmark warp (baseline)", "ff": "model FF", "ft": "model FT"}


def _fmt(v, k) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if k == "psnr" or k == "fid":
        return f"{v:.2f}"
    if k.endswith("rate"):
        return f"{100 * v:.0f}%"
    return f"{v:.4f}"


def _table(agg, fid, methods, shots, cols, fid_col: bool) -> list[str]:
    head = ["method", "T"] + [LABEL.get(c, c) for c in cols] + (["FID ↓"] if fid_col else []) + ["videos", "frames"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        for T in shots:
            a = agg.get((m, T))
            if a is None:
                continue
            cells = [NAME.get(m, m), str(T)] + [_fmt(a.get(c), c) for c in cols]
            if fid_col:
                fr = fid.get((m, T), {})
                val = _fmt(fr.get("fid"), "fid")
                cells.append(val + ("" if fr.get("fid_reliable") or val == "–" else "*"))
            cells += [str(a["videos"]), str(a["frames"])]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict(agg, fid, methods, shots, metrics) -> list[str]:
    """For each metric: the best model row vs each baseline — written whatever the numbers say."""
    lines = []
    models = [m for m in methods if m not in BASELINES]
    for k in [m for m in metrics if m in HIGHER]:
        def val(m, T):
            if k == "fid":
                return fid.get((m, T), {}).get("fid")
            return agg.get((m, T), {}).get(k)

        cand = [(val(m, T), m, T) for m in models for T in shots if val(m, T) is not None]
        if not cand:
            if any((m, T) in agg for m in models for T in shots):
                lines.append(f"- **{LABEL.get(k, k)}**: no model row has a value (no face was detected in any "
                             "of its frames) — the model loses to every baseline that has one.")
            continue
        best = (max if HIGHER[k] else min)(cand, key=lambda c: c[0])
        parts = []
        for b in BASELINES:
            bv = _nanmean([val(b, T) for T in shots])
            if bv is None:
                continue
            wins = best[0] > bv if HIGHER[k] else best[0] < bv
            parts.append(f"{'beats' if wins else 'does NOT beat'} {b} ({_fmt(bv, k)})")
        n_rows = sum(1 for c in cand if all(
            (c[0] > _nanmean([val(b, T) for T in shots]) if HIGHER[k] else c[0] < _nanmean([val(b, T) for T in shots]))
            for b in BASELINES if _nanmean([val(b, T) for T in shots]) is not None))
        lines.append(f"- **{LABEL.get(k, k)}**: best model row ({best[1].upper()}, T={best[2]}) = {_fmt(best[0], k)} "
                     f"{' and '.join(parts)}; {n_rows} of {len(cand)} model rows beat both baselines.")
    return lines


def markdown_report(res: dict, methods, shots) -> str:
    st = res["settings"]
    mi = res["model"]
    metrics = st["metrics"]
    cols = [c for c in ("ssim", "psnr", "lpips", "csim", "akd", "akd_no_face_rate")
            if c in metrics or (c == "akd_no_face_rate" and "akd" in metrics)]
    fid_col = "fid" in metrics
    n_fid = max((v.get("fid_frames", 0) for v in res["fid"].values()), default=0)
    vids = ", ".join(f"{v['video_id']} ({v['identity']}, {v['frames']} frames, {v['targets']} targets)"
                     for v in res["videos"])
    out = [
        f"# Evaluation — {'quick' if st['quick'] else 'full'} run {res['run_id']}",
        "",
        f"Model: `{Path(mi['path']).name}` sha256 `{mi['sha256'][:12]}` (preset {mi['preset']}, {mi['image_size']}², "
        f"training step {mi.get('step', '?')}). Protocol: paper §4 self-reenactment (DESIGN.md §6) on the "
        f"validation videos of split `{st['split']}`: {vids}.",
        f"Shots from the first {int(SHOT_PART * 100)}% of each video's frames (T = {', '.join(map(str, shots))}, "
        f"nested, first shot = the baselines' source), targets from the last {int(TARGET_PART * 100)}% "
        f"(never overlapping); each target rendered from its own landmarks. FT: {st['ft']['steps']} steps "
        f"(patience {st['ft']['patience']}), batch {st['ft']['batch_size']}.",
        "",
        "## Self-reenactment (means over videos of per-video means)",
        "",
        *_table(res["self"], res["fid"], methods, shots, cols, fid_col),
        "",
        "Baselines use the first shot only: their rows are the same for every T. CSIM is to the ground-truth frame "
        "(dlib descriptors: different people still score ~0.8). AKD is in inter-ocular distances, over frames where "
        "a face was found; the no-face column is the share of generated frames without a detected face.",
    ]
    if fid_col:
        out.append(f"FID is per method × T over all videos' targets ({n_fid} frames per set); * = unreliable "
                   f"(fewer than {FID_RELIABLE_FRAMES} frames: strongly biased, compare only rows of equal size).")
    if res.get("zero_embeddings"):
        norms = ", ".join(f"{n:.3g}" for n in res["embedding_norms"])
        out += ["", f"**Warning: the model's embedder returns ê = 0 for {res['zero_embeddings']} of "
                f"{len(res['embedding_norms'])} shot sets** (‖ê‖ per video × T: {norms}; its output ReLU is dead "
                "there): FF then renders ψ̂ = P·0, the same for everyone and every T, and FT starts from that. "
                "A training problem, not an evaluation one."]
    out += ["", "### Does the model beat the baselines?", "",
            *(verdict(res["self"], res["fid"], methods, shots, metrics) or ["- (no model rows)"])]
    if res["cross"]:
        ccols = [c for c in ("csim", "akd", "akd_no_face_rate") if c in metrics or (c == "akd_no_face_rate"
                                                                                    and "akd" in metrics)]
        out += ["", "## Cross-identity reenactment (relative motion retargeting)", "",
                "Every ordered pair of validation videos of different people: source shots from one, driving "
                "frames (the other's targets) retargeted onto the source's first shot. CSIM to the source identity "
                "(its first shot; the copy baseline scores 1 by construction), AKD to the retargeted landmarks.", "",
                *_table(res["cross"], {}, methods, shots, ccols, False)]
        out += ["", *verdict(res["cross"], {}, methods, shots, [c for c in ("csim", "akd") if c in metrics])]
    # per video
    out += ["", "## Per video (self-reenactment)", ""]
    pcols = [c for c in ("ssim", "psnr", "lpips", "csim", "akd") if c in metrics]
    head = ["video", "method", "T"] + [LABEL[c] for c in pcols]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (vid, m, T), mm in sorted(res["per_video"].items(), key=lambda kv: (kv[0][0], kv[0][2],
                                                                             methods.index(kv[0][1]))):
        out.append("| " + " | ".join([vid, m, str(T)] + [_fmt(mm.get(c), c) for c in pcols]) + " |")
    if res["skipped"]:
        out += ["", "Skipped: " + "; ".join(f"{s['video_id']}" + (f" T={s['T']}" if "T" in s else "")
                                            + f" ({s['reason']})" for s in res["skipped"])]
    sec = res["seconds"]
    out += ["", "## Timings", "",
            f"total {sec['total']:.0f} s: preprocessing {sec['preprocess']:.0f} s, self-reenactment {sec['self']:.0f} s "
            f"(metrics {sec['metrics_self']:.0f} s), cross-identity {sec['cross']:.0f} s, plots {sec['plots']:.0f} s"
            + (f"; fine-tuning {res['ft_seconds_mean']:.1f} s per avatar on average" if res["ft_seconds_mean"] else ""),
            "", "Files: " + ", ".join(f"`{f}`" for f in res["files"]), ""]
    return "\n".join(out)


# ---- plots ----------------------------------------------------------------------------------------------
def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(path: Path, agg, fid, methods, shots) -> list[str]:
    """metric vs T per method (models as lines, baselines as dashed levels) -> PNG."""
    plt = _mpl()
    keys = [k for k in ("ssim", "psnr", "lpips", "csim", "akd") if any(k in a for a in agg.values())]
    if fid:
        keys.append("fid")
    if not keys:
        return []
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False)
    for ax, k in zip(axes[0], keys):
        for m in methods:
            ys = [(fid.get((m, T), {}).get("fid") if k == "fid" else agg.get((m, T), {}).get(k)) for T in shots]
            if all(y is None for y in ys):
                continue
            ys = [np.nan if y is None else y for y in ys]
            style = "--" if m in BASELINES else "-o"
            ax.plot(shots, ys, style, label=NAME.get(m, m))
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots)
        ax.set_xticklabels([str(t) for t in shots])
        ax.set_xlabel("T (shots)")
        ax.set_title(LABEL.get(k, k))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path.name]


def _img(t: torch.Tensor) -> np.ndarray:
    return ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def _mosaic(xs: torch.Tensor, k: int = 4) -> np.ndarray:
    """Up to k shots (k, 3, S, S) tiled 2×2 into one S×S image."""
    s = xs.shape[-1]
    tiles = [_img(x) for x in xs[:k]]
    if len(tiles) == 1:
        return tiles[0]
    tiles += [np.zeros_like(tiles[0])] * (4 - len(tiles))
    grid = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:4], 1)], 0)
    from PIL import Image

    return np.asarray(Image.fromarray(grid).resize((s, s), Image.BILINEAR))


def _grid(path: Path, rows: list[list[np.ndarray]], titles: list[str], row_labels: list[str]) -> None:
    plt = _mpl()
    nr, nc = len(rows), len(titles)
    fig, axes = plt.subplots(nr, nc, figsize=(1.4 * nc, 1.5 * nr + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            ax = axes[i][j]
            ax.imshow(im)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=7)
        axes[i][0].set_ylabel(row_labels[i], fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _method_cols(methods, shots, renders) -> list[tuple[str, int | None]]:
    cols = [(m, None) for m in BASELINES if (m, None) in renders]
    cols += [(m, T) for T in shots for m in methods if m not in BASELINES and (m, T) in renders]
    return cols


def plot_examples(path: Path, examples: dict, methods, shots, per_video: int = 2) -> list[str]:
    """Rows: (video, target); columns: shots (2×2 mosaic of the largest T's first four) | driver landmark
    image | each method | ground truth."""
    if not examples:
        return []
    rows, labels, titles = [], [], None
    for vid, ex in examples.items():
        cols = _method_cols(methods, shots, ex["renders"])
        titles = ["shots", "driver (landmarks)"] + [m if T is None else f"{m.upper()} T={T}" for m, T in cols] + ["ground truth"]
        n = len(ex["target"])
        for i in sorted({0, n // 2, n - 1})[:per_video]:
            rows.append([_mosaic(ex["shots"]), _img(ex["driver"][i])] + [_img(ex["renders"][c][i]) for c in cols]
                        + [_img(ex["target"][i])])
            labels.append(f"{vid} #{i}")
    _grid(path, rows, titles, labels)
    return [path.name]


def plot_cross_examples(path: Path, cross: list[dict], methods, shots) -> list[str]:
    """Rows: (source, driver); columns: source shot | driver frame | retargeted landmarks | each method."""
    rows, labels, titles = [], [], None
    for ex in cross:
        cols = _method_cols(methods, shots, ex["renders"])
        titles = ["source shot", "driver", "retargeted"] + [m if T is None else f"{m.upper()} T={T}" for m, T in cols]
        i = len(ex["driver_frames"]) // 2
        rows.append([_img(ex["shot"]), _img(ex["driver_frames"][i]), _img(ex["landmarks"][i])]
                    + [_img(ex["renders"][c][i]) for c in cols])
        labels.append(f"{ex['source']} ← {ex['driver']}")
    _grid(path, rows, titles, labels)
    return [path.name]


# ---- CLI --------------------------------------------------------------------------------------------------
def _csv(s: str) -> tuple[str, ...]:
    return tuple(x for x in s.replace(" ", "").split(",") if x)


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _csv(s))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("The paper's evaluation (§4) on held-out frames of the split's validation videos: "
                     "self-reenactment with T shots (FF and FT) against the copy-source and landmark-warp "
                     "baselines (SSIM, PSNR, LPIPS-like, CSIM, FID, AKD), plus cross-identity reenactment. "
                     "Writes results.jsonl (appended), report.md and PNG plots into --out.")
    p.add_argument("--model", help="model file (default: the bundled talkinghead/weights/model_small.safetensors)")
    p.add_argument("--data", required=True, help="folder of raw videos (e.g. ../shared/data/videos)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder (created)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true",
                   help="CI-sized: T=1,8, 5 targets and 2 videos, <=10 FT steps, 40 frames per video (~1-3 min)")
    g.add_argument("--full", action="store_true", help="everything (default): T=1,8,32, 32 targets, all videos")
    p.add_argument("--shots", type=_ints, help="T values, e.g. 1,8,32 [default: 1,8,32; quick 1,8]")
    p.add_argument("--modes", type=_csv, default=("ff", "ft"), help="ff,ft [default: ff,ft]")
    p.add_argument("--metrics", type=_csv, default=ALL_METRICS, help=f"[default: {','.join(ALL_METRICS)}]")
    p.add_argument("--split", default="shared", help="split file or bundled name [default: shared]")
    p.add_argument("--targets", type=int, help="hold-out target frames per video [default: 32; quick 5]")
    p.add_argument("--max-videos", type=int, help="at most this many validation videos [default: all; quick 2]")
    p.add_argument("--ft-steps", type=int, help="fine-tuning steps [default: the model's finetune.steps; quick 10]")
    p.add_argument("--frames-per-video", type=int,
                   help="preprocessing: at most this many frames per video [default: all; quick 40]")
    p.add_argument("--every", type=int, help="preprocessing: every n-th frame [default: 3]")
    p.add_argument("--cache", help="folder for the preprocessed validation crops [default: REPORT_DIR/cache]")
    p.add_argument("--no-cross", action="store_true", help="skip cross-identity reenactment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... [default: cpu]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    st = EvalSettings.preset(args.quick, shots=args.shots, modes=args.modes, metrics=args.metrics, split=args.split,
                             targets=args.targets, max_videos=args.max_videos, ft_steps=args.ft_steps,
                             frames_per_video=args.frames_per_video, every=args.every, cross=not args.no_cross,
                             seed=args.seed, device=args.device)
    res = evaluate(args.model, args.data, args.out, st, cache=args.cache, progress=not args.no_progress,
                   log=lambda m: print(m, file=sys.stderr))
    report = Path(args.out) / "report.md"
    print(f"evaluate: {len(res['videos'])} video(s) in {res['seconds']['total']:.0f} s -> {report}")
    return 0

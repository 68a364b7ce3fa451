"""The evaluation protocol step by step (module doc of talkinghead.evaluation): start a run, load the videos,
self-reenactment (baselines, then FF/FT per T), FID per method × T, cross-identity, then the report."""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from talkinghead import console
from talkinghead.console import log
from talkinghead.errors import TalkingHeadError
from talkinghead.config import CROP_MARGIN
from talkinghead.train.run_folder import RunFolder
from talkinghead.evaluation import plots, report, subsets
from talkinghead.evaluation.renders import PersonModels, render_baselines, render_modes
from talkinghead.evaluation.data import EvalVideo, load_videos, prepare_videos, select_records
from talkinghead.evaluation.settings import (
    CROSS_EXAMPLES, CROSS_METRICS, FID_MIN_FRAMES, FID_RELIABLE_FRAMES, QUICK_FT_STEPS, SHOT_PART,
    TARGET_PART, EvalSettings, finetune_config,
)


# ---- one run ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What every step of one run needs: checked settings, the loaded model, where to write."""

    st: EvalSettings
    lm: object  # avatar.LoadedModel
    device: torch.device
    ft_cfg: object  # config.FinetuneConfig, with the run's step count
    out: Path
    common: dict  # run_id, date, model, settings: written into every JSONL line
    records: list  # data.sources.VideoRecord of the split's validation videos to use
    progress: bool = True
    terms: list | None = None  # FT content-loss terms, built once per run
    teeth: object = None  # teeth_bank.TeethBank of the teeth-bank baseline, or None

    @property
    def size(self) -> int:
        return self.lm.cfg.model.image_size

    @property
    def want_fid(self) -> bool:
        return "fid" in self.st.metrics


def _device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise TalkingHeadError(f"unknown device {name!r} (cpu, cuda, cuda:1, mps, ...)") from None
    backend = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None)}.get(dev.type)
    if dev.type != "cpu" and (backend is None or not backend.is_available()):
        raise TalkingHeadError(f"device {name!r} is not available here")
    return dev


def _out_dir(out) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TalkingHeadError(f"cannot create the report folder {out}: {e.strerror or e}") from None
    return out


def write_text(path: Path, text: str) -> None:
    """`path` holds `text` afterwards, or is unchanged (the run folder's atomic write)."""
    RunFolder(path.parent).write_text(path.name, text)


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Appends one JSON line per row to `path`, all or none of them."""
    RunFolder(path.parent).append_jsonl(path.name, rows)


def start_run(model, data, out, settings: EvalSettings, show_progress: bool = True) -> Run:
    """Checks the settings, the model file, the device and the data, loads the model and writes config.json
    (nothing is loaded or written before every check has passed)."""
    from talkinghead.persons.checkpoint import LoadedModel, resolve_model

    st = settings.checked()
    model_path = resolve_model(model)
    device = _device(st.device)
    records = select_records(data, st.split, st.max_videos)
    out = _out_dir(out)
    teeth = None
    if st.teeth_bank:
        from talkinghead.data.teeth_bank import TeethBank

        teeth = TeethBank.load(st.teeth_bank)
    lm = LoadedModel.load(model_path, device, with_discriminator="ft" in st.modes)
    ft_cfg = finetune_config(lm.cfg.finetune, st.ft_set)
    if st.ft_steps is not None:
        ft_cfg = replace(ft_cfg, steps=int(st.ft_steps))
    elif st.quick:
        ft_cfg = replace(ft_cfg, steps=min(ft_cfg.steps, QUICK_FT_STEPS))
    now = _dt.datetime.now(_dt.timezone.utc)
    model_info = {**lm.info(), "preset": lm.cfg.name, "image_size": lm.cfg.model.image_size}
    settings_d = {**asdict(st), "shots": list(st.shots), "modes": list(st.modes), "metrics": list(st.metrics),
                  "ft_set": list(st.ft_set),
                  "ft": asdict(ft_cfg), "shot_part": SHOT_PART, "target_part": TARGET_PART}
    run_id = now.strftime("%Y%m%dT%H%M%SZ")
    RunFolder(out).write_config({"run_id": run_id, "model": model_info, "settings": settings_d,
                                 "data": str(Path(data).resolve())})
    common = {"run_id": run_id, "date": now.isoformat(timespec="seconds"), "model": model_info,
              "settings": settings_d}
    terms = None
    if "ft" in st.modes:
        from talkinghead.train.objective import build_content_terms

        terms = build_content_terms(lm.cfg, device)
    return Run(st, lm, device, ft_cfg, out, common, records, show_progress, terms, teeth)


def load_run_videos(run: Run, data, cache=None) -> tuple[list[EvalVideo], list[dict]]:
    """The split's validation videos, preprocessed into the cache (resumable), as EvalVideos; what was skipped."""
    st = run.st
    cache_dir = Path(cache) if cache else run.out / "cache"
    margin = run.lm.cfg.model.crop_margin  # the crops framed as the model's training data
    framing = "" if margin == CROP_MARGIN else f"_margin{margin:g}"
    cache_dir = cache_dir / f"val_{run.size}px_every{st.every}_max{st.frames_per_video or 'all'}{framing}"
    shards, skipped = prepare_videos(run.records, data, cache_dir, run.size, st, run.progress, margin=margin)
    videos, too_short = load_videos(shards, st.shots, st.targets, run.size)
    skipped += too_short
    for s in skipped:
        log.info("evaluate: skipped %s%s: %s", s["video_id"], f" T={s['T']}" if "T" in s else "", s["reason"])
    return videos, skipped


# ---- scoring ---------------------------------------------------------------------------------------------
def pair_summaries(names, fake, real, source=None, real_points=None) -> tuple[dict, dict]:
    """Means (NaN -> None) and per-frame values (rounded) of the registry's pair metrics among `names`."""
    from talkinghead.metrics import MetricSuite

    names = [n for n in names if n != "fid"]
    if not names:
        return {"n": float(len(fake))}, {}
    suite = MetricSuite(names)
    suite.update(fake, real, source, real_points=None if real_points is None else list(real_points))
    per = {k: [None if math.isnan(float(v)) else round(float(v), 5) for v in t] for k, t in suite.per_image().items()}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in suite.summary().items()}, per


@dataclass
class SelfResult:
    """What self-reenactment produces: JSONL rows, FID features, the few-shot models (reused cross-identity)."""

    rows: list = field(default_factory=list)
    fid_fake: dict = field(default_factory=dict)  # (method, T) -> [(n, 2048) feature blocks]
    fid_real: list = field(default_factory=list)  # [(n, 2048)] of every video's targets
    persons: dict = field(default_factory=dict)  # (video_id, T) -> PersonModels
    examples: dict = field(default_factory=dict)  # video_id -> shots, targets, driver, renders
    e_norms: list = field(default_factory=list)  # ‖ê‖ per (video, T): all zero = a dead embedder
    metric_seconds: float = 0.0
    ears: dict = field(default_factory=dict)  # video_id -> its median eye aspect ratio

    def score(self, run: Run, v: EvalVideo, fake: torch.Tensor, methods_T: list, shots: np.ndarray
              ) -> tuple[dict, dict, dict]:
        """Pair metrics of one method's renders of v's targets; FID features for each (method, T) given; the
        open-mouth and closing-eyes subsets (evaluation.subsets) of the targets, shots (n, 68, 2) being each
        target's texture shot's landmarks."""
        from talkinghead.metrics import inception_features

        t0 = time.time()
        summ, per = pair_summaries(run.st.metrics, fake, v.x_targets, v.x_targets, v.p_targets)
        if v.video_id not in self.ears:
            self.ears[v.video_id] = subsets.median_ear(v.shard.landmarks)
        subs = subsets.subset_scores(fake, v.x_targets, v.p_targets, shots, self.ears[v.video_id],
                                     measure="mouth" in run.st.metrics)
        self.metric_seconds += time.time() - t0
        if run.want_fid:
            feats = inception_features(fake)
            for key in methods_T:
                self.fid_fake.setdefault(key, []).append(feats)
        return summ, per, subs


def _self_row(run: Run, v: EvalVideo, method: str, T: int, shot_pos, summ, per, **extra) -> dict:
    return {**run.common, "protocol": "self", "video": v.video_id, "identity": v.identity, "method": method,
            "T": T, "shots_used": len(shot_pos), "shot_frames": v.frames(shot_pos),
            "target_frames": v.frames(v.target_pos), "metrics": summ, "per_frame": per, **extra}


def few_shot_models(run: Run, xs: torch.Tensor, ys: torch.Tensor, points=None) -> tuple[PersonModels, float]:
    """FF (ψ̂ = P·ê, ê = mean of E over the shots, paper eq. 1) and/or FT (G', ψ' fine-tuned on the shots,
    paper §3.3) from T shots x, y (T, 3, S, S); also ‖ê‖. points (T, 68, 2): the shots' landmarks, needed by
    the warp-guided G (its texture sources, and fine-tuning's flows)."""
    from talkinghead.persons.shots import embed_shots

    dev, lm = run.device, run.lm
    warp = lm.G.needs_texture
    if warp and points is None:
        raise ValueError("the warp-guided generator needs the shots' landmarks")
    e_hat = embed_shots(lm.E, xs.to(dev), ys.to(dev))  # (N,)
    pm = PersonModels({}, shots=(xs, ys, points) if warp else None)
    if "ff" in run.st.modes:
        with torch.no_grad():
            pm.gens["ff"] = (lm.G, lm.G.eval().project(e_hat.view(1, -1)))  # ψ̂ (1, P)
    if "ft" in run.st.modes:
        from talkinghead.train.finetune import finetune_generator

        t0 = time.time()
        G_ft, psi_ft, pm.ft_stats = finetune_generator(lm, xs.to(dev), ys.to(dev), e_hat, run.ft_cfg, device=dev,
                                                       progress=False, seed=run.st.seed, content_terms=run.terms,
                                                       points=points if warp else None)
        pm.gens["ft"] = (G_ft, psi_ft)
        pm.seconds["ft"] = time.time() - t0
    return pm, float(e_hat.norm())


def region_fills(run: Run, xs: torch.Tensor, ps: np.ndarray, modes) -> dict:
    """{mode: the model's region fills} for a person of T shots x (T, 3, S, S), landmarks (T, 68, 2): ψ = P·ê
    of the shots' crops of each region (inference/regions.py); FT's copies have the mouth's ψ′ fitted to the
    shots' open mouths (train/region_finetune.py). Empty lists when the model has none (or is the paper's G,
    which has no warp to leave holes in)."""
    import copy

    from talkinghead.inference.regions import region_fill
    from talkinghead.media.images import to_uint8

    if not run.lm.G.needs_texture:
        return {mode: [] for mode in modes}
    crops = to_uint8(xs)  # (T, S, S, 3)
    fills = [region_fill(G.to(run.device), crops, ps, xs.shape[-1]) for G in run.lm.regions.values()]
    out = {mode: fills for mode in modes if mode != "ft"}
    if "ft" in modes:
        from talkinghead.train.region_finetune import finetune_mouth_psi

        out["ft"] = [copy.copy(f) for f in fills]
        for f in out["ft"]:
            if f.cfg.region == "mouth":
                f.psi = finetune_mouth_psi(f.G, crops, ps, f.psi)[0]
    return out


def _self_baselines(run: Run, v: EvalVideo, res: SelfResult) -> dict:
    """The baselines of v's first shot scored on its targets (the same rows for every T); returns the renders."""
    from talkinghead.metrics import inception_features

    sp0, xs0, _, ps0 = v.shots[min(v.shots)]
    renders = render_baselines(xs0[0], ps0[0], v.p_targets, run.teeth, (v.identity, v.video_id))
    if run.want_fid:
        res.fid_real.append(inception_features(v.x_targets))
    shots = np.repeat(ps0[:1], len(v.p_targets), axis=0)  # (n, 68, 2): the source of every target
    for meth in run.st.baselines:
        summ, per, subs = res.score(run, v, renders[(meth, None)], [(meth, T) for T in run.st.shots], shots)
        res.rows += [_self_row(run, v, meth, T, sp0[:1], summ, per, **subs) for T in run.st.shots]
    return renders


def _self_models(run: Run, v: EvalVideo, T: int, renders: dict, res: SelfResult) -> None:
    """FF/FT from v's T shots, rendered from its targets' landmarks (the warp G: from each target's nearest
    shot) and scored."""
    sp, xs, ys, ps = v.shots[T]
    pm, norm = few_shot_models(run, xs, ys, ps)
    res.e_norms.append(norm)
    res.persons[(v.video_id, T)] = pm
    warp = pm.warp_sources(v.p_targets)  # None for the paper's G
    shots = subsets.texture_shots(ps, v.p_targets, None if warp is None else warp.source.numpy())  # (n, 68, 2)
    pm.fills = region_fills(run, xs, ps, list(pm.gens))
    for mode, fake in render_modes(pm.gens, v.y_targets, warp=warp).items():  # (n, 3, S, S) each
        renders[(mode, T)] = fake = pm.fill_regions(fake, v.p_targets, warp, mode)
        summ, per, subs = res.score(run, v, fake, [(mode, T)], shots)
        extra = {"embedding_norm": round(norm, 6), **subs}
        if warp is not None:  # the shot each target's texture came from (source-video frame)
            extra["texture_frames"] = v.frames([sp[k] for k in warp.source.tolist()])
        if mode == "ft":
            extra["finetune"] = {k: pm.ft_stats[k] for k in ("ff", "ft", "steps", "seconds", "early_exit")}
        res.rows.append(_self_row(run, v, mode, T, sp, summ, per, **extra))


def self_reenactment(run: Run, videos: list[EvalVideo]) -> SelfResult:
    """Paper §4: every video's targets rendered by the baselines and by FF/FT for each T, scored."""
    res = SelfResult()
    with console.progress(sum(1 + len(v.shots) for v in videos), "self-reenactment", "step", run.progress) as bar:
        for v in videos:
            if not v.shots:
                bar.update(1)
                continue
            renders = _self_baselines(run, v, res)
            bar.set_postfix(video=v.video_id, refresh=False)
            bar.update(1)
            for T in sorted(v.shots):
                _self_models(run, v, T, renders, res)
                bar.set_postfix(video=v.video_id, T=T, refresh=False)
                bar.update(1)
            res.examples[v.video_id] = {"shots": v.shots[max(v.shots)][1], "target": v.x_targets,
                                        "driver": v.y_targets, "renders": renders}
    return res


def fid_rows(run: Run, res: SelfResult) -> list[dict]:
    """FID per method × T over all videos' targets (set level; flagged unreliable below FID_RELIABLE_FRAMES)."""
    from talkinghead.metrics import fid_from_features

    if not (run.want_fid and res.fid_real):
        return []
    real = np.concatenate(res.fid_real)
    rows = []
    for (meth, T), chunks in sorted(res.fid_fake.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        fake = np.concatenate(chunks)
        nmin = min(len(fake), len(real))
        val = fid_from_features(fake, real) if nmin >= FID_MIN_FRAMES else None
        rows.append({**run.common, "protocol": "self", "video": "all", "method": meth, "T": T,
                     "metrics": {"fid": val, "fid_frames": int(nmin), "fid_reliable": bool(nmin >= FID_RELIABLE_FRAMES)}})
    return rows


# ---- cross-identity --------------------------------------------------------------------------------------
def _cross_pair(run: Run, a: EvalVideo, b: EvalVideo, persons: dict, names) -> tuple[list[dict], dict]:
    """a's first shot and avatars driven by b's targets, b's motion retargeted relative to its most neutral
    frame; CSIM to a's first shot, AKD to the retargeted landmarks."""
    from talkinghead.landmarks.rasterize import landmark_image_tensor
    from talkinghead.landmarks.retarget import neutral_index, retarget

    sp0, xs0, _, ps0 = a.shots[min(a.shots)]
    ref = int(neutral_index(b.p_targets))
    pts = retarget(ps0[0], b.p_targets, b.p_targets[ref])  # (n, 68, 2) in a's first-shot crop pixels
    src = xs0[0][None].expand(len(pts), -1, -1, -1)  # (n, 3, S, S) the source identity
    y = landmark_image_tensor(pts, run.size)  # (n, 3, S, S)
    renders = render_baselines(xs0[0], ps0[0], pts, run.teeth, (a.identity, a.video_id, b.identity, b.video_id))
    for T in a.shots:
        pm = persons[(a.video_id, T)]
        warp = pm.warp_sources(pts)  # the warp G: a's shot nearest to each retargeted pose; None for the paper's
        for mode, fake in render_modes(pm.gens, y, warp=warp).items():
            renders[(mode, T)] = pm.fill_regions(fake, pts, warp, mode)  # (n, 3, S, S)
    info = {"protocol": "cross", "video": a.video_id, "identity": a.identity, "driver": b.video_id,
            "driver_identity": b.identity, "driver_frames": b.frames(b.target_pos),
            "driver_reference_frame": b.frames([b.target_pos[ref]])[0], "retarget": "relative"}
    rows = []
    for (meth, T), fake in renders.items():
        summ, per = pair_summaries(names, fake, b.x_targets, src, pts)
        shot_pos = sp0[:1] if T is None else a.shots[T][0]
        rows += [{**run.common, **info, "method": meth, "T": TT, "shots_used": len(shot_pos),
                  "shot_frames": a.frames(shot_pos), "metrics": summ, "per_frame": per}
                 for TT in (run.st.shots if T is None else (T,))]
    example = {"source": a.video_id, "driver": b.video_id, "shot": xs0[0], "driver_frames": b.x_targets,
               "landmarks": y, "renders": renders}
    return rows, example


def cross_identity(run: Run, videos: list[EvalVideo], persons: dict) -> tuple[list[dict], list[dict]]:
    """Every ordered pair of videos of different people (DESIGN.md §2); JSONL rows and example renders (the
    first pair of each source video, at most CROSS_EXAMPLES: 408 pairs made a 52,000-pixel-tall grid)."""
    names = [m for m in run.st.metrics if m in CROSS_METRICS]
    pairs = [(a, b) for a in videos for b in videos if a.identity != b.identity and a.shots]
    if not (run.st.cross and pairs and names):
        return [], []
    rows, examples = [], {}
    with console.progress(len(pairs), "cross-identity", "pair", run.progress) as bar:
        for a, b in pairs:
            r, ex = _cross_pair(run, a, b, persons, names)
            rows += r
            if a.video_id not in examples and len(examples) < CROSS_EXAMPLES:  # the grid: one driver per source
                examples[a.video_id] = ex
            bar.update(1)
    return rows, list(examples.values())


# ---- the whole protocol ----------------------------------------------------------------------------------
def evaluate(model, data, out, settings: EvalSettings | None = None, cache=None, progress: bool = True) -> dict:
    """Runs the protocol (talkinghead.evaluation) and writes the report into `out`; returns the aggregated
    results {"self": {(method, T): {metric: mean}}, "cross": ..., "fid": ..., "files": [...], "seconds": ...}."""
    t_start = time.time()
    run = start_run(model, data, out, settings or EvalSettings(), progress)
    st, seconds = run.st, {}
    t0 = time.time()
    videos, skipped = load_run_videos(run, data, cache)
    seconds["preprocess"] = time.time() - t0
    t0 = time.time()
    res = self_reenactment(run, videos)
    seconds["self"], seconds["metrics_self"] = time.time() - t0, res.metric_seconds
    fids = fid_rows(run, res)
    t0 = time.time()
    cross_rows, cross_examples = cross_identity(run, videos, res.persons)
    seconds["cross"] = time.time() - t0
    append_jsonl(run.out / "results.jsonl", res.rows + fids + cross_rows)
    methods = [*st.baselines, *st.modes]
    agg_self = report.aggregate(res.rows, methods, st.shots)
    fid = {(r["method"], r["T"]): r["metrics"] for r in fids}
    t0 = time.time()
    figures = plots.write_figures(run.out, agg_self, fid, res.examples, cross_examples, methods, st.shots)
    seconds["plots"] = time.time() - t0
    seconds["total"] = time.time() - t_start
    ft_seconds = [pm.seconds["ft"] for pm in res.persons.values() if "ft" in pm.seconds]
    result = {"run_id": run.common["run_id"], "model": run.common["model"], "settings": run.common["settings"],
              "self": agg_self, "subsets": report.aggregate_subsets(res.rows, methods, st.shots),
              "cross": report.aggregate(cross_rows, methods, st.shots), "fid": fid,
              "videos": [{"video_id": v.video_id, "identity": v.identity, "frames": len(v.shard),
                          "targets": len(v.target_pos)} for v in videos],
              "skipped": skipped, "seconds": seconds, "ft_seconds_mean": report.nanmean(ft_seconds),
              "per_video": report.per_video(res.rows), "figures": figures,
              "files": ["results.jsonl", "config.json", "report.md", *figures],
              "embedding_norms": res.e_norms, "zero_embeddings": sum(n == 0.0 for n in res.e_norms)}
    if result["zero_embeddings"]:
        log.warning("evaluate: warning: the embedder returns ê = 0 for %d of %d shot sets (dead output ReLU?): "
                    "FF renders of those ignore the person and T", result["zero_embeddings"], len(res.e_norms))
    write_text(run.out / "report.md", report.markdown_report(result, methods, st.shots))
    return result

"""Training a region generator on crops around its region (DESIGN.md §2, "What the photo cannot show").

One phase per step through train/step.py's StepRunner: ê from the reference crop (nn/regions.py's encoder),
ψ̂ = P·ê, the hole filled, L1 inside the hole (plus L_CNT of the crop when cfg.content_weight > 0). With
cfg.adv_weight > 0 a second phase trains a patch discriminator (nn/mouth.py) on the real and the composite crop
beside the driving lips, hinge losses as paper §3.2's L_ADV: L1 alone pulls the hole to its mean, a dark blur,
where a real open mouth shows teeth. The run
folder (train/run_folder.py) gets config.json, log.jsonl (train losses) and val.jsonl: every few minutes the
hole's L1 on held-out people against three fills that need no learning — the training set's mean hole colour,
the blanked input itself, and the classical landmark warp of the person's other frame — plus sample grids,
`region.safetensors` (persons/regions.py) and `checkpoints/last.pt` (resume: model, optimiser, step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from talkinghead.config import RegionConfig
from talkinghead.console import log
from talkinghead.errors import TalkingHeadError
from talkinghead.data.regions import MouthCropDataset, load_crops, warped_crops
from talkinghead.media.images import save_grid
from talkinghead.nn.regions import RegionGenerator
from talkinghead.persons.checkpoint import load_training_state, save_training_state
from talkinghead.persons.regions import save_region_model
from talkinghead.train.losses import content_loss, weighted_l1
from talkinghead.train.run_folder import RunFolder
from talkinghead.train.step import Phase, PhaseLosses, StepRunner


def hole_l1(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |fake − real| over the hole's pixels and channels (fake, real (B, 3, s, s), mask (B, 1, s, s))."""
    return weighted_l1(fake, real, mask)


def balanced_items(ds: MouthCropDataset, per_person: int, seed: int = 0, open_only: bool = True,
                   closed_ref: float | None = None) -> list:
    """Up to `per_person` (target, reference) flat index pairs per person (open mouths only, if asked): a val
    set in which no one person outweighs the others. closed_ref: draw references among the person's frames
    with openness below it (a photo with the mouth closed; people without one are left out)."""
    rng = np.random.default_rng(seed)
    gap = np.concatenate([v.openness for v in ds.videos])  # (N,)
    items = []
    for frames in ds.frames_of_person:
        cand = frames[ds.open[frames]] if open_only else frames
        refs = frames if closed_ref is None else frames[gap[frames] < closed_ref]
        if closed_ref is not None and not len(refs):
            continue
        for t in rng.permutation(cand)[:per_person]:
            others = refs[refs != t]
            items.append((int(t), int(rng.choice(others)) if len(others) else int(t)))
    return items


def collate(ds: MouthCropDataset, items: list) -> dict:
    """A batch of the dataset's item layout for fixed (target, reference) pairs, no mirroring."""
    rows = [ds.pair(t, r) for t, r in items]
    return {k: torch.stack([it[k] for it in rows]) for k in rows[0] if k not in ("openness", "index")}


@dataclass
class ValSet:
    """Held-out items and the fills that need no learning (all (n, 3, s, s)); `shown` is the one the
    sample grids show beside G's (the warp for the mouth, the reference's own eye for the eyes)."""

    batch: dict
    shown: torch.Tensor
    baselines: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_fills(cls, batch: dict, fills: dict[str, torch.Tensor], shown: str) -> "ValSet":
        """fills: name -> (n, 3, s, s) crops with the hole filled some way without learning."""
        crop, mask = batch["crop"], batch["mask"]
        base = {k: float(hole_l1(v, crop, mask)) for k, v in fills.items()}
        return cls(batch, fills[shown], base)

    @classmethod
    def build(cls, ds: MouthCropDataset, root, items: list, mean_colour: torch.Tensor) -> "ValSet":
        batch = collate(ds, items)
        crop, mask = batch["crop"], batch["mask"]
        mean_fill = torch.where(mask > 0.5, mean_colour.view(1, 3, 1, 1).expand_as(crop), crop)
        warp = torch.where(mask > 0.5, warped_crops(ds, root, items), crop)
        fills = {"mean_fill": mean_fill, "blanked": batch["blanked"], "warp": warp}
        if "base" in batch:  # the teeth bank's mouth the generator starts from
            fills["teeth_bank"] = torch.where(mask > 0.5, batch["base"], crop)
        return cls.of_fills(batch, fills, "teeth_bank" if "base" in batch else "warp")

    @classmethod
    def build_eyes(cls, ds, items: list, mean_colour: torch.Tensor) -> "ValSet":
        """Eyes (data/eyes.py): closing targets with open references; fills: the mean colour, blanked, and the
        reference's own pixels (its open eye where the target's closes: what a warp has to draw from)."""
        rows = [ds.pair(t, r) for t, r in items]
        batch = {k: torch.stack([it[k] for it in rows]) for k in ("crop", "mask", "blanked", "lips", "ref",
                                                                   "ref_lips")}
        crop, mask = batch["crop"], batch["mask"]
        mean_fill = torch.where(mask > 0.5, mean_colour.view(1, 3, 1, 1).expand_as(crop), crop)
        ref_copy = torch.where(mask > 0.5, batch["ref"], crop)
        return cls.of_fills(batch, {"mean_fill": mean_fill, "blanked": batch["blanked"], "ref_copy": ref_copy},
                            "ref_copy")

    @torch.no_grad()
    def evaluate(self, G: RegionGenerator, chunk: int = 64) -> tuple[float, torch.Tensor]:
        """(the hole's L1 of G's composite, the composites)."""
        was = G.training
        G.eval()
        b, outs = self.batch, []
        for s in range(0, len(b["crop"]), chunk):
            part = {k: v[s:s + chunk] for k, v in b.items()}
            outs.append(G(part["blanked"], part["mask"], part["lips"], part["ref"], part["ref_lips"],
                          part.get("base")).image)
        G.train(was)
        out = torch.cat(outs)
        return float(hole_l1(out, b["crop"], b["mask"])), out


def mean_hole_colour(videos) -> torch.Tensor:
    """(3,) the training crops' mean colour inside their holes, in [-1, 1]."""
    total, count = np.zeros(3), 0.0
    for v in videos:
        m = v.masks.astype(bool)
        total += v.crops[m].astype(np.float64).sum(axis=0)
        count += m.sum()
    return torch.tensor(total / max(count, 1) / 127.5 - 1, dtype=torch.float32)


def _phase(G: RegionGenerator, batch_of, opt, content_terms, D=None, adv_weight: float = 0.0) -> Phase:
    def losses(_outputs: dict) -> PhaseLosses:
        b = batch_of()
        out = G(b["blanked"], b["mask"], b["lips"], b["ref"], b["ref_lips"], b.get("base"))
        terms = {"l1": hole_l1(out.image, b["crop"], b["mask"])}
        if content_terms:
            terms["cnt"] = content_loss(out.image, b["crop"], content_terms)
        logs = {"alpha": (out.alpha * b["mask"]).sum() / b["mask"].sum().clamp_min(1)}
        if D is not None:
            score = D(out.image, b["lips"])[0]  # (B, P) patch scores of the composite
            terms["adv"] = -adv_weight * score.mean()
            logs["d_fake_g"] = score.mean()
        return PhaseLosses(terms, logs=logs, outputs={"fake": out.image.detach(), "batch": b})

    trains = ((D, False),) if D is not None else ()
    return Phase("loss", losses, [opt], list(G.parameters()), trains=trains, gnorm="gnorm")


def _d_phase(D, opt_d) -> Phase:
    """The patch D's hinge loss on the real crop and G's composite of the same batch (beside its lips)."""
    def losses(outputs: dict) -> PhaseLosses:
        b = outputs["batch"]
        real, fake = D(b["crop"], b["lips"])[0], D(outputs["fake"], b["lips"])[0]  # (B, P) each
        terms = {"d_real": torch.relu(1 - real).mean(), "d_fake": torch.relu(1 + fake).mean()}
        return PhaseLosses(terms, logs={"d_score_real": real.mean(), "d_score_fake": fake.mean()})

    return Phase("loss_d", losses, [opt_d], list(D.parameters()), trains=((D, True),), gnorm="gnorm_d")


def _batches(ds: MouthCropDataset, batch_size: int, start_step: int):
    """Batches in episode order, epoch after epoch (set_epoch), resumable at any step."""
    per_epoch = max(1, len(ds) // batch_size)
    step = start_step
    while True:
        ds.set_epoch(step // per_epoch)
        first = (step % per_epoch) * batch_size
        items = [ds[n] for n in range(first, first + batch_size)]
        yield {k: torch.stack([it[k] for it in items]) for k in items[0]}
        step += 1


def _save(run: RunFolder, cfg: RegionConfig, G, opt, step: int, elapsed: float, D=None, opt_d=None) -> None:
    save_region_model(run.path / "region.safetensors", cfg, G, {"step": str(step)})
    (run.path / "checkpoints").mkdir(exist_ok=True)
    state = {"region_config": cfg.to_dict(), "step": step, "elapsed": elapsed, "G": G.state_dict(),
             "opt": opt.state_dict()}
    if D is not None:
        state.update(D=D.state_dict(), opt_d=opt_d.state_dict())
    save_training_state(run.path / "checkpoints" / "last.pt", state)


def _samples(run: RunFolder, val: ValSet, out: torch.Tensor, name: str, rows: int = 12) -> Path:
    """samples/NAME.png: one row per val item, blanked input | G's composite | a fill without learning (the
    warp; for the eyes the reference's pixels) | real | reference."""
    b = val.batch
    n = min(rows, len(out))
    grid = [[b["blanked"][i], out[i], val.shown[i], b["crop"][i], b["ref"][i]] for i in range(n)]
    return save_grid(run.path / "samples" / f"{name}.png", grid)


def _mouth_data(cfg: RegionConfig, data, cache_dir, val_per_person: int):
    """(train set, val set, {prefix: ValSet}) of mouth crops: open mouths with any reference and with
    closed-mouth references."""
    train_v = load_crops(data, "train", cfg.crop_size, cfg.crop_scale, cfg.dilate, cache_dir)
    val_v = load_crops(data, "val", cfg.crop_size, cfg.crop_scale, cfg.dilate, cache_dir)
    bank = None
    if cfg.teeth_bank:  # other people's mouths to start from, spread over inner-lip shapes (data/teeth_bank.py)
        from talkinghead.data.teeth_bank import build_teeth_bank

        bank = build_teeth_bank(data, "train", max_entries=cfg.teeth_bank, size=cfg.teeth_bank_crop)
        if len(bank) != cfg.teeth_bank:
            raise TalkingHeadError(f"{data} has {len(bank)} open training mouths for a bank of {cfg.teeth_bank}")
    ds = MouthCropDataset(train_v, seed=cfg.seed, open_weight=cfg.open_weight,
                          open_threshold=cfg.open_threshold, flip=True, bank=bank)
    val_ds = MouthCropDataset(val_v, open_threshold=cfg.open_threshold, bank=bank)
    mean = mean_hole_colour(train_v)
    picks = {"": balanced_items(val_ds, val_per_person),  # any reference; closed-mouth references
             "closed_": balanced_items(val_ds, val_per_person, closed_ref=0.05)}
    vals = {k: ValSet.build(val_ds, data, items, mean) for k, items in picks.items() if items}
    if not vals:
        raise TalkingHeadError(f"no open mouths among the val crops of {data}")
    return ds, val_ds, vals


def _eye_data(cfg: RegionConfig, data, cache_dir, val_per_person: int):
    """(train set, val set, {"": ValSet}) of eye crops (data/eyes.py): closing eyes with open references."""
    from talkinghead.data.eyes import EyeCropDataset, load_eyes

    kw = dict(closing=cfg.open_threshold, closing_weight=cfg.open_weight, dilate=cfg.dilate)
    ds = EyeCropDataset(load_eyes(data, "train", cfg.crop_size, cfg.crop_scale, cache_dir), seed=cfg.seed, **kw)
    val_ds = EyeCropDataset(load_eyes(data, "val", cfg.crop_size, cfg.crop_scale, cache_dir), **kw)
    rng = np.random.default_rng(0)
    items = []
    for g, members in val_ds.members.items():
        closing = members[val_ds.closing[members]]
        refs = val_ds.open_members[g]
        for t in rng.permutation(closing)[:val_per_person]:
            if len(refs):
                items.append((int(t), int(rng.choice(refs))))
    if not items:
        raise TalkingHeadError(f"no closing eyes among the val crops of {data}")
    sample = [ds.pair(*ds.draw(n)[:2]) for n in range(0, len(ds), max(1, len(ds) // 400))]
    m = torch.stack([it["mask"] for it in sample])  # (k, 1, s, s)
    mean = (torch.stack([it["crop"] for it in sample]) * m).sum(dim=(0, 2, 3)) / m.sum().clamp_min(1)
    return ds, val_ds, {"": ValSet.build_eyes(val_ds, items, mean)}


def train_region(cfg: RegionConfig, data, run_dir, minutes: float, eval_minutes: float = 3.0,
                 cache_dir=None, val_per_person: int = 8, resume: bool = False, max_steps: int = 0,
                 command: str = "") -> dict:
    """Trains for `minutes` of wall time (or `max_steps`); returns the last val record. `command`: the command
    line that started the run, kept in config.json (and by `--attach` in the model file's regions_note)."""
    run = RunFolder(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    ckpt, state = run.path / "checkpoints" / "last.pt", None
    if resume and ckpt.exists():  # the run's own config (its crops and network), whatever was passed
        state = load_training_state(ckpt)
        cfg = RegionConfig.from_dict(state["region_config"])
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    if cfg.region == "eyes":
        ds, val_ds, vals = _eye_data(cfg, data, cache_dir, val_per_person)
    else:
        ds, val_ds, vals = _mouth_data(cfg, data, cache_dir, val_per_person)
    log.info("crops: %d train %s (%d people), val items %s (%d people) in %.0f s", len(ds),
             "eyes" if cfg.region == "eyes" else "mouths", len(ds.identities),
             {k: len(v.batch["crop"]) for k, v in vals.items()}, len(val_ds.identities), time.time() - t0)
    G = RegionGenerator(cfg)
    if getattr(ds, "bank", None) is not None:
        ds.bank.into_generator(G)  # shipped with the generator: render time starts from the same mouths
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    D = opt_d = None
    if cfg.adv_weight > 0:
        from talkinghead.nn.mouth import MouthDiscriminator

        D = MouthDiscriminator(cfg.d_channels)
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999))
    step, elapsed = 0, 0.0
    if state is not None:
        G.load_state_dict(state["G"])
        opt.load_state_dict(state["opt"])
        if D is not None and "D" in state:
            D.load_state_dict(state["D"])
            opt_d.load_state_dict(state["opt_d"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
    else:
        run.write_config({"region": cfg.to_dict(), "data": str(data), "minutes": minutes,
                          **({"command": command} if command else {})})
    terms = []
    if cfg.content_weight > 0:
        from talkinghead.backbones.perceptual import load_backbone

        terms = [(load_backbone(cfg.content_backbone, resolution=cfg.content_resolution or None),
                  cfg.content_weight)]
    batches = _batches(ds, cfg.batch_size, step)
    phases = [_phase(G, lambda: next(batches), opt, terms, D, cfg.adv_weight)]
    if D is not None:
        phases.append(_d_phase(D, opt_d))
    runner, train_log = StepRunner(), RunFolder(run.path).open_log("log.jsonl")
    val_log = RunFolder(run.path).open_log("val.jsonl")
    record = _validate(run, vals, G, step, elapsed, 0.0, val_log)
    start, last_eval, done_since = time.time(), time.time(), 0
    while (time.time() - start) / 60 < minutes and (not max_steps or step < max_steps):
        values, norms, _ = runner.step(phases)
        step, done_since = step + 1, done_since + 1
        if step % 10 == 0:
            train_log.log({"step": step, "time": round(elapsed + time.time() - start, 1), **values, **norms})
        if time.time() - last_eval >= eval_minutes * 60:
            rate = done_since * cfg.batch_size / (time.time() - last_eval)
            record = _validate(run, vals, G, step, elapsed + time.time() - start, rate, val_log)
            _save(run, cfg, G, opt, step, elapsed + time.time() - start, D, opt_d)
            last_eval, done_since = time.time(), 0
    rate = done_since * cfg.batch_size / max(time.time() - last_eval, 1e-6)
    record = _validate(run, vals, G, step, elapsed + time.time() - start, rate, val_log)
    _save(run, cfg, G, opt, step, elapsed + time.time() - start, D, opt_d)
    train_log.close(), val_log.close()
    return record


def _validate(run: RunFolder, vals: dict[str, ValSet], G, step: int, seconds: float, rate: float, val_log) -> dict:
    """One val.jsonl record: for each val set (prefix: "" any reference, "closed_" closed-mouth references)
    the hole's L1 of G and of the fills without learning; a sample grid per set."""
    record = {"region": G.cfg.region, "step": step, "minutes": round(seconds / 60, 2), "crops_per_s": round(rate, 1)}
    for prefix, val in vals.items():
        l1, out = val.evaluate(G)
        record.update({f"{prefix}val_l1": round(l1, 4), **{f"{prefix}{k}": round(v, 4) for k, v in val.baselines.items()}})
        _samples(run, val, out, f"{prefix}{step:06d}")
    val_log.log(record)
    log.info("region val: %s", record)
    return record

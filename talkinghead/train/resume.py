"""How a meta-learning run starts other than fresh (paper §3.2): from a model file's weights (`--init`), or
resumed from its checkpoint with the model it was started with."""

from __future__ import annotations

import os
from dataclasses import asdict

from talkinghead.config import Config
from talkinghead.console import log
from talkinghead.errors import TalkingHeadError


def model_differences(saved: Config, cfg: Config, arrow: str, ignore: tuple[str, ...] = ()) -> str:
    """"model.KEY SAVED{arrow}NEW, ..." for every cfg.model value that differs, the number of training videos
    (a run's W size follows its data) and `ignore` aside; "" when the models agree."""
    a, b = asdict(saved.model), asdict(cfg.model)
    skip = ("num_videos", *ignore)
    return ", ".join(f"model.{k} {a[k]}{arrow}{b.get(k)}" for k in a if k not in skip and a[k] != b.get(k))


def init_from_model(trainer, path: str | os.PathLike) -> None:
    """Starts a new run (a meta.Trainer) from a model file (e.g. the bundled one): its E, G and D trunk replace
    the fresh weights; W (one row per training video, not in model files) and the mouth D start fresh. The file's
    model config must equal the run's, apart from the number of training videos and the crop framing (the
    run's data sets it: a model may be trained on another framing from these weights)."""
    from talkinghead.persons.checkpoint import load_state, read_model_file

    saved, tensors, _meta = read_model_file(path)
    diff = model_differences(saved, trainer.cfg, " vs ", ignore=("crop_margin", "crop_shift_y"))
    if diff:
        raise TalkingHeadError(f"--init {path}: its model differs from the run's: {diff}")
    load_state(trainer.E, tensors, "E.", path)
    load_state(trainer.G, tensors, "G.", path)
    if any(k.startswith("D.") for k in tensors):
        load_state(trainer.D, tensors, "D.", path)
    log.info("starting from the weights of %s", path)


def check_resume_config(saved: Config, cfg: Config) -> None:
    """A resumed run keeps the model it was started with: any difference in cfg.model is an error."""
    diff = model_differences(saved, cfg, " -> ")
    if diff:
        raise TalkingHeadError(f"a resumed run keeps its model; these differ from the checkpoint: {diff}")

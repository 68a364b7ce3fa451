"""Checkpoints: the training state of a run, and the inference model file (DESIGN.md §3).

Two kinds of file:
- training checkpoint (`RUN/checkpoints/last.pt`): config, step, E/G/D weights including the per-video table
  W, optimiser states, RNG states — everything needed for an exact resume. It holds only tensors and plain
  values and is read with torch.load(weights_only=True): a crafted file cannot run code;
- model file (`*.safetensors`): config + E, G and D's trunk (w0 and b kept; never W, whose size grows with
  the training set) in fp32 or fp16. It rebuilds the networks from the file alone and is what few-shot
  fine-tuning and animation load.
Both are written atomically (temporary name, then rename): an interruption never leaves a broken file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from talkinghead import __version__
from talkinghead.config import Config
from talkinghead.errors import CheckpointError
from talkinghead.media.files import atomic_write
from talkinghead.persons.validation import Invalid, check_config, check_state

MODEL_FORMAT = "talkinghead-model"
MODEL_FORMAT_VERSION = 1
TRAIN_FORMAT_VERSION = 2  # 2: tensors and plain values only (weights_only)
W_PREFIX = "D.W."  # the discriminator's per-video table, excluded from model files


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    state = {"format_version": TRAIN_FORMAT_VERSION, "talkinghead_version": __version__, **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training checkpoint at {path}")
    try:  # weights_only: tensors, containers and plain values; anything else is refused, never executed
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling error means a broken or foreign file
        msg = " ".join(str(e).split())[:160]
        raise CheckpointError(f"cannot read training checkpoint {path} (broken, foreign, or written by an "
                              f"older talkinghead): {msg}") from None
    if not isinstance(state, dict) or state.get("format_version") != TRAIN_FORMAT_VERSION:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise CheckpointError(f"{path}: training checkpoint format {version} "
                              f"is not supported (expected {TRAIN_FORMAT_VERSION})")
    return state


def model_tensors(E, G, D=None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Flat name → tensor dict of E, G and D's trunk (never W), optionally cast (floating tensors only)."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("E.", E), ("G.", G), ("D.", D)):
        if module is None:
            continue
        for k, v in module.state_dict().items():
            name = prefix + k
            if name.startswith(W_PREFIX):
                continue
            v = v.detach().cpu()
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            tensors[name] = v.contiguous()
    return tensors


def save_model(path: str | os.PathLike, cfg: Config, E, G, D=None, dtype: torch.dtype | None = None,
               extra_metadata: dict[str, str] | None = None, regions: dict | None = None) -> None:
    """Writes the inference model file: safetensors with the config in its metadata; `regions`
    ({name: RegionGenerator}) go in as well (persons/regions.py)."""
    meta = {
        "format": MODEL_FORMAT,
        "format_version": str(MODEL_FORMAT_VERSION),
        "talkinghead_version": __version__,
        "config": cfg.to_json(),
        "has_discriminator": str(D is not None),
    }
    meta.update(extra_metadata or {})
    tensors = model_tensors(E, G, D, dtype)
    if regions:
        from talkinghead.persons.regions import region_tensors

        r_tensors, r_meta = region_tensors(regions, dtype)
        tensors.update(r_tensors)
        meta.update(r_meta)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_safetensors(path: str | os.PathLike, fmt: str, version: int, what: str,
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a talkinghead safetensors file (model or avatar), opened once.

    One format check for every kind: the metadata's `format` must be `fmt`; versions 1..`version` are read
    (older layouts stay readable), a newer one asks to upgrade talkinghead. Errors are one-line
    CheckpointErrors naming `what` ("model file", "avatar")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {what} {path}: {' '.join(str(e).split())[:150]}") from None
    if meta.get("format") != fmt:
        raise CheckpointError(f"{path} is not a talkinghead {what}")
    try:
        found = int(meta.get("format_version", "0"))
    except ValueError:
        found = 0
    if found > version:
        raise CheckpointError(f"{path}: {what} format {found} is newer than talkinghead {__version__} reads "
                              f"(≤ {version}); upgrade talkinghead")
    if found < 1:
        raise CheckpointError(f"{path}: broken {what} (format version {meta.get('format_version')!r})")
    return tensors, meta


def read_model_file(path: str | os.PathLike) -> tuple[Config, dict[str, torch.Tensor], dict[str, str]]:
    """Reads a model file: (config, tensors, metadata), validating its format."""
    tensors, meta = read_safetensors(path, MODEL_FORMAT, MODEL_FORMAT_VERSION, "model file")
    try:
        cfg = check_config(meta.get("config"))
    except Invalid as e:
        raise CheckpointError(f"{path}: broken model file: {e}") from None
    return cfg, tensors, meta


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path="model") -> None:
    """Loads the tensors under `prefix` into module (cast to the module's dtypes); a one-line CheckpointError
    unless their names and shapes are the module's (W rows may be absent)."""
    sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = module.state_dict()
    optional = (W_PREFIX[len(prefix):],) if W_PREFIX.startswith(prefix) else ()
    try:
        check_state(own, sub, "weights", optional)
    except Invalid as e:
        raise CheckpointError(f"{path}: {e}") from None
    sub = {k: v.to(own[k].dtype) for k, v in sub.items()}
    try:
        module.load_state_dict(sub, strict=False)
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:150]
        raise CheckpointError(f"{path}: weights do not fit the networks its config builds: {reason}") from None


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (cached per path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def resolve_model(path=None) -> Path:
    """The model file to use: `path`, or the bundled model (one-line error when it is absent)."""
    from talkinghead import bundled

    p = Path(path) if path else bundled.MODEL
    if not p.is_file():
        if path:
            raise CheckpointError(f"model file not found: {p}")
        raise CheckpointError(f"the bundled model {p.name} is not in this installation yet (expected at {p}); "
                              "pass a model file with --model")
    return p


@dataclass
class LoadedModel:
    """A model file rebuilt for few-shot use and animation: config, E, G, D (None when the file has none or
    it was not asked for), its region generators ({name: RegionGenerator}, persons/regions.py) and the
    file's identity (path, sha256, metadata without the config).

    D is rebuilt with a single W row (unused in fine-tuning, where w' = w0 + ê replaces W_i + w0)."""

    cfg: Config
    E: torch.nn.Module
    G: torch.nn.Module
    D: torch.nn.Module | None
    path: str
    sha256: str
    meta: dict
    regions: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             with_discriminator: bool = True) -> "LoadedModel":
        from talkinghead.nn import build_models

        path = Path(path)
        cfg, tensors, meta = read_model_file(path)
        cfg.model.num_videos = 1
        try:
            E, G, D = build_models(cfg.model)
        except (ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: its config builds no networks: {' '.join(str(e).split())[:150]}") from None
        load_state(E, tensors, "E.", path)
        load_state(G, tensors, "G.", path)
        if with_discriminator and meta.get("has_discriminator") == "True":
            load_state(D, tensors, "D.", path)
        else:
            D = None
        from talkinghead.persons.regions import read_regions

        regions = read_regions(tensors, meta, path)
        for m in (E, G, D, *regions.values()):
            if m is not None:
                m.to(device).eval()
        meta = {k: v for k, v in meta.items() if k != "config"}
        return cls(cfg, E, G, D, str(path.resolve()), file_sha256(path), meta, regions)

    def info(self) -> dict:
        """What an avatar records about its model."""
        keep = ("format_version", "talkinghead_version", "step")
        return {"path": self.path, "sha256": self.sha256, **{k: self.meta[k] for k in keep if k in self.meta}}


def as_model(model, device="cpu", with_discriminator: bool = True) -> LoadedModel:
    """A LoadedModel from a LoadedModel (returned as is) or a model file path."""
    if isinstance(model, LoadedModel):
        return model
    if model is None:
        raise CheckpointError("no model file given")
    return LoadedModel.load(model, device, with_discriminator)

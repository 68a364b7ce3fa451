"""Region generators as parts of model files and avatars (DESIGN.md §2, "What the photo cannot show").

* A region model file: one region generator (nn/regions.py) and its RegionConfig, as `train-region` writes
  it (``save_region_model`` / ``load_region_model``).
* Inside a model file: the same weights under ``R.<region>.`` and the configs in the metadata's
  ``regions`` entry (``region_tensors`` / ``read_regions``), so that a model file carries its region
  generators and FF avatars, which refer to their model file, get them too (``attach_regions``).
* A person's side of it (paper §3.2-3.3): ê of the person's own crops of the region (``region_embedding``,
  averaged over the T shots as E's embeddings are) and the reference crop the generator sees
  (``mouth_reference``).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

from talkinghead import __version__
from talkinghead.config import RegionConfig
from talkinghead.errors import CheckpointError
from talkinghead.media.files import atomic_write
from talkinghead.persons.checkpoint import load_state, read_safetensors
from talkinghead.persons.validation import Invalid, check_region_config, parse_json

REGION_FORMAT = "talkinghead-region"
REGION_FORMAT_VERSION = 1
REGION_PREFIX = "R."  # model files: R.<region>.<weight name>


def _build(cfg: RegionConfig, tensors: dict[str, torch.Tensor], prefix: str, path) -> torch.nn.Module:
    from talkinghead.nn.regions import RegionGenerator

    try:
        G = RegionGenerator(cfg)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: broken region generator ({type(e).__name__}: {e})") from None
    if cfg.teeth_bank == 0:  # files written before generators had bank buffers hold none
        tensors = {**{prefix + k: v for k, v in G.state_dict().items() if k.startswith("bank_")}, **tensors}
    load_state(G, tensors, prefix, path)
    return G.eval()


def save_region_model(path: str | os.PathLike, cfg: RegionConfig, G: torch.nn.Module,
                      extra_metadata: dict[str, str] | None = None) -> None:
    """Writes G's weights with cfg in the metadata (atomically)."""
    meta = {"format": REGION_FORMAT, "format_version": str(REGION_FORMAT_VERSION),
            "talkinghead_version": __version__, "config": json.dumps(cfg.to_dict()), **(extra_metadata or {})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_region_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(RegionConfig, RegionGenerator in eval mode, metadata) from a region model file."""
    tensors, meta = read_safetensors(path, REGION_FORMAT, REGION_FORMAT_VERSION, "region model file")
    try:
        cfg = check_region_config(parse_json(meta.get("config"), "config"))
    except Invalid as e:
        raise CheckpointError(f"{path}: broken region model file: {e}") from None
    G = _build(cfg, {f"G.{k}": v for k, v in tensors.items()}, "G.", path)
    return cfg, G.to(device), {k: v for k, v in meta.items() if k != "config"}


def region_tensors(regions: dict, dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """{name: RegionGenerator} -> (tensors under R.<name>., {"regions": JSON of {name: config}})."""
    tensors, configs = {}, {}
    for name, G in regions.items():
        configs[name] = G.cfg.to_dict()
        for k, v in G.state_dict().items():
            v = v.detach().cpu()
            tensors[f"{REGION_PREFIX}{name}.{k}"] = (v.to(dtype) if dtype is not None and v.is_floating_point()
                                                    else v).contiguous()
    return tensors, ({"regions": json.dumps(configs)} if configs else {})


def read_regions(tensors: dict[str, torch.Tensor], meta: dict[str, str], path) -> dict:
    """The region generators a model file (or FT avatar) holds: {name: RegionGenerator in eval mode}."""
    if "regions" not in meta:
        return {}
    try:
        configs = parse_json(meta["regions"], "regions")
        if not isinstance(configs, dict) or len(configs) > 8:
            raise Invalid("regions is not an object of at most 8 region configs")
        cfgs = {str(k): check_region_config(v, f"region {str(k)[:20]!r}") for k, v in configs.items()}
    except Invalid as e:
        raise CheckpointError(f"{path}: broken region generators: {e}") from None
    return {k: _build(c, tensors, f"{REGION_PREFIX}{k}.", path) for k, c in cfgs.items()}


def attach_regions(model_path, out_path, regions: dict, note: str = "") -> None:
    """Writes `out_path`: the model file `model_path` with the region generators {name: RegionGenerator}
    added (replacing any of the same name), the rest unchanged."""
    from talkinghead.persons.checkpoint import LoadedModel, read_model_file, save_model

    _, stored, _ = read_model_file(model_path)
    dtype = next((v.dtype for v in stored.values() if v.is_floating_point()), torch.float32)  # as stored (fp16)
    lm = LoadedModel.load(model_path)
    meta = {k: v for k, v in lm.meta.items() if k not in ("format", "format_version", "has_discriminator",
                                                         "regions", "talkinghead_version")}
    if note:  # one note per region, the newest last
        kept = [n for n in meta.get("regions_note", "").split("; ") if n and not n.startswith(note.split(":")[0])]
        meta["regions_note"] = "; ".join(kept + [note])
    save_model(out_path, lm.cfg, lm.E, lm.G, lm.D, extra_metadata=meta, regions={**lm.regions, **regions},
               dtype=dtype if dtype != torch.float32 else None)


def mouth_reference(crops: np.ndarray, points: np.ndarray, cfg: RegionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The person's own mouth crops: (T, S, S, 3) uint8 face crops with their landmarks (T, 68, 2) in crop
    pixels -> (ref, ref_lips) (T, 3, s, s) in [-1, 1]: the mouth cut as in training (data/regions.py)."""
    from talkinghead.data.regions import apply_transform, crop_transform, cut_crop
    from talkinghead.landmarks.rasterize import rasterize
    from talkinghead.media.images import from_uint8

    s = cfg.crop_size
    refs, lips = [], []
    for crop, pts in zip(np.asarray(crops), np.asarray(points, np.float64)):
        m = crop_transform(pts, s, cfg.crop_scale)
        refs.append(cut_crop(crop, m, s))
        lips.append(rasterize(apply_transform(m, pts), s))
    return from_uint8(np.stack(refs)), from_uint8(np.stack(lips))  # (T, 3, s, s) each


def eye_reference(crops: np.ndarray, points: np.ndarray, cfg: RegionConfig, eye: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The person's own eye crops (data/eyes.py: the left eye mirrored) -> (ref, ref_lips) (K, 3, s, s):
    both eyes of every shot (K = 2T), or one eye's (K = T)."""
    from talkinghead.data.eyes import eye_crop
    from talkinghead.media.images import from_uint8

    refs, lips = [], []
    for crop, pts in zip(np.asarray(crops), np.asarray(points, np.float64)):
        for e in ((0, 1) if eye is None else (eye,)):
            c, li, _, _ = eye_crop(crop, pts, e, cfg.crop_size, cfg.crop_scale)
            refs.append(c)
            lips.append(li)
    return from_uint8(np.stack(refs)), from_uint8(np.stack(lips))


def region_reference(crops, points, cfg: RegionConfig):
    """The person's own crops of cfg's region, as its generator's encoder takes them."""
    return eye_reference(crops, points, cfg) if cfg.region == "eyes" else mouth_reference(crops, points, cfg)


@torch.no_grad()
def region_embedding(G: torch.nn.Module, crops: np.ndarray, points: np.ndarray) -> torch.Tensor:
    """ê (N,) of a person for the region generator G: its encoder over the T shots' crops of its region (both
    eyes of each for the eyes), averaged (paper eq. 1's mean over the shots)."""
    ref, lips = region_reference(crops, points, G.cfg)
    dev = next(G.parameters()).device
    return G.embed(ref[None].to(dev), lips[None].to(dev))[0].cpu()  # (N,)

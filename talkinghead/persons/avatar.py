"""Avatar: one person, ready to be animated (paper §3.3, DESIGN.md §3).

Two kinds (paper §3.3):
- feed-forward (FF): the embedding ê = mean over the T shots of E(x, y) plus a reference to the model file
  (path + sha256); G renders with ψ̂ = P·ê, so the model file is needed to animate.
- fine-tuned (FT): the fine-tuned generator G' (its weights and ψ' as a tensor) and ê; self-contained.
Both keep what the whole-image workflow needs: the full source image (PNG bytes), the crop transform of the
face in it, the source crop and its 68 landmarks in crop pixels (for relative retargeting, DESIGN.md §2).
When the model has region generators (persons/regions.py), both also keep each region's ê of the T shots;
FT avatars keep the region generator's weights and ψ as well (self-contained).

File: one safetensors file whose metadata holds the format version, mode, T, source hashes, the model's
sha256/version and the config. `Avatar.load` needs only this module, `talkinghead.nn` and safetensors (no
training code). Making avatars: `make_ff_avatar` here; FT in `talkinghead.train.finetune.make_avatar`; the
model file is `checkpoint.LoadedModel`, the shots are `talkinghead.persons.shots`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from talkinghead import __version__
from talkinghead.persons.checkpoint import LoadedModel, as_model, read_safetensors
from talkinghead.media.files import atomic_write
from talkinghead.config import Config
from talkinghead.errors import CheckpointError
from talkinghead.media.images import png_bytes
from talkinghead.persons.shots import DEFAULT_SHOTS, Shots, embed_person
from talkinghead.persons.validation import (Invalid, check_config, check_crop, check_state, check_tensor,
                                            decode_png, parse_json)

AVATAR_FORMAT = "talkinghead-avatar"
AVATAR_FORMAT_VERSION = 1
AVATAR_SUFFIX = ".avatar"
MODES = ("ff", "ft")


@dataclass
class Avatar:
    """One person for animation (paper §3.3). Tensors live on the CPU; see module docstring."""

    mode: str  # "ff" | "ft"
    config: Config  # the model's config (rebuilds G)
    embedding: torch.Tensor  # (N,) ê
    model: dict  # {"path", "sha256", "format_version", "talkinghead_version", "step"} of the model file
    source_image: np.ndarray  # (H, W, 3) uint8: the image the face is pasted back into
    crop: object  # landmarks.align.CropTransform: source image -> crop
    source_crop: np.ndarray  # (S, S, 3) uint8
    source_points: np.ndarray  # (68, 2) float32, landmarks in crop pixels
    shots: int  # T
    source_hashes: list[str] = field(default_factory=list)
    psi: torch.Tensor | None = None  # FT: (P,) ψ'
    generator_state: dict[str, torch.Tensor] | None = None  # FT: G' state dict
    info: dict = field(default_factory=dict)  # e.g. fine-tuning stats
    regions: dict = field(default_factory=dict)  # name -> AvatarRegion

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "ft" and (self.psi is None or self.generator_state is None):
            raise ValueError("an FT avatar needs psi and generator_state")

    @property
    def image_size(self) -> int:
        return self.config.model.image_size

    # -- rendering support ---------------------------------------------------------------------------
    def check_model(self, model: LoadedModel) -> None:
        """CheckpointError unless `model` is the model file this avatar was made with."""
        if model.sha256 != self.model.get("sha256"):
            raise CheckpointError(
                f"avatar was made with another model (sha256 {self.model.get('sha256', '?')[:12]}, "
                f"{Path(self.model.get('path', '?')).name}) than {Path(model.path).name} "
                f"(sha256 {model.sha256[:12]}); use the model it was made with or make the avatar again")

    def generator(self, model=None, device="cpu") -> tuple[torch.nn.Module, torch.Tensor]:
        """(G, ψ (1, P)) in eval mode on `device`. FT: G' and ψ' from the avatar (`model`, if given, must
        be the avatar's model). FF: G from `model` (a path or LoadedModel; default the recorded model path)
        and ψ̂ = P·ê."""
        if model is not None and not isinstance(model, LoadedModel):
            model = LoadedModel.load(model, device, with_discriminator=False)
        if model is not None:
            self.check_model(model)
        if self.mode == "ft":
            from talkinghead.nn import build_generator

            cfg = Config.from_dict(self.config.to_dict())
            G = build_generator(cfg.model)
            try:
                G.load_state_dict(self.generator_state)
            except RuntimeError as e:
                raise CheckpointError(f"avatar's generator does not match its config: {str(e)[:200]}") from None
            G.to(device).eval()
            return G, self.psi.view(1, -1).to(device)
        model = self.loaded_model(model, device)
        theirs, ours = model.cfg.model, self.config.model
        if (theirs.image_size, theirs.embed_dim) != (ours.image_size, self.embedding.numel()):
            raise CheckpointError(f"avatar's config ({ours.image_size}², embedding {self.embedding.numel()}) does not "
                                  f"match its model's ({theirs.image_size}², {theirs.embed_dim}); make it again")
        G = model.G.to(device).eval()
        with torch.no_grad():
            psi = G.project(self.embedding.view(1, -1).to(device))  # (1, P)
        return G, psi

    def region_generators(self, model=None, device="cpu") -> dict:
        """{name: (region G in eval mode, ψ (1, P))} of the avatar's regions (empty without any). FT: from the
        avatar itself; FF: G from `model` (a LoadedModel or path; default the recorded model file), ψ = P·ê."""
        if not self.regions:
            return {}
        out = {}
        if self.mode == "ft":
            from talkinghead.nn.regions import RegionGenerator

            for name, r in self.regions.items():
                G = RegionGenerator(r.config)
                G.load_state_dict(r.state)
                out[name] = (G.to(device).eval(), r.psi.view(1, -1).to(device))
            return out
        model = self.loaded_model(model, device)
        for name, r in self.regions.items():
            G = model.regions.get(name)
            if G is None:
                continue  # the model file has no such region generator (any more): the frame stays the G's
            if G.cfg.embed_dim != r.embedding.numel():
                raise CheckpointError(f"avatar's {name} embedding ({r.embedding.numel()}) does not match its model's "
                                      f"region generator ({G.cfg.embed_dim}); make the avatar again")
            G = G.to(device).eval()
            with torch.no_grad():
                out[name] = (G, G.psi(r.embedding.view(1, -1).to(device)))
        return out

    def loaded_model(self, model=None, device="cpu") -> LoadedModel:
        """The FF avatar's model: `model` (checked) or its recorded model file."""
        if model is not None and not isinstance(model, LoadedModel):
            model = LoadedModel.load(model, device, with_discriminator=False)
        if model is None:
            path = Path(self.model.get("path", ""))
            if not path.is_file():
                raise CheckpointError(f"this feed-forward avatar needs its model file {path} "
                                      f"(sha256 {self.model.get('sha256', '?')[:12]}); pass it with --model")
            model = LoadedModel.load(path, device, with_discriminator=False)
        self.check_model(model)
        return model

    # -- file ------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        return {
            "format": AVATAR_FORMAT,
            "format_version": str(AVATAR_FORMAT_VERSION),
            "talkinghead_version": __version__,
            "mode": self.mode,
            "shots": str(self.shots),
            "source_hashes": json.dumps(self.source_hashes),
            "model": json.dumps(self.model),
            "config": self.config.to_json(),
            "crop": json.dumps(self.crop.to_dict()),
            "info": json.dumps(self.info),
            **({"regions": json.dumps({k: r.config.to_dict() for k, r in self.regions.items()})}
               if self.regions else {}),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Writes one self-describing safetensors file (atomically)."""
        from safetensors.torch import save_file

        tensors = {
            "embedding": self.embedding.detach().float().cpu().contiguous(),
            "source_image_png": torch.frombuffer(bytearray(png_bytes(self.source_image)), dtype=torch.uint8),
            "source_crop": torch.from_numpy(np.ascontiguousarray(self.source_crop)),
            "source_points": torch.from_numpy(np.asarray(self.source_points, np.float32).copy()),
        }
        if self.mode == "ft":
            tensors["psi"] = self.psi.detach().float().cpu().reshape(-1).contiguous()
            for k, v in self.generator_state.items():
                tensors["G." + k] = v.detach().cpu().contiguous()
        for name, r in self.regions.items():
            tensors[f"R.{name}.embedding"] = r.embedding.detach().float().cpu().reshape(-1).contiguous()
            if self.mode == "ft":
                tensors[f"R.{name}.psi"] = r.psi.detach().float().cpu().reshape(-1).contiguous()
                for k, v in r.state.items():
                    tensors[f"R.{name}.G.{k}"] = v.detach().cpu().contiguous()
        path = Path(path)
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=self.metadata()))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Avatar":
        """Reads an avatar file; CheckpointError (one line) if it is missing, corrupt, of another version, or
        holds anything the checks of talkinghead.persons.validation refuse (before anything is rendered)."""
        tensors, meta = read_safetensors(path, AVATAR_FORMAT, AVATAR_FORMAT_VERSION, "avatar")
        try:
            return cls(**_checked_fields(tensors, meta))
        except (KeyError, ValueError) as e:  # Invalid is a ValueError
            reason = str(e) if isinstance(e, Invalid) else f"{type(e).__name__}: {e}"
            raise CheckpointError(f"{path}: broken avatar file ({' '.join(reason.split())[:200]})") from None


def _checked_fields(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict:
    """Avatar's fields from a file's tensors and metadata, each checked (validation.Invalid otherwise)."""
    cfg = check_config(meta.get("config"))
    mode = meta["mode"]
    if mode not in MODES:
        raise Invalid(f"mode {mode[:20]!r} (one of {', '.join(MODES)})")
    model = parse_json(meta["model"], "model")
    if not isinstance(model, dict) or not all(isinstance(model.get(k, ""), str) for k in ("path", "sha256")):
        raise Invalid("model is not an object with a path and a sha256")
    hashes = parse_json(meta.get("source_hashes", "[]"), "source_hashes")
    info = parse_json(meta.get("info", "{}"), "info")
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes) or not isinstance(info, dict):
        raise Invalid("source_hashes is not a list of strings or info not an object")
    shots = int(meta["shots"])
    if not 1 <= shots <= 100_000:
        raise Invalid(f"shots = {shots} (at least 1)")
    m, s = cfg.model, cfg.model.image_size
    image = decode_png(tensors.get("source_image_png"), "source_image_png")
    fields = dict(mode=mode, config=cfg, model=model, shots=shots, source_hashes=hashes, info=info,
                  source_image=image, crop=check_crop(parse_json(meta["crop"], "crop"), image.shape, s),
                  embedding=check_tensor(tensors.get("embedding"), "embedding", (m.embed_dim,)),
                  source_crop=check_tensor(tensors.get("source_crop"), "source_crop", (s, s, 3), "uint8").numpy(),
                  source_points=check_tensor(tensors.get("source_points"), "source_points", (68, 2),
                                             bound=10.0 * s).numpy())
    if mode == "ft":
        from talkinghead.nn import build_generator

        gstate = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
        G = build_generator(Config.from_dict(cfg.to_dict()).model)
        check_state(G.state_dict(), gstate, "the generator's weights")
        with torch.no_grad():
            p = G.project(torch.zeros(1, m.embed_dim)).shape[1]
        fields.update(psi=check_tensor(tensors.get("psi"), "psi", (p,)), generator_state=gstate)
    fields["regions"] = _checked_regions(tensors, meta, mode)
    return fields


@dataclass
class AvatarRegion:
    """One region generator's side of an avatar: its config, ê of the person's shots and, for FT, the
    generator's weights and ψ."""

    config: object  # config.RegionConfig
    embedding: torch.Tensor  # (N,)
    psi: torch.Tensor | None = None  # FT: (P,)
    state: dict[str, torch.Tensor] | None = None  # FT: the region generator's state dict


def _checked_regions(tensors: dict[str, torch.Tensor], meta: dict[str, str], mode: str) -> dict:
    """The avatar's regions from its file (empty for files without), each checked."""
    if "regions" not in meta:
        return {}
    from talkinghead.persons.validation import check_region_config

    configs = parse_json(meta["regions"], "regions")
    if not isinstance(configs, dict) or len(configs) > 8:
        raise Invalid("regions is not an object of at most 8 region configs")
    out = {}
    for name, c in configs.items():
        cfg = check_region_config(c, f"region {str(name)[:20]!r}")
        e = check_tensor(tensors.get(f"R.{name}.embedding"), f"R.{name}.embedding", (cfg.embed_dim,))
        r = AvatarRegion(cfg, e)
        if mode == "ft":
            from talkinghead.nn.regions import RegionGenerator

            G = RegionGenerator(cfg)
            prefix = f"R.{name}.G."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            check_state(G.state_dict(), state, f"the {name} region generator's weights")
            r.psi, r.state = check_tensor(tensors.get(f"R.{name}.psi"), f"R.{name}.psi", (G.num_psi,)), state
        out[str(name)] = r
    return out


def shot_regions(mode: str, model: LoadedModel, shots: Shots) -> dict:
    """{name: AvatarRegion} for the model's region generators from the T shots (ê averaged over them,
    persons/regions.region_embedding); FT keeps a copy of each generator and ψ = P·ê."""
    from talkinghead.persons.regions import region_embedding

    out = {}
    for name, G in model.regions.items():
        e = region_embedding(G, shots.crops, shots.points)
        r = AvatarRegion(G.cfg, e)
        if mode == "ft":
            with torch.no_grad():
                r.psi = G.psi(e.view(1, -1).to(next(G.parameters()).device)).view(-1).cpu()
            r.state = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
        out[name] = r
    return out


def avatar_from_shots(mode: str, model: LoadedModel, shots: Shots, embedding: torch.Tensor, **kw) -> Avatar:
    """The Avatar of `shots` (first shot = paste-back target) made with `model`."""
    return Avatar(mode=mode, config=Config.from_dict(model.cfg.to_dict()), embedding=embedding.detach().cpu(),
                  model=model.info(), source_image=shots.image, crop=shots.transforms[0],
                  source_crop=shots.crops[0], source_points=shots.points[0], shots=len(shots),
                  source_hashes=list(shots.hashes), regions=kw.pop("regions", None) or shot_regions(mode, model, shots),
                  **kw)


def make_ff_avatar(inputs, model, shots: int = DEFAULT_SHOTS, face_index: int | None = None, device="cpu",
                   detector=None) -> Avatar:
    """Feed-forward avatar (paper §3.3): ê = mean E(x_t, y_t) over the T shots; no training.
    inputs: image paths/arrays or one video path; model: model file path or LoadedModel."""
    model = as_model(model, device, with_discriminator=False)
    sh, _, _, e = embed_person(inputs, model, shots, face_index, detector, device)
    return avatar_from_shots("ff", model, sh, e)

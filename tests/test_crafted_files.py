"""Crafted model files and avatars: each is refused when it is loaded, with a one-line CheckpointError, never
a traceback later (malformed or deeply nested JSON, wrong types, NaN or absurd crops, wrong tensor shapes,
decompression-bomb PNGs, absurd sizes, unknown generators). Tiny model and a synthetic avatar built here."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from talkinghead.config import tiny
from talkinghead.errors import CheckpointError
from talkinghead.landmarks.align import CropTransform
from talkinghead.landmarks.manual import mean_shape
from talkinghead.media.images import png_bytes
from talkinghead.nn import build_generator
from talkinghead.persons.avatar import Avatar
from talkinghead.persons.checkpoint import LoadedModel

from helpers import random_model_file

DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in json
NESTED = json.dumps({"model": {"attention_sizes": [[[[[[[[[[[[[[[[[[[16]]]]]]]]]]]]]]]]]]]}})


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _rewrite(src: Path, dst: Path, meta: dict | None = None, tensors: dict | None = None, config=None) -> Path:
    """A copy of a safetensors file with metadata entries / tensors replaced (None drops an entry) and the
    config edited by `config(dict)`."""
    t, m = _read(src)
    if config is not None:
        cfg = json.loads(m["config"])
        config(cfg)
        m["config"] = json.dumps(cfg)
    for k, v in (meta or {}).items():
        m.pop(k) if v is None else m.__setitem__(k, v)
    for k, v in (tensors or {}).items():
        t.pop(k) if v is None else t.__setitem__(k, v)
    save_file(t, str(dst), metadata=m)
    return dst


def _one_line(ei):
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 400, msg


def _png_header(w: int, h: int) -> bytes:
    """A PNG that claims w×h pixels (8-bit RGB) with a tiny IDAT: a decompression bomb for a naive reader."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _u8(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return random_model_file(tmp_path_factory.mktemp("m") / "tiny.safetensors")


MODEL_CASES = {
    "malformed_json": dict(meta={"config": "{not json"}),
    "deeply_nested_json": dict(meta={"config": DEEP}),
    "nested_values": dict(meta={"config": NESTED}),
    "no_config": dict(meta={"config": None}),
    "config_a_list": dict(meta={"config": "[1, 2]"}),
    "section_a_list": dict(config=lambda c: c.__setitem__("model", [1])),
    "unknown_generator": dict(config=lambda c: c["model"].__setitem__("generator", "evil")),
    "absurd_image_size": dict(config=lambda c: c["model"].__setitem__("image_size", 2 ** 30)),
    "image_size_a_string": dict(config=lambda c: c["model"].__setitem__("image_size", "64")),
    "nan_float": dict(config=lambda c: c["model"].__setitem__("mask_bias", float("nan"))),
    "huge_int": dict(config=lambda c: c["model"].__setitem__("embed_dim", 10 ** 12)),
    "wrong_tensor_shape": dict(tensors={"G.proj.bias": torch.zeros(7)}),
    "missing_tensor": dict(tensors={"G.proj.bias": None}),
    "extra_tensor": dict(tensors={"G.evil": torch.zeros(3)}),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_crafted_model_files_are_refused_in_one_line(model_file, tmp_path, case):
    bad = _rewrite(model_file, tmp_path / f"{case}.safetensors", **MODEL_CASES[case])
    with pytest.raises(CheckpointError) as ei:
        LoadedModel.load(bad)
    _one_line(ei)
    assert case in str(ei.value)  # names the file


def test_intact_model_file_still_loads(model_file):
    assert LoadedModel.load(model_file).cfg.model.image_size == 64


def _avatar(mode: str) -> Avatar:
    cfg = tiny()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 100, 3), dtype=np.uint8)
    extra = {}
    if mode == "ft":
        G = build_generator(cfg.model)
        with torch.no_grad():
            psi = G.project(torch.zeros(1, cfg.model.embed_dim))[0]
        extra = dict(psi=psi, generator_state=G.state_dict())
    return Avatar(mode=mode, config=cfg, embedding=torch.zeros(cfg.model.embed_dim), model={"path": "m", "sha256": "0"},
                  source_image=image, crop=CropTransform(50.0, 60.0, 80.0, 64), source_crop=image[:64, :64].copy(),
                  source_points=(mean_shape() * 20 + 32).astype(np.float32), shots=1, source_hashes=["a"], **extra)


@pytest.fixture(scope="module")
def avatar_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("a")
    return {mode: _avatar(mode).save(d / f"{mode}.avatar") for mode in ("ff", "ft")}


def _crop(**kw) -> str:
    return json.dumps({"cx": 50.0, "cy": 60.0, "side": 80.0, "size": 64, **kw})


AVATAR_CASES = {
    "malformed_config": dict(meta={"config": "{not json"}),
    "deeply_nested_config": dict(meta={"config": DEEP}),
    "unknown_generator": dict(config=lambda c: c["model"].__setitem__("generator", "evil")),
    "absurd_image_size": dict(config=lambda c: c["model"].__setitem__("image_size", 2 ** 20)),
    "crop_a_list": dict(meta={"crop": "[50, 60, 80, 64]"}),
    "crop_nan": dict(meta={"crop": _crop(cx=float("nan"))}),
    "crop_1e30": dict(meta={"crop": _crop(side=1e30)}),
    "crop_side_0": dict(meta={"crop": _crop(side=0.0)}),
    "crop_negative_side": dict(meta={"crop": _crop(side=-80.0)}),
    "crop_far_away": dict(meta={"crop": _crop(cx=1e6)}),
    "crop_a_string": dict(meta={"crop": _crop(side="80")}),
    "crop_of_another_size": dict(meta={"crop": _crop(size=4096)}),
    "deeply_nested_info": dict(meta={"info": DEEP}),
    "model_not_an_object": dict(meta={"model": "[1]"}),
    "sha256_a_number": dict(meta={"model": json.dumps({"path": "m", "sha256": 5})}),
    "bad_mode": dict(meta={"mode": "evil"}),
    "shots_0": dict(meta={"shots": "0"}),
    "embedding_shape": dict(tensors={"embedding": torch.zeros(5)}),
    "embedding_nan": dict(tensors={"embedding": torch.full((32,), float("nan"))}),
    "source_crop_shape": dict(tensors={"source_crop": torch.zeros(8, 8, 3, dtype=torch.uint8)}),
    "source_points_1e30": dict(tensors={"source_points": torch.full((68, 2), 1e30)}),
    "source_points_missing": dict(tensors={"source_points": None}),
    "png_decompression_bomb": dict(tensors={"source_image_png": _u8(_png_header(100_000, 100_000))}),
    "png_absurd_side": dict(tensors={"source_image_png": _u8(png_bytes(np.zeros((1, 20_000, 3), np.uint8)))}),
    "png_garbage": dict(tensors={"source_image_png": _u8(b"\x89PNG garbage" * 10)}),
    "png_truncated": dict(tensors={"source_image_png": _u8(png_bytes(np.zeros((120, 100, 3), np.uint8))[:60])}),
    "png_as_floats": dict(tensors={"source_image_png": torch.zeros(100)}),
}
FT_CASES = {
    "ft_generator_shape": dict(tensors={"G.proj.bias": torch.zeros(7)}),
    "ft_generator_missing": dict(tensors={"G.proj.bias": None}),
    "ft_psi_shape": dict(tensors={"psi": torch.zeros(3)}),
    "ft_psi_missing": dict(tensors={"psi": None}),
}


@pytest.mark.parametrize("case", sorted(AVATAR_CASES) + sorted(FT_CASES))
def test_crafted_avatars_are_refused_in_one_line(avatar_files, tmp_path, case):
    mode, spec = ("ft", FT_CASES[case]) if case in FT_CASES else ("ff", AVATAR_CASES[case])
    bad = _rewrite(avatar_files[mode], tmp_path / f"{case}.avatar", **spec)
    with pytest.raises(CheckpointError) as ei:
        Avatar.load(bad)
    _one_line(ei)
    assert case in str(ei.value)


def test_intact_avatars_still_load(avatar_files):
    ff, ft = Avatar.load(avatar_files["ff"]), Avatar.load(avatar_files["ft"])
    assert ff.crop == CropTransform(50.0, 60.0, 80.0, 64) and ff.source_image.shape == (120, 100, 3)
    G, psi = ft.generator()
    assert psi.shape[0] == 1


def test_ff_avatar_of_another_config_than_its_model_is_refused(model_file, tmp_path):
    """An FF avatar whose recorded sha256 is its model's but whose config is not: one line before rendering."""
    av = _avatar("ff")
    model = LoadedModel.load(model_file)
    av.model = model.info()
    av.embedding = torch.zeros(16)
    with pytest.raises(CheckpointError, match="does not match its model"):
        av.generator(model)


def test_animate_cli_refuses_an_avatar_with_crop_side_0(avatar_files, tmp_path, capsys):
    """`animate` with a side-0 crop: exit 1, one line naming the file, no output (it animated nothing, exit 0)."""
    from talkinghead.cli import main

    bad = _rewrite(avatar_files["ff"], tmp_path / "side0.avatar", meta={"crop": _crop(side=0.0)})
    from talkinghead.media.video_writer import VideoWriter

    with VideoWriter(tmp_path / "driver.mp4", 25) as w:
        for _ in range(3):
            w.write(np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "out.mp4"
    rc = main(["animate", str(bad), str(tmp_path / "driver.mp4"), "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "side0.avatar" in err[0] and "crop side" in err[0], err
    assert not out.exists()

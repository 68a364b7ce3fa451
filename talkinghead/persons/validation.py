"""Validation of what model files and avatars hold, before any work is done with it.

Every value read from a file's metadata or tensors is checked here: JSON bounded in size and depth, the
config's types and ranges (so that it builds networks of a sane size), tensor shapes against the networks the
config builds, an avatar's crop (finite, a side of at least one pixel, overlapping its image) and its embedded
PNG (dimensions read from the header and bounded before it is decoded). Each check raises `Invalid`, a
ValueError with a one-line message; the readers turn it into a CheckpointError naming the file.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import fields

import numpy as np
import torch

from talkinghead.config import SECTIONS, Config, validate

MAX_JSON_CHARS = 1 << 20
MAX_JSON_DEPTH = 16
MAX_IMAGE_SIDE = 16384  # pixels, either side of an avatar's source image
MAX_IMAGE_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS)
# (section, field) -> largest allowed value in a file's config: networks of a size a file can sensibly hold
_MAXIMUM = {
    ("model", "image_size"): 1024, ("model", "embed_dim"): 4096, ("model", "base_channels"): 1024,
    ("model", "max_channels"): 2048, ("model", "bottleneck_size"): 1024, ("model", "num_res_blocks"): 32,
    ("model", "motion_channels"): 1024, ("model", "num_videos"): 10_000_000,
}


class Invalid(ValueError):
    """A value read from a file that talkinghead cannot use; the message is one line."""


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:120] or type(e).__name__


def _depth(data) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(v, dict):
            stack += [(x, d + 1) for x in v.values()]
        elif isinstance(v, list):
            stack += [(x, d + 1) for x in v]
    return deepest


def parse_json(text, what: str):
    """The JSON value of `text` (one metadata entry named `what`): at most MAX_JSON_CHARS long and
    MAX_JSON_DEPTH deep."""
    if not isinstance(text, str):
        raise Invalid(f"{what} is missing")
    if len(text) > MAX_JSON_CHARS:
        raise Invalid(f"{what} is {len(text)} characters long (at most {MAX_JSON_CHARS})")
    try:
        data = json.loads(text)
    except RecursionError:
        raise Invalid(f"{what} is nested too deeply") from None
    except ValueError as e:
        raise Invalid(f"{what} is not JSON ({_short(e)})") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise Invalid(f"{what} is nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return data


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_value(key: str, v, default) -> None:
    """`v` has the type of the config field whose default is `default` (an int for a float allowed)."""
    if isinstance(default, bool):
        ok = isinstance(v, bool)
    elif isinstance(default, int):
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif isinstance(default, float):
        ok = _is_number(v) and math.isfinite(v)
    elif isinstance(default, str):
        ok = isinstance(v, str) and len(v) <= 4096
    elif isinstance(default, tuple):
        kinds = {type(x) for x in default}
        ok = isinstance(v, list) and len(v) <= 64 and all(
            (isinstance(x, int) and not isinstance(x, bool)) if kinds == {int} else (_is_number(x) and math.isfinite(x))
            for x in v)
    else:
        ok = True
    if not ok:
        raise Invalid(f"config {key} = {_short(repr(v))[:60]} (expected a finite {type(default).__name__})")


def check_config(text) -> Config:
    """The Config of a file's JSON `config` entry: an object of the known sections, every known field of
    its type, the ranges of `config.validate` and sizes up to _MAXIMUM; unknown keys are ignored."""
    data = parse_json(text, "config")
    if not isinstance(data, dict):
        raise Invalid("config is not a JSON object")
    defaults = Config()
    if "name" in data:
        _check_value("name", data["name"], defaults.name)
    for section in SECTIONS:
        part = data.get(section, {})
        if not isinstance(part, dict):
            raise Invalid(f"config section {section!r} is not a JSON object")
        for f in fields(getattr(defaults, section)):
            if f.name in part:
                _check_value(f"{section}.{f.name}", part[f.name], getattr(getattr(defaults, section), f.name))
    cfg = Config.from_dict(data)
    problems = validate(cfg)
    for (section, name), top in _MAXIMUM.items():
        v = getattr(getattr(cfg, section), name)
        if v > top:
            problems.append(f"{section}.{name} = {v} (at most {top})")
    m = cfg.model
    if m.num_videos < 0:
        problems.append(f"model.num_videos = {m.num_videos} (cannot be negative)")
    if any(s < 1 or s > m.image_size or s & (s - 1) for s in m.attention_sizes):
        problems.append(f"model.attention_sizes = {list(m.attention_sizes)} (powers of two up to image_size)")
    if problems:
        raise Invalid("config " + "; ".join(problems[:3]))
    return cfg


def check_state(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], what: str,
                optional: tuple[str, ...] = ()) -> None:
    """The tensors have exactly the names and shapes of `expected` (a module's state dict); names starting
    with one of `optional` may be absent."""
    missing = [k for k in expected if k not in tensors and not k.startswith(optional)]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise Invalid(f"{what} do not match the networks its config builds "
                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise Invalid(f"{what}: {k} has shape {list(v.shape)}, its config builds {list(expected[k].shape)}")


def check_tensor(t, name: str, shape: tuple[int, ...], kind: str = "float", bound: float | None = None):
    """`t` has `shape` and is a "float" tensor of finite values (at most `bound` in magnitude) or a "uint8"
    one; returns it."""
    if not isinstance(t, torch.Tensor):
        raise Invalid(f"{name} is missing")
    if tuple(t.shape) != tuple(shape):
        raise Invalid(f"{name} has shape {list(t.shape)} (expected {list(shape)})")
    if kind == "uint8":
        if t.dtype != torch.uint8:
            raise Invalid(f"{name} is {t.dtype} (expected uint8)")
        return t
    if not t.is_floating_point():
        raise Invalid(f"{name} is {t.dtype} (expected floating point)")
    if not bool(torch.isfinite(t).all()):
        raise Invalid(f"{name} holds values that are not finite")
    if bound is not None and t.numel() and float(t.abs().max()) > bound:
        raise Invalid(f"{name} holds values beyond ±{bound:g}")
    return t


def png_size(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) from a PNG's header, before decoding: a PNG, each side 1 … MAX_IMAGE_SIDE and at most
    MAX_IMAGE_PIXELS in all."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Invalid(f"{name} claims too many pixels (a decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise Invalid(f"{name} is not an image ({_short(e)})") from None
    if fmt != "PNG":
        raise Invalid(f"{name} is {fmt}, not PNG")
    if not (1 <= w <= MAX_IMAGE_SIDE and 1 <= h <= MAX_IMAGE_SIDE) or w * h > MAX_IMAGE_PIXELS:
        raise Invalid(f"{name} is {w}x{h} pixels (each side at most {MAX_IMAGE_SIDE}, "
                      f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels in all)")
    return w, h


def decode_png(t, name: str) -> np.ndarray:
    """(H, W, 3) uint8 from a 1-D uint8 tensor of PNG bytes, its size checked (png_size) before decoding."""
    from PIL import Image

    from talkinghead.media.images import png_decode

    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.ndim != 1:
        raise Invalid(f"{name} is not a 1-D uint8 tensor of PNG bytes")
    data = t.numpy().tobytes()
    w, h = png_size(data, name)
    try:
        image = png_decode(data)
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise Invalid(f"{name} is a broken PNG ({_short(e)})") from None
    if image.shape != (h, w, 3):
        raise Invalid(f"{name} decodes to shape {list(image.shape)}, not its header's {w}x{h}")
    return image


def check_crop(data, image_shape, size: int):
    """The CropTransform of an avatar's `crop` entry: finite numbers, `size` = the model's image size, a side
    of at least one pixel and at most 4 × the image's larger side, a box overlapping the image."""
    from talkinghead.landmarks.align import CropTransform

    if not isinstance(data, dict):
        raise Invalid("crop is not a JSON object")
    for k in ("cx", "cy", "side", "size"):
        if not _is_number(data.get(k)) or not math.isfinite(data[k]):
            raise Invalid(f"crop {k} = {_short(repr(data.get(k)))[:40]} (expected a finite number)")
    h, w = image_shape[:2]
    cx, cy, side = float(data["cx"]), float(data["cy"]), float(data["side"])
    if data["size"] != size:
        raise Invalid(f"crop size = {data['size']} (the model's image size is {size})")
    if not 1.0 <= side <= 4.0 * max(h, w):
        raise Invalid(f"crop side = {side:g} pixels (1 … {4 * max(h, w)} for a {w}x{h} image)")
    if abs(cx - w / 2) > (w + side) / 2 or abs(cy - h / 2) > (h + side) / 2:
        raise Invalid(f"crop box centred at ({cx:g}, {cy:g}) lies outside the {w}x{h} image")
    return CropTransform(cx=cx, cy=cy, side=side, size=int(size))


_REGION_MAXIMUM = {"crop_size": 256, "bottleneck_blocks": 16, "embed_dim": 4096, "ref_channels": 512,
                   "teeth_bank_crop": 128}


def check_region_config(data, what: str = "region config"):
    """The RegionConfig of a parsed JSON object: known fields of their types, sizes a file can sensibly hold
    (crop_size a multiple of 8 up to 256, four U-Net widths up to 1024)."""
    from talkinghead.config import RegionConfig

    if not isinstance(data, dict):
        raise Invalid(f"{what} is not a JSON object")
    defaults = RegionConfig()
    for f in fields(defaults):
        if f.name in data:
            _check_value(f"{what} {f.name}", data[f.name], getattr(defaults, f.name))
    cfg = RegionConfig.from_dict(data)
    problems = [f"{k} = {getattr(cfg, k)} (1 to {top})" for k, top in _REGION_MAXIMUM.items()
                if not 1 <= getattr(cfg, k) <= top]
    if not 0 <= cfg.teeth_bank <= 4096:
        problems.append(f"teeth_bank = {cfg.teeth_bank} (0 to 4096 entries)")
    if cfg.crop_size % 8:
        problems.append(f"crop_size = {cfg.crop_size} (a multiple of 8)")
    if len(cfg.channels) != 4 or not all(1 <= c <= 1024 for c in cfg.channels):
        problems.append(f"channels = {list(cfg.channels)[:6]} (four widths, 1 to 1024)")
    if not (math.isfinite(cfg.crop_scale) and 0.5 <= cfg.crop_scale <= 8) or not 0 <= cfg.dilate <= 16:
        problems.append(f"crop_scale = {cfg.crop_scale}, dilate = {cfg.dilate} (0.5 to 8, 0 to 16)")
    if cfg.region not in ("mouth", "eyes"):
        problems.append(f"region = {cfg.region[:20]!r} ('mouth' or 'eyes')")
    if problems:
        raise Invalid(f"{what} " + "; ".join(problems[:3]))
    return cfg

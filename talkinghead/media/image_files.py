"""Image files in and out with PIL: any mode read as (H, W, 3) uint8 RGB upright by its EXIF orientation,
outputs written with the invisible mark of talkinghead.media.watermark. Unreadable files raise
`talkinghead.errors.VideoError` with a one-line message."""

from __future__ import annotations

import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from talkinghead.errors import VideoError
from talkinghead.media import watermark
from talkinghead.media.files import input_file


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


_ROWS = 512  # rows per band when copying pixels out of PIL


def _oriented(im: Image.Image) -> Image.Image:
    """The image turned upright by its EXIF orientation tag, in place (no copy when there is none); a broken
    EXIF block leaves it as stored."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except (SyntaxError, ValueError, KeyError, TypeError, struct.error):
        pass
    return im


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB: 16-bit and 32-bit greyscale scaled to 8 bits (PIL's own conversion
    clips them: a white image), transparency composited onto white, CMYK/palette/greyscale/YCbCr converted."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        a = np.asarray(im)
        if im.mode == "F":
            a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        elif im.mode == "I" and a.max(initial=0) <= 255:  # an 8-bit image stored as 32-bit integers
            pass
        else:
            a = np.clip(a, 0, 65535) / 257.0
        g = np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.new("RGB", im.size, (255, 255, 255))
        im.paste(rgba, mask=rgba.getchannel("A"))
        del rgba
    elif im.mode != "RGB":
        im = im.convert("RGB")
    # copied in bands of rows: np.asarray(im) goes through im.tobytes(), two more copies of the whole image
    a = np.empty((im.height, im.width, 3), np.uint8)
    for y in range(0, im.height, _ROWS):
        a[y:y + _ROWS] = np.asarray(im.crop((0, y, im.width, min(y + _ROWS, im.height))))
    return a


def read_image(path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, upright by its EXIF orientation: 8- and 16-bit, palette,
    greyscale, CMYK and transparent (composited onto white) images alike."""
    p = input_file(path, "image", VideoError)
    try:
        with warnings.catch_warnings():  # a photo the user gives is not a decompression bomb below PIL's hard limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                im.load()
                return _to_rgb(_oriented(im))
    except Image.DecompressionBombError as e:
        n = [int(v) for v in re.findall(r"\d+", str(e))[:2]]
        size = f"{n[0] / 1e6:.0f} megapixels, above the decoder's limit of {n[1] / 1e6:.0f}" if len(n) == 2 else \
            "too many pixels"
        raise VideoError(f"cannot read image {p}: {size}; downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise VideoError(f"cannot read image {p}: {_short(e)}") from None


def write_image(path, image: np.ndarray, quality: int = 95) -> None:
    """Writes an output image, (H, W, 3) uint8 RGB, with the invisible mark of talkinghead.media.watermark (format
    from the suffix; JPEG at `quality`)."""
    write_dataset_image(path, watermark.embed(np.asarray(image)), quality=quality)


def write_dataset_image(path, image: np.ndarray, quality: int = 95) -> None:
    """Writes (H, W, 3) uint8 RGB as it is, unmarked: only for crops of real footage (preprocessing's training
    data), which are no output of the model — a marked training set would teach the model the mark and blur
    what `talkinghead verify` means."""
    Image.fromarray(np.ascontiguousarray(image)).save(str(path), quality=quality)

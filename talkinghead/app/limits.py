"""What one visitor of the web app may ask of the server (`AppLimits`, the defaults of `talkinghead serve`'s
options), the checks of a driving video and a photo against them (from the file's header, before any frame or
pixel is decoded), and the memory a finished job leaves to the allocator handed back."""

from __future__ import annotations

import ctypes
import gc
import warnings
from dataclasses import dataclass
from pathlib import Path

from talkinghead.errors import TalkingHeadError


@dataclass(frozen=True)
class AppLimits:
    """The web app's limits per request and per session."""

    upload_mb: float = 50.0  # any one uploaded file (gradio refuses a larger one)
    driver_seconds: float = 30.0  # a driving video's length
    driver_side: int = 1920  # a driving video's larger side, pixels
    photo_megapixels: float = 40.0  # a photo with more pixels (its header says) is refused, never decoded
    photo_side: int = 2048  # a photo with a larger side is shrunk to it
    photos: int = 8  # photos per avatar
    outputs: int = 3  # a session's last jobs kept (their videos downloadable); older ones are removed
    avatars: int = 8  # a session's last avatars kept for animating again
    cache_minutes: int = 60  # uploads and gradio's copies of results are removed after this long

    @property
    def upload_bytes(self) -> int:
        return int(self.upload_mb * 1024 * 1024)


# what each limit means on the command line (`talkinghead serve --max-...`): option, field, help
OPTIONS = [
    ("--max-upload-mb", "upload_mb", "largest uploaded file, MB"),
    ("--max-driver-seconds", "driver_seconds", "longest driving video, seconds"),
    ("--max-driver-side", "driver_side", "largest side of a driving video, pixels"),
    ("--max-photo-megapixels", "photo_megapixels", "largest photo, megapixels (read from its header; larger "
                                                   "ones are refused undecoded)"),
    ("--photo-side", "photo_side", "photos with a larger side are shrunk to this many pixels"),
    ("--max-photos", "photos", "most photos per avatar"),
    ("--keep-outputs", "outputs", "jobs kept per visitor (older videos are removed)"),
    ("--keep-avatars", "avatars", "avatars kept per visitor"),
    ("--cache-minutes", "cache_minutes", "uploads and copies of results are removed after this long"),
]


def _name(path) -> str:
    return Path(path).name


def check_driver(info, path, limits: AppLimits) -> None:
    """A one-line TalkingHeadError when the driving video (its talkinghead.media.video.VideoInfo) is longer
    or larger than the limits allow."""
    seconds = info.duration or (info.num_frames / info.fps if info.fps else 0.0)
    if seconds > limits.driver_seconds:
        raise TalkingHeadError(f"{_name(path)} is {seconds:.0f} s long: this server animates driving videos "
                               f"of up to {limits.driver_seconds:g} s; trim it")
    if max(info.width, info.height) > limits.driver_side:
        raise TalkingHeadError(f"{_name(path)} is {info.width}×{info.height}: this server takes driving videos "
                               f"of up to {limits.driver_side} pixels a side; downscale it")


def check_photo(path, limits: AppLimits, folder: Path) -> str:
    """`path`, or a copy in `folder` (same file name) shrunk to `limits.photo_side`; a one-line
    TalkingHeadError when its header gives more than `limits.photo_megapixels`. A file PIL cannot open is
    returned as it is (the library's reader names the problem)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return str(path)
    if w * h > limits.photo_megapixels * 1e6:
        raise TalkingHeadError(f"{_name(path)} is {w}×{h} ({w * h / 1e6:.0f} megapixels): this server takes "
                               f"photos of up to {limits.photo_megapixels:g} megapixels; downscale it")
    if max(w, h) <= limits.photo_side:
        return str(path)
    return str(_shrunk(path, limits.photo_side, folder))


def _shrunk(path, side: int, folder: Path) -> Path:
    """A PNG copy of the photo at `path`, upright, its larger side `side` pixels."""
    from PIL import Image, ImageOps

    from talkinghead.media.image_files import read_image

    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA", "L", "LA"):
            im.draft(im.mode, (side, side))  # a JPEG decodes at a fraction of its size
            small = ImageOps.exif_transpose(im)
        else:  # 16-bit, CMYK, palettes: the library's reader gets their colours right
            small = Image.fromarray(read_image(path))
    small.thumbnail((side, side), Image.LANCZOS)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / _name(path)
    small.save(out, format="PNG")
    return out


def release_memory() -> None:
    """Collects garbage and hands the C allocator's free memory back to the system (glibc's malloc_trim),
    so that a long-running server's memory does not keep every job's peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass

"""Options of `talkinghead preprocess` (one dataclass): each numeric field stores its allowed range once, used
by the command line (argparse types) and by `validate()` (library callers)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from talkinghead.config import CROP_MARGIN
from talkinghead.errors import TalkingHeadError

IMAGE_FORMATS = ("jpg", "png")


def _opt(default, lo=None, hi=None, **kw):
    """A dataclass field whose allowed range [lo, hi] (None: open) is stored once, for the CLI and validate()."""
    return field(default=default, metadata={"range": (lo, hi), **kw})


@dataclass
class PreprocessOptions:
    resolution: int = _opt(256, 16, 4096)  # S, side of the crops
    every: int = _opt(3, 1)  # sample every n-th frame ...
    frames_per_video: int = _opt(0, 0)  # ... then at most this many, evenly spaced (0 = no cap)
    redetect_every: int = _opt(10, 1)  # tracking: full detection every n sampled frames
    segment_seconds: float = _opt(10.0, 0.0)  # one stable crop per this much video (0 = one crop per clip)
    image_format: str = "jpg"  # "jpg" (q95) | "png"
    quality: int = _opt(95, 1, 100)  # JPEG quality
    min_frames: int = _opt(2, 1)  # fewer frames with a face than this -> the video is skipped (K+1 needs several)
    margin: float = _opt(CROP_MARGIN, 0.0, 4.0)  # crop margin around the landmark extent (config.CROP_MARGIN)
    upsample: int = _opt(0, 0, 4)  # first HOG up-sampling tried (landmarks/cascade.py: more for small frames)
    workers: int = _opt(1, 1, 1024)  # parallel processes (one video each)

    def validate(self) -> "PreprocessOptions":
        """Raises TalkingHeadError (one line) for a value out of its range; returns self."""
        if self.image_format == "jpeg":
            self.image_format = "jpg"
        if self.image_format not in IMAGE_FORMATS:
            raise TalkingHeadError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, "
                                   f"got {self.image_format!r}")
        for f in fields(self):
            if "range" not in f.metadata:
                continue
            v, (lo, hi) = getattr(self, f.name), f.metadata["range"]
            kind = int if f.type in ("int", int) else float
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)) \
                    or not np.isfinite(v):
                raise TalkingHeadError(f"{f.name} must be a {'whole ' if kind is int else ''}number, got {v!r}")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise TalkingHeadError(f"{f.name} = {v} is out of range {_range_text(lo, hi)}")
            setattr(self, f.name, kind(v))
        return self


def _range_text(lo, hi) -> str:
    if hi is None:
        return f"(must be >= {lo:g})"
    if lo is None:
        return f"(must be <= {hi:g})"
    return f"[{lo:g}, {hi:g}]"


def option_range(name: str) -> tuple:
    """(lo, hi) of a numeric PreprocessOptions field (None: open), e.g. for argparse's int_range."""
    for f in fields(PreprocessOptions):
        if f.name == name:
            return f.metadata["range"]
    raise KeyError(name)


def make_options(**values) -> PreprocessOptions:
    """PreprocessOptions from keyword values (unknown names: TypeError), validated."""
    names = {f.name for f in fields(PreprocessOptions)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown preprocess option(s): {', '.join(unknown)}")
    return PreprocessOptions(**values).validate()

"""Shared argparse pieces for the command modules: ranged numeric types and defaults read from the config.

Every numeric option gets a range (`int_range`, `float_range`): argparse then answers a bad value with its
usual one-line usage error and exit code 2, before any work starts. Defaults come from the config
dataclasses (`default_of`), never written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from talkinghead.errors import TalkingHeadError


def int_range(lo: int | None = None, hi: int | None = None, name: str = "a whole number"):
    """An argparse `type` accepting integers in [lo, hi] (None: unbounded)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        _check(v, lo, hi, text)
        return v

    parse.__name__ = "int"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """An argparse `type` accepting finite floats in [lo, hi] ((lo, hi] when lo_open)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if lo_open and lo is not None and v <= lo:
            raise argparse.ArgumentTypeError(f"{text} must be greater than {lo:g}")
        _check(v, lo, hi, text)
        return v

    parse.__name__ = "float"
    return parse


def _names(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.replace(" ", "").split(",") if x)


def int_list(lo: int | None = None, hi: int | None = None):
    """An argparse `type` for comma-separated integers, each in [lo, hi] (options.int_range's rule)."""
    one = int_range(lo, hi)

    def parse(text: str) -> tuple[int, ...]:
        vals = tuple(one(x) for x in _names(text))
        if not vals:
            raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
        return vals

    parse.__name__ = "list of int"
    return parse


def name_list(check):
    """An argparse `type` for comma-separated names, checked by `check(names)` (TalkingHeadError = invalid)."""

    def parse(text: str) -> tuple[str, ...]:
        names = _names(text)
        if not names:
            raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
        try:
            check(names)
        except TalkingHeadError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return names

    parse.__name__ = "list of names"
    return parse


def _check(v, lo, hi, text: str) -> None:
    if lo is not None and v < lo:
        raise argparse.ArgumentTypeError(f"{text} is below the smallest allowed value {lo:g}")
    if hi is not None and v > hi:
        raise argparse.ArgumentTypeError(f"{text} is above the largest allowed value {hi:g}")


def default_of(dataclass_type, field_name: str):
    """The default of one field of a config dataclass (so the CLI never repeats a default)."""
    for f in dataclasses.fields(dataclass_type):
        if f.name == field_name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    raise KeyError(f"{dataclass_type.__name__} has no field {field_name!r}")


def param_default(fn, name: str):
    """The default of one parameter of a library function (so the CLI never repeats a default)."""
    import inspect

    value = inspect.signature(fn).parameters[name].default
    if value is inspect.Parameter.empty:
        raise KeyError(f"{fn.__qualname__} has no default for {name!r}")
    return value


def add_model(p: argparse.ArgumentParser, what: str = "model file") -> None:
    """--model FILE: the model file (default: the bundled one)."""
    p.add_argument("--model", metavar="FILE", help=f"{what} (default: the bundled "
                   "talkinghead/weights/model_warp.safetensors)")


def add_face_index(p: argparse.ArgumentParser, where: str = "in the source photos", extra: str = "") -> None:
    """--face-index K: which face of a photo with several."""
    p.add_argument("--face-index", type=int_range(0, 99), metavar="K",
                   help=f"use the K-th largest face {where} (default: the largest, central one){extra}")


def add_shots(p: argparse.ArgumentParser, what: str, hi: int = 64) -> None:
    """--shots T: photos or video frames an avatar is made from (paper §3.3's T; K in `train` is --k-shots)."""
    from talkinghead.persons.shots import DEFAULT_SHOTS

    p.add_argument("--shots", type=int_range(1, hi), default=DEFAULT_SHOTS, metavar="T",
                   help=f"T, {what} [default: {DEFAULT_SHOTS}]")


def add_device(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument("--device", default=default, help=f"cpu, cuda, cuda:1, ... [default: {default}]")


def add_manual_landmarks(p: argparse.ArgumentParser) -> None:
    """--landmarks FILE / --points x1,y1,...: the source photo's landmarks when no detector finds its face."""
    from talkinghead.landmarks.manual import POINTS_HELP

    p.add_argument("--landmarks", metavar="FILE",
                   help="the source photo's 68 landmarks (iBUG .pts or JSON [[x, y], ...]) instead of detecting "
                   "them; `talkinghead landmarks PHOTO -o FILE.pts` writes a file to correct")
    p.add_argument("--points", metavar="X1,Y1,...", help=f"5 points of the source face, {POINTS_HELP}: the mean "
                   "68-point shape fitted to them replaces detection")


def manual_detector(args: argparse.Namespace):
    """The ManualLandmarks of --landmarks/--points (None when neither was given)."""
    from talkinghead.landmarks.manual import manual_landmarks

    return manual_landmarks(getattr(args, "landmarks", None), getattr(args, "points", None))


def add_mouth_fill(p: argparse.ArgumentParser) -> None:
    """--no-mouth-fill: render without the model's region generators (Animator's `regions`)."""
    p.add_argument("--no-mouth-fill", action="store_true",
                   help="leave the mouth the driver opens, and the eyes it closes, as the warp-guided generator "
                   "renders them, without the model's region generators (teeth, tongue, cavity; eyelids)")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

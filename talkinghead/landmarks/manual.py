"""Manual landmarks: the last stage of the face-finding cascade, for faces no detector finds.

A user gives the 68 iBUG points of a source photo in a file (`--landmarks FILE`: iBUG .pts, or JSON with 68
[x, y]; `talkinghead landmarks IMAGE -o FILE.pts` writes one to correct in any editor), or clicks 5 points
(`--points x1,y1,...,x5,y5`: left and right eye centres as seen in the image, nose tip, left and right mouth
corners), to which the mean 68-point shape (mean_shape_68.json, fitted by scripts/fit_face_shapes.py on real
frames) is fitted by a similarity transform. `ManualLandmarks` hands those points to the code that detects
the source face, as a detector that always finds them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.landmarks.detect import Face
from talkinghead.landmarks.track import similarity_fit

MEAN_SHAPE_FILE = Path(__file__).with_name("mean_shape_68.json")
POINTS_HELP = "x1,y1,...,x5,y5: eye centres (left, right in the image), nose tip, mouth corners (left, right)"


@functools.lru_cache(maxsize=1)
def _mean_shape_file() -> dict:
    return json.loads(MEAN_SHAPE_FILE.read_text())


def mean_shape() -> np.ndarray:
    """The mean iBUG shape (68, 2): centred, 1 between the outer eye corners."""
    return np.asarray(_mean_shape_file()["points"], np.float64)


def five_of(points: np.ndarray) -> np.ndarray:
    """The 5 clickable points of a 68-point shape (5, 2): eye centres, nose tip (30), mouth corners (48, 54)."""
    p = np.asarray(points, np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def points_from_five(five: np.ndarray, shape: np.ndarray | None = None) -> np.ndarray:
    """68 points (68, 2) float32: the mean shape moved onto 5 clicked points (5, 2) by a similarity."""
    shape = mean_shape() if shape is None else np.asarray(shape, np.float64)
    A, t = similarity_fit(five_of(shape), np.asarray(five, np.float64))
    return (shape @ A.T + t).astype(np.float32)


def box_of(points: np.ndarray) -> np.ndarray:
    """A HOG-like face box (4,) for 68 points (the detector box relative to the points' centre and rms
    radius, measured with the mean shape), so the 68-point predictor and the tracker see a familiar box."""
    p = np.asarray(points, np.float64)
    c = p.mean(0)
    s = float(np.sqrt(((p - c) ** 2).sum(1).mean()))
    rel = np.asarray(_mean_shape_file()["box"], np.float64)
    return (np.array([c[0], c[1], c[0], c[1]]) + rel * s).astype(np.float32)


def parse_points(text: str) -> np.ndarray:
    """'x1,y1,...,x5,y5' -> (5, 2) float64, or a one-line TalkingHeadError."""
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise TalkingHeadError(f"--points: expected 10 numbers ({POINTS_HELP}), got {text!r}") from None
    if len(vals) != 10:
        raise TalkingHeadError(f"--points: expected 10 numbers ({POINTS_HELP}), got {len(vals)}")
    bad = [f"{v} (value {i + 1})" for i, v in enumerate(vals) if not np.isfinite(v)]
    if bad:
        raise TalkingHeadError(f"--points: not finite numbers: {', '.join(bad)}; expected pixel coordinates "
                               f"({POINTS_HELP})")
    five = np.array(vals).reshape(5, 2)
    if np.linalg.norm(five[1] - five[0]) < 1:
        raise TalkingHeadError("--points: the two eye centres are the same point")
    return five


MAX_COORDINATE = 1e5  # pixels: no image has a point this far from its corner
_MAX_FILE_BYTES = 1 << 20  # 68 points need a few kilobytes


def read_landmarks(path) -> np.ndarray:
    """68 points (68, 2) float32 in 0-based pixels from an iBUG .pts file (1-based, as 300-W writes them) or
    a JSON file ([[x, y] * 68] or {"points": [...]}, 0-based); a one-line TalkingHeadError otherwise: a file
    too large, malformed or too deeply nested, of another number of points, with values that are not finite
    or farther than MAX_COORDINATE pixels from the image's corner."""
    from talkinghead.landmarks.detect import load_pts

    path = Path(path)
    if not path.is_file():
        raise TalkingHeadError(f"landmarks file not found: {path}")
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise TalkingHeadError(f"{path}: not a landmarks file ({path.stat().st_size} bytes; 68 points take a few "
                               "kilobytes)")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            pts = np.asarray(data["points"] if isinstance(data, dict) else data, np.float64)
        else:
            with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
                pts = load_pts(path).astype(np.float64)
    except RecursionError:
        raise TalkingHeadError(f"{path}: cannot read landmarks (JSON nested too deeply); expected an iBUG .pts "
                               "file or JSON with 68 [x, y] points") from None
    except (ValueError, KeyError, TypeError, OverflowError, UnicodeDecodeError, OSError) as e:
        reason = " ".join(str(e).split())[:120]
        raise TalkingHeadError(f"{path}: cannot read landmarks ({type(e).__name__}: {reason}); expected an iBUG "
                               ".pts file or JSON with 68 [x, y] points") from None
    if pts.shape != (68, 2):
        raise TalkingHeadError(f"{path}: expected 68 points (iBUG markup), got {pts.size // 2 if pts.ndim else 0}")
    if not np.isfinite(pts).all():
        raise TalkingHeadError(f"{path}: the landmarks contain values that are not numbers")
    if np.abs(pts).max() > MAX_COORDINATE:
        raise TalkingHeadError(f"{path}: the landmarks lie far outside any image (a coordinate of "
                               f"{np.abs(pts).max():.3g} pixels; at most {MAX_COORDINATE:.0f})")
    return pts.astype(np.float32)


def write_pts(path, points: np.ndarray) -> None:
    """iBUG .pts (version 1, 1-based pixel coordinates), the format `read_landmarks` and 300-W use."""
    lines = ["version: 1", f"n_points: {len(points)}", "{"]
    lines += [f"{x + 1:.3f} {y + 1:.3f}" for x, y in np.asarray(points, np.float64)]
    Path(path).write_text("\n".join(lines + ["}"]) + "\n")


def write_landmarks(path, points: np.ndarray, fmt: str | None = None) -> None:
    """fmt "pts", or "json" ({"points": 68 [x, y], 0-based}); by default from the file name's suffix."""
    path = Path(path)
    if (fmt or path.suffix.lower().lstrip(".")) == "json":
        path.write_text(json.dumps({"points": np.round(np.asarray(points, np.float64), 3).tolist()}) + "\n")
    else:
        write_pts(path, points)


def check_inside(points: np.ndarray, image_shape, what: str) -> None:
    """A one-line error when the points are not (mostly) on the image (a file for another photo, say), or when
    any lies farther outside it than the image is large."""
    h, w = image_shape[:2]
    inside = (points[:, 0] >= -0.5) & (points[:, 0] <= w - 0.5) & (points[:, 1] >= -0.5) & (points[:, 1] <= h - 0.5)
    if inside.mean() < 0.5:
        raise TalkingHeadError(f"{what}: most points lie outside the {w}x{h} image (landmarks of another image?)")
    reach = max(h, w)  # a face cut by the border lies partly outside, never farther out than the image is large
    far = (points[:, 0] < -reach) | (points[:, 0] > w + reach) | (points[:, 1] < -reach) | (points[:, 1] > h + reach)
    if far.any():
        raise TalkingHeadError(f"{what}: {int(far.sum())} points lie far outside the {w}x{h} image")


class ManualLandmarks:
    """A 'detector' that always finds the given 68 points (the cascade's last stage): pass it where a
    detector is taken (shots.prepare_shots, make_ff_avatar, make_avatar) to use them for the source photo."""

    stage = "manual landmarks"

    def __init__(self, points: np.ndarray, label: str = "manual landmarks"):
        self.points = np.asarray(points, np.float32).reshape(68, 2)
        self.label = label
        self.last_stage = None

    def detect(self, image) -> list[Face]:
        check_inside(self.points, np.asarray(image).shape, self.label)
        self.last_stage = self.label
        return [Face(box=box_of(self.points), points=self.points.copy(), score=1.0)]


def manual_landmarks(landmarks_file=None, points: str | None = None) -> ManualLandmarks | None:
    """The ManualLandmarks of `--landmarks FILE` or `--points x1,y1,...` (None when neither is given)."""
    if landmarks_file and points:
        raise TalkingHeadError("give --landmarks or --points, not both")
    if landmarks_file:
        return ManualLandmarks(read_landmarks(landmarks_file), f"landmarks from {landmarks_file}")
    if points:
        return ManualLandmarks(points_from_five(parse_points(points)), "68 points fitted to --points")
    return None

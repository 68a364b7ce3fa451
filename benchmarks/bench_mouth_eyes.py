"""Does the animated face show teeth when the driver does, and blink when the driver blinks? A video-level check of
`animate` (the bundled Mona Lisa by default) against its drivers: the bundled clip and, where the real media is
there, two val clips of `talking/`.

    python benchmarks/bench_mouth_eyes.py [--source PHOTO] [--model FILE] [--json OUT.json] [--quick] \
        [--frames DIR] [--no-regions]

Per driver, from dlib's 68 points found on the driver's and on the output's frames:
- teeth share: the share of bright, low-saturation pixels (HSV value > 0.55, saturation < 0.35) inside the inner-lip
  polygon (points 60-67); "teeth frames" are the driver's frames with a share above 0.3. Printed: the driver's and
  the output's mean share on those frames, and their ratio (the target is at least 0.5).
- blink: the eye aspect ratio (mean of both eyes) as a share of its clip's median; "blink frames" are the driver's
  below 0.6. Printed: the driver's, the rendered targets' (what the renderer was asked to draw) and the output's
  share on those frames (the target is below 0.6). dlib can misplace the upper lid of a painted, closed eye on the
  crease above it, so the output's figure is a lower bound of the blink; look at the frames too.

Cost: the render's ms per frame (Animator.render_points at full size, batches of 8 and of 1, the path of animate
and of live) with the region generators and without, on the bundled clip's targets, side by side in one run; the
difference is what the regions add (the target is at most 8 ms).

--frames DIR writes DIR/<driver>.png for that look: one row per driver frame (four teeth frames spread over the
clip, then the deepest blinks), columns driver mouth | output mouth | driver eyes | output eyes, each zoomed on
its own face's landmarks. --no-regions renders without the region generators (`animate --no-mouth-fill`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import timing  # noqa: E402,F401 - idle OpenMP workers sleep (before torch)

MEDIA = HERE.parent.parent / "shared" / "data"
VAL_DRIVERS = ("talking/id00057/LivePortrait/assets_examples_driving_d14.mp4",
               "talking/id00111/EDTalk/test_data_expression_source.mp4")
TEETH_FRAME, BLINK_FRAME = 0.3, 0.6


def teeth_share(frame: np.ndarray, points: np.ndarray) -> float:
    """Share of bright, low-saturation pixels inside the inner-lip polygon of `points` (68, 2)."""
    from matplotlib.path import Path as Polygon

    poly = points[60:68]
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0.0
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = Polygon(poly).contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(xx.shape)
    if not inside.any():
        return 0.0
    rgb = frame[y0:y1, x0:x1].astype(np.float32) / 255
    value, low = rgb.max(-1), rgb.min(-1)
    saturation = (value - low) / np.maximum(value, 1e-6)
    teeth = (value > 0.55) & (saturation < 0.35)
    return float(teeth[inside].mean())


def face_points(frames) -> list[np.ndarray | None]:
    """dlib's 68 points of the largest face in each frame (None where none is found)."""
    from talkinghead.landmarks.detect import DlibDetector, pick_face

    det = DlibDetector(upsample=1)
    out = []
    for f in frames:
        face = pick_face(det.detect(f), f.shape, None)
        out.append(None if face is None else face.points)
    return out


def aperture(points: list[np.ndarray | None]) -> np.ndarray:
    """(T,) mean eye aspect ratio per frame as a share of the clip's median (nan where no face)."""
    from talkinghead.landmarks.openness import eye_aperture

    ear = np.array([np.nan if p is None else float(eye_aperture(p).mean()) for p in points])
    return ear / np.nanmedian(ear)


def zoom(frame: np.ndarray, points: np.ndarray | None, part: slice, scale: float = 1.8,
         size: int = 160) -> np.ndarray:
    """A (size, size, 3) square of `frame` around the landmarks `points[part]` (`scale` × their extent; black when
    no face was found)."""
    from PIL import Image

    if points is None:
        return np.zeros((size, size, 3), np.uint8)
    p = points[part]
    centre, half = (p.min(0) + p.max(0)) / 2, max(float((p.max(0) - p.min(0)).max()) * scale / 2, 8.0)
    box = tuple(int(round(v)) for v in (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half))
    return np.asarray(Image.fromarray(frame).crop(box).resize((size, size), Image.BICUBIC))


def look_rows(drv_frames, drv_pts, out_frames, out_pts, teeth: list[int], blinks: list[int], drv_ear) -> list:
    """Rows of `zoom` tiles for --frames: four teeth frames spread over the clip, then the two deepest blinks."""
    picks = [teeth[int(i)] for i in np.linspace(0, len(teeth) - 1, min(4, len(teeth)))] if teeth else []
    picks += sorted(blinks, key=lambda i: drv_ear[i])[:2]
    mouth, eyes = slice(48, 68), slice(36, 48)
    return [[zoom(drv_frames[i], drv_pts[i], mouth), zoom(out_frames[i], out_pts[i], mouth),
             zoom(drv_frames[i], drv_pts[i], eyes, 1.2), zoom(out_frames[i], out_pts[i], eyes, 1.2)] for i in picks]


def check(source: Path, driver: Path, model, workdir: Path, frames_dir: Path | None = None,
          regions: bool = True) -> dict:
    from talkinghead.inference.pipeline import animate_video, driving_targets, track_driver
    from talkinghead.media import video
    from talkinghead.persons.avatar import make_ff_avatar

    avatar = make_ff_avatar([str(source)], model, shots=1)
    track = track_driver(driver, progress=False)
    out = workdir / f"{driver.stem}.mp4"
    animate_video(avatar, driver, out, model=model, track=track, progress=False, regions=regions)
    drv_frames = list(video.iter_frames(driver))
    if track.indices is not None:
        drv_frames = [drv_frames[i] for i in track.indices]
    out_frames = list(video.iter_frames(out))
    n = min(len(drv_frames), len(out_frames))
    drv_pts, out_pts = face_points(drv_frames[:n]), face_points(out_frames[:n])
    row: dict = {"driver": str(driver.name), "frames": n}
    teeth = [i for i in range(n) if drv_pts[i] is not None and teeth_share(drv_frames[i], drv_pts[i]) > TEETH_FRAME]
    row["teeth_frames"] = len(teeth)
    if teeth:
        d = np.mean([teeth_share(drv_frames[i], drv_pts[i]) for i in teeth])
        o = np.mean([0.0 if out_pts[i] is None else teeth_share(out_frames[i], out_pts[i]) for i in teeth])
        row.update(teeth_driver=round(float(d), 3), teeth_output=round(float(o), 3), teeth_ratio=round(float(o / d), 3))
    drv_ear = aperture(drv_pts)
    blinks = [i for i in range(n) if drv_ear[i] < BLINK_FRAME]
    row["blink_frames"] = len(blinks)
    if blinks:
        crop_targets = driving_targets(avatar, track)[:n]  # (T, 68, 2) in the avatar's crop
        row.update(blink_driver=round(float(np.nanmean(drv_ear[blinks])), 3),
                   blink_targets=round(float(np.nanmean(aperture(list(crop_targets))[blinks])), 3),
                   blink_output=round(float(np.nanmean(aperture(out_pts)[blinks])), 3))
    if frames_dir is not None and (teeth or blinks):
        from talkinghead.media.images import save_grid

        rows = look_rows(drv_frames, drv_pts, out_frames, out_pts, teeth, blinks, drv_ear)
        row["look"] = str(save_grid(Path(frames_dir) / f"{driver.stem}.png", rows))
    return row


def fill_cost(source: Path, driver: Path, model, frames: int = 24, repeats: int = 3) -> dict:
    """{batch: {"without": ms, "with": ms, "added": ms}} per frame of the full-size render, best of `repeats`."""
    from timing import measure

    from talkinghead.inference.animator import Animator
    from talkinghead.inference.pipeline import driving_targets, track_driver
    from talkinghead.persons.avatar import make_ff_avatar

    avatar = make_ff_avatar([str(source)], model, shots=1)
    targets = driving_targets(avatar, track_driver(driver, progress=False))[:frames]  # (T, 68, 2)
    animators = {name: Animator(avatar, model, regions=on) for name, on in (("without", False), ("with", True))}
    out = {"regions": [type(f).__name__ for f in animators["with"].regions]}
    for batch in (8, 1):
        def run(a):
            return lambda: [a.render_points(targets[s:s + batch], full_size=True) for s in range(0, len(targets), batch)]
        ms = {name: measure(run(a), repeats=repeats, warmup=1, items=len(targets)).ms() for name, a in animators.items()}
        out[f"batch_{batch}"] = {**{k: round(v, 1) for k, v in ms.items()}, "added": round(ms["with"] - ms["without"], 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", help="the photo animated [default: the bundled Mona Lisa]")
    ap.add_argument("--model", help="model file [default: the bundled one]")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--quick", action="store_true", help="the bundled clip only (the val clips take minutes)")
    ap.add_argument("--frames", help="write zoomed driver | output tiles of teeth and blink frames here")
    ap.add_argument("--no-regions", action="store_true", help="render without the region generators")
    ap.add_argument("--no-cost", action="store_true", help="skip the ms-per-frame measurement of the regions")
    args = ap.parse_args()
    from talkinghead import bundled
    from talkinghead.persons.checkpoint import LoadedModel, resolve_model

    model = LoadedModel.load(resolve_model(args.model), "cpu", with_discriminator=False)
    source = Path(args.source) if args.source else bundled.PORTRAIT
    drivers = [bundled.DRIVING] + ([] if args.quick else [MEDIA / p for p in VAL_DRIVERS if (MEDIA / p).is_file()])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in drivers:
            rows.append(check(source, d, model, Path(tmp), args.frames, regions=not args.no_regions))
            print(json.dumps(rows[-1]), flush=True)
    print(f"teeth: output/driver share on the driver's teeth frames (target >= 0.5); blink: eye aperture on the "
          f"driver's blink frames as a share of the median (target < {BLINK_FRAME})")
    for r in rows:
        print(f"  {r['driver']}: teeth {r.get('teeth_ratio', '–')} ({r['teeth_frames']} frames), blink driver "
              f"{r.get('blink_driver', '–')} targets {r.get('blink_targets', '–')} output {r.get('blink_output', '–')} "
              f"({r['blink_frames']} frames)")
    if not args.no_cost:
        import torch

        torch.set_num_threads(2)
        cost = fill_cost(source, bundled.DRIVING, model)
        rows.append({"cost_ms_per_frame": cost})
        print(f"render ms/frame at full size, without | with the regions {cost['regions']} (added; target <= 8 ms): "
              + "; ".join(f"{k.replace('_', ' ')} {v['without']} | {v['with']} ({v['added']:+})"
                          for k, v in cost.items() if k.startswith("batch")))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A comparison grid for judging models by eye: one row per portrait, columns
photo | driver | landmark warp (baseline) | model A (FT) | model B (FF) | model B (FT),
each output the portrait driven by the same driver frame (relative motion, DESIGN.md §2), face crops at the
model's resolution.

    python scripts/compare_models.py --old OLD.safetensors --new NEW.safetensors --driver driver.mp4 \
        --out grid.png PHOTO_OR_VIDEO ... [--frames 2] [--ft-steps N | --no-ft]

--no-ft: a quick look without fine-tuning, columns photo | driver | warp | model A (FF) | model B (FF).

A video given as a portrait gives its first frame. Driver frames: the widest-open mouth (a warp cannot open a
mouth; a model must), with --frames 2 also the most turned head, with --frames 3 also the deepest blink.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from talkinghead.media import image_files, video
from talkinghead.persons.avatar import make_ff_avatar
from talkinghead.evaluation.baselines import warp_baseline
from talkinghead.persons.checkpoint import LoadedModel
from talkinghead.media.images import from_uint8, save_grid
from talkinghead.inference.animator import Animator
from talkinghead.landmarks.align import crop_from_landmarks
from talkinghead.landmarks.retarget import mouth_opening
from talkinghead.inference.pipeline import driving_targets, track_driver
from talkinghead.train.finetune import make_avatar


def photo_of(path: str, tmp: Path) -> str:
    """An image path for `path` (a video's first frame saved as PNG)."""
    if not video.is_video_path(path):
        return path
    frame = next(video.iter_frames(path, max_frames=1))
    out = tmp / (Path(path).stem + ".png")
    image_files.write_image(out, frame)
    return str(out)


def driver_frames(track, n: int) -> list[int]:
    """Indices of the widest-open mouth, (n ≥ 2) the largest head turn (nose off the eyes' midpoint) and (n = 3)
    the most closed eyes (eye aspect ratio)."""
    found = [i for i, p in enumerate(track.points) if p is not None]
    mouth = max(found, key=lambda i: mouth_opening(track.points[i]))
    if n == 1:
        return [mouth]

    def turn(i):
        p = track.points[i]
        mid = (p[36] + p[45]) / 2
        return abs(p[30, 0] - mid[0]) / max(np.linalg.norm(p[36] - p[45]), 1e-6)
    picks = [mouth, max(found, key=turn)]
    if n == 3:
        from talkinghead.landmarks.openness import eye_aperture

        picks.append(min(found, key=lambda i: float(eye_aperture(track.points[i]).mean())))
    return picks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("portraits", nargs="+", help="photos (or videos: their first frame)")
    ap.add_argument("--old", required=True, help="model A (e.g. the previous bundled model), fine-tuned")
    ap.add_argument("--new", required=True, help="model B, feed-forward and fine-tuned")
    ap.add_argument("--driver", required=True, help="driving video")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--frames", type=int, choices=(1, 2, 3), default=1, help="driver frames per portrait")
    ft = ap.add_mutually_exclusive_group()
    ft.add_argument("--ft-steps", type=int, help="fine-tuning steps (default: each model's own)")
    ft.add_argument("--no-ft", action="store_true", help="feed-forward only: model A (FF) | model B (FF)")
    a = ap.parse_args()
    torch.manual_seed(0)
    old, new = LoadedModel.load(a.old), LoadedModel.load(a.new)
    track = track_driver(a.driver, progress=False)
    picks = driver_frames(track, a.frames)
    frames = dict(zip(range(len(track.points)), video.iter_frames(a.driver, max_frames=max(picks) + 1)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in a.portraits:
            photo = photo_of(src, Path(tmp))
            def fine_tuned(model):
                return make_avatar([photo], model, mode="ft", shots=1, steps=a.ft_steps, progress=False)

            avatars = {"old FF": make_ff_avatar([photo], old, shots=1)} if a.no_ft else {"old FT": fine_tuned(old)}
            avatars["new FF"] = make_ff_avatar([photo], new, shots=1)
            if not a.no_ft:
                avatars["new FT"] = fine_tuned(new)
            ref = avatars["new FF"]
            s = ref.image_size
            for k in picks:
                row = [from_uint8(ref.source_crop)]
                # the driver frame, cropped around its own face as the training data is
                row.append(from_uint8(crop_from_landmarks(track.points[k], s).crop(frames[k])))
                tgt = {}
                for name, av in avatars.items():
                    pts = driving_targets(av, track)[k]  # (68, 2) in this avatar's crop pixels
                    tgt[name] = pts
                    model = old if name.startswith("old") else new
                    img = Animator(av, model=model).render_points(pts[None], full_size=True)[0]  # (3, R, R)
                    if img.shape[-1] != s:
                        img = torch.nn.functional.interpolate(img[None], size=(s, s), mode="area")[0]
                    row.append(img)
                warp = warp_baseline(from_uint8(ref.source_crop), ref.source_points, tgt["new FF"])
                row.insert(2, warp)
                rows.append(row)
            print(f"{src}: done", flush=True)
    save_grid(a.out, rows)
    print(f"wrote {a.out}: rows = portraits x driver frames {picks}; columns = photo | driver | warp | "
          + " | ".join(avatars))


if __name__ == "__main__":
    main()

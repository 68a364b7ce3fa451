"""What several test modules need: randomly initialised model files, a synthetic 68-point face, the CLI run
and its leftovers, the landmark error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from talkinghead.cli import main
from talkinghead.config import Config, tiny
from talkinghead.landmarks.detect import interocular
from talkinghead.nn import build_models
from talkinghead.persons.checkpoint import save_model


def random_model_file(path, cfg: Config | None = None, seed: int = 0, discriminator: bool = True) -> Path:
    """Saves E, G (and D) of `cfg` (default the `tiny` preset), freshly built after torch.manual_seed(seed),
    as a model file at `path`; returns the path."""
    cfg = cfg or tiny()
    torch.manual_seed(seed)
    E, G, D = build_models(cfg.model)
    save_model(path, cfg, E, G, D if discriminator else None)
    return Path(path)


def synthetic_face(width: float, height: float, mouth_open: float = 0.0, cx=100.0, cy=100.0,
                   eye_open: float = 1.0) -> np.ndarray:
    """68 iBUG-ordered points of a cartoon face: jaw half-ellipse, brows, nose, eyes (their height scaled by
    eye_open), lips (the upper lip 49-53, 61-63 above the mouth corners); mouth_open moves the lower lip and
    the chin down by that share of the height. (68, 2)."""
    w, h = width, height
    p = np.zeros((68, 2))
    th = np.linspace(math.pi, 0, 17)
    p[0:17] = np.stack([w / 2 * np.cos(th), h * np.sin(th)], 1)
    p[17:22] = np.stack([np.linspace(-0.4, -0.1, 5) * w, np.full(5, -0.35 * h)], 1)
    p[22:27] = np.stack([np.linspace(0.1, 0.4, 5) * w, np.full(5, -0.35 * h)], 1)
    p[27:31] = np.stack([np.zeros(4), np.linspace(-0.2, 0.3, 4) * h], 1)
    p[31:36] = np.stack([np.linspace(-0.1, 0.1, 5) * w, np.full(5, 0.38 * h)], 1)
    for start, ex in ((36, -0.22), (42, 0.22)):
        a = np.linspace(0, 2 * math.pi, 7)[:-1] + math.pi
        p[start:start + 6] = np.stack([ex * w + 0.08 * w * np.cos(a), -0.1 * h + eye_open * 0.03 * h * np.sin(a)], 1)
    a = np.linspace(0, 2 * math.pi, 13)[:-1] + math.pi
    p[48:60] = np.stack([0.2 * w * np.cos(a), 0.62 * h + 0.07 * h * np.sin(a)], 1)
    a = np.linspace(0, 2 * math.pi, 9)[:-1] + math.pi
    p[60:68] = np.stack([0.12 * w * np.cos(a), 0.62 * h + 0.01 * h * np.sin(a)], 1)
    p[[55, 56, 57, 58, 59, 65, 66, 67], 1] += mouth_open * h
    p[6:11, 1] += 0.6 * mouth_open * h
    return (p + [cx, cy]).astype(np.float32)


def nme(a, b) -> float:
    """Mean point error of landmarks a against b (68, 2), in b's inter-ocular distances."""
    return float(np.linalg.norm(np.asarray(a) - b, axis=1).mean() / interocular(b))


def run_cli(argv, capsys) -> tuple[int, str, list[str]]:
    """(exit code, stdout, the non-empty lines of stderr) of `talkinghead ARGV`."""
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, [ln for ln in out.err.splitlines() if ln.strip()]


def leftovers(folder: Path) -> list[str]:
    """Names of partial or hidden files left in `folder` (an interrupted or failed write leaves none)."""
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".") or "part" in p.name]


def write_shards(root: Path, videos, image_format: str = "png") -> Path:
    """A preprocessed folder by hand (the layout of data/shards.py): `videos` holds (video_id, identity, split,
    frames (n, S, S, 3) uint8, landmarks (n, 68, 2)); returns root."""
    import json

    from PIL import Image

    entries, size = [], None
    for vid, ident, split, frames, points in videos:
        d = Path(root) / "videos" / vid
        (d / "frames").mkdir(parents=True)
        for j, f in enumerate(frames):
            Image.fromarray(np.asarray(f, np.uint8)).save(d / "frames" / f"{j:06d}.{image_format}")
        np.save(d / "landmarks.npy", np.asarray(points, np.float32))
        n, size = len(frames), frames[0].shape[0]
        meta = {"video_id": vid, "identity": ident, "split": split, "resolution": size, "fps": 25.0,
                "image_format": image_format, "frame_indices": list(range(n)), "num_frames": n}
        (d / "meta.json").write_text(json.dumps(meta))
        entries.append({"video_id": vid, "identity": ident, "group": vid, "split": split, "num_frames": n,
                        "path": f"videos/{vid}"})
    (Path(root) / "manifest.json").write_text(json.dumps({"resolution": size, "videos": entries}))
    return Path(root)

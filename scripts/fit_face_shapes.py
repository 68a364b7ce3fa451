"""Fits the two small files the face-finding cascade and the manual landmarks read, on real frames where dlib's
HOG detector and 68-point predictor are right (one confident face):

- talkinghead/landmarks/mean_shape_68.json: the mean 68-point shape (generalised Procrustes over the training
  frames; centred, 1 between the outer eye corners) and the HOG box relative to the points' frame, used to
  fit 68 points to 5 clicked ones (`--points`) and to give manual and mesh faces a detector-like box;
- talkinghead/landmarks/mesh_to_68.json: each iBUG point as an affine combination (weights sum to 1) of its
  K nearest MediaPipe face-mesh points (468), least squares over the training frames.

Frames: 8 of each of capman_1, franck, pexels_woman and 3 of each clip of talking/ (its split column: train
frames fit, val frames — other people — test). Needs the real media and mediapipe (the `mesh` extra).

    .venv/bin/python scripts/fit_face_shapes.py [--cache frames.npz] [--write]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "data"
K = 8  # mesh points per iBUG point
RIDGE = 1e-3  # keeps the weights of nearly coincident mesh points bounded


def gather(cache: Path | None) -> dict:
    if cache is not None and cache.is_file():
        return dict(np.load(cache))
    from talkinghead.media import video
    from talkinghead.landmarks.detect import DlibDetector
    from talkinghead.landmarks.mesh import MeshDetector

    mesh, hog0, hog1 = MeshDetector(), DlibDetector(0), DlibDetector(1)
    items = [(MEDIA / "videos" / f"{v}.mp4", "train", 8) for v in ("capman_1", "franck", "pexels_woman")]
    items.append((MEDIA / "videos" / "capman_2.mp4", "val", 8))
    items += [(MEDIA / "talking" / r["path"], r["split"], 3) for r in csv.DictReader(open(MEDIA / "talking/clips.csv"))]
    out = {k: [] for k in ("dlib", "mesh", "box", "split")}
    for path, split, n in items:
        info = video.probe_video(path)
        idx = sorted({int(i) for i in np.linspace(5, max(info.num_frames - 6, 5), n)})
        for _, f in video.iter_indexed_frames(path, indices=idx):
            det = hog0 if max(f.shape[:2]) > 400 else hog1
            boxes = det.detect_boxes(f)
            m = mesh.mesh_points(f)
            if len(boxes) != 1 or boxes[0][1] < 0.3 or not m:
                continue
            face = det.predict(f, *boxes[0])
            out["dlib"].append(face.points), out["mesh"].append(m[0]), out["box"].append(face.box)
            out["split"].append(split)
    data = {k: np.array(v) for k, v in out.items()}
    if cache is not None:
        np.savez(cache, **data)
    return data


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) src -> dst applied to src."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1, d]) @ vt
    scale = (sig * [1, d]).sum() / (a ** 2).sum()
    return (scale * (r @ a.T)).T + md


def mean_shape(shapes: np.ndarray) -> np.ndarray:
    """Generalised Procrustes mean of (N, 68, 2): centred, 1 between the outer eye corners (points 36, 45)."""
    def norm(s):
        s = s - s.mean(0)
        return s / np.linalg.norm(s[45] - s[36])

    ref = norm(shapes[0])
    for _ in range(10):
        ref = norm(np.mean([similarity(s, ref) for s in shapes], axis=0))
    return ref


def box_relation(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean HOG box relative to the points' frame (centre, rms radius), as track.py calibrates it: (4,)."""
    c = points.mean(1)  # (N, 2)
    s = np.sqrt(((points - c[:, None]) ** 2).sum(2).mean(1))  # (N,)
    return ((boxes - np.concatenate([c, c], 1)) / s[:, None]).mean(0)


def fit_mesh_map(mesh: np.ndarray, dlib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(68, K) mesh indices and (68, K) weights (each row sums to 1) mapping mesh points to iBUG points."""
    io = np.linalg.norm(dlib[:, 45] - dlib[:, 36], axis=1)  # (N,)
    c = mesh.mean(1, keepdims=True)
    mn, dn = (mesh - c) / io[:, None, None], (dlib - c) / io[:, None, None]  # per-face normalised
    dist = np.linalg.norm(mn[:, None, :, :] - dn[:, :, None, :], axis=3).mean(0)  # (68, 468)
    idx = np.argsort(dist, axis=1)[:, :K]
    weights = np.zeros((68, K))
    for i in range(68):
        a = mn[:, idx[i]].transpose(0, 2, 1).reshape(-1, K)  # (2N, K)
        b = dn[:, i].reshape(-1)  # (2N,)
        # min |a w - b|^2 + RIDGE |w|^2  s.t. sum(w) = 1  (KKT system)
        kkt = np.block([[2 * (a.T @ a + RIDGE * np.eye(K)), np.ones((K, 1))], [np.ones((1, K)), np.zeros((1, 1))]])
        weights[i] = np.linalg.solve(kkt, np.concatenate([2 * a.T @ b, [1.0]]))[:K]
    return idx, weights


def apply_map(mesh: np.ndarray, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (mesh[..., idx, :] * weights[..., None]).sum(-2)  # (..., 68, 2)


def nme(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean point distance / outer-eye-corner distance of b, per face."""
    return np.linalg.norm(a - b, axis=-1).mean(-1) / np.linalg.norm(b[..., 45, :] - b[..., 36, :], axis=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, help="npz of the gathered frames (read if present, else written)")
    ap.add_argument("--write", action="store_true", help="write the two JSON files into talkinghead/landmarks")
    args = ap.parse_args()
    d = gather(args.cache)
    train, val = d["split"] == "train", d["split"] == "val"
    print(f"frames: {train.sum()} train, {val.sum()} val")
    mean = mean_shape(d["dlib"][train])
    rel = box_relation(d["dlib"][train], d["box"][train])
    idx, w = fit_mesh_map(d["mesh"][train], d["dlib"][train])
    for name, m in (("train", train), ("val", val)):
        e = nme(apply_map(d["mesh"][m], idx, w), d["dlib"][m])
        print(f"mesh->68 vs dlib, {name}: NME mean {e.mean():.4f}, median {np.median(e):.4f}, "
              f"90th pct {np.percentile(e, 90):.4f}")
    from talkinghead.landmarks.manual import points_from_five

    e = nme(np.stack([points_from_five(five(s), mean) for s in d["dlib"][val]]), d["dlib"][val])
    print(f"68 points from 5 (mean shape) vs dlib, val: NME mean {e.mean():.4f}, median {np.median(e):.4f}")
    if not args.write:
        return
    here = ROOT / "talkinghead" / "landmarks"
    (here / "mean_shape_68.json").write_text(json.dumps({
        "about": f"mean iBUG 68-point shape of {int(train.sum())} dlib detections on real frames (generalised "
                 "Procrustes; centred, 1 between the outer eye corners 36 and 45) and the HOG box relative to the "
                 "points' centre and rms radius; scripts/fit_face_shapes.py",
        "points": np.round(mean, 5).tolist(), "box": np.round(rel, 5).tolist()}, indent=None) + "\n")
    (here / "mesh_to_68.json").write_text(json.dumps({
        "about": f"iBUG point i = sum_k weights[i][k] * mesh[indices[i][k]] (MediaPipe face mesh, 468 points), "
                 f"least squares over {int(train.sum())} real frames with dlib's points; scripts/fit_face_shapes.py",
        "indices": idx.tolist(), "weights": np.round(w, 5).tolist()}) + "\n")
    print("wrote", here / "mean_shape_68.json", here / "mesh_to_68.json")


def five(points: np.ndarray) -> np.ndarray:
    """The 5 clicked points of a 68-point shape: eye centres, nose tip, mouth corners (5, 2)."""
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


if __name__ == "__main__":
    main()

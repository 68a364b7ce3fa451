"""Face finding on every image of ../shared/data/images (photos, paintings, a statue, a cartoon, two masks; see
its MANIFEST.md): per detector stage (dlib HOG at the image's size, up-sampled x2 and x4, dlib's CNN,
MediaPipe's face mesh where installed) and for the cascade that chains them (talkinghead/landmarks/cascade.py):
whether a face is found, ms per image (wall, one pass after warm-up), and the normalised landmark error (mean
point distance / outer-eye-corner distance of the truth) on the images with 68 ground-truth points
(landmarks/*.pts; tongue.pts outlines a tongue, not the 68-point markup, so it has none): for a stage its face
nearest the annotated one, for the cascade the face `animate` takes (largest, central). The images the
cascade still misses are listed with the one-line error `animate` ends with. Then a few portraits turned by
--tilt degrees in the image (truth: dlib's points on the upright image, turned alike): dlib's predictor is made
for upright faces, the cascade checks its points against the mesh's.

    python benchmarks/bench_detectors.py [--images a.jpg,portraits/lp_s0.jpg] [--detectors hog0,cnn,cascade]
                                         [--json out.json]

Every stage sees what the cascade gives it: HOG a copy of at most 1024 px, the CNN one of 512 px. Timings on
a shared 2-core machine are noisy; compare the stages within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from timing import REPO  # first: OpenBLAS on one thread before numpy loads it

import numpy as np  # noqa: E402

sys.path.insert(0, str(REPO))
MEDIA = REPO.parent / "shared" / "data"

# what each image shows (MANIFEST.md); every other image is a photo of a person
KINDS = {"monalisa.jpg": "painting", "portraits/lp_s0.jpg": "painting", "portraits/lp_s3.jpg": "painting",
         "portraits/lp_s4.jpg": "painting", "portraits/lp_s5.jpg": "painting", "portraits/lp_s8.jpg": "painting",
         "portraits/lp_s6.jpg": "statue", "portraits/lp_s7.jpg": "cartoon", "ironman.jpg": "mask (drawing)",
         "vendetta.jpg": "mask (photo)"}
HUMAN = ("photo", "painting")  # the human portraits: the cascade must find every one


def _detectors(names: list[str]) -> dict:
    from talkinghead.landmarks.cascade import photo_cascade
    from talkinghead.landmarks.detect import DlibCnnDetector, DlibDetector
    from talkinghead.landmarks.mesh import MeshDetector, mesh_available

    make = {"hog0": lambda: DlibDetector(0, max_side=1024), "hog1": lambda: DlibDetector(1, max_side=1024),
            "hog2": lambda: DlibDetector(2, max_side=1024), "cnn": lambda: DlibCnnDetector(max_side=512),
            "mesh": MeshDetector, "cascade": photo_cascade}
    if "mesh" in names and not mesh_available():
        print("mesh: mediapipe is not installed (the `mesh` extra): no mesh row")
        names = [n for n in names if n != "mesh"]
    dets = {n: make[n]() for n in names}
    warm = np.full((64, 64, 3), 128, np.uint8)
    for d in dets.values():  # model loading and first-call costs out of the timings
        d.detect(warm)
    return dets


def _nme(points: np.ndarray, truth: np.ndarray) -> float:
    io = np.linalg.norm(truth[45] - truth[36])
    return float(np.linalg.norm(points - truth, axis=1).mean() / io)


def _tilted(dets: dict, root: Path, names: list[str], angle: float) -> list[dict]:
    """Each detector on portraits turned by `angle`: found, ms, error against dlib's upright points turned."""
    import math

    from PIL import Image

    from talkinghead.landmarks.detect import DlibDetector, pick_face

    print(f"\nportraits turned {angle:g}° (error against dlib's points on the upright image, turned alike)")
    print(f"{'image':42} " + " ".join(f"{n:>14}" for n in dets))
    rows = []
    for name in names:
        im = Image.open(root / name).convert("RGB")
        upright = pick_face(DlibDetector(max_side=1024).detect(np.asarray(im)), (im.height, im.width)).points
        turned = im.rotate(angle, expand=True, fillcolor=(128, 128, 128))
        r, d = math.radians(angle), upright - [im.width / 2, im.height / 2]
        truth = np.stack([math.cos(r) * d[:, 0] + math.sin(r) * d[:, 1] + turned.width / 2,
                          -math.sin(r) * d[:, 0] + math.cos(r) * d[:, 1] + turned.height / 2], axis=1)
        img = np.asarray(turned)
        row, cells = {"image": name}, []
        for n, det in dets.items():
            t0 = time.perf_counter()
            faces = det.detect(img)
            ms = 1000 * (time.perf_counter() - t0)
            f = (pick_face(faces, img.shape) if n == "cascade" else
                 min(faces, key=lambda f: np.linalg.norm(f.points.mean(0) - truth.mean(0)), default=None))
            err = None if f is None else round(_nme(f.points, truth), 4)
            row[n] = {"faces": len(faces), "ms": round(ms, 1), "nme": err}
            cells.append("-" if f is None else f"{row[n]['nme']:.2f} {ms:6.0f}ms")
        rows.append(row)
        print(f"{name:42} " + " ".join(f"{c:>14}" for c in cells), flush=True)
    for n in dets:
        errs = [r[n]["nme"] for r in rows if r[n]["nme"] is not None]
        good = sum(e < 0.15 for e in errs)
        print(f"  {n:8} found {len(errs)}/{len(rows)}, landmarks within 0.15 eye distances {good}/{len(rows)}"
              + (f", median error {np.median(errs):.2f}" if errs else ""))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", help="comma-separated paths under images/ [default: every image]")
    ap.add_argument("--detectors", default="hog0,hog1,hog2,cnn,mesh,cascade")
    ap.add_argument("--tilt", type=float, default=70, help="degrees the tilted portraits are turned (0: none)")
    ap.add_argument("--tilt-images", default="chuck_crop.jpg,audrey_crop.jpg,seanconnery.jpg,monalisa.jpg,"
                    "portraits/lp_s0.jpg,portraits/lp_s5.jpg")
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args()
    from talkinghead.landmarks.cascade import STAGE_NAMES, NoFaceFoundError
    from talkinghead.landmarks.detect import load_pts, pick_face
    from talkinghead.persons.shots import prepare_shots
    from talkinghead.media.image_files import read_image

    root = MEDIA / "images"
    if a.images:
        names = a.images.split(",")
    else:
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    dets = _detectors(a.detectors.split(","))
    rows = []
    print(f"{'image':42} {'kind':15} " + " ".join(f"{n:>14}" for n in dets))
    for name in names:
        img = read_image(root / name)
        gt_file = MEDIA / "landmarks" / f"{Path(name).stem}.pts"
        truth = load_pts(gt_file) if gt_file.is_file() else None
        truth = truth if truth is not None and truth.shape == (68, 2) else None
        row = {"image": name, "kind": KINDS.get(name, "photo"), "size": list(img.shape[:2][::-1])}
        cells = []
        for n, d in dets.items():
            t0 = time.perf_counter()
            faces = d.detect(img)
            ms = 1000 * (time.perf_counter() - t0)
            r = {"faces": len(faces), "ms": round(ms, 1)}
            if n == "cascade":
                r["stage"] = d.last_stage
            if truth is not None and faces:  # a stage: its face nearest the annotated one; the cascade: its choice
                c = truth.mean(0)
                f = (pick_face(faces, img.shape) if n == "cascade" else
                     min(faces, key=lambda f: np.linalg.norm(f.points.mean(0) - c)))
                r["nme"] = round(_nme(f.points, truth), 4)
            row[n] = r
            cells.append(f"{'-' if not faces else len(faces)} {ms:6.0f}ms" + (f" {r['nme']:.3f}" if "nme" in r else ""))
        rows.append(row)
        print(f"{name:42} {row['kind']:15} " + " ".join(f"{c:>14}" for c in cells), flush=True)

    print("\nper detector: images with a face (all | human portraits), ms per image (median | mean), "
          "landmark error on the 68-point annotated images")
    human = [r for r in rows if r["kind"] in HUMAN]
    summary = {}
    for n in dets:
        found = sum(r[n]["faces"] > 0 for r in rows)
        found_h = sum(r[n]["faces"] > 0 for r in human)
        ms = [r[n]["ms"] for r in rows]
        nmes = {r["image"]: r[n]["nme"] for r in rows if "nme" in r[n]}
        annotated = [r for r in rows if any("nme" in r[m] for m in dets)]
        summary[n] = {"found": found, "images": len(rows), "found_human": found_h, "human": len(human),
                      "ms_median": round(float(np.median(ms)), 1), "ms_mean": round(float(np.mean(ms)), 1),
                      "nme": nmes}
        label = STAGE_NAMES.get(n, "cascade (first stage that finds a face)")
        err = ", ".join(f"{Path(k).stem} {v:.3f}" for k, v in nmes.items())
        missing = len(annotated) - len(nmes)
        print(f"  {label:40} {found:2}/{len(rows)} | {found_h:2}/{len(human)}  {np.median(ms):7.0f} | "
              f"{np.mean(ms):7.0f} ms  {err}" + (f" (+{missing} annotated not found)" if missing else ""))
    if "cascade" in dets:
        stages = {}
        for r in rows:
            stages[r["cascade"]["stage"]] = stages.get(r["cascade"]["stage"], 0) + 1
        print("  cascade's winning stage: " + ", ".join(f"{STAGE_NAMES.get(k, 'none') if k else 'none'} {v}"
                                                        for k, v in stages.items()))
        failed = [r for r in rows if r["cascade"]["faces"] == 0]
        print(f"\nimages the cascade misses: {len(failed)} ({sum(r['kind'] in HUMAN for r in failed)} human portraits)")
        for r in failed:
            try:
                prepare_shots(root / r["image"], 64, shots=1)
                msg = "(found by prepare_shots)"
            except NoFaceFoundError as e:
                msg = "talkinghead animate: error: " + e.command_line_message()
            r["error"] = msg
            print(f"  {r['image']} ({r['kind']}): {msg}")
        summary["cascade"]["missed"] = [r["image"] for r in failed]
    tilted = _tilted(dets, root, a.tilt_images.split(","), a.tilt) if a.tilt else []
    if a.json:
        Path(a.json).write_text(json.dumps({"images": rows, "summary": summary, "tilted": tilted}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

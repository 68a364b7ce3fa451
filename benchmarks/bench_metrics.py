"""Speed of each metric and of the warp baseline: ms per image at 128² and 256² on real face crops.

    python benchmarks/bench_metrics.py [--batch 8] [--repeat 3]

Best of `repeat` runs (the machine may be shared); CSIM/AKD include face detection + landmarks on both images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from timing import header, measure  # before torch: OpenMP workers wait passively

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F

from talkinghead.evaluation.baselines import warp_baseline
from talkinghead.media.images import from_uint8, to_uint8
from talkinghead.metrics import akd, csim, inception_features, lpips, psnr, ssim
from talkinghead.metrics._faces import landmarks68

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def face_crops(n: int, size: int) -> torch.Tensor:
    """n square crops (n, 3, size, size) in [-1, 1] around the face of franck.mp4 frames."""
    import av

    out = []
    with av.open(str(VIDEOS / "franck.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % 10:
                continue
            img = f.to_ndarray(format="rgb24")
            pts = landmarks68(img)
            if pts is None:
                continue
            cx, cy = pts.mean(0)
            half = int(1.0 * (pts[:, 0].max() - pts[:, 0].min()))
            y0, x0 = max(int(cy) - half, 0), max(int(cx) - half, 0)
            crop = from_uint8(img[y0 : y0 + 2 * half, x0 : x0 + 2 * half])[None]  # (1, 3, h, w) in [-1, 1]
            out.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True))
            if len(out) == n:
                break
    return torch.cat(out).clamp(-1, 1)


def best_ms(fn, n_img: int, repeat: int) -> str:
    """'wall ms  cpu ms' per image, best of `repeat` after one warm-up call (model loading)."""
    t = measure(fn, repeats=repeat, warmup=1, items=n_img)
    return f"{t.ms():8.2f} {t.ms('cpu'):8.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"{header(torch.get_num_threads())}; batch {a.batch}, best of {a.repeat}; "
          "ms per image (pair): wall, process CPU")
    for size in (128, 256):
        real = face_crops(a.batch, size)
        fake = (real + 0.05 * torch.randn_like(real)).clamp(-1, 1)
        pts = np.stack([landmarks68(img) for img in to_uint8(real[:2])])
        src8 = to_uint8(real[0])
        rows = {
            "ssim": lambda: ssim(fake, real),
            "psnr": lambda: psnr(fake, real),
            "lpips": lambda: lpips(fake, real),
            "csim (dlib)": lambda: csim(fake, real, backend="dlib"),
            "csim (torch port)": lambda: csim(fake, real, backend="torch"),
            "csim resize-only (torch port)": lambda: csim(fake, real, align="resize", backend="torch"),
            "akd": lambda: akd(fake, real),
            "fid features (per image, one set)": lambda: inception_features(fake),
        }
        with torch.no_grad():
            for name, fn in rows.items():
                print(f"{size:4d}²  {name:36s} {best_ms(fn, a.batch, a.repeat)}")
        r = akd(fake, real)
        print(f"{size:4d}²  akd on these crops: mean {r.mean:.4f}, no-face rate {r.no_face_rate:.2f}")
        print(f"{size:4d}²  {'warp_baseline':36s} {best_ms(lambda: warp_baseline(src8, pts[0], pts[1]), 1, 9)}")


if __name__ == "__main__":
    main()

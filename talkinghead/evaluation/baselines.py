"""Classical baselines of the evaluation protocol (DESIGN §6), scored by the same metrics as the model:

- `copy_source`: the source shot itself, unchanged (what a model scores when it ignores the driver).
- `warp_baseline`: the classical landmark warp of the source frame (`landmarks/warp.py`: piecewise-affine over
  the target landmarks and border anchors), sampled bilinearly (torch grid_sample, border padding).
- `warp_with_holes`: the warp baseline with its holes (`landmarks/holes.py`: the openings the photo does not
  show, DESIGN.md §2 "What the photo cannot show") filled with one neutral colour instead of stretched lips.
- `teeth_bank_baseline`: the warp with an opening mouth filled from other people's inner mouths retrieved by
  inner-lip shape (`teeth_bank.TeethBank`, Face2Face's mouth retrieval without any training).

Points are (x, y) pixel coordinates with pixel centres at integers (dlib's convention, as Face.points).
Images are uint8 (H, W, 3) RGB arrays or float tensors (3, H, W) / (1, 3, H, W); the result has the input's
type, dtype and shape.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.landmarks.holes import hole_masks
from talkinghead.landmarks.warp import flow_grid


def copy_source(source_frame, source_points=None, target_points=None):
    """Baseline (a): the source frame unchanged (a copy), whatever the driving landmarks are."""
    if isinstance(source_frame, torch.Tensor):
        return source_frame.clone()
    return np.array(source_frame, copy=True)


def warp_baseline(source_image, source_points, target_points, anchors_per_side: int = 4):
    """Baseline (b): the source image warped so its landmarks `source_points` (68, 2) move to `target_points`.

    source_image: uint8 (H, W, 3) or float tensor (3, H, W) / (1, 3, H, W). Returns the same type/shape."""
    is_np = not isinstance(source_image, torch.Tensor)
    if is_np:
        arr = np.asarray(source_image)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an (H, W, 3) image, got {arr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float()  # (1, C, H, W)
    else:
        x = source_image if source_image.dim() == 4 else source_image[None]
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(source_image.shape)}")
    h, w = x.shape[-2:]
    grid = flow_grid(source_points, target_points, (h, w), anchors_per_side)[None]  # (1, H, W, 2)
    y = F.grid_sample(x.float(), grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=True)
    if is_np:
        y = y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        return y if arr.dtype == np.uint8 else y.astype(arr.dtype)
    y = y.to(source_image.dtype)
    return y if source_image.dim() == 4 else y[0]


def warp_sequence(source_image, source_points, target_points_seq, anchors_per_side: int = 4) -> list:
    """warp_baseline for each of T target landmark sets (T, 68, 2); returns a list of T images."""
    return [warp_baseline(source_image, source_points, t, anchors_per_side) for t in target_points_seq]


def warp_with_holes(source_image, source_points, target_points, fill="mean", part: str = "all",
                    anchors_per_side: int = 4):
    """`warp_baseline` with the warp's holes (`hole_masks`, `part`: "mouth", "eyes" or "all") blended to one
    colour: fill "mean" (the source image's mean colour), a number or a per-channel sequence, in the image's
    scale. Same types and shapes as `warp_baseline`."""
    warped = warp_baseline(source_image, source_points, target_points, anchors_per_side)
    is_np = not isinstance(warped, torch.Tensor)
    def chw(a):  # (H, W, C) array -> (C, H, W) float tensor; tensors as they are ((C, H, W) or (1, C, H, W))
        return torch.from_numpy(np.asarray(a, np.float32)).permute(2, 0, 1) if is_np else a

    y, x = chw(warped), chw(source_image)
    h, w = y.shape[-2:]
    m = torch.from_numpy(hole_masks(source_points, target_points, (h, w))[part]).to(y.device)  # (H, W)
    c = y.shape[-3]
    if isinstance(fill, str) and fill == "mean":
        colour = x.float().mean(dim=(-2, -1)).reshape(-1)[-c:]  # (C,)
    else:
        colour = torch.as_tensor(fill, dtype=torch.float32).reshape(-1).expand(c)
    colour = colour.to(y.device).view(c, 1, 1)
    out = y.float() * (1 - m) + colour * m
    if is_np:
        arr = out.permute(1, 2, 0).round().clamp(0, 255).numpy()
        return arr.astype(np.asarray(source_image).dtype)
    return out.to(warped.dtype)


def _feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool -> (H, W) float alpha: the mask box-blurred `radius` pixels (0 beyond `radius` outside it)."""
    a = torch.from_numpy(mask.astype(np.float32))[None, None]
    for _ in range(radius):
        a = F.avg_pool2d(F.pad(a, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return a[0, 0].numpy()


def teeth_bank_baseline(source_image, source_points, target_points, bank, exclude=(), open_gap: float | None = None,
                        k: int = 1, feather: int = 1):
    """Baseline (c): the warp baseline with the target's open inner mouth (where the source's was closed) taken
    from a TeethBank: the k entries of other people (never those named in `exclude`: identities or videos)
    nearest in inner-lip shape, warped piecewise-affinely onto the target's inner-lip contour (a fan of
    triangles from its centre), colour-matched by the gain that brings the entry's mean lip colour to the
    source's (a lighting and white-balance transfer that keeps the teeth/cavity contrast), averaged over k and
    feathered `feather` px. A closed target mouth, or an open source one, gives the warp baseline unchanged.

    source_image: uint8 (H, W, 3), or a float tensor (3, H, W) / (1, 3, H, W) in [-1, 1]; returns the same."""
    from talkinghead.data.teeth_bank import (INNER, OPEN_GAP, inner_mouth, lip_colour, lip_gain, lip_gap,
                                           normalise, polygon_mask)

    warped = warp_baseline(source_image, source_points, target_points)
    gap = OPEN_GAP if open_gap is None else open_gap
    if lip_gap(target_points) < gap or lip_gap(source_points) >= gap:
        return warped
    idx = bank.query(normalise(target_points)[INNER], exclude, k)
    if not len(idx):
        return warped
    is_np = not isinstance(source_image, torch.Tensor)
    to255 = (lambda im: np.asarray(im, np.float64)) if is_np else (
        lambda t: ((t.reshape(-1, *t.shape[-2:]).permute(1, 2, 0).double().cpu().numpy() + 1) * 127.5))
    src, out = to255(source_image), to255(warped)  # (H, W, 3) 0-255
    h, w = out.shape[:2]
    src_lips = lip_colour(src, source_points)  # (3,)
    rgb = 0.0
    for i in idx:
        xy, entry = inner_mouth(bank, int(i), target_points, (h, w))
        rgb = rgb + entry * lip_gain(src_lips, bank.lips[i]) / len(idx)
    mouth = np.zeros_like(out)
    mouth[xy[:, 1], xy[:, 0]] = np.clip(rgb, 0, 255)
    alpha = _feather(polygon_mask([np.asarray(target_points, np.float64)[INNER]], (h, w)), feather)[..., None]
    blend = np.where(alpha > 0, out * (1 - alpha) + mouth * alpha, out)  # (H, W, 3)
    if is_np:
        return np.where(alpha > 0, blend.round().clip(0, 255), out).astype(np.asarray(warped).dtype)
    res = torch.from_numpy(blend / 127.5 - 1).to(warped.dtype).permute(2, 0, 1).reshape(warped.shape)
    keep = torch.from_numpy(alpha[..., 0] <= 0).to(warped.device)  # (H, W): exactly the warp outside
    return torch.where(keep, warped, res.to(warped.device))

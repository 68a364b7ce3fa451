"""Face-region metrics (a warp can neither open a mouth nor close an eye, a model must win there): a box around
the *target's* lips (landmarks/rasterize.mouth_box, grown by a quarter of the lips' width) or both its eyes
(rasterize.eye_box), cut out of the fake and the real frame at the same place, resized to 64², and compared by
L1 and by the LPIPS-like distance.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CROP = 64  # side of the compared region crops


def mouth_crops(images: torch.Tensor, boxes: np.ndarray, size: int = CROP) -> torch.Tensor:
    """(B, 3, H, W) images and (B, 4) boxes (x0, y0, x1, y1) in pixels -> (B, 3, size, size) crops, bilinear
    (boxes clamped to the image; a box of under 2 px gives NaN crops)."""
    b, _, h, w = images.shape
    out = torch.full((b, 3, size, size), float("nan"))
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64)):
        x0, x1 = int(max(0, np.floor(x0))), int(min(w, np.ceil(x1) + 1))
        y0, y1 = int(max(0, np.floor(y0))), int(min(h, np.ceil(y1) + 1))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            crop = images[i:i + 1, :, y0:y1, x0:x1].float().cpu()
            out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
    return out


def region_metrics(fake: torch.Tensor, real: torch.Tensor, box, name: str, real_points=None
                   ) -> dict[str, torch.Tensor]:
    """{name: LPIPS-like (B,), name + "_l1": mean |x̂ − x| in [-1, 1] units (B,)} on the box `box(points)`
    ((68, 2) -> (4,)) of the target's landmarks. real_points (B, 68, 2): the target landmarks in pixels of
    `real` (detected on `real` when not given; NaN where no face is found)."""
    from talkinghead.metrics.lpips import lpips

    points = [None] * len(real) if real_points is None else list(real_points)
    for i, p in enumerate(points):
        if p is None:  # not given: detect on the real frame
            from talkinghead.media.images import to_uint8
            from talkinghead.metrics._faces import landmarks68

            points[i] = landmarks68(to_uint8(real[i]))
    boxes = np.stack([np.zeros(4) if p is None else box(np.asarray(p)) for p in points])  # (B, 4)
    f, r = mouth_crops(fake, boxes), mouth_crops(real, boxes)  # (B, 3, 64, 64)
    ok = ~torch.isnan(f).flatten(1).any(1)  # (B,)
    l1 = torch.full((len(f),), float("nan"))
    dist = torch.full((len(f),), float("nan"))
    if ok.any():
        l1[ok] = (f[ok] - r[ok]).abs().mean(dim=(1, 2, 3))
        dist[ok] = lpips(f[ok], r[ok]).float().cpu()
    return {name: dist, name + "_l1": l1}


def mouth_metrics(fake: torch.Tensor, real: torch.Tensor, real_points=None) -> dict[str, torch.Tensor]:
    """{"mouth": LPIPS-like (B,), "mouth_l1": L1 (B,)} on the target's mouth box (`region_metrics`)."""
    from talkinghead.landmarks.rasterize import mouth_box

    return region_metrics(fake, real, mouth_box, "mouth", real_points)


def eyes_metrics(fake: torch.Tensor, real: torch.Tensor, real_points=None) -> dict[str, torch.Tensor]:
    """{"eyes": LPIPS-like (B,), "eyes_l1": L1 (B,)} on the box around the target's eyes (`region_metrics`)."""
    from talkinghead.landmarks.rasterize import eye_box

    return region_metrics(fake, real, eye_box, "eyes", real_points)

"""The eyelid generator (DESIGN.md §2): eye crops (levelled, the left eye mirrored), the dataset of closing eyes
with open references, a trainer smoke run, and the render-time fill (only for eyes closing beyond the photo's,
nothing outside its hole). Tiny sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.config import eye_region_tiny
from talkinghead.data.eyes import EyeCropDataset, eye_openness, eye_transform, load_eyes, polygon_mask
from talkinghead.data.regions import apply_transform
from talkinghead.inference.regions import EyeFill, eye_weight
from talkinghead.landmarks.manual import mean_shape
from talkinghead.nn.regions import RegionGenerator
from talkinghead.train.regions import train_region
from helpers import write_shards


def face(size: int, lid: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """The mean shape in a size² crop, each eye's lids `lid` × as far apart, tilted by `angle`."""
    p = mean_shape() * size * 0.3
    for ring in (range(36, 42), range(42, 48)):
        ring = list(ring)
        cy = p[ring, 1].mean()
        p[ring, 1] = cy + lid * (p[ring, 1] - cy)
    c, s = np.cos(angle), np.sin(angle)
    return (p @ np.array([[c, s], [-s, c]]) + size / 2).astype(np.float32)


def test_eye_crops_are_level_and_the_left_eye_is_mirrored():
    p = face(128, angle=0.3)
    for eye, (outer, inner) in ((0, (36, 39)), (1, (45, 42))):
        m = eye_transform(p, eye, 32, 2.4)
        q = apply_transform(m, p)
        assert abs(q[outer, 1] - q[inner, 1]) < 1e-6 and q[outer, 0] < q[inner, 0]  # outer corner on the left
        assert np.linalg.norm(q[outer] - q[inner]) == pytest.approx(32 / 2.4, rel=1e-6)
    assert np.allclose(eye_openness(face(128, lid=0.5)), 0.5 * eye_openness(face(128)), rtol=0.05)


def _root(tmp_path, size=64):
    rng = np.random.default_rng(0)
    lids = [1.0, 1.0, 0.9, 0.2, 1.0, 0.1]  # frames 3 and 5 close the eyes
    videos = [(f"{who}0", who, split, rng.integers(0, 255, (len(lids), size, size, 3), dtype=np.uint8),
               np.stack([face(size, lid, 0.05) for lid in lids]))
              for who, split in (("a", "train"), ("b", "train"), ("c", "val"))]
    return write_shards(tmp_path / "data", videos)


def test_dataset_oversamples_closing_eyes_with_open_references(tmp_path):
    ds = EyeCropDataset(load_eyes(_root(tmp_path), "train", 32), closing_weight=8.0)
    assert ds.closing.sum() == 8  # 2 frames × 2 eyes × 2 people
    draws = [ds.draw(n) for n in range(400)]
    assert np.mean([ds.closing[t] for t, _, _ in draws]) > 0.6
    assert all(not ds.closing[r] and ds.group_of[r] == ds.group_of[t] for t, r, _ in draws)
    item = ds.pair(*draws[0][:2])
    (_, _, ring_t, _), (_, _, ring_r, _) = ds.arrays(draws[0][0]), ds.arrays(draws[0][1])
    assert torch.equal(item["mask"][0], torch.from_numpy(polygon_mask([ring_t, ring_r], 32, 2)).float())
    assert torch.equal(item["blanked"], item["crop"] * (1 - item["mask"]))


def test_train_eye_region_smoke(tmp_path):
    root = _root(tmp_path)
    rec = train_region(eye_region_tiny(), root, tmp_path / "run", minutes=5, cache_dir=tmp_path / "cache",
                       val_per_person=2, max_steps=2)
    assert rec["region"] == "eyes" and rec["step"] == 2 and {"val_l1", "ref_copy", "mean_fill"} <= set(rec)


def test_eye_fill_only_for_closing_eyes_and_only_inside_its_hole():
    torch.manual_seed(0)
    G = RegionGenerator(eye_region_tiny()).eval()
    photo = face(64)
    crop = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    fill = EyeFill.of_person(G, crop[None], photo[None], 64)
    frames = torch.rand(3, 3, 128, 128) * 2 - 1
    pts = np.stack([photo, face(64, 0.9), face(64, 0.2)])  # open, a little narrower, closing
    assert eye_weight(photo, pts[0]).max() == 0 and eye_weight(photo, pts[2]).min() == 1
    out = fill.fill(frames, pts, photo[None])
    assert torch.equal(out[0], frames[0]) and torch.equal(out[1], frames[1])
    changed = (out[2] != frames[2]).any(dim=0)
    jobs = fill.jobs(frames[2].permute(1, 2, 0).numpy(), pts[2].astype(np.float64), photo.astype(np.float64), 128)
    assert len(jobs) == 2
    inside = np.maximum(jobs[0][-2], jobs[1][-2]) > 0
    assert changed.any() and not changed[torch.from_numpy(~inside)].any()

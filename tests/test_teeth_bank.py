"""The teeth-bank baseline: retrieval by inner-lip shape from other people, pasted into the warp baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import synthetic_face, write_shards
from talkinghead.evaluation.baselines import teeth_bank_baseline, warp_baseline
from talkinghead.data.teeth_bank import INNER, TeethBank, lip_gap, normalise, polygon_mask


def face_image(points, size=128, seed=0) -> np.ndarray:
    """A smooth skin-coloured frame with darker lips, (size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    im = np.full((size, size, 3), (200, 150, 120), np.float64) + rng.normal(0, 3, (size, size, 3))
    im[polygon_mask([points[48:60]], size)] = (170, 80, 80)
    return im.clip(0, 255).astype(np.uint8)


def open_face(mouth_open: float) -> np.ndarray:
    return synthetic_face(60, 60, mouth_open, cx=64, cy=40)


@pytest.fixture
def bank() -> TeethBank:
    """Four people with mouths open by 0.1..0.4 of the face height; entry i's crop is filled with value 50·(i+1)."""
    rows = []
    for i, m in enumerate((0.1, 0.2, 0.3, 0.4)):
        p = open_face(m)
        rows.append((face_image(p, seed=i), p, f"id{i}", f"vid{i}", 0))
    b = TeethBank.from_frames(rows, size=32)
    b.crops[:] = (50 * (np.arange(4) + 1)).astype(np.uint8)[:, None, None, None]
    return b


def test_query_returns_the_nearest_inner_lip_shape(bank):
    for i, m in enumerate((0.1, 0.2, 0.3, 0.4)):
        shape = normalise(open_face(m + 0.02))[INNER]
        assert bank.query(shape)[0] == i
    assert list(bank.query(normalise(open_face(0.21))[INNER], k=4)) == [1, 2, 0, 3]


def test_query_never_returns_the_excluded_identity_or_video(bank):
    shape = normalise(open_face(0.2))[INNER]
    assert bank.query(shape, exclude="id1")[0] != 1
    got = bank.query(shape, exclude=["id1", "vid2", None], k=4)
    assert set(got.tolist()) == {0, 3}
    assert len(bank.query(shape, exclude=[f"id{i}" for i in range(4)])) == 0


def test_save_load_round_trip(bank, tmp_path):
    path = bank.save(tmp_path / "teeth.bank")
    assert path.exists() and not (tmp_path / "teeth.bank.npz").exists()
    back = TeethBank.load(path)
    for name in ("crops", "shapes", "lips", "identity", "video", "frame"):
        assert np.array_equal(getattr(back, name), getattr(bank, name)), name
    assert back.crop_size == 32 and len(back) == 4


def test_closed_target_mouth_gives_the_warp_baseline(bank):
    p_src = open_face(0.0)
    img = face_image(p_src)
    p_tgt = open_face(0.0) + [1.5, -1.0]
    assert lip_gap(p_tgt) < 0.1
    assert np.array_equal(teeth_bank_baseline(img, p_src, p_tgt, bank), warp_baseline(img, p_src, p_tgt))


def test_open_mouth_changes_only_inside_the_inner_lips(bank):
    p_src, p_tgt = open_face(0.0), open_face(0.25)
    img = face_image(p_src)
    warp = warp_baseline(img, p_src, p_tgt)
    out = teeth_bank_baseline(img, p_src, p_tgt, bank, exclude="id2", feather=1)
    inside = polygon_mask([p_tgt[INNER]], 128)
    grown = torch.nn.functional.max_pool2d(torch.from_numpy(inside).float()[None, None], 3, 1, 1)[0, 0].numpy() > 0
    assert np.array_equal(out[~grown], warp[~grown])
    assert (out[inside] != warp[inside]).any()
    # the nearest entry other than id2 (0.3 open) is id1 (0.2) or id3 (0.4): its crop colour, times the lip gain
    assert out[inside].std() < 20
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W) in [-1, 1]
    out_t = teeth_bank_baseline(t, p_src, p_tgt, bank, exclude="id2")
    warp_t = warp_baseline(t, p_src, p_tgt)
    assert out_t.shape == t.shape and torch.equal(out_t[:, ~torch.from_numpy(grown)], warp_t[:, ~torch.from_numpy(grown)])
    assert np.abs((out_t.permute(1, 2, 0).numpy() + 1) * 127.5 - out).max() < 2


def test_open_source_mouth_gives_the_warp_baseline(bank):
    p_src, p_tgt = open_face(0.3), open_face(0.35)
    img = face_image(p_src)
    assert np.array_equal(teeth_bank_baseline(img, p_src, p_tgt, bank), warp_baseline(img, p_src, p_tgt))


def people_shards(root, people) -> None:
    """A preprocessed folder by hand: one 128² shard per (video_id, identity, split, [mouth_open, ...])."""
    videos = []
    for vid, ident, split, opens in people:
        pts = np.stack([open_face(m) for m in opens]).astype(np.float32)
        videos.append((vid, ident, split, [face_image(p, seed=i) for i, p in enumerate(pts)], pts))
    write_shards(root, videos, image_format="jpg")


def test_build_keeps_open_train_mouths_spread_over_shapes(tmp_path):
    from talkinghead.data.teeth_bank import build_teeth_bank

    people_shards(tmp_path, [("a1", "A", "train", [0.0, 0.2, 0.21, 0.22, 0.4]), ("b1", "B", "train", [0.0, 0.3]),
                            ("c1", "C", "val", [0.3, 0.35])])
    bank = build_teeth_bank(tmp_path, max_entries=3, size=32)
    assert len(bank) == 3 and set(bank.identity) <= {"A", "B"} and bank.crops.shape == (3, 32, 32, 3)
    assert sorted(bank.frame[bank.identity == "A"].tolist())[-1] == 4  # the widest mouth is kept
    assert 1 in bank.frame[bank.video == "b1"]
    assert (bank.lips.mean(1) < 140).all()  # the dark lips' colour, not the skin's
    with pytest.raises(Exception, match="no train frame"):
        build_teeth_bank(tmp_path, open_gap=10.0)

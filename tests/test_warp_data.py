"""What the warp-guided generator needs from the data (DESIGN.md §2): the nearest-pose shot and the coarse
landmark flow in every episode, computed in the loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.data.dataset import EpisodeDataset
from talkinghead.landmarks.warp import nearest_pose
from talkinghead.nn.motion import identity_grid
from test_data import _fake_root


def test_nearest_pose_ignores_position_and_size():
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    wide = circle * [1.6, 1.0]
    candidates = np.stack([wide * 10 + 50, circle * 30 + 7, circle * [1.0, 1.5] * 20])
    assert nearest_pose(candidates, circle * 12 + 100) == 1  # same shape, other place and size
    assert nearest_pose(candidates, wide * 3) == 0


def test_warp_episodes_carry_source_index_grid_and_points(tmp_path):
    root = _fake_root(tmp_path)
    ds = EpisodeDataset(root, shots=3, split="train", warp=True)
    it = ds[0]
    assert it["source_index"].dtype == torch.int64 and 0 <= int(it["source_index"]) < 3
    assert it["coarse_grid"].shape == (32, 32, 2) and it["target_points"].shape == (68, 2)
    # every frame of the fake shards has the same landmarks: the flow is the identity
    assert torch.allclose(it["coarse_grid"], identity_grid(1, 32)[0], atol=1e-5)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["coarse_grid"].shape == (2, 32, 32, 2)
    assert "coarse_grid" not in EpisodeDataset(root, shots=3, split="train")[0]


def test_random_source_draws_any_shot_and_keeps_the_episodes(tmp_path):
    root = _fake_root(tmp_path, videos=(("v0", 12, "train"),))
    nearest = EpisodeDataset(root, shots=4, warp=True, episodes_per_video=40)
    anyshot = EpisodeDataset(root, shots=4, warp=True, episodes_per_video=40, random_source=1.0)
    # every fake frame has the same landmarks, so the nearest shot is always the first
    assert {int(nearest[n]["source_index"]) for n in range(40)} == {0}
    assert {int(anyshot[n]["source_index"]) for n in range(40)} == {0, 1, 2, 3}
    for n in range(5):  # the draw comes after the frames': the episodes themselves do not change
        assert torch.equal(nearest[n]["shots_x"], anyshot[n]["shots_x"])
        assert torch.equal(nearest[n]["target_x"], anyshot[n]["target_x"])
    half = EpisodeDataset(root, shots=4, warp=True, episodes_per_video=400, random_source=0.5)
    share = np.mean([int(half[n]["source_index"]) != 0 for n in range(400)])
    assert 0.3 < share < 0.45  # 0.5 × 3/4 of the random draws miss the first shot
    with pytest.raises(ValueError):
        EpisodeDataset(root, shots=4, warp=True, random_source=1.5)

"""Shot changes (talkinghead/data/cuts.py) on real clips: none inside a clip, one where two clips are joined."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.data.cuts import ShotTracker, colour_histogram, histogram_distance, longest_shot
from talkinghead.media.video import iter_frames


def test_histogram_distance_extremes():
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((40, 40, 3), np.uint8)
    blue[..., 2] = 255
    assert histogram_distance(colour_histogram(red), colour_histogram(red)) == pytest.approx(0.0)
    assert histogram_distance(colour_histogram(red), colour_histogram(blue)) == pytest.approx(2 / 3)  # G agrees
    assert longest_shot([0, 0, 1, 1, 1, 2]) == 1 and longest_shot([3, 4]) == 3


@pytest.mark.media
def test_no_cut_inside_real_clips_and_one_at_a_join(media):
    a = list(iter_frames(media / "videos" / "capman_1.mp4", step=4, max_frames=40))
    b = [f[:300, :400] for f in iter_frames(media / "videos" / "pexels_woman.mp4", step=4, max_frames=40)]
    for clip in (a, b):  # heads turn, mouths open, a hand passes: one shot
        tracker = ShotTracker()
        assert [tracker.update(f) for f in clip][-1] == 0
    tracker = ShotTracker()
    shots = [tracker.update(f) for f in a + b]
    assert shots == [0] * len(a) + [1] * len(b)


@pytest.mark.media
def test_preprocess_trims_a_clip_to_its_longest_shot(media, tmp_path):
    """A clip that cuts from one person to another gives a shard of one scene only, and the summary says so."""
    import json

    from talkinghead.data.preprocess import preprocess
    from talkinghead.media.video_writer import VideoWriter

    a = list(iter_frames(media / "videos" / "capman_1.mp4", start=200, max_frames=16))
    b = [f[:300, 120:520] for f in iter_frames(media / "videos" / "pexels_woman.mp4", max_frames=8)]
    (tmp_path / "in").mkdir()
    with VideoWriter(tmp_path / "in" / "joined.mp4", 25, preset="ultrafast") as w:
        for f in a + b:
            w.write(f)
    summary = preprocess(tmp_path / "in", tmp_path / "out", resolution=64, every=1, progress=False)
    assert summary.processed == 1 and summary.cut_videos == 1 and summary.trimmed_frames == 8
    assert "1 videos with a shot change" in str(summary)
    meta = json.loads(next((tmp_path / "out" / "videos").glob("*/meta.json")).read_text())
    assert meta["shots"] == 2 and meta["num_frames"] == 16 and max(meta["frame_indices"]) == 15

"""Outputs are complete or absent (talkinghead/files.py): atomic writes, one-line write errors, and partial
files of killed runs removed by the next write into the folder; image conversions of images.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from talkinghead.errors import TalkingHeadError
from talkinghead.media.files import atomic_write
from talkinghead.media.images import from_uint8, grid, to_uint8

DEAD_PID = 2**22 + 12345  # above the default pid_max: no such process


def test_atomic_write_leaves_nothing_on_failure_and_says_why(tmp_path):
    def fail(tmp):
        open(tmp, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(TalkingHeadError, match="cannot write .*No space left"):
        atomic_write(tmp_path / "x.avatar", fail)
    assert list(tmp_path.iterdir()) == []

    def interrupted(tmp):
        open(tmp, "wb").write(b"half")
        raise KeyboardInterrupt  # Ctrl-C, or SIGTERM as the CLI raises it

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.avatar", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_next_write_removes_partial_files_of_killed_runs(tmp_path):
    stale = tmp_path / f".model.safetensors.{DEAD_PID}.0a1b2c3d.part"  # a save killed with SIGKILL
    live = tmp_path / f".model.safetensors.{os.getppid()}.0a1b2c3d.part"  # a concurrent run's: kept
    for p in (stale, live):
        p.write_bytes(b"partial")
    atomic_write(tmp_path / "model.safetensors", lambda tmp: open(tmp, "wb").write(b"complete"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "model.safetensors"])
    assert (tmp_path / "model.safetensors").read_bytes() == b"complete"


def test_image_conversions_round_trip():
    a = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    t = from_uint8(a)
    assert t.shape == (2, 3, 5, 7) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(to_uint8(t), a) and np.array_equal(to_uint8(t[0]), a[0])
    ro = a[0].copy()
    ro.setflags(write=False)  # as np.asarray(PIL image): converted without a warning
    assert torch.equal(from_uint8(ro), t[0])
    g = grid([[t[0], a[1]], [t[1]]])
    assert g.shape == (10, 14, 3) and np.array_equal(g[5:, 7:], np.zeros((5, 7, 3), np.uint8))


def test_same_file_sees_through_relative_paths_symlinks_and_hard_links(tmp_path, monkeypatch):
    from talkinghead.media.files import refuse_overwriting_inputs, same_file

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"video")
    (tmp_path / "sym.mp4").symlink_to(clip)
    os.link(clip, tmp_path / "hard.mp4")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    for other in ("../clip.mp4", tmp_path / "sym.mp4", tmp_path / "hard.mp4", str(tmp_path / "sub" / ".." / "clip.mp4")):
        assert same_file(other, clip), other
        with pytest.raises(TalkingHeadError, match="is the input") as e:
            refuse_overwriting_inputs([None, other], [None, clip])
        assert "\n" not in str(e.value)
    (tmp_path / "other.mp4").write_bytes(b"video")  # equal bytes, another file
    assert not same_file(tmp_path / "other.mp4", clip)
    assert not same_file(tmp_path / "new.mp4", clip) and same_file("new.mp4", tmp_path / "sub" / "new.mp4")
    refuse_overwriting_inputs([tmp_path / "out.mp4"], [clip, None])  # a new file: fine

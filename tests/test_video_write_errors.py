"""VideoWriter on a read-only or full filesystem: every failure to open, write, close or remux is a one-line
VideoError naming the file, and no partial file is left behind."""

from __future__ import annotations

import errno
import os

import av
import numpy as np
import pytest

from talkinghead.errors import VideoError
from talkinghead.media.video_writer import VideoWriter

FRAME = np.zeros((16, 16, 3), np.uint8)


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDisk:
    """A real output container whose mux (or close) fails as on a full disk."""

    def __init__(self, real, fail_mux: bool, fail_close: bool):
        self._real, self._fail_mux, self._fail_close = real, fail_mux, fail_close

    def __getattr__(self, name):
        return getattr(self._real, name)

    def mux(self, packet):
        if self._fail_mux:
            raise _enospc()
        return self._real.mux(packet)

    def close(self):
        self._real.close()
        if self._fail_close:
            raise _enospc()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _patch_open(monkeypatch, *, fail_open=False, fail_mux=False, fail_close=False, only_remux=False):
    real_open = av.open

    def fake_open(file, mode="r", **kw):
        container = real_open(file, mode, **kw)
        if mode != "w" or (only_remux and not str(file).endswith(".mux.mp4")):
            return container
        if fail_open:
            container.close()
            raise _enospc()
        return _FullDisk(container, fail_mux, fail_close)

    monkeypatch.setattr(av, "open", fake_open)


def _write(path, n=100, **kw):  # more frames than x264's lookahead: packets are muxed during write()
    with VideoWriter(path, 25, **kw) as w:
        for _ in range(n):
            w.write(FRAME)


def _assert_one_line(ei, path):
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg and "No space left" in msg, msg


@pytest.mark.parametrize("where", ["open", "write", "close", "remux"])
def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, where):
    out = tmp_path / "out.mp4"
    if where == "remux":
        _patch_open(monkeypatch, fail_mux=True, only_remux=True)
    else:
        _patch_open(monkeypatch, fail_open=where == "open", fail_mux=where == "write", fail_close=where == "close")
    with pytest.raises(VideoError) as ei:
        _write(out, metadata={"comment": "synthetic"} if where == "remux" else None)
    _assert_one_line(ei, out)
    assert list(tmp_path.iterdir()) == []


def test_reserving_the_partial_name_fails_in_one_line(tmp_path, monkeypatch):
    """os.open of the partial file failing (ENOSPC, EROFS) is the same one-line error, with nothing left."""
    from talkinghead.media import video_writer

    def failing(*a, **kw):
        raise _enospc()

    monkeypatch.setattr(video_writer.os, "open", failing)
    out = tmp_path / "out.mp4"
    with pytest.raises(VideoError) as ei:
        _write(out, n=1)
    _assert_one_line(ei, out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(VideoError) as ei:
            _write(folder / "out.mp4", n=1)
        assert "\n" not in str(ei.value) and "out.mp4" in str(ei.value)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_folder_in_the_way_is_one_line(tmp_path):
    """A file where the output's folder should be (mkdir fails) is a one-line VideoError too."""
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(VideoError) as ei:
        _write(blocked / "out.mp4", n=1)
    assert "\n" not in str(ei.value) and "out.mp4" in str(ei.value)

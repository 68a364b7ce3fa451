"""talkinghead.video: probing, frame iteration, atomic writer with audio, bad inputs."""

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from talkinghead.errors import VideoError
from talkinghead.video import VideoWriter, is_video_path, iter_frames, probe_video, read_image

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_skip_no_media = pytest.mark.skipif(not (MEDIA / "videos").is_dir(),
                                    reason=f"real media not found at {MEDIA} (see DESIGN.md §6)")


def needs_media(test):
    return pytest.mark.media(_skip_no_media(test))


def _levels_video(path, n=10, size=(48, 64), fps=25):
    """n frames of uniform grey 20*k (k = frame index), decodable back to their index."""
    with VideoWriter(path, fps) as w:
        for k in range(n):
            w.write(np.full(size + (3,), (20 * k) % 256, np.uint8))
    return path


def test_writer_and_iter_frames(tmp_path):
    p = _levels_video(tmp_path / "levels.mp4")
    info = probe_video(p)
    assert (info.width, info.height, info.num_frames, info.has_audio) == (64, 48, 10, False)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(0.4, abs=0.05)
    frames = list(iter_frames(p, start=1, step=3))
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    assert [round(float(f.mean()) / 20) for f in frames] == [1, 4, 7]
    assert len(list(iter_frames(p, max_frames=4))) == 4
    assert sorted(x.name for x in tmp_path.iterdir()) == ["levels.mp4"]  # no temp files left


def test_writer_pads_odd_sizes(tmp_path):
    with VideoWriter(tmp_path / "odd.mp4", 10) as w:
        for _ in range(3):
            w.write(np.zeros((31, 45, 3), np.uint8))
    info = probe_video(tmp_path / "odd.mp4")
    assert (info.width, info.height, info.num_frames) == (46, 32, 3)


def test_writer_exception_leaves_nothing(tmp_path):
    out = tmp_path / "broken.mp4"
    with pytest.raises(KeyError):
        with VideoWriter(out, 25) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


@needs_media
def test_writer_copies_audio_trimmed(tmp_path):
    src = MEDIA / "videos" / "pexels_woman.mp4"
    info = probe_video(src)
    assert info.has_audio and info.num_frames == 472 and info.fps == pytest.approx(23.976, abs=1e-3)
    out = tmp_path / "with_audio.mp4"
    with VideoWriter(out, info.fps, audio_from=src, metadata={"comment": "synthetic"}) as w:
        for f in iter_frames(src, max_frames=24):
            w.write(f[::4, ::4])
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.frames == 24 and float(v.average_rate) == pytest.approx(info.fps, abs=1e-3)
        vdur = float(v.duration * v.time_base)
        adur = float(a.duration * a.time_base)
        assert adur == pytest.approx(vdur, abs=0.1)  # trimmed to the video, not the source's 19.7 s
        assert c.metadata.get("comment") == "synthetic"


def test_bad_inputs_raise_video_error(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        probe_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(VideoError):
        probe_video(junk)
    with pytest.raises(VideoError):
        list(iter_frames(junk))
    good = _levels_video(tmp_path / "good.mp4", n=12)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # moov at the end: gone
    with pytest.raises(VideoError):
        list(iter_frames(cut))
    with pytest.raises(VideoError):
        read_image(junk)
    with pytest.raises(VideoError):
        read_image(tmp_path / "nope.png")


def test_read_image_applies_exif_orientation(tmp_path):
    im = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    a = read_image(tmp_path / "rot.jpg")
    assert a.shape == (20, 10, 3) and a.dtype == np.uint8


def test_is_video_path():
    assert is_video_path("a/b.MP4") and is_video_path("x.webm") and not is_video_path("x.jpg")

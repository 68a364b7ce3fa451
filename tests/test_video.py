"""talkinghead.media.video: probing, frame iteration, atomic writer with audio, bad inputs."""

import os
import time

import av
import numpy as np
import pytest
from PIL import Image

from talkinghead.errors import VideoError
from talkinghead.media.image_files import read_image
from talkinghead.media.video import is_video_path, iter_frames, iter_indexed_frames, probe_video
from talkinghead.media.video_writer import VideoWriter

DEAD_PID = 4_194_399  # above Linux's largest pid_max (2**22): never a live process


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


@pytest.mark.media
def test_writer_copies_audio_trimmed(tmp_path, media):
    src = media / "videos" / "pexels_woman.mp4"
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


@pytest.mark.timeout(20)
def test_fifos_folders_and_devices_are_refused_before_opening(tmp_path):
    """Opening a FIFO waits for a writer forever: readers refuse what is not a regular file, in one line."""
    fifo_png, fifo_mp4, folder = tmp_path / "pipe.png", tmp_path / "pipe.mp4", tmp_path / "folder.mp4"
    os.mkfifo(fifo_png)
    os.mkfifo(fifo_mp4)
    folder.mkdir()
    with pytest.raises(VideoError, match=r"cannot read image .*pipe.png: a named pipe \(FIFO\), not a regular"):
        read_image(fifo_png)
    with pytest.raises(VideoError, match=r"cannot read video .*pipe.mp4: a named pipe \(FIFO\)"):
        probe_video(fifo_mp4)
    with pytest.raises(VideoError, match="folder.mp4: a folder, not a regular file"):
        list(iter_frames(folder))
    with pytest.raises(VideoError, match="/dev/null: a device"):
        read_image("/dev/null")


def test_read_image_applies_exif_orientation(tmp_path):
    im = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    a = read_image(tmp_path / "rot.jpg")
    assert a.shape == (20, 10, 3) and a.dtype == np.uint8


def test_is_video_path():
    assert is_video_path("a/b.MP4") and is_video_path("x.webm") and not is_video_path("x.jpg")


@pytest.mark.media
def test_truncated_video_is_an_error(tmp_path, media):
    """The first 20 KB of a 1,337-frame clip: threaded decoding stops quietly after 2 frames; that is an error."""
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((media / "videos" / "capman_1.mp4").read_bytes()[:20_000])
    assert probe_video(cut).num_frames == 1337  # the header is intact
    with pytest.raises(VideoError, match=r"cut\.mp4 is truncated or corrupt: decoded 2 of 1337 frames") as ei:
        list(iter_frames(cut))
    assert "\n" not in str(ei.value)
    with pytest.raises(VideoError, match="truncated or corrupt"):
        list(iter_indexed_frames(cut, indices=[0, 600, 1200]))
    assert len(list(iter_frames(cut, max_frames=2))) == 2  # what is there can still be read when asked for


@pytest.mark.media
def test_real_videos_with_inexact_headers_read_fine(media):
    """Headers' frame counts are often a little off (98 in the header, 95 decodable; 62 vs 61) and MPEG
    program streams have none: none of that is truncation."""
    talking = media / "talking"
    cases = [(media / "videos" / "no_face.mp4", 95),
             (next(talking.glob("id00015/V-Express/*RD_Radio10_0_clip_0.mp4")), 61),
             (next(talking.glob("id00001/LipNet/*pwij3p.mpg")), 75)]
    for path, n in cases:
        assert sum(1 for _ in iter_frames(path)) == n, path


@pytest.mark.media
@pytest.mark.slow
def test_every_real_video_reads_to_the_end(media):
    paths = sorted(media.glob("videos/*.mp4")) + sorted(p for p in (media / "talking").rglob("*")
                                                         if p.suffix.lower() in (".mp4", ".mpg", ".mov"))
    assert len(paths) > 100
    for p in paths:
        assert sum(1 for _ in iter_frames(p)) > 0, p


def test_writer_keyboard_interrupt_leaves_nothing(tmp_path):
    """Ctrl-C (and SIGTERM, which the CLI turns into a KeyboardInterrupt) mid-write removes the partial file."""
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, 25) as w:
            for _ in range(5):
                w.write(np.zeros((16, 16, 3), np.uint8))
            assert len(list(tmp_path.iterdir())) == 1  # the hidden partial file
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writer_partial_name_carries_pid(tmp_path):
    with VideoWriter(tmp_path / "out.mp4", 25) as w:
        w.write(np.zeros((16, 16, 3), np.uint8))
        (part,) = list(tmp_path.iterdir())
        assert part.name.startswith(f".out.{os.getpid()}.") and part.name.endswith(".part.mp4")


def test_stale_partial_files_removed_by_next_write(tmp_path):
    """A killed run (kill -9: no clean-up possible) leaves `.NAME.PID.*.part.mp4`; the next write into that
    folder removes those whose process is gone, and nothing else."""
    stale = [tmp_path / f".out.{DEAD_PID}.k3j4h5.part.mp4", tmp_path / f".out.{DEAD_PID}.k3j4h5.part.mp4.mux.mp4",
             tmp_path / ".other.x8f2_a9b.part.mp4"]  # older naming without a pid: removed once old
    live = tmp_path / f".out.{os.getppid()}.abcdef.part.mp4"  # a live process's (a concurrent run): kept
    keep = [live, tmp_path / "mine.part.mp4", tmp_path / ".notes.txt", tmp_path / f".x.{DEAD_PID}.y.mp4"]
    for p in stale + keep:
        p.write_bytes(b"partial")
    old = time.time() - 3 * 3600
    os.utime(stale[2], (old, old))
    _levels_video(tmp_path / "new.mp4", n=3)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([p.name for p in keep] + ["new.mp4"])


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_killed_writer_process_leaves_no_partial_file(tmp_path, sig):
    """A real process writing a video, stopped as the CLI is: SIGTERM unwinds (the CLI's handler raises a
    KeyboardInterrupt) and removes the partial file; after SIGKILL the next write into the folder removes it."""
    import signal
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import signal, sys
        import numpy as np
        from talkinghead.cli import _on_sigterm
        from talkinghead.media.video_writer import VideoWriter
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            with VideoWriter(sys.argv[1], 25) as w:
                for k in range(10**6):
                    w.write(np.full((64, 64, 3), k % 256, np.uint8))
                    if k == 30:
                        print("writing", flush=True)
        except KeyboardInterrupt:
            sys.exit(143)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.mp4")], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert [p.name.endswith(".part.mp4") for p in tmp_path.iterdir()] == [True]
        proc.send_signal(getattr(signal, sig))
        rc = proc.wait(30)
    finally:
        proc.kill()
        proc.wait()
    if sig == "SIGTERM":
        assert rc == 143 and list(tmp_path.iterdir()) == []
    else:
        assert len(list(tmp_path.iterdir())) == 1  # nothing can run on SIGKILL ...
        _levels_video(tmp_path / "next.mp4", n=2)  # ... so the next run's write removes it
        assert [p.name for p in tmp_path.iterdir()] == ["next.mp4"]


def _sideways_video(path, degrees, n=4, size=(32, 64)):
    """A small mp4 whose frames are stored H×W with a display matrix turning them by `degrees`
    counter-clockwise (a phone held upright records -90: turned clockwise); the stored top-left corner is
    white."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        s.set_display_rotation(degrees)
        for _ in range(n):
            a = np.zeros((*size, 3), np.uint8)
            a[:8, :8] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.mark.parametrize("degrees, corner", [(-90, (0, -1)), (90, (-1, 0)), (180, (-1, -1))])
def test_a_video_stored_sideways_is_read_upright(tmp_path, degrees, corner):
    path = tmp_path / "phone.mp4"
    _sideways_video(path, degrees)
    info = probe_video(path)
    turned = degrees % 180 != 0
    assert (info.width, info.height) == ((32, 64) if turned else (64, 32))
    assert info.rotation == degrees % 360
    frames = list(iter_frames(path))
    assert len(frames) == 4
    indexed = [f for _, f in iter_indexed_frames(path, indices=[1, 3])]
    for f in frames + indexed:
        assert f.shape == (info.height, info.width, 3) and f.flags.c_contiguous
        y, x = corner  # the stored top-left corner, where it stands once upright (clockwise for -90)
        assert f[y, x].mean() > 200 and f[0 if y else -1, 0 if x else -1].mean() < 50


def test_an_unturned_video_reports_no_rotation(tmp_path):
    path = tmp_path / "plain.mp4"
    _levels_video(path, n=3)
    info = probe_video(path)
    assert info.rotation == 0 and (info.width, info.height) == (64, 48)


def test_read_ahead_keeps_order_raises_in_place_and_stops_early(tmp_path):
    """Frames decoded ahead in a thread: the same frames in order; an error after the frames before it; leaving
    early closes the source and ends the thread."""
    import threading

    from talkinghead.media.video import read_ahead

    p = _levels_video(tmp_path / "levels.mp4", n=5)
    assert all(np.array_equal(a, b) for a, b in zip(read_ahead(iter_frames(p)), iter_frames(p)))
    assert len(list(read_ahead(iter_frames(p), depth=1))) == 5

    def broken():
        yield 1
        yield 2
        raise VideoError("truncated")

    seen = []
    with pytest.raises(VideoError, match="truncated"):
        for x in read_ahead(broken()):
            seen.append(x)
    assert seen == [1, 2]
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    stream = read_ahead(endless(), depth=2)
    assert next(stream) == 0
    stream.close()
    assert closed == [True] and not any(t.name == "talkinghead-decode" for t in threading.enumerate())

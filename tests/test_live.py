"""Live puppeteering (talkinghead.live, `talkinghead live`): a video file as the camera writes a playable mp4 in
real time; a slow renderer drops frames instead of falling behind; Ctrl-C, SIGTERM and a stop event finish the
file; a missing camera, display or pyvirtualcam is a one-line error before any work; an output that fails
leaves no file. A tiny warp-guided model (random weights: its G is the classical landmark warp) and the
bundled Mona Lisa and driving clip; no real-media folder needed."""

from __future__ import annotations

import sys
import threading
import time
import types

import numpy as np
import pytest
import torch

from talkinghead import bundled

from talkinghead.media import video, video_writer
from talkinghead.live.camera import Camera, DeviceCamera, FileCamera, FrameGrabber, open_camera
from talkinghead.persons.checkpoint import LoadedModel
from talkinghead.config import warp_tiny
from talkinghead.errors import TalkingHeadError, Terminated
from talkinghead.live.puppet import LivePuppet
from talkinghead.live.loop import run_live
from talkinghead.live.outputs import FileOutput

from helpers import leftovers, random_model_file, run_cli

CLIP_FRAMES = 12


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny warp-guided model file and the first 12 frames of the bundled driving clip (0.5 s at 24 fps)."""
    d = tmp_path_factory.mktemp("live")
    random_model_file(d / "warp_tiny.safetensors", warp_tiny(), discriminator=False)
    clip = d / "clip.mp4"
    with video_writer.VideoWriter(clip, video.probe_video(bundled.DRIVING).fps, preset="ultrafast") as w:
        for f in video.iter_frames(bundled.DRIVING, max_frames=CLIP_FRAMES):
            w.write(f)
    return {"model": d / "warp_tiny.safetensors", "clip": clip}


@pytest.fixture(scope="module")
def avatar(files):
    from talkinghead.persons.avatar import make_ff_avatar

    model = LoadedModel.load(files["model"], with_discriminator=False)
    return make_ff_avatar([str(bundled.PORTRAIT)], model, shots=1), model


def test_cli_live_file_camera_writes_playable_mp4(files, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    rc, stdout, err = run_cli(["live", "--avatar", str(bundled.PORTRAIT), "--model", str(files["model"]),
                            "--camera", str(files["clip"]), "--out", str(out), "--report-every", "0"], capsys)
    assert rc == 0, err
    info = video.probe_video(out)
    frames = list(video.iter_frames(out))
    # real time: every camera frame from the first rendered one has a frame (dropped ones repeat the last)
    assert 1 <= len(frames) <= CLIP_FRAMES and info.fps == pytest.approx(video.probe_video(files["clip"]).fps)
    assert frames[0].shape == (720, 462, 3)  # the Mona Lisa (743x1155) scaled to --max-size 720, even sides
    assert "frames/s" in stdout and "latency" in stdout and f"wrote {out}" in stdout
    assert leftovers(tmp_path) == []


def test_puppet_follows_the_face_and_holds_without_one(avatar):
    av, model = avatar
    puppet = LivePuppet(av, model, fps=24)
    first = puppet.last.copy()  # the avatar's own pose, rendered at start
    assert first.shape == (720, 462, 3) and puppet.output_size == (462, 720)
    frames = list(video.iter_frames(bundled.DRIVING, max_frames=40))
    outs = [puppet.process(f) for f in frames[::4]]
    assert puppet.frames == 10 and puppet.no_face == 0
    assert all(o.shape == first.shape for o in outs)
    box = puppet._dst  # the face box in the output
    assert max(np.abs(o[box].astype(int) - outs[0][box]).mean() for o in outs) > 1.0  # the face moves
    # away from the face the photo is as it was
    assert np.abs(outs[-1][:40, :40].astype(int) - puppet.background[:40, :40]).max() <= 1
    puppet.reset()  # (a tracker may hold a lost face for a few frames)
    held = puppet.process(np.zeros((360, 640, 3), np.uint8))  # no face: the last frame again
    assert puppet.no_face == 1 and held is outs[-1]
    crop = LivePuppet(av, model, fps=24, crop_only=True, tracker=puppet.tracker)
    assert crop.process(frames[0]).shape == (crop.box_size, crop.box_size, 3)


def test_frozen_generator_renders_what_the_eager_one_does(avatar):
    """Animator(freeze=True): G traced for one frame with the avatar baked in gives G's own output;
    mixed_precision (bfloat16 convolutions where the CPU has them) stays within a few grey levels."""
    from talkinghead.inference.animator import Animator

    av, model = avatar
    eager = Animator(av, model=model)
    frozen = Animator(av, model=model, freeze=True)
    mixed = Animator(av, model=model, freeze=True, mixed_precision=True)
    rng = np.random.default_rng(0)
    for _ in range(2):  # poses other than the one traced
        p = av.source_points[None] + rng.normal(0, 1.5, (1, 68, 2)).astype(np.float32)
        ref = eager.render_points(p, full_size=True)
        assert torch.allclose(frozen.render_points(p, full_size=True), ref, atol=1e-5)
        assert (mixed.render_points(p, full_size=True) - ref).abs().mean() < 2 / 255
    two = av.source_points[None].repeat(2, 0)  # batches of more than one frame take the eager path
    assert torch.allclose(frozen.render_points(two), eager.render_points(two), atol=1e-5)


def test_live_fills_the_open_mouth_as_animate_does():
    """With the bundled model's region generators, a live frame whose driver opens the mouth gets animate's
    mouth fill (render_points' frame, pasted), and only around the mouth; regions=False leaves the warp's."""
    from talkinghead.live.puppet import Pose
    from talkinghead.persons.avatar import make_ff_avatar

    model = LoadedModel.load(bundled.MODEL, with_discriminator=False)
    av = make_ff_avatar([str(bundled.PORTRAIT)], model, shots=1)
    filled, plain = (LivePuppet(av, model, max_size=360, regions=r) for r in (True, False))
    assert filled.animator.regions and not plain.animator.regions
    p = filled.avatar.source_points.copy()
    p[[55, 56, 57, 58, 59, 65, 66, 67], 1] += 0.06 * filled.animator.image_size  # the jaw drops
    pose = Pose(p[None], filled.animator.prepare(p[None]))
    a, b = filled.render(pose), plain.render(Pose(p[None], plain.animator.prepare(p[None])))
    moved = np.argwhere(np.abs(a.astype(int) - b.astype(int)).max(-1) > 0)  # (n, 2) rows, columns
    assert len(moved) > 20
    mouth = filled.avatar.crop.points_to_image(p[48:68])  # (20, 2) x, y in the output frame
    lo, hi = mouth.min(0) - 12, mouth.max(0) + 12
    assert ((moved[:, ::-1] >= lo) & (moved[:, ::-1] <= hi)).all()


class _FastCamera(Camera):
    """`n` frames every `period` s (faster than the renderer below); counts the frames delivered so far."""

    def __init__(self, frame, n: int, period: float):
        self.frame, self.n, self.period = frame, n, period
        self.name, self.fps, self.width, self.height = "fast", 1 / period, frame.shape[1], frame.shape[0]
        self.delivered = 0

    def frames(self):
        for i in range(self.n):
            time.sleep(self.period)
            self.delivered = i + 1
            yield i, self.frame, time.perf_counter(), 0.0


class _SlowPuppet:
    """A renderer three times slower than the camera; records how many frames behind the camera each frame was
    when its pose was taken and when it was rendered."""

    def __init__(self, camera: _FastCamera, seconds: float, fail_at: int | None = None,
                 interrupt: type[BaseException] | None = None):
        self.camera, self.seconds, self.fail_at, self.interrupt = camera, seconds, fail_at, interrupt
        self.behind_pose: list[int] = []
        self.behind: list[int] = []
        self.times = types.SimpleNamespace(seconds={}, cpu_seconds={})
        self.no_face = 0

    def pose(self, frame):
        self.behind_pose.append(self.camera.delivered - 1 - self._index)
        return self._index

    def render(self, index):
        if self.interrupt is not None and len(self.behind) == self.fail_at:
            raise self.interrupt()
        self.behind.append(self.camera.delivered - 1 - index)
        time.sleep(self.seconds)
        return np.full((64, 48, 3), len(self.behind) * 10 % 256, np.uint8)


def _run_slow(camera, puppet, outputs=(), **kw):
    # the puppet sees frames, not their numbers: remember the number of the frame the grabber gave out
    original = FrameGrabber.get

    def get(self, timeout=None):
        cf = original(self, timeout)
        if cf is not None:
            puppet._index = cf.index
        return cf

    FrameGrabber.get = get
    try:
        return run_live(puppet, camera, outputs, report_every=0, **kw)
    finally:
        FrameGrabber.get = original


@pytest.mark.parametrize("pipeline", [True, False])
def test_slow_renderer_drops_frames_and_stays_on_the_newest(tmp_path, pipeline):
    camera = _FastCamera(np.zeros((64, 48, 3), np.uint8), n=60, period=0.01)
    puppet = _SlowPuppet(camera, seconds=0.03)
    out = FileOutput(tmp_path / "slow.mp4", camera.fps)
    s = _run_slow(camera, puppet, [out], pipeline=pipeline)
    assert s.captured == 60 and s.frames == len(puppet.behind) < 40 and s.dropped == 60 - s.frames
    # every frame was the camera's newest when its pose was taken, and is rendered a render or two later: the
    # delay does not pile up (a queue of every frame would be dozens of frames behind by the end)
    assert max(puppet.behind_pose) <= 1
    assert max(puppet.behind) <= 10
    # the file runs in real time: dropped frames repeat the last rendered one
    assert len(list(video.iter_frames(tmp_path / "slow.mp4"))) == out.frames >= 50


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Terminated])
def test_interrupt_finishes_a_playable_file(tmp_path, interrupt):
    camera = _FastCamera(np.zeros((64, 48, 3), np.uint8), n=100, period=0.005)
    puppet = _SlowPuppet(camera, seconds=0.01, fail_at=4, interrupt=interrupt)
    out = tmp_path / "cut.mp4"
    if interrupt is Terminated:  # SIGTERM: the file is finished, then the exception goes on (exit code 143)
        with pytest.raises(Terminated):
            _run_slow(camera, puppet, [FileOutput(out, camera.fps)])
    else:
        s = _run_slow(camera, puppet, [FileOutput(out, camera.fps)])
        assert s.interrupted and s.frames == 4 and len(puppet.behind) == 4
    assert len(list(video.iter_frames(out))) >= 4
    assert leftovers(tmp_path) == []


def test_stop_event_ends_the_session(tmp_path):
    camera = _FastCamera(np.zeros((64, 48, 3), np.uint8), n=1000, period=0.005)
    puppet = _SlowPuppet(camera, seconds=0.005)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    s = _run_slow(camera, puppet, [FileOutput(tmp_path / "s.mp4", camera.fps)], stop=stop)
    assert not s.interrupted and 0 < s.frames and s.captured < 1000
    assert len(list(video.iter_frames(tmp_path / "s.mp4"))) >= s.frames


def test_cli_ctrl_c_finishes_the_file(files, tmp_path, capsys, monkeypatch):
    calls = []
    original = LivePuppet.render

    def render(self, pose):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, pose)

    monkeypatch.setattr(LivePuppet, "render", render)
    out = tmp_path / "x.mp4"
    rc, stdout, err = run_cli(["live", "--avatar", str(bundled.PORTRAIT), "--model", str(files["model"]),
                            "--camera", str(files["clip"]), "--out", str(out), "--report-every", "0"], capsys)
    assert rc == 0, err
    assert len(list(video.iter_frames(out))) >= 3 and f"wrote {out}" in stdout
    assert leftovers(tmp_path) == []


def test_failing_output_leaves_no_file(tmp_path):
    class Broken:
        marks_itself = True

        def write(self, index, frame):
            if index >= 3:
                raise TalkingHeadError("the output broke")

        def close(self):
            pass

        abort = close

    camera = _FastCamera(np.zeros((64, 48, 3), np.uint8), n=50, period=0.005)
    with pytest.raises(TalkingHeadError, match="broke"):
        _run_slow(camera, _SlowPuppet(camera, seconds=0.0), [FileOutput(tmp_path / "x.mp4", camera.fps), Broken()])
    assert list(tmp_path.iterdir()) == []


def _one_line_error(argv, capsys, *words):
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("talkinghead live: error:") and all(w in err[0] for w in words), err[0]


def test_missing_camera_display_or_pyvirtualcam_are_one_line_errors(files, tmp_path, capsys, monkeypatch):
    base = ["live", "--avatar", str(bundled.PORTRAIT), "--model", str(files["model"])]
    out = ["--out", str(tmp_path / "x.mp4")]
    _one_line_error(base + ["--camera", "/dev/video97"] + out, capsys, "/dev/video97", "not found")
    _one_line_error(base + ["--camera", str(tmp_path / "nope.mp4")] + out, capsys, "nope.mp4", "not found")
    _one_line_error(base + ["--camera", str(files["clip"])], capsys, "--window", "--out")  # nowhere to show
    _one_line_error(base + ["--camera", str(files["clip"]), "--out", str(tmp_path / "x.avi")], capsys, ".mp4")
    _one_line_error(base + ["--camera", "0", "--camera-size", "big"] + out, capsys, "--camera-size")
    monkeypatch.delenv("DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        _one_line_error(base + ["--camera", str(files["clip"]), "--window"], capsys, "display", "DISPLAY")
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # not installed
    _one_line_error(base + ["--camera", str(files["clip"]), "--virtual-camera"], capsys, "pyvirtualcam",
                    "talkinghead[live]")
    _one_line_error(["live", "--avatar", str(tmp_path / "none.jpg"), "--camera", str(files["clip"])] + out,
                    capsys, "none.jpg")
    assert list(tmp_path.iterdir()) == []


def test_virtual_camera_without_a_device_is_one_line(files, tmp_path, capsys, monkeypatch):
    fake = types.ModuleType("pyvirtualcam")
    fake.__spec__ = types.SimpleNamespace(name="pyvirtualcam")
    fake.PixelFormat = types.SimpleNamespace(RGB="rgb")

    def no_device(*a, **k):
        raise RuntimeError("'v4l2loopback' backend: no device found")

    fake.Camera = no_device
    monkeypatch.setitem(sys.modules, "pyvirtualcam", fake)
    _one_line_error(["live", "--avatar", str(bundled.PORTRAIT), "--model", str(files["model"]),
                     "--camera", str(files["clip"]), "--virtual-camera", "--out", str(tmp_path / "x.mp4")],
                    capsys, "virtual camera", "v4l2loopback")
    assert list(tmp_path.iterdir()) == []


def test_file_camera_plays_in_real_time_and_open_camera_checks(files, tmp_path):
    cam = open_camera(str(files["clip"]))
    assert isinstance(cam, FileCamera)
    t0 = time.perf_counter()
    got = list(cam.frames())
    times = [t for _, _, t, _ in got]
    assert len(got) + cam.late == CLIP_FRAMES
    # frames are delivered on the clock: frame i is due at start + i / fps
    assert times[-1] - times[0] == pytest.approx((got[-1][0] - got[0][0]) / cam.fps, abs=1e-6)
    assert time.perf_counter() - t0 >= (got[-1][0]) / cam.fps
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(TalkingHeadError, match="not a video file"):
        open_camera(str(tmp_path / "notes.txt"))


def test_a_corrupt_camera_file_is_refused_in_one_line(files, tmp_path, capsys):
    """A file whose frame data breaks off partway is refused before any work, as `animate` refuses it (not
    played as its first frames with exit 0)."""
    data = bytearray(files["clip"].read_bytes())
    start, end = data.find(b"mdat"), data.find(b"moov")
    start += (end - start) // 3
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, np.uint8).tobytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    with pytest.raises(video.VideoError, match="broken.mp4 is truncated or corrupt: decoded"):
        FileCamera(broken)
    out = tmp_path / "x.mp4"
    rc, stdout, err = run_cli(["live", "--avatar", str(bundled.PORTRAIT), "--model", str(files["model"]),
                            "--camera", str(broken), "--out", str(out)], capsys)
    assert rc == 1 and len(err) == 1 and "broken.mp4 is truncated or corrupt" in err[0], err
    assert not out.exists() and "live:" not in stdout


def test_device_camera_reads_a_live_pyav_input():
    """The webcam path (PyAV device input, decoded in the capture thread) on ffmpeg's synthetic real-time
    camera: frames arrive numbered, at the input's size, and the grabber always hands out the newest."""
    cam = DeviceCamera("testsrc=size=320x240:rate=50,realtime", input_format="lavfi")
    assert (cam.width, cam.height, cam.fps) == (320, 240, 50)
    grabber = FrameGrabber(cam).start()
    try:
        got = [grabber.get(timeout=5.0) for _ in range(3)]
        time.sleep(0.2)  # ~10 frames arrive meanwhile; only the newest is kept
        newest = grabber.get(timeout=5.0)
    finally:
        grabber.stop()
    assert all(f is not None and f.image.shape == (240, 320, 3) for f in got + [newest])
    assert [f.index for f in got] == sorted(f.index for f in got) and newest.index > got[-1].index + 3
    assert grabber.dropped >= 3 and grabber.error is None


def test_live_out_naming_the_camera_file_is_refused(tmp_path, capsys):
    clip = tmp_path / "camera.mp4"
    with video_writer.VideoWriter(clip, 10) as w:
        for _ in range(3):
            w.write(np.zeros((32, 32, 3), np.uint8))
    data = clip.read_bytes()
    rc, _, err = run_cli(["live", "--avatar", str(bundled.PORTRAIT), "--camera", str(clip), "--out", str(clip)],
                      capsys)
    assert rc == 1 and len(err) == 1 and "is the input" in err[0]
    assert clip.read_bytes() == data and sorted(p.name for p in tmp_path.iterdir()) == ["camera.mp4"]

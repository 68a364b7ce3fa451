"""Cameras for live puppeteering (DESIGN.md §2, real time): a webcam through PyAV's device input (v4l2 on
Linux, avfoundation on macOS) or a video file standing in for one, and `FrameGrabber`, a capture thread that
keeps only the newest frame, so a consumer slower than the camera drops frames instead of falling behind.

A file camera behaves like a webcam: its frames become available on the clock at the file's own frame rate
(frame i at start + i / fps), whether or not anybody takes them; a frame whose time has passed before it was
decoded is skipped. Frames are (H, W, 3) uint8 RGB as everywhere in the package.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from talkinghead.media import video
from talkinghead.errors import TalkingHeadError, VideoError


@dataclass
class CameraFrame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    index: int  # the camera's frame number (0, 1, …): gaps are frames nobody took
    time: float  # time.perf_counter() when the camera delivered it (a file camera: when it was due)


class Camera:
    """A source of frames in real time: ``frames()`` yields (index, image, time, decode seconds)."""

    name: str
    fps: float
    width: int
    height: int

    def frames(self) -> Iterator[tuple[int, np.ndarray, float, float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileCamera(Camera):
    """A video file played as a webcam: frame i is delivered at start + i / fps (real time); frames whose
    time has passed before they were decoded are skipped (counted in `late`), as a camera would overwrite them.
    `loop`: start again at the end (a stand-in camera that never ends)."""

    def __init__(self, path, loop: bool = False):
        info = video.probe_video(path)  # one-line VideoError for a missing or unreadable file
        _check_decodes(path, info.num_frames)
        self.path = Path(path)
        self.name = str(path)
        self.fps, self.width, self.height = info.fps, info.width, info.height
        self.loop = loop
        self.late = 0

    def frames(self) -> Iterator[tuple[int, np.ndarray, float, float]]:
        start = time.perf_counter()
        period = 1.0 / self.fps
        i = 0
        while True:
            with video.open_container(self.path) as c:
                s = c.streams.video[0]
                s.thread_type = "AUTO"
                t = time.perf_counter()
                try:
                    for frame in c.decode(s):
                        due = start + i * period
                        if time.perf_counter() > due + period:  # the next frame is due already: skip this one
                            self.late += 1
                            i += 1
                            t = time.perf_counter()
                            continue
                        image = video.frame_rgb(frame)
                        decode_s = time.perf_counter() - t
                        wait = due - time.perf_counter()
                        if wait > 0:
                            time.sleep(wait)
                        yield i, image, due, decode_s
                        i += 1
                        t = time.perf_counter()
                except video.AV_ERRORS as e:  # noqa: SLF001
                    raise VideoError(f"cannot decode {self.path.name} at frame {i}: {video.error_text(e)}") from None
            if not self.loop or i == 0:
                return


def _check_decodes(path, num_frames: int) -> None:
    """Decodes the whole file once, as animate's reader does: a one-line VideoError when it breaks off, ends
    well before the frames its header counts (a corrupt or truncated file) or has no frame at all. Only the
    first and last frames are converted to RGB."""
    last = max(0, num_frames - 1)
    got = [i for i, _ in video.iter_indexed_frames(path, indices=[0, last])]  # read to the end
    if 0 not in got:
        raise VideoError(f"no frames could be decoded from {path}")


def _device_input(spec: str) -> tuple[str, str]:
    """(device name, PyAV input format) of a camera given as an index or a device path."""
    if spec.isdigit():
        if sys.platform.startswith("linux"):
            return f"/dev/video{spec}", "v4l2"
        if sys.platform == "darwin":
            return spec, "avfoundation"
        raise TalkingHeadError(f"camera {spec}: webcams are read through v4l2 (Linux) or avfoundation (macOS); "
                               "on this system give a video file with --camera FILE")
    return spec, "v4l2"


class DeviceCamera(Camera):
    """A webcam through PyAV: ``/dev/videoN`` (v4l2) or an index (0 = /dev/video0 on Linux, avfoundation's
    device 0 on macOS). options: the input's options, e.g. {"video_size": "640x480", "framerate": "30"}.
    input_format: any other live input of ffmpeg's, `spec` being its name (e.g. "lavfi" with
    "testsrc=rate=30,realtime", a synthetic camera)."""

    def __init__(self, spec: str | int, options: dict | None = None, input_format: str | None = None):
        name, fmt = (str(spec), input_format) if input_format else _device_input(str(spec))
        if fmt == "v4l2" and not Path(name).exists():
            raise TalkingHeadError(f"camera {name} not found (no webcam on this machine?); "
                                   "drive from a video file with --camera FILE")
        try:
            self._container = av.open(name, format=fmt, options=dict(options or {}))
        except video.AV_ERRORS as e:  # noqa: SLF001
            raise TalkingHeadError(f"cannot open camera {name}: {video.error_text(e)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise TalkingHeadError(f"camera {name} has no video stream")
        s = self._container.streams.video[0]
        rate = s.average_rate or s.guessed_rate or s.base_rate
        self.name = name
        self.fps = float(rate) if rate else 30.0
        self.width, self.height = s.codec_context.width, s.codec_context.height

    def frames(self) -> Iterator[tuple[int, np.ndarray, float, float]]:
        s = self._container.streams.video[0]
        try:
            for i, frame in enumerate(self._container.decode(s)):
                arrived = time.perf_counter()  # decoding a webcam frame waits for the camera: not decode time
                image = frame.to_ndarray(format="rgb24")
                yield i, image, arrived, time.perf_counter() - arrived
        except video.AV_ERRORS as e:  # noqa: SLF001
            raise VideoError(f"camera {self.name} stopped: {video.error_text(e)}") from None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def open_camera(spec: str | int = 0, loop: bool = False, options: dict | None = None) -> Camera:
    """A camera from the command line's --camera: an index (0), a device (/dev/video2) or a video file."""
    spec = str(spec)
    if spec.isdigit() or spec.startswith("/dev/"):
        return DeviceCamera(spec, options)
    if not Path(spec).exists():
        raise TalkingHeadError(f"camera {spec} not found: give a webcam (0, /dev/video0) or a video file")
    if Path(spec).is_dir() or not video.is_video_path(spec):
        raise TalkingHeadError(f"camera {spec} is not a video file ({', '.join(video.VIDEO_EXTENSIONS)})")
    return FileCamera(spec, loop=loop)


class FrameGrabber:
    """Reads a camera in a thread and keeps only its newest frame (DESIGN.md §2: frames are dropped rather
    than letting latency grow). ``get()`` returns a frame newer than the last one taken, waiting for it.

    Counts: ``captured`` (frames the camera delivered), ``taken``, ``dropped`` (replaced before anybody took
    them), ``decode_s`` (wall seconds spent decoding and converting in the thread), ``cpu_s``. A camera error ends the stream;
    it is kept in ``error`` (the consumer decides whether it matters)."""

    def __init__(self, camera: Camera):
        self.camera = camera
        self.captured = self.taken = self.dropped = 0
        self.decode_s = 0.0
        self.cpu_s = 0.0  # CPU seconds of the thread (decoding, conversion), when it has ended
        self.error: BaseException | None = None
        self.ended = False
        self._latest: CameraFrame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="talkinghead-camera", daemon=True)

    def start(self) -> "FrameGrabber":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for index, image, t, decode_s in self.camera.frames():
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = CameraFrame(image, index, t)
                    self.captured += 1
                    self.decode_s += decode_s
                    self._cond.notify_all()
                if self._stop.is_set():
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self.error = e
        finally:
            self.cpu_s = time.thread_time()
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> CameraFrame | None:
        """The newest frame not taken yet; None when the camera has ended (and every frame was taken) or after
        `timeout` seconds without a new frame."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._latest is not None or self.ended, timeout):
                return None
            frame, self._latest = self._latest, None
            if frame is not None:
                self.taken += 1
            return frame

    def stop(self) -> None:
        """Stops reading (the thread ends after the frame it is waiting for) and closes the camera."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self.camera.close()

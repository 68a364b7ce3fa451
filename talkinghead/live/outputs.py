"""Where live frames go (talkinghead.live.run_live): an mp4 file, a window, a virtual camera for video calls.

Every output has ``write(index, frame)`` (index: the camera frame it answers), ``close()`` (finish) and
``abort()`` (drop), called from the loop's output thread. Each checks what it needs when it is made, so a
missing display or package is a one-line error before any work: the window needs a display and tkinter, the
virtual camera the optional package pyvirtualcam (`pip install 'talkinghead[live]'`) and, on Linux, a
v4l2loopback device.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys

import numpy as np

from talkinghead.errors import TalkingHeadError


class FileOutput:
    """An H.264 mp4 at the camera's frame rate (talkinghead.media.video_writer.VideoWriter: atomic, tagged as synthetic,
    each frame marked by the writer). Camera frames that were dropped repeat the previous rendered frame, so
    the file runs in real time. x264's `preset` trades file size for CPU (ultrafast: least CPU per frame)."""

    marks_itself = True  # VideoWriter marks the frames it writes

    def __init__(self, path, fps: float, preset: str = "ultrafast"):
        from talkinghead.inference.pipeline import SYNTHETIC_TAG
        from talkinghead.media.video_writer import VideoWriter

        self.path = path
        self.writer = VideoWriter(path, fps, metadata=SYNTHETIC_TAG, preset=preset)
        self.repeated = 0
        self._last: tuple[int, np.ndarray] | None = None

    def write(self, index: int, frame: np.ndarray) -> None:
        if self._last is not None:
            last_index, last = self._last
            for _ in range(index - last_index - 1):
                self.writer.write(last)
                self.repeated += 1
        self.writer.write(frame)
        self._last = (index, frame)

    @property
    def frames(self) -> int:
        return self.writer.num_frames

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def check_display() -> None:
    """A one-line error unless a window can be shown here (tkinter importable, a display on X11 systems)."""
    if importlib.util.find_spec("tkinter") is None:
        raise TalkingHeadError("--window needs tkinter, which this Python lacks (e.g. apt-get install python3-tk); "
                               "write a file with --out or use --virtual-camera")
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise TalkingHeadError("--window needs a display and none is set (DISPLAY is empty); write a file with "
                               "--out or use --virtual-camera")


class WindowOutput:
    """The frames in a Tk window (tkinter, in the output thread that shows them). Closing the window ends the
    session (`closed_by_user`)."""

    marks_itself = False

    def __init__(self, title: str = "talkinghead live"):
        check_display()
        import tkinter as tk

        try:  # fail now, in one line, rather than in the output thread
            tk.Tk().destroy()
        except tk.TclError as e:
            raise TalkingHeadError(f"cannot open a window: {e}") from None
        self.title = title
        self.closed_by_user = False
        self._root = self._label = self._photo = None

    def _open(self) -> None:
        import tkinter as tk

        self._root = tk.Tk()
        self._root.title(self.title)
        self._root.protocol("WM_DELETE_WINDOW", self._on_close)
        self._label = tk.Label(self._root)
        self._label.pack()

    def _on_close(self) -> None:
        self.closed_by_user = True

    def write(self, index: int, frame: np.ndarray) -> None:  # noqa: ARG002
        import tkinter as tk

        if self.closed_by_user:
            return
        if self._root is None:
            self._open()
        h, w = frame.shape[:2]
        ppm = b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(frame).tobytes()  # Tk reads binary PPM data
        self._photo = tk.PhotoImage(data=ppm, format="PPM")
        self._label.configure(image=self._photo)
        self._root.update()

    def close(self) -> None:
        """Closes the window, in the output thread: Tcl must free its objects in the thread that made them."""
        if self._root is not None:
            try:
                self._root.destroy()
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._photo = self._label = self._root = None
        gc.collect()  # tkinter's objects hold reference cycles: collect them here, not later in another thread

    abort = close


def check_virtual_camera() -> None:
    """A one-line error unless the optional package pyvirtualcam is installed."""
    if importlib.util.find_spec("pyvirtualcam") is None:
        raise TalkingHeadError("--virtual-camera needs the optional package pyvirtualcam "
                               "(pip install 'talkinghead[live]')")


class VirtualCameraOutput:
    """A virtual webcam other programs (video calls) can open: pyvirtualcam (v4l2loopback on Linux, OBS's
    virtual camera on Windows and macOS); `device`: a particular one (e.g. /dev/video9)."""

    marks_itself = False

    def __init__(self, width: int, height: int, fps: float, device: str | None = None):
        check_virtual_camera()
        import pyvirtualcam

        try:
            self.camera = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, device=device)
        except (RuntimeError, ValueError, OSError) as e:
            msg = " ".join(str(e).split())
            if sys.platform.startswith("linux") and "v4l2loopback" not in msg:
                msg += " (Linux: load v4l2loopback, e.g. modprobe v4l2loopback)"
            raise TalkingHeadError(f"cannot start a virtual camera: {msg}") from None
        self.device = self.camera.device

    def write(self, index: int, frame: np.ndarray) -> None:  # noqa: ARG002
        self.camera.send(np.ascontiguousarray(frame))

    def close(self) -> None:
        self.camera.close()

    abort = close

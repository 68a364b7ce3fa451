"""Reading videos with PyAV (its bundled ffmpeg): probe, frame iterators, path kinds. Writing them is
media/video_writer.py, image files media/image_files.py (DESIGN.md §2 "video in, video out").

Frames are numpy arrays (H, W, 3) uint8 RGB everywhere, upright: a video's display matrix (a phone video
stored sideways) is honoured as an image's EXIF orientation is, in the sizes `probe_video` gives too.
Unreadable, corrupt or missing files raise `talkinghead.errors.VideoError` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from talkinghead.errors import VideoError
from talkinghead.media.files import input_file

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, StopIteration, IndexError)
# A stream that ends (or fails) before this share of the frames its header counts is truncated or corrupt.
# Real headers are often a little off (no_face.mp4: 98 counted, 95 decodable), so only a clear gap counts.
_MIN_DECODED_SHARE = 0.9


def error_text(e: BaseException) -> str:
    """An exception as one short line for a user's error message."""
    return " ".join(str(e).split())[:200] or type(e).__name__


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    num_frames: int  # from the container; estimated from duration × fps where the container has no count
    has_audio: bool
    duration: float  # seconds
    rotation: int = 0  # degrees counter-clockwise the stored frames are turned to stand upright (0, 90, 180, 270)


def is_video_path(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image_path(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def open_container(path) -> av.container.InputContainer:
    """The PyAV container of a video file; VideoError (one line) when it is missing or unreadable."""
    p = input_file(path, "video", VideoError)
    try:
        return av.open(str(p), "r")
    except AV_ERRORS as e:
        raise VideoError(f"cannot read video {p}: {error_text(e)}") from None


def probe_video(path) -> VideoInfo:
    """Width, height, fps, frame count, audio presence and duration of a video file."""
    with open_container(path) as c:
        if not c.streams.video:
            raise VideoError(f"no video stream in {path}")
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else 25.0
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif c.duration is not None:
            duration = c.duration / av.time_base
        else:
            duration = 0.0
        n = int(s.frames) if s.frames else int(round(duration * fps))
        w, h = s.codec_context.width, s.codec_context.height
        if not w or not h:
            raise VideoError(f"cannot read video {path}: no frame size")
        turns = _first_frame_turns(c, s)
        if turns % 2:
            w, h = h, w
        return VideoInfo(width=w, height=h, fps=fps, num_frames=n, has_audio=bool(c.streams.audio),
                         duration=duration, rotation=90 * turns)


def count_frames(path) -> int:
    """The frames of a video's first video stream, counted from its packets (demuxed, not decoded): for
    containers whose header gives no count, or a count not to be trusted."""
    with open_container(path) as c:
        if not c.streams.video:
            raise VideoError(f"no video stream in {path}")
        s = c.streams.video[0]
        n = 0
        try:
            for packet in c.demux(s):
                n += packet.size > 0
        except AV_ERRORS as e:
            if not n:
                raise VideoError(f"cannot read video {path}: {error_text(e)}") from None
        return n


def _first_frame_turns(c, s) -> int:
    """Quarter turns of the stream's display matrix, read off its first frame (PyAV gives a frame's, not a
    stream's); 0 when no frame decodes."""
    try:
        for frame in c.decode(s):
            return _quarter_turns(frame)
    except AV_ERRORS:
        pass
    return 0


def _quarter_turns(frame) -> int:
    """The frame's display rotation (counter-clockwise) in quarter turns, 0-3."""
    try:
        return int(round(float(frame.rotation or 0) / 90)) % 4
    except (AttributeError, TypeError, ValueError, OverflowError):
        return 0


def frame_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as (H, W, 3) uint8 RGB, turned upright by its display matrix."""
    a = frame.to_ndarray(format="rgb24")
    k = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(a, k)) if k else a


def iter_frames(path, start: int = 0, step: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yields frames start, start+step, … (at most max_frames) as (H, W, 3) uint8 RGB, decoding sequentially.

    A file that breaks off mid-stream raises VideoError at the point of breakage.
    """
    if step < 1 or start < 0:
        raise ValueError("need start >= 0 and step >= 1")
    for _, frame in iter_indexed_frames(path, range_start=start, step=step, max_frames=max_frames):
        yield frame


def iter_indexed_frames(path, range_start: int = 0, range_stop: int | None = None, step: int = 1,
                        max_frames: int | None = None, indices=None) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (frame_index, frame) for the frames in range(range_start, range_stop, step), or for the sorted
    `indices` when given. Only the frames yielded are converted to RGB (upright, see `frame_rgb`)."""
    wanted = None if indices is None else iter(sorted(set(int(i) for i in indices)))
    next_wanted = None if wanted is None else next(wanted, None)
    if wanted is not None and next_wanted is None:
        return
    count = 0
    decoded = 0
    with open_container(path) as c:
        if not c.streams.video:
            raise VideoError(f"no video stream in {path}")
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        header_frames = int(s.frames or 0)  # 0: the container does not say (e.g. MPEG program streams)
        try:
            for i, frame in enumerate(c.decode(s)):
                decoded = i + 1
                if wanted is not None:
                    if i != next_wanted:
                        continue
                    next_wanted = next(wanted, None)
                else:
                    if range_stop is not None and i >= range_stop:
                        return
                    if i < range_start or (i - range_start) % step:
                        continue
                yield i, frame_rgb(frame)
                count += 1
                if (max_frames is not None and count >= max_frames) or (wanted is not None and next_wanted is None):
                    return
        except AV_ERRORS as e:
            raise VideoError(_truncated(path, decoded, header_frames) + f" ({error_text(e)})") from None
        # the stream ended by itself: frame-threaded decoding stops quietly at a cut, so compare with the header
        if header_frames and decoded < _MIN_DECODED_SHARE * header_frames:
            raise VideoError(_truncated(path, decoded, header_frames))


def _truncated(path, decoded: int, header_frames: int) -> str:
    of = f" of {header_frames}" if header_frames else ""
    return f"{Path(path).name} is truncated or corrupt: decoded {decoded}{of} frames"


def read_ahead(frames: Iterable, depth: int = 8) -> Iterator:
    """The items of `frames` in order, made up to `depth` ahead in a background thread: decoding (PyAV lets go
    of the GIL) overlaps the caller's work on the frame before. An error is raised where it happened, after
    the items before it; leaving early stops the thread and closes `frames`."""
    import queue
    import threading

    box: "queue.Queue" = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(frames)
        last = (end, None)
        try:
            for x in it:
                if not put((x, None)):
                    return
        except BaseException as e:  # noqa: BLE001 (raised again in the caller's thread)
            last = (end, e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        put(last)

    thread = threading.Thread(target=produce, name="talkinghead-decode", daemon=True)
    thread.start()
    try:
        while True:
            x, error = box.get()
            if x is end:
                if error is not None:
                    raise error
                return
            yield x
    finally:
        stop.set()
        thread.join()

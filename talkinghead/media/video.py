"""Video I/O with PyAV (its bundled ffmpeg) (image files: media/image_files.py, their functions also here): probe, frame iterators, an atomic mp4 writer
that can carry the driver's audio over (DESIGN.md §2 "video in, video out with the driver's audio kept").

Frames are numpy arrays (H, W, 3) uint8 RGB everywhere, upright: a video's display matrix (a phone video
stored sideways) is honoured as an image's EXIF orientation is, in the sizes `probe_video` gives too. Unreadable, corrupt or missing files raise
`talkinghead.errors.VideoError` with a one-line message.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from talkinghead.media import watermark
from talkinghead.errors import VideoError
from talkinghead.media.files import input_file, partial_path, remove_stale_partials

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# audio codecs that can be stream-copied into mp4
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus"}
_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, StopIteration, IndexError)
# A stream that ends (or fails) before this share of the frames its header counts is truncated or corrupt.
# Real headers are often a little off (no_face.mp4: 98 counted, 95 decodable), so only a clear gap counts.
_MIN_DECODED_SHARE = 0.9


def _short(e: BaseException) -> str:
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
    except _AV_ERRORS as e:
        raise VideoError(f"cannot read video {p}: {_short(e)}") from None


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
        except _AV_ERRORS as e:
            if not n:
                raise VideoError(f"cannot read video {path}: {_short(e)}") from None
        return n


def _first_frame_turns(c, s) -> int:
    """Quarter turns of the stream's display matrix, read off its first frame (PyAV gives a frame's, not a
    stream's); 0 when no frame decodes."""
    try:
        for frame in c.decode(s):
            return _quarter_turns(frame)
    except _AV_ERRORS:
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
        except _AV_ERRORS as e:
            raise VideoError(_truncated(path, decoded, header_frames) + f" ({_short(e)})") from None
        # the stream ended by itself: frame-threaded decoding stops quietly at a cut, so compare with the header
        if header_frames and decoded < _MIN_DECODED_SHARE * header_frames:
            raise VideoError(_truncated(path, decoded, header_frames))


def _truncated(path, decoded: int, header_frames: int) -> str:
    of = f" of {header_frames}" if header_frames else ""
    return f"{Path(path).name} is truncated or corrupt: decoded {decoded}{of} frames"


def _fps_fraction(fps) -> Fraction:
    if isinstance(fps, Fraction):
        return fps
    fps = float(fps)
    ntsc = round(fps * 1.001)  # 23.976 -> 24000/1001, 29.97 -> 30000/1001
    if abs(fps - ntsc / 1.001) < 2e-3 and abs(fps - round(fps)) > 1e-3:
        return Fraction(ntsc * 1000, 1001)
    f = Fraction(fps).limit_denominator(1001)
    if f <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return f


class VideoWriter:
    """H.264 yuv420p mp4 writer; `with VideoWriter(path, fps) as w: w.write(frame)`.

    Writes to a temporary file in the destination folder and renames it on a clean exit; on an exception
    (KeyboardInterrupt included: the CLI turns SIGTERM into one) the temporary file is deleted, so a
    half-written output never appears under `path`; partial files that killed runs left in the folder are
    removed when writing starts (see `remove_stale_partials`). Odd frame sizes are
    padded by one pixel (edge replicated). `audio_from`: a media file whose first audio stream is copied
    (or re-encoded to AAC where mp4 cannot carry it), trimmed to the video's duration. `metadata`: container
    tags (e.g. {"comment": "synthetic"}). Every frame written carries the invisible mark of
    talkinghead.media.watermark (`talkinghead verify` finds it); there is no way to write one without it.
    """

    def __init__(self, path, fps, audio_from=None, crf: int = 18, metadata: dict | None = None,
                 preset: str = "medium"):
        self.path = Path(path)
        self.fps = _fps_fraction(fps)
        self.audio_from = None if audio_from is None else Path(audio_from)
        self.crf = int(crf)
        self.metadata = dict(metadata or {})
        self.preset = preset
        self.num_frames = 0
        self._container = None
        self._stream = None
        self._size = None  # (W, H) after padding
        self._tmp = None
        self._closed = False

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if not self._closed and self._tmp is not None:
            self.abort()

    def _fail(self, e: BaseException) -> VideoError:
        """Drops the partial file and returns the one-line error for a failed open, write or close."""
        self.abort()
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _short(e)
        return VideoError(f"cannot write video {self.path}: {reason}")

    def _open(self, w: int, h: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.path.parent)
            self._tmp = partial_path(self.path)
            os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))  # reserve the name now
        except OSError as e:
            self._tmp = None  # the name was not reserved: nothing of ours to remove
            raise self._fail(e) from None
        try:
            self._container = av.open(str(self._tmp), "w", format="mp4")
            s = self._container.add_stream("libx264", rate=self.fps)
            s.width, s.height = w, h
            s.pix_fmt = "yuv420p"
            s.options = {"crf": str(self.crf), "preset": self.preset}
            s.codec_context.time_base = 1 / self.fps
            self._stream = s
        except _AV_ERRORS as e:
            raise self._fail(e) from None
        self._size = (w, h)

    def write(self, frame: np.ndarray) -> None:
        """Appends one (H, W, 3) uint8 RGB frame; all frames must have the size of the first."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) frame, got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames, got {frame.dtype}")
        h, w = frame.shape[:2]
        if h % 2 or w % 2:  # yuv420p needs even sizes
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            h, w = frame.shape[:2]
        if self._container is None:
            self._open(w, h)
        elif (w, h) != self._size:
            raise ValueError(f"frame size {w}x{h} differs from the first frame's {self._size[0]}x{self._size[1]}")
        vf = av.VideoFrame.from_ndarray(watermark.embed(frame), format="rgb24")
        vf.pts = self.num_frames
        vf.time_base = 1 / self.fps
        try:
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        except _AV_ERRORS as e:
            raise self._fail(e) from None
        self.num_frames += 1

    def close(self) -> None:
        """Flushes the encoder, adds the audio, and moves the file into place."""
        if self._closed:
            return
        if self._container is None:
            self._closed = True
            raise VideoError(f"no frames were written to {self.path}")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            final_tmp = self._tmp
            if self.audio_from is not None or self.metadata:
                final_tmp = self._remux_with_audio()
            os.replace(final_tmp, self.path)
            if final_tmp != self._tmp:
                self._tmp.unlink(missing_ok=True)
            self._tmp = None
        except _AV_ERRORS as e:
            raise self._fail(e) from None
        except BaseException:
            self.abort()
            raise
        finally:
            self._closed = True

    def abort(self) -> None:
        """Drops everything written so far (the destination path is left untouched)."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - best effort on an already failing path
                pass
            self._container = None
        if self._tmp is not None:
            for p in (self._tmp, Path(str(self._tmp) + ".mux.mp4")):
                try:
                    p.unlink(missing_ok=True)
                except OSError:  # best effort: the folder may have become unwritable
                    pass
            self._tmp = None

    def _remux_with_audio(self) -> Path:
        """video-only temp file + audio of `audio_from` (trimmed) + metadata -> a second temp file."""
        out_path = Path(str(self._tmp) + ".mux.mp4")
        duration = self.num_frames / float(self.fps)
        vin = av.open(str(self._tmp), "r")
        ain = None
        try:
            if self.audio_from is not None:
                ain = open_container(self.audio_from)
                if not ain.streams.audio:
                    ain.close()
                    ain = None
            with av.open(str(out_path), "w", format="mp4") as out:
                for k, v in self.metadata.items():
                    out.metadata[str(k)] = str(v)
                vs_in = vin.streams.video[0]
                vs_out = out.add_stream_from_template(vs_in)
                sources = [_tagged_packets(vin.demux(vs_in), vs_in, vs_out, None)]
                if ain is not None:
                    as_in = ain.streams.audio[0]
                    if as_in.codec_context.name in _MP4_AUDIO:
                        as_out = out.add_stream_from_template(as_in)
                        sources.append(_tagged_packets(ain.demux(as_in), as_in, as_out, duration))
                    else:
                        as_out = out.add_stream("aac", rate=as_in.codec_context.sample_rate or 48000)
                        sources.append(_reencoded_audio(ain, as_in, as_out, duration))
                for _, _, packet in heapq.merge(*sources, key=lambda t: (t[0], t[1])):
                    out.mux(packet)
        finally:
            vin.close()
            if ain is not None:
                ain.close()
        return out_path


def _tagged_packets(packets, s_in, s_out, max_seconds):
    """(time in s, stream order, packet) for muxing in time order; drops packets at/after max_seconds."""
    order = 0 if s_in.type == "video" else 1
    start = s_in.start_time or 0
    for p in packets:
        if p.dts is None:  # flush packet
            continue
        t = float((p.dts - start) * s_in.time_base)
        if max_seconds is not None and p.pts is not None and float((p.pts - start) * s_in.time_base) >= max_seconds:
            break
        if max_seconds is not None:
            p.pts -= start
            p.dts -= start
        p.stream = s_out
        yield t, order, p


def _reencoded_audio(container, s_in, s_out, max_seconds):
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=s_out.codec_context.sample_rate)
    for frame in container.decode(s_in):
        if frame.time is not None and frame.time >= max_seconds:
            break
        for rf in resampler.resample(frame):
            rf.pts = None
            for p in s_out.encode(rf):
                yield float(p.pts * p.time_base) if p.pts is not None else 0.0, 1, p
    for p in s_out.encode(None):
        yield float(p.pts * p.time_base) if p.pts is not None else 0.0, 1, p

"""Writing videos with PyAV: an atomic, marked H.264 mp4 writer that can carry the driver's audio over (DESIGN.md
§2 "video in, video out with the driver's audio kept"; every frame carries talkinghead.media.watermark's mark).
"""

from __future__ import annotations

import heapq
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from talkinghead.errors import VideoError
from talkinghead.media import watermark
from talkinghead.media.files import partial_path, remove_stale_partials
from talkinghead.media.video import AV_ERRORS, error_text, open_container

# audio codecs that can be stream-copied into mp4
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus"}


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
        reason = e.strerror if isinstance(e, OSError) and e.strerror else error_text(e)
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
        except AV_ERRORS as e:
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
        except AV_ERRORS as e:
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
        except AV_ERRORS as e:
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

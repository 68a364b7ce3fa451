"""Video in, video out (DESIGN.md §2 whole-image workflow, §4 layered inference): driving video → landmarks
(detect + track + smooth) → retarget onto the source face (relative motion by default) → landmark images →
G → face crop → pasted back into the full source image (or the crop only) → H.264 mp4 with the driver's
audio. Used by `talkinghead animate`, the demo and the web app; the Animator does the tensor work.

Two streaming passes over the driver keep memory bounded for long videos: pass 1 keeps only the landmarks
(T × 68 × 2 floats), which also lets us pick the most neutral driver frame as the motion reference; pass 2
renders in batches and writes frames as they come. Output files appear only when complete.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from talkinghead.media import image_files, video, video_writer
from talkinghead.media.files import refuse_overwriting_inputs
from talkinghead.inference.animator import Animator
from talkinghead.persons.avatar import Avatar
from talkinghead.media.images import to_uint8
from talkinghead.console import log, progress as progress_bar
from talkinghead.errors import NoFaceError, TalkingHeadError

SYNTHETIC_TAG = {"comment": "synthetic video: made with talkinghead (few-shot neural talking head)"}


@dataclass
class DriverTrack:
    """Landmarks of the driving video's (selected) frames, None where no face was found."""

    path: str
    indices: list[int] | None  # driver frame indices used (None = every frame)
    points: list[np.ndarray | None]
    fps: float  # output frame rate
    width: int
    height: int
    seconds: float = 0.0
    mouth_floor: bool = True  # retarget's open_mouth_floor (a speech track's mouth moves by its deltas alone)

    @property
    def missing(self) -> int:
        return sum(p is None for p in self.points)


@dataclass
class AnimateResult:
    out: str | None
    frames: int
    fps: float
    size: tuple[int, int]  # (W, H) of the written frames
    missing_face_frames: int
    seconds_landmarks: float
    seconds_render: float
    seconds_total: float
    frames_dir: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds_total, 1e-9)


def _frame_indices(info: video.VideoInfo, fps: float | None) -> tuple[list[int] | None, float]:
    """Driver frames to use for an output rate `fps` (None: every frame at the driver's rate)."""
    if not fps or abs(fps - info.fps) < 1e-3:
        return None, info.fps
    if fps <= 0:
        raise TalkingHeadError(f"--fps must be positive, got {fps}")
    if fps > info.fps:
        raise TalkingHeadError(f"--fps {fps:g} is above the driver's {info.fps:g} frames/s: the output can "
                               "only drop driver frames, not invent new ones")
    n_out = max(1, int(info.num_frames * fps / info.fps))
    idx = [min(int(round(k * info.fps / fps)), max(info.num_frames - 1, 0)) for k in range(n_out)]
    return idx, float(fps)


def _driver_frames(path, indices) -> Iterator[np.ndarray]:
    """Frames of the driver at `indices` (repeats allowed), or all frames."""
    if indices is None:
        yield from video.iter_frames(path)
        return
    want = sorted(set(indices))
    it = video.iter_indexed_frames(path, indices=want)
    cur_i, cur = -1, None
    for i in indices:
        while cur_i < i:
            try:
                cur_i, cur = next(it)
            except StopIteration:
                return
        yield cur


def track_driver(path, fps: float | None = None, face_index: int | None = None, progress: bool = True,
                 detector=None) -> DriverTrack:
    """Pass 1: landmarks of every (selected) driving frame (VideoLandmarkTracker: detect, track, re-detect,
    hold through brief occlusions), then smoothed forwards and backwards in time: the whole driver is known,
    so the smoothing adds no lag. The frames are decoded ahead in a thread of their own (`video.read_ahead`)."""
    from talkinghead.landmarks.cascade import video_cascade
    from talkinghead.landmarks.track import VideoLandmarkTracker

    t0 = time.time()
    info = video.probe_video(path)
    indices, out_fps = _frame_indices(info, fps)
    total = info.num_frames if indices is None else len(indices)
    # the face-finding cascade of every video path (preprocess, evaluate): HOG, up-sampled for small frames
    tracker = VideoLandmarkTracker(detector or video_cascade(), fps=out_fps, face_index=face_index)
    faces = []
    with progress_bar(total, "landmarks", "frame", progress) as bar:
        for face in tracker.track_iter(video.read_ahead(_driver_frames(path, indices)), smooth=False):
            faces.append(face)
            bar.update(1)
    if not faces:
        raise video.VideoError(f"no frames could be read from {path}")
    points = [None if f is None else np.asarray(f.points, np.float32) for f in tracker.smooth_offline(faces)]
    return DriverTrack(str(path), indices, points, out_fps, info.width, info.height, time.time() - t0)


def fill_missing(points: list[np.ndarray | None]) -> np.ndarray:
    """Holds the last pose on frames without a face (leading gaps take the first found pose) -> (T, 68, 2)."""
    first = next((p for p in points if p is not None), None)
    if first is None:
        raise NoFaceError("no face found in any frame of the driving video")
    out, last = [], first
    for p in points:
        last = p if p is not None else last
        out.append(last)
    return np.stack(out).astype(np.float32)


def driving_targets(avatar: Avatar, track: DriverTrack, absolute: bool = False,
                    reference: str = "neutral") -> np.ndarray:
    """Landmarks in the avatar's crop pixels for every output frame: (T, 68, 2) (DESIGN.md §2)."""
    from talkinghead.landmarks.retarget import neutral_index, retarget

    seq = fill_missing(track.points)
    found = [i for i, p in enumerate(track.points) if p is not None]
    if reference == "first":
        ref = seq[found[0]]
    elif reference == "neutral":
        ref = seq[found[neutral_index(seq[found])]]
    else:
        raise ValueError(f"reference must be 'first' or 'neutral', got {reference!r}")
    return retarget(avatar.source_points, seq, ref, absolute=absolute, mouth_floor=track.mouth_floor)


def _resize_h(image: np.ndarray, h: int) -> np.ndarray:
    from PIL import Image

    if image.shape[0] == h:
        return image
    w = max(2, int(round(image.shape[1] * h / image.shape[0])))
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def side_by_side(driver: np.ndarray, output: np.ndarray) -> np.ndarray:
    """driver | output at a common height (the output's, between 256 and 720 px)."""
    h = int(min(max(output.shape[0], 256), 720))
    return np.concatenate([_resize_h(driver, h), _resize_h(output, h)], axis=1)


MAX_RENDER_WORKERS = 4  # beyond a few, paste-back and encoding (one writer) limit the rate


def render_workers(animator: Animator) -> int:
    """How many batches `render_stream` renders at once by default: on the CPU one per torch thread (at most
    `MAX_RENDER_WORKERS`), each batch in a thread of its own with one intra-op thread — a batch of 256² convolutions
    splits badly over threads (two threads on one batch: slower than one, benchmarks/bench_end_to_end.py) —
    where torch's thread count is per thread (its OpenMP backend); elsewhere one."""
    import torch

    if animator.device.type != "cpu" or "OpenMP" not in torch.__config__.parallel_info():
        return 1
    return max(1, min(torch.get_num_threads(), MAX_RENDER_WORKERS))


def render_stream(animator: Animator, targets: np.ndarray, batch_size: int = 8,
                  full_size: bool = True, workers: int | None = None) -> Iterator[np.ndarray]:
    """(T, 68, 2) crop landmarks -> rendered crops (R, R, 3) uint8 in order, in batches of `batch_size`; R is
    the animator's output size (the face's size in the source image for the warp-guided G) or S
    (full_size=False). workers: batches rendered at once, each in its own thread with one intra-op thread
    (default `render_workers`); at most workers + 1 batches are held, and leaving early cancels the rest."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import torch

    step = max(1, batch_size)
    batches = [targets[s:s + step] for s in range(0, len(targets), step)]
    workers = max(1, min(render_workers(animator) if workers is None else int(workers), len(batches)))

    def render(points: np.ndarray) -> np.ndarray:
        return to_uint8(animator.render_points(points, full_size=full_size))  # (B, R, R, 3)

    if workers == 1:
        for points in batches:
            yield from render(points)
        return
    # each worker thread's own torch thread count (OpenMP's is per thread): the caller's is left as it is
    pool = ThreadPoolExecutor(workers, thread_name_prefix="talkinghead-render", initializer=torch.set_num_threads,
                              initargs=(1,))
    try:
        pending: deque = deque()
        for points in batches:
            pending.append(pool.submit(render, points))
            if len(pending) > workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class InOrder:
    """`fn(item)` for every `put(item)`, in order, in one background thread, at most `depth` items waiting (the
    render of the next batch overlaps the writing of this one). The first error `fn` raises is raised again by
    the next `put` or by leaving the `with` block, which waits for every item; leaving on an error (Ctrl-C
    included) drops what is still waiting and waits only for the item being written."""

    _END = object()

    def __init__(self, fn: Callable, depth: int = 16):
        import queue
        import threading

        self.fn, self.error = fn, None
        self.queue: "queue.Queue" = queue.Queue(depth)
        self._dropping = False
        self.thread = threading.Thread(target=self._run, name="talkinghead-writer", daemon=True)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if self.error is None and not self._dropping:
                try:
                    self.fn(item)
                except BaseException as e:  # noqa: BLE001 (handed to the caller's thread)
                    self.error = e

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def __enter__(self) -> "InOrder":
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._dropping = True
        self.queue.put(self._END)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error


def _sketches(track: DriverTrack) -> Iterator[np.ndarray]:
    """The track's landmarks drawn on black at its size: the driver column of a side-by-side without a video."""
    from talkinghead.landmarks.rasterize import rasterize

    for p in fill_missing(track.points):
        yield rasterize(p, (track.height, track.width))


class _Outputs:
    """The files one render writes — the mp4, a side-by-side mp4 (driver | frame), PNG frames — all or
    nothing: on any error (or Ctrl-C/SIGTERM) every one of them is removed, finished or not."""

    def __init__(self, out, sbs_out, frames_dir, fps: float, audio_from, encoder_preset: str):
        self.frames_path = Path(frames_dir) if frames_dir is not None else None
        self.made_dir = False
        self.pngs: list[Path] = []
        self.writers: list[video_writer.VideoWriter | None] = [None, None]
        self._args = (out, sbs_out, fps, audio_from, encoder_preset)

    def __enter__(self) -> "_Outputs":
        out, sbs_out, fps, audio_from, preset = self._args
        try:
            if self.frames_path is not None and not self.frames_path.is_dir():
                self.frames_path.mkdir(parents=True)
                self.made_dir = True
            self.writers = [None if p is None else video_writer.VideoWriter(p, fps, audio_from=audio_from,
                                                                      metadata=SYNTHETIC_TAG, preset=preset)
                            for p in (out, sbs_out)]
        except BaseException:
            self._remove_all([])
            raise
        return self

    def write(self, n: int, frame: np.ndarray, driver_frame: np.ndarray | None) -> None:
        writer, writer_sbs = self.writers
        if writer_sbs is not None:
            writer_sbs.write(side_by_side(driver_frame, frame))
        if writer is not None:
            writer.write(frame)
        if self.frames_path is not None:
            p = self.frames_path / f"{n:06d}.png"
            image_files.write_image(p, frame)
            self.pngs.append(p)

    def __exit__(self, exc_type, exc, tb) -> None:
        closed: list[Path] = []
        if exc_type is None:
            try:
                for w in self.writers:
                    if w is not None:
                        w.close()
                        closed.append(w.path)
                return
            except BaseException:
                self._remove_all(closed)
                raise
        self._remove_all(closed)

    def _remove_all(self, closed: list[Path]) -> None:
        for w in self.writers:
            if w is not None:
                w.abort()
        for p in closed + self.pngs:  # an output finished before another failed goes too
            p.unlink(missing_ok=True)
        if self.made_dir:
            try:
                self.frames_path.rmdir()
            except OSError:
                pass


def animate_video(avatar: Avatar, driving, out=None, *, model=None, animator: Animator | None = None,
                  device="cpu", absolute: bool = False, crop_only: bool = False, sbs: bool = False,
                  frames_dir=None, face_index: int | None = None, batch_size: int = 8, fps: float | None = None,
                  reference: str = "neutral", progress: bool = True, keep_audio: bool = True,
                  warn: Callable[[str], None] | None = None, track: DriverTrack | None = None,
                  sbs_out=None, encoder_preset: str = "veryfast", regions: bool = True,
                  audio_from=None) -> AnimateResult:
    """Animates `avatar` with the driving video into `out` (mp4) and/or PNGs in `frames_dir`; `sbs_out`:
    also a driver | output video from the same render (`sbs` makes `out` itself side by side).
    regions: fill the mouth the driver opens with the model's region generators (Animator's `regions`).
    encoder_preset: x264 speed preset ("veryfast": ~2.5× faster than "medium" at the same crf, larger files).
    driving: the driving video, or None with a `track` made elsewhere (speech/drive.py: the side-by-side shows
    its landmarks); audio_from: the output's audio from this file instead of the driver (a speech track's).
    face_index: the driver's k-th largest face (default: its largest, central one, then the one tracked); the
    source's face was chosen when the avatar was made.

    Frames without a driving face hold the last pose (one warning with the counts). Errors leave no partial
    output: the mp4 is written atomically and PNGs written so far are removed. An output that is the driving
    video is refused before any work (TalkingHeadError).
    """
    if out is None and frames_dir is None and sbs_out is None:
        raise TalkingHeadError("nothing to write: give an output video and/or a frames folder")
    if driving is None and track is None:
        raise TalkingHeadError("nothing drives the face: give a driving video or a track")
    inputs = [x for x in (driving, audio_from) if isinstance(x, (str, os.PathLike))]
    refuse_overwriting_inputs([out, sbs_out], inputs)
    warn = warn or (lambda msg: log.warning("warning: %s", msg))
    t0 = time.time()
    animator = animator or Animator(avatar, model=model, device=device, regions=regions)
    track = track or track_driver(driving, fps=fps, face_index=face_index, progress=progress)
    if track.missing == len(track.points):
        raise NoFaceError(f"no face found in any of the {len(track.points)} frames of {driving}")
    if track.missing:
        first = next(i for i, p in enumerate(track.points) if p is None)
        warn(f"no face in {track.missing} of {len(track.points)} driving frames (first at frame {first}); "
             "holding the nearest pose there")
    targets = driving_targets(avatar, track, absolute=absolute)  # (T, 68, 2)
    t1 = time.time()

    drivers = None
    if sbs or sbs_out is not None:
        drivers = _driver_frames(driving, track.indices) if driving is not None else _sketches(track)
    audio = audio_from if audio_from is not None else (driving if keep_audio else None)
    size, n = (0, 0), 0
    with _Outputs(out, sbs_out, frames_dir, track.fps, audio, encoder_preset) as outputs, \
            progress_bar(len(targets), "render", "frame", progress) as bar:

        def emit(crop: np.ndarray) -> None:  # in the writer thread, frame after frame in order
            nonlocal size, n
            frame = crop if crop_only else avatar.crop.paste_back(avatar.source_image, crop)
            drv = None
            if drivers is not None:
                drv = next(drivers, None)
                if drv is None:
                    raise video.VideoError(f"cannot decode video {driving}: fewer frames on the second pass")
                if sbs:
                    frame = side_by_side(drv, frame)
            outputs.write(n, frame, drv)
            size = (frame.shape[1], frame.shape[0])
            n += 1
            bar.update(1)

        with InOrder(emit) as writer:  # paste-back, decoding and encoding overlap the next batch's render
            for crop in render_stream(animator, targets, batch_size):
                writer.put(crop)
    frames_path = outputs.frames_path
    t2 = time.time()
    return AnimateResult(out=None if out is None else str(out), frames=n, fps=track.fps, size=size,
                         missing_face_frames=track.missing, seconds_landmarks=track.seconds,
                         seconds_render=t2 - t1, seconds_total=t2 - t0,
                         frames_dir=None if frames_path is None else str(frames_path))

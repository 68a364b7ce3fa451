"""Live puppeteering (DESIGN.md §2, real time): camera frames → tracked landmarks → the driver's relative motion
on the avatar's face → G → pasted back into the avatar's photo, one frame at a time, dropping frames rather than
letting latency grow.

`LivePuppet` is the per-frame library API (`process(frame) -> frame`, with stage timings); `talkinghead live`
and the web app's live tab are thin shells around it. `run_live` is the real-time loop: a capture thread keeps
only the camera's newest frame (talkinghead.camera.FrameGrabber), this thread renders, an output thread marks
and writes / shows / sends the frames (talkinghead.live_outputs), and fps and latency are reported every few
seconds. The motion reference is the first frame with a face (there is no look-ahead in a live stream;
`recalibrate()` takes the next one instead).

Speed: the photo is scaled to at most `max_size` pixels (the face box with it, aligned to whole pixels) so that
the composition at the face's size, the paste-back and the encoder work on what is shown; the paste-back
blends into a copy of the fixed background in torch (no resampling, the mask made once).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.animate import Animator
from talkinghead.avatar import Avatar
from talkinghead.camera import Camera, FrameGrabber
from talkinghead.console import log
from talkinghead.errors import TalkingHeadError, Terminated
from talkinghead.images import from_uint8, to_uint8

# the stages of one frame, in order: capture runs in the camera thread, watermark and write in the output thread
STAGES = ("capture", "tracking", "retarget", "generator", "paste-back", "watermark", "write")


class StageTimes:
    """Seconds spent in named stages, wall clock and the CPU time of the thread that ran them (a stage's own
    work, whatever else shares the machine; torch's extra intra-op threads are not in it), filled from one
    thread."""

    def __init__(self):
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.cpu_seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.counts: dict[str, int] = dict.fromkeys(STAGES, 0)

    def add(self, stage: str, seconds: float, cpu_seconds: float = 0.0) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + cpu_seconds
        self.counts[stage] = self.counts.get(stage, 0) + 1


def _clocks() -> tuple[float, float]:
    """(wall, this thread's CPU) in seconds."""
    return time.perf_counter(), time.thread_time()


def default_tracker(fps: float = 25.0):
    """dlib's 68 points, detected now and then and tracked in between (landmarks.track.VideoLandmarkTracker,
    causal smoothing in `update`); detection on frames scaled to at most 640 px (a webcam's face is large)."""
    from talkinghead.landmarks.detect import DlibDetector
    from talkinghead.landmarks.track import VideoLandmarkTracker

    return VideoLandmarkTracker(DlibDetector(upsample=0, max_side=640), fps=fps)


def load_source(source, model=None, device="cpu", face_index: int | None = None):
    """(avatar, model or None) from an .avatar file or a photo: a photo becomes a feed-forward avatar (paper
    §3.3 FF) made with `model` (default the bundled one); an FF avatar file whose recorded model file is gone
    uses the bundled model when that is the one it was made with (checked by the Animator)."""
    from talkinghead import bundled, video
    from talkinghead.avatar import AVATAR_SUFFIX, make_ff_avatar
    from talkinghead.checkpoint import LoadedModel, resolve_model

    source = Path(source)
    if not source.exists():
        raise TalkingHeadError(f"avatar or photo not found: {source}")
    if source.suffix == AVATAR_SUFFIX:
        avatar = Avatar.load(source)
        if model is not None:
            model = LoadedModel.load(resolve_model(model), device, with_discriminator=False)
        elif avatar.mode == "ff" and not Path(avatar.model.get("path", "")).is_file() and bundled.MODEL.is_file():
            model = LoadedModel.load(bundled.MODEL, device, with_discriminator=False)
        return avatar, model
    if not video.is_image_path(source):
        raise TalkingHeadError(f"--avatar takes an .avatar file or a photo ({', '.join(video.IMAGE_EXTENSIONS)}), "
                               f"got {source.name}")
    model = LoadedModel.load(resolve_model(model), device, with_discriminator=False)
    return make_ff_avatar([str(source)], model, shots=1, face_index=face_index, device=device), model


def _scaled_avatar(avatar: Avatar, max_size: int) -> Avatar:
    """The avatar with its photo scaled to at most `max_size` px (0: as it is), cut to even sides (H.264), and
    its face box moved to whole pixels with an integer side R: the render at R is then pasted without
    resampling (the box moves by at most half a pixel; the landmarks stay in the S crop's own coordinates)."""
    from PIL import Image

    from talkinghead.landmarks.align import CropTransform

    image = avatar.source_image
    h, w = image.shape[:2]
    s = min(1.0, max_size / max(h, w)) if max_size else 1.0
    if s < 1.0:
        image = np.asarray(Image.fromarray(image).resize((max(2, round(w * s)), max(2, round(h * s))),
                                                         Image.BICUBIC))
    sy, sx = image.shape[0] / h, image.shape[1] / w
    image = image[:image.shape[0] // 2 * 2, :image.shape[1] // 2 * 2]
    c = avatar.crop
    side = c.side * (sx + sy) / 2
    r = max(2, round(side))
    # box edges in PIL coordinates (pixel i covers [i, i+1)): x0 = cx - side/2 + 0.5, rounded to a whole pixel
    x0 = round((c.cx + 0.5) * sx - 0.5 - side / 2 + 0.5)
    y0 = round((c.cy + 0.5) * sy - 0.5 - side / 2 + 0.5)
    crop = CropTransform(x0 + r / 2 - 0.5, y0 + r / 2 - 0.5, float(r), c.size)
    return dataclasses.replace(avatar, source_image=np.ascontiguousarray(image), crop=crop)


def _feather(r: int, feather: float) -> torch.Tensor:
    """(1, 1, R, R) blend mask: 1 inside, a linear ramp over `feather` × R at the border (as paste_back)."""
    u = (torch.arange(r, dtype=torch.float32) + 0.5) / r
    d = torch.minimum(u, 1 - u)
    ramp = (d / feather).clamp(0, 1) if feather > 0 else torch.ones(r)
    return (ramp[:, None] * ramp[None, :])[None, None]


@dataclass
class Pose:
    """One camera frame's face, ready for the generator: landmarks in the avatar's crop and G's inputs."""

    points: np.ndarray  # (1, 68, 2)
    inputs: tuple  # Animator.prepare: landmark image (1, 3, S, S), flow grid (1, S, S, 2) or None


class LivePuppet:
    """One avatar driven frame by frame: ``process(frame (H, W, 3) uint8) -> (H', W', 3) uint8``.

    The camera's face is tracked (`tracker`: anything with ``update(frame) -> Face | None`` and ``reset()``;
    default `default_tracker`), its motion relative to the first tracked frame is retargeted onto the avatar's
    face (landmarks.retarget; `absolute`: the driver's landmarks as they are), rendered by the Animator at the
    face's size in the photo scaled to at most `max_size` px, and pasted back (`crop_only`: the face box
    alone). A frame without a face shows the last rendered frame. ``times`` holds each stage's seconds,
    ``frames`` and ``no_face`` count the frames processed and those without a face. ``process`` is
    ``render(pose(frame))``: the halves can run in two threads (run_live's pipeline). mixed_precision: G's
    convolutions in bfloat16 where the CPU has it natively (Animator's mixed_precision: 0.05 grey levels from
    float32 on average).
    """

    def __init__(self, avatar: Avatar, model=None, *, device="cpu", max_size: int = 720, crop_only: bool = False,
                 absolute: bool = False, fps: float = 25.0, tracker=None, feather: float = 0.08,
                 dtype: torch.dtype = torch.float32, mixed_precision: bool = True):
        from talkinghead.landmarks.retarget import retarget

        self._retarget = retarget
        self.avatar = _scaled_avatar(avatar, max_size)
        self.crop_only = crop_only
        self.absolute = absolute
        c = self.avatar.crop
        self.box_size = r = int(c.side)  # R
        # one frame at a time: G traced and frozen, convolutions in bfloat16 where the CPU has it natively
        self.animator = Animator(self.avatar, model=model, device=device, dtype=dtype, max_output_size=r,
                                 freeze=True, mixed_precision=mixed_precision)
        self.tracker = tracker if tracker is not None else default_tracker(fps)
        self.background = self.avatar.source_image  # (H', W', 3) uint8, the scaled photo
        bh, bw = self.background.shape[:2]
        x0, y0 = round(c.cx - c.side / 2 + 0.5), round(c.cy - c.side / 2 + 0.5)  # whole pixels by construction
        # the part of the R×R box inside the photo: frame rows/columns and the box's own
        self._dst = (slice(max(y0, 0), min(y0 + r, bh)), slice(max(x0, 0), min(x0 + r, bw)))
        self._src = (slice(max(y0, 0) - y0, min(y0 + r, bh) - y0), slice(max(x0, 0) - x0, min(x0 + r, bw) - x0))
        self._box_background = from_uint8(c.resized(r).crop(self.background))[None]  # (1, 3, R, R)
        self._mask = _feather(r, feather)  # (1, 1, R, R)
        self.times = StageTimes()
        self.frames = self.no_face = 0
        self._reference: np.ndarray | None = None
        for _ in range(2):  # warm-up (the first passes allocate and pick kernels); shows the avatar's own pose
            self.last = self._compose(self.animator.render_points(self.avatar.source_points[None], full_size=True))

    @classmethod
    def from_source(cls, source, model=None, *, device="cpu", face_index: int | None = None,
                    **kwargs) -> "LivePuppet":
        """From an .avatar file or a photo (an FF avatar made at once with `model`, default the bundled one)."""
        avatar, model = load_source(source, model, device, face_index)
        return cls(avatar, model, device=device, **kwargs)

    @property
    def output_size(self) -> tuple[int, int]:
        """(W, H) of the frames `process` returns."""
        return (self.box_size, self.box_size) if self.crop_only else \
            (self.background.shape[1], self.background.shape[0])

    def stage_ms(self) -> dict[str, float]:
        """Mean wall ms per processed frame of each of its stages (tracking, retarget, generator, paste-back)."""
        n = max(self.frames, 1)
        return {k: 1e3 * self.times.seconds[k] / n for k in ("tracking", "retarget", "generator", "paste-back")}

    def recalibrate(self) -> None:
        """The next frame with a face becomes the motion reference (e.g. after the driver moved the camera)."""
        self._reference = None

    def reset(self) -> None:
        """Forget the tracked face and the reference (a new camera or driver)."""
        self.tracker.reset()
        self._reference = None

    def process(self, frame: np.ndarray) -> np.ndarray:
        """One camera frame (H, W, 3) uint8 RGB -> the avatar's frame (output_size) uint8 RGB."""
        return self.render(self.pose(frame))

    def pose(self, frame: np.ndarray) -> Pose | None:
        """The first half of `process` (tracking, retarget, G's inputs): None where the frame has no face."""
        c0 = _clocks()
        face = self.tracker.update(frame)
        c1 = _clocks()
        self.times.add("tracking", c1[0] - c0[0], c1[1] - c0[1])
        self.frames += 1
        if face is None:
            self.no_face += 1
            return None
        if self._reference is None:
            self._reference = np.array(face.points, np.float32)
        targets = self._retarget(self.avatar.source_points, np.asarray(face.points)[None], self._reference,
                                 absolute=self.absolute)  # (1, 68, 2) in the avatar's crop
        pose = Pose(targets, self.animator.prepare(targets))
        c2 = _clocks()
        self.times.add("retarget", c2[0] - c1[0], c2[1] - c1[1])
        return pose

    def render(self, pose: Pose | None) -> np.ndarray:
        """The second half of `process` (G, composition at the face's size, paste-back); None: the last frame."""
        if pose is None:
            return self.last
        c0 = _clocks()
        out = self.animator.generate(*pose.inputs)  # WarpOutput at S (the paper's G: frames at S)
        c1 = _clocks()
        if self.animator.warp:
            out = self.animator.compose_full(out) if self.animator.output_size != self.animator.image_size \
                else out.image  # (1, 3, R, R)
        self.last = self._compose(out)
        c2 = _clocks()
        self.times.add("generator", c1[0] - c0[0], c1[1] - c0[1])
        self.times.add("paste-back", c2[0] - c1[0], c2[1] - c1[1])
        return self.last

    def _compose(self, rendered: torch.Tensor) -> np.ndarray:
        """(1, 3, R', R') in [-1, 1] -> the output frame: blended into the box's background, pasted."""
        r = self.box_size
        x = rendered.float()
        if x.shape[-1] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=x.shape[-1] > r)
        bg = self._box_background
        face = to_uint8(bg + self._mask * (x - bg))[0]  # (R, R, 3)
        if self.crop_only:
            return np.ascontiguousarray(face)
        out = self.background.copy()
        out[self._dst] = face[self._src]
        return out


# ---- the real-time loop ----------------------------------------------------------------------------------
@dataclass
class LiveSummary:
    """What one run did: frames, rates, latency (camera frame → rendered frame) and each stage's time."""

    frames: int  # rendered
    captured: int  # delivered by the camera
    dropped: int  # delivered but never rendered
    no_face: int
    seconds: float  # wall
    cpu_seconds: float  # process CPU (all threads)
    camera_fps: float
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU of the thread that ran the stage
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1e3 * self.cpu_seconds / max(self.frames, 1)

    def latency(self, q: float | None = None) -> float:
        """Mean latency in ms, or its q-th percentile."""
        if not self.latencies_ms:
            return float("nan")
        return float(np.mean(self.latencies_ms) if q is None else np.percentile(self.latencies_ms, q))

    def stage_ms(self, clock: str = "wall") -> dict[str, float]:
        """Mean ms per rendered frame of every stage, wall clock or CPU ("cpu"); capture: per camera frame."""
        n = max(self.frames, 1)
        table = self.stage_cpu_seconds if clock == "cpu" else self.stage_seconds
        return {k: 1e3 * v / (max(self.captured, 1) if k == "capture" else n) for k, v in table.items()}

    def lines(self) -> list[str]:
        wall, cpu = self.stage_ms(), self.stage_ms("cpu")
        total = sum(v for k, v in wall.items() if k != "capture") or 1e-9
        stages = ", ".join(f"{k} {v:.1f}/{cpu[k]:.1f}" + ("" if k == "capture" else f" ({100 * v / total:.0f} %)")
                           for k, v in wall.items())
        return [f"{self.frames} frames in {self.seconds:.1f} s: {self.fps:.1f} frames/s (camera {self.camera_fps:.3g}; "
                f"{self.dropped} of {self.captured} camera frames dropped, {self.no_face} without a face)",
                f"latency camera frame -> rendered frame: mean {self.latency():.0f} ms, p95 {self.latency(95):.0f} ms; "
                f"CPU {self.cpu_ms_per_frame:.0f} ms per frame (all threads)",
                f"ms per frame, wall/CPU (share of wall): {stages}"]


class _OutputThread:
    """Marks and hands the rendered frames to the outputs in a thread of its own (encoding overlaps the next
    frame's render; an interrupt of the main thread never lands inside an encoder). A queue of two frames:
    when the outputs are slower than the render, `put` waits, and the camera's frames are dropped instead.
    Not a daemon: a finishing file is completed even when the interpreter is leaving."""

    def __init__(self, outputs: Sequence, mark: Callable[[np.ndarray], np.ndarray] | None):
        self.outputs = list(outputs)
        self.mark = mark if any(not getattr(o, "marks_itself", False) for o in self.outputs) else None
        self.times = StageTimes()
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._run, name="talkinghead-output")
        self._thread.start()

    @property
    def stop_requested(self) -> bool:
        """An output asked to stop (a window was closed) or failed."""
        return self.error is not None or any(getattr(o, "closed_by_user", False) for o in self.outputs)

    def _run(self) -> None:
        finish = False
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, bool):  # the end: True = finish the outputs, False = abort them
                    finish = item
                    break
                if self.error is not None:
                    continue
                index, image = item
                marked = image
                c0 = _clocks()
                if self.mark is not None:
                    marked = self.mark(image)
                c1 = _clocks()
                for o in self.outputs:
                    o.write(index, image if getattr(o, "marks_itself", False) else marked)
                c2 = _clocks()
                if self.mark is not None:
                    self.times.add("watermark", c1[0] - c0[0], c1[1] - c0[1])
                self.times.add("write", c2[0] - c1[0], c2[1] - c1[1])
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error, finish = e, False
            while not isinstance(self._queue.get(), bool):  # drain until the end marker
                pass
        failures = []
        for o in self.outputs:
            try:
                o.close() if finish else o.abort()
            except BaseException as e:  # noqa: BLE001
                failures.append(e)
        if failures and self.error is None:
            self.error = failures[0]

    def put(self, index: int, image: np.ndarray) -> None:
        while self._thread.is_alive():
            if self.error is not None:
                return
            try:
                self._queue.put((index, image), timeout=0.1)
                return
            except queue.Full:
                continue

    def end(self, finish: bool) -> None:
        """Flushes the queue and closes (finish) or aborts every output; waits for it."""
        self._queue.put(finish)
        self._thread.join()


def _watermark() -> Callable[[np.ndarray], np.ndarray]:
    """talkinghead.watermark.embed: every frame shown or sent is marked as synthetic (no way around it)."""
    from talkinghead import watermark

    return watermark.embed


class _PoseThread:
    """The first half of the render in a thread of its own (run_live's pipeline): finds the pose of the
    camera's newest frame again and again, keeping only the newest pose, while the main thread renders (a
    pose the renderer had no time for is dropped like a camera frame). The renderer starts each frame from
    a pose no older than one pose-finding, not from one that waited for the previous render."""

    def __init__(self, puppet: LivePuppet, grabber: FrameGrabber):
        self.puppet, self.grabber = puppet, grabber
        self.error: BaseException | None = None
        self.ended = False
        self._item: tuple | None = None  # (camera frame, pose)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="talkinghead-pose", daemon=True)

    def start(self) -> "_PoseThread":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                cf = self.grabber.get(timeout=0.2)
                if cf is None:
                    if self.grabber.ended:
                        break
                    continue
                item = (cf, self.puppet.pose(cf.image))
                with self._cond:
                    self._item = item
                    self._cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def get(self, timeout: float) -> tuple | None:
        """The newest (camera frame, pose) not taken yet; None when the stream has ended (`ended`) or after
        `timeout` s; the thread's error, if it failed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self.ended, timeout)
            item, self._item = self._item, None
        if item is None and self.error is not None:
            raise self.error
        return item

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def run_live(puppet: LivePuppet, camera: Camera, outputs: Sequence = (), *, stop: threading.Event | None = None,
             report_every: float = 5.0, report: Callable[[str], None] | None = None,
             max_frames: int | None = None, pipeline: bool = False) -> LiveSummary:
    """Drives `puppet` from `camera` in real time until the camera ends, `stop` is set, an output asks to stop
    (a closed window), `max_frames` frames were rendered, or Ctrl-C. The outputs (talkinghead.live_outputs)
    are finished in every one of these cases (a playable file) and removed on an error. Every `report_every`
    seconds `report` gets a line with the rate and latency of the last interval.

    pipeline: poses (tracking, retarget, G's inputs) are found in a second thread, on the camera's newest frames,
    while this one renders (G, paste-back): for more than two free cores. It spends the CPU time of tracking
    frames that are not rendered when the render cannot keep up: on this project's 2-core machine it gained
    nothing with the cores to itself and halved the frame rate when they were shared (benchmarks/bench_live.py),
    hence off by default."""
    report = report or (lambda line: log.info("%s", line))
    grabber = FrameGrabber(camera)
    poser = _PoseThread(puppet, grabber) if pipeline else None
    writer = _OutputThread(outputs, _watermark())
    latencies: list[float] = []
    t_start, cpu_start = time.perf_counter(), time.process_time()
    window: deque = deque()  # latencies (ms) since the last report
    next_report = t_start + report_every
    interrupted: BaseException | None = None
    finish = False
    try:
        grabber.start()
        if poser is not None:
            poser.start()
        while not (stop is not None and stop.is_set()) and not writer.stop_requested:
            if poser is not None:
                item = poser.get(timeout=0.2)
                if item is None:
                    if poser.ended:
                        break
                    continue
                cf, pose = item
            else:
                cf = grabber.get(timeout=0.2)
                if cf is None:
                    if grabber.ended:
                        break
                    continue
                pose = puppet.pose(cf.image)
            image = puppet.render(pose)
            now = time.perf_counter()
            latencies.append(1e3 * (now - cf.time))
            window.append(latencies[-1])
            writer.put(cf.index, image)
            if max_frames is not None and len(latencies) >= max_frames:
                break
            if report_every and now >= next_report:
                span = now - next_report + report_every
                report(f"{len(window) / span:.1f} frames/s, latency {np.mean(window):.0f} ms "
                       f"(p95 {np.percentile(window, 95):.0f}), dropped {grabber.dropped} of {grabber.captured} "
                       f"camera frames so far")
                window.clear()
                next_report = now + report_every
        finish = True
    except KeyboardInterrupt as e:  # Ctrl-C is how a live session ends: the outputs are finished
        interrupted, finish = e, True
    finally:
        if poser is not None:
            poser.stop()
        grabber.stop()
        writer.end(finish)
    seconds, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    if writer.error is not None:
        raise writer.error
    if grabber.error is not None:
        if not latencies:
            raise grabber.error
        log.warning("warning: the camera stopped: %s", grabber.error)
    if isinstance(interrupted, Terminated):
        raise interrupted
    stage_seconds = {k: puppet.times.seconds.get(k, 0.0) + writer.times.seconds.get(k, 0.0) for k in STAGES}
    stage_cpu = {k: puppet.times.cpu_seconds.get(k, 0.0) + writer.times.cpu_seconds.get(k, 0.0) for k in STAGES}
    stage_seconds["capture"], stage_cpu["capture"] = grabber.decode_s, grabber.cpu_s
    return LiveSummary(frames=len(latencies), captured=grabber.captured,
                       dropped=grabber.captured - len(latencies), no_face=puppet.no_face,
                       seconds=seconds, cpu_seconds=cpu, camera_fps=camera.fps, latencies_ms=latencies,
                       stage_seconds=stage_seconds, stage_cpu_seconds=stage_cpu, interrupted=interrupted is not None)

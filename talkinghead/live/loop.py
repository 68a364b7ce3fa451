"""The real-time loop of live puppeteering: a capture thread keeps only the camera's newest frame
(`talkinghead.live.camera.FrameGrabber`), this thread renders with a `LivePuppet`, an output thread marks and
writes / shows / sends the frames (`talkinghead.live.outputs`), and fps and latency are reported every few
seconds, dropping frames rather than letting latency grow.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from talkinghead.console import log
from talkinghead.errors import Terminated
from talkinghead.live.camera import Camera, FrameGrabber
from talkinghead.live.puppet import STAGES, LivePuppet, StageTimes, clocks


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
                c0 = clocks()
                if self.mark is not None:
                    marked = self.mark(image)
                c1 = clocks()
                for o in self.outputs:
                    o.write(index, image if getattr(o, "marks_itself", False) else marked)
                c2 = clocks()
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
    """talkinghead.media.watermark.embed: every frame shown or sent is marked as synthetic (no way around it)."""
    from talkinghead.media import watermark

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
    (a closed window), `max_frames` frames were rendered, or Ctrl-C. The outputs (talkinghead.live.outputs)
    are finished in every one of these cases (a playable file) and removed on an error. Every `report_every`
    seconds `report` gets a line with the rate and latency of the last interval.

    pipeline: poses (tracking, retarget, G's inputs) are found in a second thread, on the camera's newest frames,
    while this one renders (G, paste-back): for more than two free cores. It spends the CPU time of tracking
    frames that are not rendered when the render cannot keep up, and on two cores it gains nothing
    (benchmarks/bench_live.py), hence off by default."""
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

"""The one way the benchmarks time things: wall and process-CPU clocks side by side, warm-up, repeats,
best/median, ms per item, peak resident memory, and one measurement per process when memory matters.

    from timing import measure, peak_rss_mb
    t = measure(lambda: G(y, psi), repeats=5, warmup=1, items=len(y))
    t.ms()                          # best wall ms per item
    t.ms("cpu", "median", threads)  # median process-CPU ms per item and thread

Wall time is time.perf_counter(); CPU time is time.process_time(), the CPU seconds of every thread of this
process — steadier than wall time on a shared machine, where a busy neighbour inflates wall time but not our
CPU time. On 2 shared cores read ratios measured within one run (same conditions) rather than absolute
numbers across runs.

Importing this module before torch makes idle OpenMP workers sleep (OMP_WAIT_POLICY=PASSIVE unless set):
spinning workers lose a scheduler slice (~13 ms) per parallel op when another process holds the other core.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's small landmark maths: no spinning BLAS pool

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """This machine's CPU model and core count, as the closing notes quote them (e.g. "AMD EPYC, 2 cores")."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


class Stopwatch:
    """Adds the wall and process-CPU seconds of every ``with`` block it times to ``wall`` / ``cpu``."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.count = 0

    def __enter__(self) -> Stopwatch:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c
        self.count += 1


@dataclass
class Timing:
    """Seconds of each timed repeat on both clocks; ``items`` per repeat (frames, images, steps)."""

    wall: list[float]
    cpu: list[float]
    items: int = 1
    out: Any = field(default=None, repr=False)  # the last call's result

    def seconds(self, clock: str = "wall", stat: str = "best") -> float:
        """Seconds of one repeat: the fastest ("best", ≈ unloaded on a shared machine) or the median."""
        ts = self.wall if clock == "wall" else self.cpu
        return min(ts) if stat == "best" else statistics.median(ts)

    def ms(self, clock: str = "wall", stat: str = "best", threads: int = 1) -> float:
        """Milliseconds per item; CPU time divided by `threads` compares with wall time."""
        return 1e3 * self.seconds(clock, stat) / self.items / (threads if clock == "cpu" else 1)

    def per_s(self, clock: str = "wall", stat: str = "best") -> float:
        """Items per second."""
        return self.items / self.seconds(clock, stat)


def measure(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, items: int = 1,
            warmup_fn: Callable[[], Any] | None = None, sync: Callable[[], None] | None = None) -> Timing:
    """Times `repeats` calls of fn() after `warmup` calls of warmup_fn (default fn; e.g. one batch of a
    loop over many). sync: called before each clock reading (torch.cuda.synchronize on a GPU)."""
    out = None
    for _ in range(warmup):
        out = (warmup_fn or fn)()
    walls, cpus = [], []
    for _ in range(max(1, repeats)):
        if sync:
            sync()
        with Stopwatch() as sw:
            out = fn()
            if sync:
                sync()
        walls.append(sw.wall)
        cpus.append(sw.cpu)
    return Timing(walls, cpus, items, out)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def header(threads: int) -> str:
    """The conditions a benchmark ran under, for its first line."""
    import torch

    return (f"torch {torch.__version__}, {threads} intra-op thread(s) of {os.cpu_count()} CPUs, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")


class StageTimer:
    """Wall and process-CPU seconds of named stages of a run, by wrapping functions and methods in place:
    ``wrap`` times each call, ``wrap_iter`` each ``next`` of the iterator a function returns (e.g. a decoder).
    Several wrappers may feed one stage; ``restore()`` undoes every wrap."""

    def __init__(self):
        self.stages: dict[str, Stopwatch] = defaultdict(Stopwatch)
        self._undo: list = []

    def wrap(self, owner, attr: str, stage: str) -> None:
        orig = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        fn = orig.__func__ if isinstance(orig, staticmethod) else orig

        def wrapper(*a, **k):
            with self.stages[stage]:
                return fn(*a, **k)

        setattr(owner, attr, staticmethod(wrapper) if isinstance(orig, staticmethod) else wrapper)
        self._undo.append((owner, attr, orig))

    def wrap_iter(self, owner, attr: str, stage: str) -> None:
        orig = getattr(owner, attr)

        def wrapper(*a, **k):
            it = iter(orig(*a, **k))
            while True:
                try:
                    with self.stages[stage]:
                        item = next(it)
                except StopIteration:
                    return
                yield item

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, orig))

    def restore(self) -> None:
        for owner, attr, orig in reversed(self._undo):
            setattr(owner, attr, orig)
        self._undo.clear()


def in_own_process(script: str | Path, args: list[str]) -> dict:
    """Runs `script args` in a fresh Python (so that its peak_rss_mb() is its own) and returns the JSON of
    the last line it prints (see `report`); a failure raises RuntimeError with the end of its stderr."""
    p = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        raise RuntimeError(f"{Path(script).name} {' '.join(args)}: exit {p.returncode}\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def report(result: dict) -> None:
    """The worker side of `in_own_process`: its result as the last line of stdout."""
    print(json.dumps(result), flush=True)

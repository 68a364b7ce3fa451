"""Worker processes of `preprocess`: spawn-started, dying with the run, and fenced off from each other's deaths.

A worker that dies (killed by the kernel for its memory, a crash in native decoding code) breaks a
`concurrent.futures` pool and every job in flight with it. `run_pooled` then starts a fresh pool and runs the
jobs that were in flight once more, one at a time, so that only the job that kills a worker on its own fails
(`on_dead`), and the run goes on with the rest.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

_PARENT_PID: int | None = None  # set in pool workers: the run's process


def worker_init(parent_pid: int) -> None:
    """Pool initializer: the worker dies with the run. On Linux the kernel kills it when its parent exits
    (PR_SET_PDEATHSIG, even on kill -9); elsewhere `orphaned` checks before a shard is renamed into place."""
    global _PARENT_PID
    _PARENT_PID = parent_pid
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if orphaned():  # the parent died before the death signal was armed
        os._exit(1)


def orphaned() -> bool:
    """In a pool worker: whether the run that started it is gone."""
    return _PARENT_PID is not None and os.getppid() != _PARENT_PID


def start_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` spawn-started processes that die with this one."""
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=worker_init,
                               initargs=(os.getpid(),))


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Kills the pool's workers (a job in flight is not waited for) and shuts it down."""
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            p.kill()
        except (OSError, ValueError, AttributeError):
            pass
    pool.shutdown(wait=False, cancel_futures=True)


def run_pooled(fn: Callable, jobs: Iterable, workers: int, on_dead: Callable) -> Iterator:
    """Yields fn(job) for every job, in the order they finish, with at most `workers` running at once in worker
    processes (`fn` and the jobs must pickle). A job whose worker process dies yields on_dead(job) instead;
    the jobs in flight with it are run again in a fresh pool, one at a time, so that a job that only shared
    the dying pool is not failed with it."""
    todo, suspects = iter(jobs), deque()
    pool, in_flight = start_pool(workers), {}
    try:
        while True:
            limit = 1 if suspects else workers
            while len(in_flight) < limit:
                job = suspects.popleft() if suspects else next(todo, _END)
                if job is _END:
                    break
                in_flight[pool.submit(fn, job)] = job
            if not in_flight:
                pool.shutdown(wait=True)
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = []
            for f in done:
                job = in_flight.pop(f)
                try:
                    result = f.result()
                except BrokenProcessPool:
                    broken.append(job)
                    continue
                yield result
            if broken:  # the pool is gone, and with it every job still in flight
                broken += in_flight.values()
                in_flight.clear()
                stop_pool(pool)
                if len(broken) == 1:
                    yield on_dead(broken[0])
                else:
                    suspects.extend(broken)
                pool = start_pool(workers)
    finally:
        stop_pool(pool)


_END = object()

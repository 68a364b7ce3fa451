"""Interrupts at step boundaries: Ctrl-C or SIGTERM during training ends the running step first, so the
checkpoint written then is of whole steps and a resumed run continues exactly (paper-independent plumbing)."""

from __future__ import annotations

import signal
import threading

from talkinghead.errors import Terminated


class StepBoundary:
    """Defers SIGINT and SIGTERM to the end of the running step, so an interrupted run checkpoints a whole
    step and its resume matches an uninterrupted run. A second signal stops at once (without a checkpoint;
    the previous one stays intact). A no-op outside the main thread, where handlers cannot be set."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.pending: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame):  # noqa: ARG002
        if self.pending is not None:
            self.raise_pending(signum)
        self.pending = signum

    @staticmethod
    def raise_pending(signum: int):
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def __enter__(self) -> "StepBoundary":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

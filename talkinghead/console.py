"""One way to talk to the user: `log` for messages, `progress` for bars (both on stderr).

Library code reports through the `talkinghead` logger (silent unless the application configures logging; the
CLI does, in `setup_logging`) and draws progress bars through `progress`, so every command looks alike and a
caller embedding the library decides what is shown. Results meant for stdout (paths written, a summary a
script may parse) stay plain `print` calls in the command modules. A caller running library work on behalf of
someone who may leave (the web app) wraps it in `stoppable(event)`: every bar then raises `Stopped` at its next
step once the event is set.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading

from talkinghead.errors import Stopped

log = logging.getLogger("talkinghead")
_stop: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("talkinghead_stop", default=None)


def setup_logging(verbose: bool = False) -> None:
    """Messages as `talkinghead: text` on stderr (INFO, or DEBUG when verbose); idempotent."""
    if any(getattr(h, "_talkinghead", False) for h in log.handlers):
        log.setLevel(logging.DEBUG if verbose else logging.INFO)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("talkinghead: %(message)s"))
    handler._talkinghead = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def progress(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
             initial: int = 0, leave: bool = False, **kw):
    """A tqdm bar on stderr (disabled: a no-op object with the same methods); use as a context manager.
    Inside `stoppable(event)`, creating the bar or stepping it raises Stopped once the event is set."""
    from tqdm import tqdm

    stop = _stop.get()
    if stop is not None and stop.is_set():
        raise Stopped("stopped")
    bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not enabled, dynamic_ncols=True,
               file=sys.stderr, leave=leave, **kw)
    if stop is not None:
        step = bar.update

        def update(n=1):
            if stop.is_set():
                raise Stopped("stopped")
            return step(n)

        bar.update = update
    return bar


@contextlib.contextmanager
def stoppable(event: threading.Event):
    """Within it (in this thread), every `progress` bar raises Stopped at its next step once `event` is set."""
    token = _stop.set(event)
    try:
        yield event
    finally:
        _stop.reset(token)

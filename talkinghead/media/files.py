"""Files the tool writes: always complete or absent.

Every output is written under a hidden partial name next to it, `.NAME.PID.RANDOM.part[SUFFIX]` (the pid says
which process owns it), and renamed when complete (`atomic_write`; the video writer does the same). A run
stopped with Ctrl-C or SIGTERM removes its own partial file; one killed with SIGKILL cannot, so the next write
into that folder removes partial files whose process is gone (`remove_stale_partials`).

Files the tool reads are checked by `input_file` before they are opened: a FIFO, a device or a folder is refused
in one line (opening a FIFO would wait for a writer forever).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from pathlib import Path

from safetensors import SafetensorError

from talkinghead.errors import TalkingHeadError

_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.part(\.[A-Za-z0-9_.]+)?$")
_PARTIAL_NO_PID = re.compile(r"^\.(?P<stem>.+)\.[A-Za-z0-9_]{8}\.part(\.[A-Za-z0-9_.]+)?$")  # older names
_ABANDONED_SECONDS = 3600.0  # a partial file untouched this long is abandoned even if its pid looks alive


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def partial_path(path: Path, suffix: str = ".part.mp4") -> Path:
    """A new hidden temporary name next to `path` that names this process: `.NAME.PID.RANDOM<suffix>`."""
    return path.parent / f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def remove_stale_partials(folder: Path) -> list[Path]:
    """Removes this tool's partial files in `folder` left by processes that are gone (or untouched for an hour);
    never those of this process or of a live one. Returns the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        if not e.name.startswith(".") or ".part" not in e.name:
            continue
        m = _PARTIAL.match(e.name)
        try:
            age = now - e.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if m is not None:
            pid = int(m["pid"])
            stale = pid != os.getpid() and (not pid_alive(pid) or age > _ABANDONED_SECONDS)
        else:
            stale = _PARTIAL_NO_PID.match(e.name) is not None and age > _ABANDONED_SECONDS
        if stale and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
                removed.append(Path(e.path))
            except OSError:
                pass
    return removed


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def input_file(path, what: str = "file", error: type[TalkingHeadError] = TalkingHeadError) -> Path:
    """`path` as a Path when it names a regular file (or a link to one); else `error` (one line): "WHAT not
    found: PATH", or "cannot read WHAT PATH: a named pipe (FIFO), not a regular file" and the like. Checked
    with stat, without opening the file."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} not found: {p}") from None
    except OSError as e:
        raise error(f"cannot read {what} {p}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        kind = next((k for test, k in _KINDS if test(mode)), "not a file")
        raise error(f"cannot read {what} {p}: {kind}, not a regular file")
    return p


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Calls write_fn(tmp_path) and renames tmp_path to path; removes the temporary file on failure.

    A failure to write (disk full, no permission, a folder in the way) is a one-line TalkingHeadError."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(path.parent)
        tmp = partial_path(path, ".part")
        write_fn(str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        _remove(tmp)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())[:150]
        raise TalkingHeadError(f"cannot write {path}: {reason}") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.remove(tmp)


def same_file(a, b) -> bool:
    """Whether two paths name one file: the same file on disk where both exist (symlinks and hard links
    included), else the same path once resolved."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        pass
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def refuse_overwriting_inputs(outputs, inputs) -> None:
    """TalkingHeadError (one line) when one of the paths a command is about to write names the same file as
    one of its inputs; None entries are ignored on both sides."""
    for out in outputs:
        for given in inputs:
            if out is not None and given is not None and same_file(out, given):
                raise TalkingHeadError(f"the output {out} is the input {given}: writing it would destroy the "
                                       "input; choose another output name")

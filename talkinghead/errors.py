"""User-facing errors: the CLI prints their message on one line and exits non-zero (no traceback), with one of
the `ExitStatus` codes."""

from enum import IntEnum


class ExitStatus(IntEnum):
    """The exit codes of every `talkinghead` command."""

    SUCCESS = 0
    ERROR = 1  # a one-line error about the user's input (TalkingHeadError)
    USAGE = 2  # a usage error (argparse), or a command that cannot start
    INTERRUPTED = 130  # Ctrl-C
    TERMINATED = 143  # SIGTERM
    # verify: 0 every file is marked, NOT_MARKED some file is not, UNREADABLE some file could not be read
    NOT_MARKED = 1
    UNREADABLE = 2


class TalkingHeadError(Exception):
    """Base class for errors caused by the user's input (files, options), not by a bug."""


class VideoError(TalkingHeadError):
    """A video or image that cannot be read or written."""


class NoFaceError(TalkingHeadError):
    """No face found where one is required."""


class CheckpointError(TalkingHeadError):
    """A missing, corrupt or incompatible checkpoint / avatar file."""


class Stopped(TalkingHeadError):
    """Work stopped on request (console.stoppable: the web app's Stop button, a visitor gone)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same clean-up runs (exit code 143)."""

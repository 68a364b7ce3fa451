"""User-facing errors: the CLI prints their message on one line and exits non-zero (no traceback)."""


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

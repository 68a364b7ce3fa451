"""`talkinghead verify FILE...`: is the invisible mark of talkinghead.media.watermark in these images and videos?"""

from __future__ import annotations

import argparse
import sys

from talkinghead.commands.options import int_range, param_default
from talkinghead.errors import ExitStatus

EPILOG = """\
One line per file on stdout:
  FILE: synthetic (made with talkinghead), score S
  FILE: no mark found, score S
and one line on stderr for a file that cannot be read (FILE: error: ...). The score is the mark's
correlation peak in standard deviations; above {threshold:g} the file is called marked (files without the
mark score about 3-6). Copies re-encoded, resized (0.3x-2x) or cropped keep the mark; frames under
~250 px made smaller lose it. A video cut short or corrupt partway is called marked when the frames
before the break carry the mark, and cannot be read otherwise.

exit status: 0 every file is marked, 1 at least one file has no mark (and every file could be read),
2 at least one file could not be read (or a usage error)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from talkinghead.media.watermark import THRESHOLD

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = ("Looks for the invisible mark that talkinghead puts in every video and image it writes:\n"
                     "\"synthetic (made with talkinghead)\" or \"no mark found\", with a score.")
    p.epilog = EPILOG.format(threshold=THRESHOLD)
    p.add_argument("files", nargs="+", metavar="FILE", help="images or videos")
    from talkinghead.media.mark_files import detect_file

    frames = param_default(detect_file, "max_frames")
    p.add_argument("--frames", type=int_range(1, 100000), default=frames,
                   help=f"frames examined per video, spread evenly over it [default: {frames}]")


def run(args: argparse.Namespace) -> int:
    from talkinghead.errors import TalkingHeadError
    from talkinghead.media.mark_files import detect_file

    unmarked = errors = 0
    for path in args.files:
        try:
            d = detect_file(path, max_frames=args.frames)
        except TalkingHeadError as e:
            errors += 1
            print(f"{path}: error: {e}", file=sys.stderr, flush=True)
            continue
        unmarked += not d.marked
        verdict = "synthetic (made with talkinghead)" if d.marked else "no mark found"
        print(f"{path}: {verdict}, score {d.score:.1f}", flush=True)
    if errors:
        return ExitStatus.UNREADABLE
    return ExitStatus.NOT_MARKED if unmarked else ExitStatus.SUCCESS

"""`talkinghead preprocess`: videos -> aligned face crops + landmarks (talkinghead.data.preprocess does the work).

Defaults and ranges of the numeric options come from `PreprocessOptions` (never written twice); a value out of
range is a one-line usage error (exit 2) before any work starts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from talkinghead.commands.options import default_of, float_range, int_range
from talkinghead.data.options import IMAGE_FORMATS, PreprocessOptions, option_range
from talkinghead.data.preprocess import preprocess
from talkinghead.errors import ExitStatus, TalkingHeadError

# option -> (PreprocessOptions field, argparse type maker, help)
_NUMERIC = {
    "--resolution": ("resolution", int_range, "crop side S in pixels"),
    "--every": ("every", int_range, "sample every n-th frame"),
    "--frames-per-video": ("frames_per_video", int_range,
                           "at most this many sampled frames per video, evenly spaced (0 = all)"),
    "--workers": ("workers", int_range, "parallel processes"),
    "--redetect-every": ("redetect_every", int_range, "tracking: full face detection every n sampled frames"),
    "--segment-seconds": ("segment_seconds", float_range, "one stable crop per this many seconds (0 = one per clip)"),
    "--upsample": ("upsample", int_range, "the first HOG up-sampling tried (small frames get more)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("input", help="a video, a folder of videos (recursive) or a VoxCeleb id/video/clip tree")
    parser.add_argument("--out", required=True, help="output folder (resumable: rerun to continue)")
    for flag, (name, kind, help_) in _NUMERIC.items():
        parser.add_argument(flag, type=kind(*option_range(name)), default=default_of(PreprocessOptions, name),
                            help=help_)
    parser.add_argument("--split", default=None,
                        help="split file (JSON, see talkinghead.data.sources) or a bundled name, e.g. 'shared'")
    parser.add_argument("--layout", choices=["auto", "voxceleb", "folder"], default="auto")
    parser.add_argument("--identities", default=None, help="JSON file {file stem or relative path: identity}")
    parser.add_argument("--format", choices=IMAGE_FORMATS, default=default_of(PreprocessOptions, "image_format"),
                        dest="image_format")
    parser.add_argument("--part", type=_part, default=None, metavar="K/N",
                        help="process only part K of N of the videos (a job array over N machines), into "
                        "OUT/parts/K-of-N; a run without --part then adopts every part's shards")
    parser.add_argument("--merge", action="store_true",
                        help="adopt the parts' shards into OUT and process nothing else (reports what is left)")
    parser.add_argument("--speech", action="store_true",
                        help="instead of face crops: every clip with audio -> its tracked landmarks and audio "
                        "features in OUT/speech/ (the data of `train --preset speech` and `evaluate --audio`)")
    parser.add_argument("--retry-failed", action="store_true", help="retry videos skipped by an earlier run")
    parser.add_argument("--no-progress", "--quiet", action="store_true", dest="no_progress", help="no progress bar")


def _part(text: str) -> tuple[int, int]:
    from talkinghead.data.shards import parse_part

    try:
        return parse_part(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run(args) -> int:
    identities = None
    if args.identities:
        try:
            identities = json.loads(Path(args.identities).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TalkingHeadError(f"cannot read identities file {args.identities}: {e}") from None
    if args.speech:
        from talkinghead.data.speech import build_speech_set

        if args.part or args.merge:
            raise TalkingHeadError("--speech makes one small folder; --part/--merge are for face crops")
        summary = build_speech_set(args.input, args.out, split=args.split, workers=args.workers,
                                   progress=not args.no_progress)
        print(f"{summary['clips']} speech clips in {Path(args.out) / 'speech'} ({len(summary['skipped'])} "
              f"skipped this run, {summary['seconds']:.0f} s)")
        return ExitStatus.SUCCESS
    options = {name: getattr(args, name) for name, _, _ in _NUMERIC.values()}
    summary = preprocess(args.input, args.out, split=args.split, layout=args.layout, identities=identities,
                         retry_failed=args.retry_failed, progress=not args.no_progress, require_usable=True,
                         image_format=args.image_format, part=args.part, merge=args.merge, **options)
    print(summary)
    return ExitStatus.SUCCESS

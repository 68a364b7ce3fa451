"""`talkinghead` command line: a thin shell over the library (DESIGN.md §4, layered inference).

Each subcommand lives in the module that owns the work; that module exposes
`add_arguments(parser)` and `run(args) -> int`. Only the chosen module is imported, so
`talkinghead --help` is instant and a broken optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from talkinghead.errors import TalkingHeadError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("talkinghead.demo", "animate the bundled Mona Lisa with the bundled driving clip"),
    "preprocess": ("talkinghead.data.preprocess", "videos -> aligned face crops + landmarks (training set)"),
    "train": ("talkinghead.train.meta", "meta-learn E, G and D on a preprocessed set"),
    "finetune": ("talkinghead.train.finetune", "make an avatar from 1..32 photos or a video (FF or FT)"),
    "animate": ("talkinghead.animate_cli", "drive a portrait or avatar with a video -> mp4"),
    "evaluate": ("talkinghead.evaluate", "the paper's protocol and metrics, with baselines"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talkinghead",
        description="Few-shot neural talking heads (Zakharov et al. 2019): make a portrait talk "
        "like the person in a driving video.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before torch loads: idle OpenMP workers sleep instead of spinning. On a busy CPU spinning workers made
    # every parallel op wait ~13 ms (the small generator ran 10-40x slower); on an idle one it costs little.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        command = None
    try:
        parser = build_parser(command)
    except ModuleNotFoundError as e:
        print(f"talkinghead: error: command {command!r} is not available ({e})", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except TalkingHeadError as e:
        print(f"talkinghead {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"talkinghead {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

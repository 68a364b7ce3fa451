"""`talkinghead` command line: a thin shell over the library (DESIGN.md §4, layered inference).

Every command is one module in `talkinghead.commands` exposing `add_arguments(parser)` and `run(args) -> int`;
`talkinghead animate` is `talkinghead/commands/animate.py`, and so on. Only the chosen module is imported, so
`talkinghead --help` is instant and a broken optional dependency only affects its own command.

Exit codes (`errors.ExitStatus`): 0 success, 1 a one-line error about the user's input (TalkingHeadError), 2 a
usage error (argparse), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). SIGTERM unwinds like Ctrl-C, so partial
outputs are removed and training writes its checkpoint either way.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys

from talkinghead.errors import ExitStatus, TalkingHeadError, Terminated

# name -> one-line help; the code of command NAME is talkinghead.commands.NAME (hyphens as underscores)
COMMANDS: dict[str, str] = {
    "demo": "animate the bundled Mona Lisa with the bundled driving clip",
    "preprocess": "videos -> aligned face crops + landmarks (training set)",
    "train": "meta-learn E, G and D on a preprocessed set",
    "train-region": "train a mouth-interior or eyelid generator on crops and attach it to a model file",
    "finetune": "make an avatar from 1..32 photos or a video (FF or FT)",
    "animate": "drive a portrait or avatar with a video -> mp4",
    "landmarks": "a photo's 68 face landmarks (.pts) and an overlay PNG, to correct by hand",
    "evaluate": "the paper's protocol and metrics, with baselines",
    "live": "puppeteer a portrait in real time from a webcam (or a video file)",
    "serve": "the web app: photos and a driving video in, the animated video out",
    "verify": "is this image or video marked as made with talkinghead?",
}


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise Terminated()


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: `talkinghead CMD: error: ... (see --help)`, exit code 2. An option
    whose value starts with '-' (argparse takes `--points -100,5,...` for two options) gets a hint: write
    it `--points=-100,5,...`."""

    def parse_known_args(self, args=None, namespace=None):
        self._arg_strings = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        self.exit(ExitStatus.USAGE, f"{self.prog}: error: {message}{self._dash_hint(message)} (see {self.prog} --help)\n")

    def _dash_hint(self, message: str) -> str:
        """'; write it --opt=VALUE' when `message` is argparse's "expected one argument" for an option that was
        followed by a value starting with '-'; else ''."""
        m = re.fullmatch(r"argument (\S+): expected one argument", message)
        if not m:
            return ""
        names = m.group(1).split("/")
        argv = getattr(self, "_arg_strings", [])
        after = [b for a, b in zip(argv, argv[1:]) if a in names and b.startswith("-") and not self._is_option(b)]
        if not after:
            return ""
        name = max(names, key=len)  # the long form: `-o=X` would give "=X"
        return f" (a value starting with '-' goes after '=': {name}={after[-1]})"

    def _is_option(self, arg: str) -> bool:
        """Whether `arg` names one of this parser's options (or a prefix of a long one, as argparse allows)."""
        head, known = arg.split("=", 1)[0], self._option_string_actions
        if head.startswith("--"):
            return any(o.startswith(head) for o in known if o.startswith("--"))
        return head[:2] in known


def command_module(name: str):
    return importlib.import_module(f"talkinghead.commands.{name.replace('-', '_')}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(
        prog="talkinghead",
        description="Few-shot neural talking heads (Zakharov et al. 2019): make a portrait talk "
        "like the person in a driving video.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more detailed messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            command_module(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before torch loads: idle OpenMP workers sleep instead of spinning (on a busy CPU spinning workers make
    # every parallel op wait for the others; docs/benchmarks.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # numpy's BLAS only sees small matrices here (landmark warps, Procrustes): a thread pool of its own would
    # spin against torch's threads
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        command = None
    try:
        parser = build_parser(command)
    except ModuleNotFoundError as e:
        print(f"talkinghead: error: command {command!r} is not available ({e})", file=sys.stderr)
        return ExitStatus.USAGE
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return ExitStatus.SUCCESS
    from talkinghead.console import setup_logging

    setup_logging(args.verbose)
    module = command_module(args.command)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(module.run(args) or ExitStatus.SUCCESS)
    except TalkingHeadError as e:
        print(f"talkinghead {args.command}: error: {e}", file=sys.stderr)
        return ExitStatus.ERROR
    except BrokenPipeError:  # stdout closed early (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.SUCCESS
    except Terminated:
        print(f"talkinghead {args.command}: terminated", file=sys.stderr)
        return ExitStatus.TERMINATED
    except KeyboardInterrupt:
        print(f"talkinghead {args.command}: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

"""`talkinghead serve [--host 127.0.0.1] [--port 7860]`: the web app (talkinghead/app/), a thin shell over the
library: photos (or the bundled Mona Lisa) and a driving video (or the bundled clip) in, the animated video and
the avatar out, one job at a time, each visitor held to the limits of talkinghead.app.limits.AppLimits
(`--max-upload-mb`, `--max-driver-seconds`, …; their defaults are that dataclass's)."""

from __future__ import annotations

import argparse
import dataclasses

from talkinghead.app.limits import OPTIONS, AppLimits
from talkinghead.commands.options import add_device, add_model, float_range, int_range, param_default
from talkinghead.errors import ExitStatus


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Serve the web app: upload photos of a face (or use the bundled Mona Lisa) and a driving "
                     "video (or record one), see the landmarks found, and get the animated video and the "
                     "avatar back. Needs gradio (pip install 'talkinghead[app]'). One job renders at a time; "
                     "the others wait in a queue.")
    from talkinghead.app.page import serve

    host, port = param_default(serve, "host"), param_default(serve, "port")
    p.add_argument("--host", default=host,
                   help=f"address to listen on (0.0.0.0: every network interface) [default: {host}]")
    p.add_argument("--port", type=int_range(1, 65535), default=port, help=f"port [default: {port}]")
    add_model(p)
    add_device(p)
    limits = p.add_argument_group("limits per visitor")
    defaults = AppLimits()
    for option, name, text in OPTIONS:
        default = getattr(defaults, name)
        kind = int_range(1) if isinstance(default, int) else float_range(0, lo_open=True)
        limits.add_argument(option, dest=f"limit_{name}", type=kind, default=default, metavar="N",
                            help=f"{text} [default: {default:g}]")


def limits_of(args: argparse.Namespace) -> AppLimits:
    """The AppLimits the parsed options ask for."""
    return AppLimits(**{f.name: getattr(args, f"limit_{f.name}") for f in dataclasses.fields(AppLimits)})


def run(args: argparse.Namespace) -> int:
    from talkinghead.app.page import serve

    serve(args.host, args.port, model=args.model, device=args.device, limits=limits_of(args),
          on_ready=lambda url: print(f"talkinghead web app at {url} (Ctrl-C stops it)", flush=True))
    return ExitStatus.SUCCESS

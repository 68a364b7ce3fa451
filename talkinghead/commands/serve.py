"""`talkinghead serve [--host 127.0.0.1] [--port 7860]`: the web app (talkinghead/app/), a thin shell over the
library: photos (or the bundled Mona Lisa) and a driving video (or the bundled clip) in, the animated video and
the avatar out, one job at a time."""

from __future__ import annotations

import argparse

from talkinghead.commands.options import add_device, add_model, int_range, param_default
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


def run(args: argparse.Namespace) -> int:
    from talkinghead.app.page import serve

    serve(args.host, args.port, model=args.model, device=args.device,
          on_ready=lambda url: print(f"talkinghead web app at {url} (Ctrl-C stops it)", flush=True))
    return ExitStatus.SUCCESS

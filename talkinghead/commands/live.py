"""`talkinghead live --avatar X.avatar|PHOTO [--camera 0|/dev/videoN|FILE] [--window] [--out FILE.mp4]
[--virtual-camera]`: puppeteering in real time, a thin shell over talkinghead.live (DESIGN.md §4).

Ctrl-C ends the session: the output file is finished (playable) and a summary is printed.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from talkinghead.commands.options import (add_device, add_face_index, add_model, add_mouth_fill, float_range,
                                          int_range, param_default)
from talkinghead.errors import ExitStatus, TalkingHeadError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Puppeteer a portrait live: the face in front of the webcam (or in a video file played as "
                     "one) is tracked, its motion relative to the first frame is transferred onto the avatar's "
                     "face, rendered and pasted back into the photo, frame by frame; frames are dropped rather "
                     "than letting the delay grow. Shows the result in a window, writes it to an mp4 and/or "
                     "sends it to a virtual camera for video calls. Ctrl-C ends (the mp4 is finished).")
    p.add_argument("--avatar", required=True, metavar="AVATAR|PHOTO",
                   help="an .avatar file (from `talkinghead finetune`) or a photo (a feed-forward avatar is made "
                   "from it at start with --model)")
    p.add_argument("--camera", default="0", metavar="0|/dev/videoN|FILE",
                   help="a webcam by index or device (v4l2), or a video file played in real time as a stand-in "
                   "[default: 0]")
    p.add_argument("--camera-size", default="640x480", metavar="WxH",
                   help="frame size asked of a webcam (it picks its nearest) [default: 640x480]")
    p.add_argument("--window", action="store_true", help="show the frames in a window (needs a display)")
    p.add_argument("--out", metavar="FILE.mp4", help="write the frames to an mp4 (real time, camera's frame rate)")
    p.add_argument("--virtual-camera", nargs="?", const="", metavar="DEVICE",
                   help="send the frames to a virtual webcam (optional package pyvirtualcam; Linux: "
                   "v4l2loopback), optionally a given DEVICE")
    add_model(p, "model file for a photo or an FF avatar")
    from talkinghead.live.puppet import LivePuppet

    max_size = param_default(LivePuppet.__init__, "max_size")
    p.add_argument("--max-size", type=int_range(64, 8192), default=max_size,
                   help=f"longest side of the output frames: the photo is scaled down to it [default: {max_size}]")
    p.add_argument("--crop-only", action="store_true", help="output the face box, not the whole photo")
    add_mouth_fill(p)
    p.add_argument("--absolute", action="store_true",
                   help="use the driver's landmarks as they are (leaks the driver's face shape)")
    add_face_index(p, "of a photo")
    p.add_argument("--loop", action="store_true", help="with a video file as the camera: start again at its end")
    p.add_argument("--threads", type=int_range(1, 256), default=1,
                   help="torch threads for the generator; the camera and the encoder have threads of their own "
                   "[default: 1]")
    p.add_argument("--pipeline", action="store_true",
                   help="track the next frame in a second thread while the current one renders (for more than "
                   "two free cores; more CPU, and slower on a busy machine)")
    p.add_argument("--report-every", type=float_range(0, 3600), default=5.0, metavar="SECONDS",
                   help="print frames/s and latency this often (0: only the summary) [default: 5]")
    add_device(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from talkinghead.live.camera import open_camera
    from talkinghead.live.puppet import LivePuppet
    from talkinghead.live.loop import run_live
    from talkinghead.live.outputs import (FileOutput, VirtualCameraOutput, WindowOutput, check_display,
                                          check_virtual_camera)

    if not (args.window or args.out or args.virtual_camera is not None):
        raise TalkingHeadError("nothing to show the frames on: give --window, --out FILE.mp4 and/or --virtual-camera")
    if args.out and Path(args.out).suffix.lower() != ".mp4":
        raise TalkingHeadError(f"--out should be an .mp4 file (got {Path(args.out).name})")
    if args.out:
        from talkinghead.media.files import refuse_overwriting_inputs

        refuse_overwriting_inputs([args.out], [args.camera, args.avatar, args.model])
    if args.window:
        check_display()  # before the slow start
    if args.virtual_camera is not None:
        check_virtual_camera()
    if not re.fullmatch(r"[1-9]\d*x[1-9]\d*", args.camera_size):
        raise TalkingHeadError(f"--camera-size should be WIDTHxHEIGHT, e.g. 640x480 (got {args.camera_size})")
    torch.set_num_threads(args.threads)
    camera = open_camera(args.camera, loop=args.loop, options={"video_size": args.camera_size})
    try:
        puppet = LivePuppet.from_source(args.avatar, args.model, device=args.device, face_index=args.face_index,
                                        max_size=args.max_size, crop_only=args.crop_only, absolute=args.absolute,
                                        fps=camera.fps, regions=not args.no_mouth_fill)
        w, h = puppet.output_size
        outputs = []
        try:
            if args.window:
                outputs.append(WindowOutput(f"talkinghead live: {Path(args.avatar).name}"))
            if args.virtual_camera is not None:
                vcam = VirtualCameraOutput(w, h, camera.fps, device=args.virtual_camera or None)
                outputs.append(vcam)
                print(f"virtual camera: {vcam.device} ({w}x{h}, {camera.fps:.3g} fps)")
            if args.out:
                outputs.append(FileOutput(args.out, camera.fps))
        except BaseException:
            for o in outputs:
                o.abort()
            raise
        print(f"live: {camera.name} ({camera.width}x{camera.height}, {camera.fps:.3g} fps) -> {w}x{h}; "
              "Ctrl-C ends", flush=True)
        summary = run_live(puppet, camera, outputs, report_every=args.report_every, pipeline=args.pipeline)
    finally:
        camera.close()
    for line in summary.lines():
        print(line)
    if args.out:
        print(f"wrote {args.out}")
    return ExitStatus.SUCCESS

"""`talkinghead landmarks IMAGE -o FILE.pts`: the 68 landmarks of a photo's face, to check and correct by hand.

Writes the points (iBUG .pts, or JSON when FILE ends in .json) and an overlay PNG next to them (FILE with .png:
the photo, the 68 points numbered as in the file, the face's lines; marked as synthetic like every image the tool
writes), both or neither. The points come from the face-finding cascade (landmarks/cascade.py), or with
`--points x1,y1,...` from the mean shape fitted to 5 clicked points; corrected in any text editor, the file is what `animate`/`finetune --landmarks FILE` take.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from talkinghead.commands.options import add_face_index
from talkinghead.errors import ExitStatus, NoFaceError, TalkingHeadError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from talkinghead.landmarks.manual import POINTS_HELP

    p.description = ("Find a photo's face and write its 68 landmarks (iBUG .pts or JSON) and an overlay PNG "
                     "next to them, to correct in any editor and give to `animate`/`finetune --landmarks`.")
    p.add_argument("image", metavar="IMAGE", help="the photo")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="landmarks file to write (.pts or .json)")
    p.add_argument("--points", metavar="X1,Y1,...",
                   help=f"instead of detecting: fit the mean 68-point shape to 5 points, {POINTS_HELP}")
    add_face_index(p, "in the photo")


def overlay(image, points):
    """The photo with the 68 points drawn and numbered (0-67, the order of the file) (H, W, 3) uint8."""
    import numpy as np
    from PIL import Image, ImageDraw

    from talkinghead.landmarks.rasterize import draw_landmarks

    im = Image.fromarray(draw_landmarks(image, points))
    d = ImageDraw.Draw(im)
    for i, (x, y) in enumerate(np.asarray(points, np.float64)):
        d.text((x + 2, y - 10), str(i), fill=(255, 255, 0))
    return np.asarray(im)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from talkinghead.media import image_files, watermark
    from talkinghead.media.files import atomic_write, input_file, refuse_overwriting_inputs, same_file
    from talkinghead.landmarks.cascade import STAGE_NAMES, photo_cascade
    from talkinghead.landmarks.detect import pick_face
    from talkinghead.landmarks.manual import check_inside, parse_points, points_from_five, write_landmarks

    out = Path(args.out)
    if out.suffix.lower() not in (".pts", ".json"):
        raise TalkingHeadError(f"-o should end in .pts or .json (got {out.name})")
    five = parse_points(args.points) if args.points else None
    input_file(args.image)  # "file not found: IMAGE", or a FIFO or folder refused before it is opened
    png = out.with_suffix(".png")
    if same_file(png, args.image):  # `landmarks face.png -o face.pts`: the overlay gets a name of its own
        png = out.with_name(f"{out.stem}_overlay.png")
    refuse_overwriting_inputs([out, png], [args.image])
    image = image_files.read_image(args.image)
    if five is not None:
        points = points_from_five(five)
        check_inside(points, image.shape, "--points")
        how = "fitted to --points"
    else:
        cascade = photo_cascade(min_faces=(args.face_index or 0) + 1)
        faces = cascade.detect(image)
        face = pick_face(faces, image.shape, args.face_index)
        if face is None and faces:
            raise NoFaceError(f"no face with index {args.face_index} in {args.image} (faces found: {len(faces)})")
        if face is None:
            tried = ", ".join(STAGE_NAMES.get(s, s) for s in cascade.tried)
            raise NoFaceError(f"no face found in {args.image} by {tried}: click 5 points (eye centres, nose tip, "
                              f"mouth corners) and run `talkinghead landmarks {args.image} -o {out} --points "
                              "x1,y1,...,x5,y5`, then correct the file in any editor")
        points = face.points
        how = f"found by {STAGE_NAMES.get(cascade.last_stage, cascade.last_stage)}"
    marked = watermark.embed(overlay(image, points))  # marked as synthetic, as every image the tool writes
    atomic_write(png, lambda tmp: Image.fromarray(marked).save(tmp, format="PNG"))
    try:  # both files or neither: the overlay of points that were not written would mislead
        atomic_write(out, lambda tmp: write_landmarks(tmp, points, fmt=out.suffix.lower().lstrip(".")))
    except BaseException:
        png.unlink(missing_ok=True)
        raise
    print(f"wrote {out} (68 points, {how}) and the overlay {png}; correct the points in any editor, then "
          f"`talkinghead animate {args.image} DRIVER.mp4 -o OUT.mp4 --landmarks {out}`")
    return ExitStatus.SUCCESS

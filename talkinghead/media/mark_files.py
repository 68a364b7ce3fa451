"""The mark of a file (`talkinghead verify`): an image or up to `max_frames` frames of a video read and scored by
talkinghead.media.watermark's detector; the mark itself is array code in watermark.py, and this module is
what reads files for it.
"""

from __future__ import annotations

import numpy as np

from talkinghead.errors import VideoError
from talkinghead.media import image_files, video
from talkinghead.media.files import input_file
from talkinghead.media.watermark import Detection, Detector, detect


def detect_file(path, max_frames: int = 100) -> Detection:
    """Score and decision for an image or a video file; a video is judged on up to `max_frames` frames spread
    evenly over it; one cut short or corrupt partway is called marked when the frames before the break carry
    the mark, and unreadable otherwise (its unread frames might). Raises VideoError (a TalkingHeadError) for a
    missing or unreadable file, or one that is not a regular file (a FIFO, a device, a folder)."""
    what = "image" if video.is_image_path(path) else "video" if video.is_video_path(path) else "file"
    input_file(path, what, VideoError)  # a FIFO would block the reader: refused before opening
    if video.is_image_path(path):
        return detect(image_files.read_image(path))
    if not video.is_video_path(path):  # no telling suffix: an image, a video or neither
        try:
            return detect(image_files.read_image(path))
        except VideoError:
            try:
                video.probe_video(path)
            except VideoError:
                raise VideoError(f"cannot read {path}: neither an image nor a video") from None
    info = video.probe_video(path)  # raises VideoError for a missing or unreadable file
    n = max(1, info.num_frames)
    indices = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
    d = Detector()
    try:
        for _, frame in video.iter_indexed_frames(path, indices=indices):
            d.add(frame)
    except VideoError as e:  # cut short or corrupt partway: the frames before the break show a mark, or it is unread
        if d.frames == 0:
            raise
        if not d.result().marked:
            raise VideoError(f"{e}; no mark in the {d.frames} frames before the break") from None
    if d.frames == 0:
        raise VideoError(f"no frames could be decoded from {path}")
    return d.result()

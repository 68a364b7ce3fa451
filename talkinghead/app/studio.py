"""The studio behind the web app (DESIGN.md §4, layered inference): what one server shares (the model, loaded
once; a folder for outputs) and each request done with library calls only: the landmarks preview is
`shots.prepare_shots` per photo drawn by `rasterize.draw_landmarks`, avatars are `avatar.make_ff_avatar` /
`train.finetune.make_avatar`, the video is `pipeline.animate_video`, the live tab's frames a `LivePuppet`.
Each browser session keeps the avatars it made, to animate them again without the photos. The page over it is
talkinghead.app.page.
"""

from __future__ import annotations

import itertools
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead.console import log
from talkinghead.errors import TalkingHeadError


@dataclass
class Job:
    """What one Animate click produced."""

    video: Path  # the mp4
    avatar: Path  # the .avatar it was rendered with (new, or the session's one reused)
    avatar_name: str | None  # the name of a new avatar (None: an existing one was reused)
    summary: str  # one markdown line: frames, size, speed


def file_label(path) -> str:
    return Path(path).name


def _stem(path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem)[:40] or "avatar"


class Studio:
    """The library behind the page: one model (the bundled one by default), outputs under `workdir`."""

    def __init__(self, model=None, device: str = "cpu", workdir=None):
        from talkinghead.persons.checkpoint import LoadedModel, resolve_model

        self.model = LoadedModel.load(resolve_model(model), device, with_discriminator=True)
        self.device = device
        self._own_workdir = workdir is None  # a temporary folder of ours: removed by close()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="talkinghead-app-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jobs = itertools.count(1)
        self._lock = threading.Lock()  # the queue runs one job at a time; this keeps the library calls safe anyway

    def close(self) -> None:
        """Removes the outputs of this server's jobs when they live in a temporary folder of its own."""
        if self._own_workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def default_steps(self) -> int:
        return int(self.model.cfg.finetune.steps)

    # -- photos --------------------------------------------------------------------------------------------
    def landmarks_preview(self, photo, landmarks_file=None) -> tuple[np.ndarray, str]:
        """(the face in the photo with its 68 landmarks drawn, caption: the file name, and the landmarks file's
        when it replaces detection). A landmarks file that cannot be used (unreadable, not 68 finite points,
        points off the photo) is not: the detected face is shown, the caption says why the file was not used.
        NoFaceError (one line) when no detector finds a usable face (naming the bad landmarks file too)."""
        from talkinghead.errors import NoFaceError
        from talkinghead.landmarks.rasterize import draw_landmarks
        from talkinghead.persons.shots import prepare_shots

        detector, problem = None, landmarks_problem(landmarks_file)
        if landmarks_file and problem is None:
            from talkinghead.media.video import read_image

            detector, image = manual_landmarks(landmarks_file), read_image(photo)
            try:  # points for another image: the file is the problem, not the photo
                detector.detect(image)
            except TalkingHeadError as e:
                detector, problem = None, _named(str(e), landmarks_file)
        try:
            sh = prepare_shots([photo], self.model.cfg.model.image_size, shots=1, detector=detector)
        except NoFaceError as e:
            if problem is None:
                raise
            raise NoFaceError(f"{e}; the landmarks file is not usable: {problem}") from None
        (x0, y0, x1, y1), pts = _around(sh.image_points, sh.image.shape), sh.image_points
        caption = file_label(photo)
        if problem is not None:
            caption += f": the detected face; the landmarks file is not usable: {problem}"
        elif landmarks_file:
            caption += f" ({file_label(landmarks_file)})"
        return draw_landmarks(sh.image[y0:y1, x0:x1], pts - (x0, y0)), caption

    def make_avatar(self, photos, landmarks_file=None, fine_tune: bool = False, steps: int | None = None):
        """An FF or FT avatar of the person in `photos` (paths); landmarks_file (.pts or JSON, one photo only)
        replaces the detected landmarks."""
        from talkinghead.persons.avatar import make_ff_avatar
        from talkinghead.train.finetune import make_avatar

        photos = [str(p) for p in photos]
        detector = manual_landmarks(landmarks_file)
        if fine_tune:
            return make_avatar(photos, self.model, mode="ft", shots=len(photos), steps=steps, device=self.device,
                               detector=detector)
        return make_ff_avatar(photos, self.model, shots=len(photos), device=self.device, detector=detector)

    # -- the job -------------------------------------------------------------------------------------------
    def animate(self, driving, photos=None, landmarks_file=None, avatar_path=None, fine_tune: bool = False,
                steps: int | None = None, absolute: bool = False, crop_only: bool = False,
                side_by_side: bool = False) -> Job:
        """Animates the avatar at `avatar_path` (or a new one of `photos`) with the video `driving`."""
        from talkinghead.media import video
        from talkinghead.persons.avatar import Avatar
        from talkinghead.inference.pipeline import animate_video

        if not driving:
            raise TalkingHeadError("no driving video: upload or record one, or use the bundled clip")
        if avatar_path is None and not photos:
            raise TalkingHeadError("no photo: upload photos of one person, or use the Mona Lisa")
        video.probe_video(driving)  # an unreadable video fails here, before any expensive work
        with self._lock:
            folder = self.workdir / f"job{next(self._jobs):04d}"
            folder.mkdir()
            name = None
            if avatar_path is not None:
                avatar = Avatar.load(avatar_path)
            else:
                avatar = self.make_avatar(photos, landmarks_file, fine_tune, steps)
                avatar_path = avatar.save(folder / f"{_stem(photos[0])}_{avatar.mode}.avatar")
                name = f"{_stem(photos[0])}, {avatar.mode.upper()}, {len(photos)} photo{'s' * (len(photos) > 1)}"
            out = folder / f"{Path(avatar_path).stem}_talking.mp4"
            res = animate_video(avatar, driving, out, model=self.model, device=self.device, absolute=absolute,
                                crop_only=crop_only, sbs=side_by_side, warn=_warn)
        summary = (f"{res.frames} frames, {res.size[0]}×{res.size[1]}, {res.fps:.3g} fps; "
                   f"{res.seconds_total:.1f} s ({res.frames_per_second:.1f} frames/s)")
        if avatar.mode == "ft" and name is not None:
            st = avatar.info["finetune"]
            summary += f"; fine-tuned {st['steps']} steps in {st['seconds']:.0f} s"
        return Job(video=out, avatar=Path(avatar_path), avatar_name=name, summary=summary)

    # -- live ----------------------------------------------------------------------------------------------
    def live_puppet(self, avatar_path=None, absolute: bool = False, crop_only: bool = False):
        """A talkinghead.live.LivePuppet of the avatar at `avatar_path`, or of the Mona Lisa (FF)."""
        from talkinghead import bundled
        from talkinghead.persons.avatar import Avatar, make_ff_avatar
        from talkinghead.live.puppet import LivePuppet

        with self._lock:
            if avatar_path is not None:
                avatar = Avatar.load(avatar_path)
            else:
                avatar = make_ff_avatar([str(bundled.PORTRAIT)], self.model, shots=1, device=self.device)
            return LivePuppet(avatar, self.model, device=self.device, absolute=absolute, crop_only=crop_only)


def _around(points: np.ndarray, shape, scale: float = 2.2) -> tuple[int, int, int, int]:
    """A square box `scale` times the landmarks' extent around their centre, inside the image: what the
    preview shows (the face, not the whole photo)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    cx, cy = (lo + hi) / 2
    half = scale * float(max(hi - lo)) / 2
    h, w = shape[:2]
    return (max(0, int(cx - half)), max(0, int(cy - half)), min(w, int(cx + half) + 1), min(h, int(cy + half) + 1))


def _warn(message: str) -> None:
    import gradio as gr

    log.warning("warning: %s", message)
    gr.Warning(message)


def landmarks_problem(landmarks_file) -> str | None:
    """Why a .pts/JSON landmarks file cannot be read (read_landmarks' one-line reason, the file named by its
    name), or None when it can or none is given."""
    if not landmarks_file:
        return None
    from talkinghead.landmarks.manual import read_landmarks

    try:
        read_landmarks(landmarks_file)
    except TalkingHeadError as e:
        return _named(str(e), landmarks_file)
    return None


def _named(message: str, path) -> str:
    """`message` with the file at `path` named by its file name (an upload's path means nothing to a visitor)."""
    return message.replace(str(path), file_label(path))


def manual_landmarks(landmarks_file):
    """The landmarks.manual.ManualLandmarks of a .pts/JSON file (None: detect), labelled with its name."""
    if not landmarks_file:
        return None
    from talkinghead.landmarks.manual import ManualLandmarks, read_landmarks

    return ManualLandmarks(read_landmarks(landmarks_file), f"the landmarks of {file_label(landmarks_file)}")

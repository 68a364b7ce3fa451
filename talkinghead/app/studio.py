"""The studio behind the web app (DESIGN.md §4, layered inference): what one server shares (the model, loaded
once; a folder for outputs) and each request done with library calls only: the landmarks preview is
`shots.prepare_shots` per photo drawn by `rasterize.draw_landmarks`, avatars are `avatar.make_ff_avatar` /
`train.finetune.make_avatar`, the video is `pipeline.animate_video`, the live tab's frames a `LivePuppet`.
Each browser session keeps the avatars it made, to animate them again without the photos, and its last few
outputs, in a folder of its own that `end_session` removes. `AppLimits` bounds what one visitor may ask (checked
from file headers before any decoding); a job stops at its next frame or step when its visitor stops it or
leaves (`stop`, `end_session`). Photos are checked by `limits.check_photo` (talkinghead.app.limits). The page over
it is talkinghead.app.page.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.app.limits import AppLimits, check_driver, check_photo, release_memory
from talkinghead.console import log, stoppable
from talkinghead.errors import Stopped, TalkingHeadError

@dataclass
class Job:
    """What one Animate click produced."""

    video: Path  # the mp4
    avatar: Path  # the .avatar it was rendered with (new, or the session's one reused)
    avatar_name: str | None  # the name of a new avatar (None: an existing one was reused)
    summary: str  # one markdown line: frames, size, speed


@dataclass
class _Session:
    """What the studio keeps for one browser session: its folder, its running job's stop event, its photos
    shrunk to the limits (upload path -> copy)."""

    folder: Path
    stop: threading.Event | None = None
    ended: bool = False
    photos: dict[str, str] = field(default_factory=dict)


def file_label(path) -> str:
    return Path(path).name


def _stem(path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem)[:40] or "avatar"


LOCAL = "local"  # the session of a caller that names none (a script, a test)
_ENDED_KEPT = 4096  # ended sessions remembered, so that a job of theirs still queued does not start


class Studio:
    """The library behind the page: one model (the bundled one by default), outputs under `workdir`, one
    folder per session, requests bounded by `limits`."""

    def __init__(self, model=None, device: str = "cpu", workdir=None, limits: AppLimits | None = None):
        from talkinghead.persons.checkpoint import LoadedModel, resolve_model

        self.model = LoadedModel.load(resolve_model(model), device, with_discriminator=True)
        self.device = device
        self.limits = limits or AppLimits()
        self._own_workdir = workdir is None  # a temporary folder of ours: removed by close()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="talkinghead-app-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jobs = itertools.count(1)
        self._lock = threading.Lock()  # the queue runs one job at a time; this keeps the library calls safe anyway
        self._state = threading.Lock()  # guards the sessions
        self._sessions: dict[str, _Session] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._speech_model = None  # loaded on the first speech job

    def close(self) -> None:
        """Stops every running job, then removes the outputs of this server's jobs when they live in a
        temporary folder of its own."""
        for session in list(self._sessions):
            self.end_session(session)
        if self._lock.acquire(timeout=30):  # the running job's next frame or step stops it
            self._lock.release()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- sessions ------------------------------------------------------------------------------------------
    def _session(self, session: str) -> _Session:
        with self._state:
            if session in self._ended:
                raise Stopped("this session has ended")
            if session not in self._sessions:
                folder = self.workdir / (re.sub(r"[^A-Za-z0-9_-]+", "_", session)[:64] or LOCAL)
                self._sessions[session] = _Session(folder)
            return self._sessions[session]

    def stop(self, session: str = LOCAL) -> bool:
        """Stops the session's running job at its next frame or step; False when none runs."""
        s = self._sessions.get(session)
        if s is None or s.stop is None:
            return False
        s.stop.set()
        return True

    def end_session(self, session: str = LOCAL) -> None:
        """The visitor has gone: its running job stops, its files are removed, a job of it still queued will
        not start."""
        with self._state:
            s = self._sessions.pop(session, None)
            self._ended[session] = None
            while len(self._ended) > _ENDED_KEPT:
                self._ended.popitem(last=False)
        if s is None:
            return
        s.ended = True
        if s.stop is not None:
            s.stop.set()  # the job removes the folder when it stops
        else:
            shutil.rmtree(s.folder, ignore_errors=True)

    @contextlib.contextmanager
    def _job(self, s: _Session):
        """A new job folder of the session, its work stoppable; on failure the folder goes; afterwards only
        the session's last `limits.outputs` job folders and `limits.avatars` avatars stay."""
        folder = s.folder / f"job{next(self._jobs):04d}"
        folder.mkdir(parents=True)
        s.stop = threading.Event()
        try:
            with stoppable(s.stop):
                yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(s.folder / "avatars" / folder.name, ignore_errors=True)
            raise
        finally:
            s.stop = None
            if s.ended:
                shutil.rmtree(s.folder, ignore_errors=True)
            else:
                _keep_last(s.folder.glob("job*"), self.limits.outputs)
                _keep_last((s.folder / "avatars").glob("job*"), self.limits.avatars)
            release_memory()

    def photos(self, photos, session: str = LOCAL) -> list[str]:
        """`photos` (paths) within the limits: at most `limits.photos` of them, each checked from its header
        (too many pixels: refused) and shrunk to `limits.photo_side` when larger (a copy in the session's
        folder, made once per upload)."""
        photos = [str(p) for p in photos]
        if len(photos) > self.limits.photos:
            raise TalkingHeadError(f"{len(photos)} photos: this server makes an avatar of up to "
                                   f"{self.limits.photos}; upload fewer")
        s = self._session(session)
        out = []
        for photo in photos:
            if photo not in s.photos:
                s.photos[photo] = check_photo(photo, self.limits, s.folder / "photos" / str(len(s.photos)))
            out.append(s.photos[photo])
        return out

    @property
    def default_steps(self) -> int:
        return int(self.model.cfg.finetune.steps)

    # -- photos --------------------------------------------------------------------------------------------
    def landmarks_preview(self, photo, landmarks_file=None, session: str = LOCAL) -> tuple[np.ndarray, str]:
        """(the face in the photo with its 68 landmarks drawn, caption: the file name, and the landmarks file's
        when it replaces detection). A landmarks file that cannot be used (unreadable, not 68 finite points,
        points off the photo) is not: the detected face is shown, the caption says why the file was not used.
        NoFaceError (one line) when no detector finds a usable face (naming the bad landmarks file too)."""
        from talkinghead.errors import NoFaceError
        from talkinghead.landmarks.rasterize import draw_landmarks
        from talkinghead.persons.shots import prepare_shots

        (photo,) = self.photos([photo], session)
        detector, problem = None, landmarks_problem(landmarks_file)
        if landmarks_file and problem is None:
            from talkinghead.media.image_files import read_image

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
                side_by_side: bool = False, session: str = LOCAL, speech=None, say: str | None = None,
                voice: str = "en") -> Job:
        """Animates the avatar at `avatar_path` (or a new one of `photos`) with the video `driving`, for
        `session` (stopped by `stop(session)` / `end_session(session)` with Stopped). `speech` (an audio file)
        or `say` (a sentence spoken by espeak-ng in `voice`) drives the mouth instead: over the driver's pose
        and eyes when there is a driving video, over the speech model's real head motion when there is none."""
        from talkinghead.media import video
        from talkinghead.persons.avatar import Avatar
        from talkinghead.inference.pipeline import animate_video

        say = (say or "").strip() or None
        if speech and say:
            raise TalkingHeadError("give a recording or a sentence, not both")
        if not driving and not speech and not say:
            raise TalkingHeadError("no driving video: upload or record one, use the bundled clip, or give speech "
                                   "or a sentence")
        if avatar_path is None and not photos:
            raise TalkingHeadError("no photo: upload photos of one person, or use the Mona Lisa")
        if driving:
            check_driver(video.probe_video(driving), driving, self.limits)  # before any expensive work
        if avatar_path is None:
            photos = self.photos(photos, session)
        s = self._session(session)
        with self._lock, self._job(s) as folder:
            track = audio_from = None
            if speech or say:
                track, audio_from = self._speech_track(speech, say, voice, driving, folder)
            name = None
            if avatar_path is not None:
                avatar = Avatar.load(avatar_path)
            else:
                avatar = self.make_avatar(photos, landmarks_file, fine_tune, steps)
                avatar_path = avatar.save(s.folder / "avatars" / folder.name /
                                          f"{_stem(photos[0])}_{avatar.mode}.avatar")
                name = f"{_stem(photos[0])}, {avatar.mode.upper()}, {len(photos)} photo{'s' * (len(photos) > 1)}"
            out = folder / f"{Path(avatar_path).stem}_talking.mp4"
            res = animate_video(avatar, driving or None, out, model=self.model, device=self.device,
                                absolute=absolute, crop_only=crop_only, sbs=side_by_side, warn=_warn, track=track,
                                audio_from=audio_from)
        summary = (f"{res.frames} frames, {res.size[0]}×{res.size[1]}, {res.fps:.3g} fps; "
                   f"{res.seconds_total:.1f} s ({res.frames_per_second:.1f} frames/s)")
        if avatar.mode == "ft" and name is not None:
            st = avatar.info["finetune"]
            summary += f"; fine-tuned {st['steps']} steps in {st['seconds']:.0f} s"
        return Job(video=out, avatar=Path(avatar_path), avatar_name=name, summary=summary)

    def _speech_track(self, speech, say, voice: str, driving, folder: Path):
        """(the DriverTrack of the speech or sentence, the audio file the output carries)."""
        from talkinghead import bundled
        from talkinghead.inference.pipeline import track_driver
        from talkinghead.persons.speech_model import load_speech_model
        from talkinghead.speech.drive import read_speech, speech_track

        if say:
            from talkinghead.speech.tts import synthesize

            speech = synthesize(say, folder / "say.wav", voice=voice or "en")
        heard = read_speech(speech, max_seconds=self.limits.driver_seconds + 1)
        if heard.seconds > self.limits.driver_seconds:
            raise TalkingHeadError(f"the speech is longer than {self.limits.driver_seconds:g} s: this server "
                                   "animates up to that; trim it")
        if self._speech_model is None:
            self._speech_model = load_speech_model(bundled.SPEECH_MODEL, self.device)
        driver = track_driver(driving, progress=False) if driving else None
        return speech_track(self._speech_model, heard, driver=driver), speech

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


def _keep_last(folders, n: int) -> None:
    """Removes all but the last `n` of the job folders `folders` (job0001, job0002, …, in any order)."""
    folders = sorted(folders, key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    for path in folders[:max(0, len(folders) - n)]:
        shutil.rmtree(path, ignore_errors=True)


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

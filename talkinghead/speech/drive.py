"""Speech → a driver track (DESIGN.md §2, "speech and text as drivers"; MakeItTalk's route): the renderer,
paste-back, audio muxing and the mark stay as they are for a video driver; only the landmarks come from elsewhere.

- Without a driving video: the head moves and the eyes blink as in a clip of the model's motion bank (real
  tracked motion of a training speaker, played forwards and backwards as long as the speech lasts), and the
  mouth and jaw follow the speech.
- With a driving video (dubbing): pose and eyes are the driver's, the mouth and jaw the speech's.

Either way the result is a `DriverTrack` that `inference.pipeline.animate_video` retargets onto the photo (relative
to its most neutral frame, so at silence the photo keeps its own mouth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.data.speech import lerp_frames
from talkinghead.errors import TalkingHeadError
from talkinghead.inference.pipeline import DriverTrack, fill_missing
from talkinghead.landmarks.mouth_motion import with_mouth
from talkinghead.media import audio
from talkinghead.persons.speech_model import SpeechModel

DEFAULT_FPS = 25.0
SKETCH_SIZE, SKETCH_SCALE = 256, 80.0  # a track without a video lives on this canvas (its side-by-side sketch)


class NoSpeechError(TalkingHeadError):
    """Audio in which no speech is found."""


@dataclass
class Speech:
    """One utterance at the audio's rate."""

    path: str
    wave: np.ndarray  # (N,) 16 kHz
    feats: np.ndarray  # (F, 41)
    active: np.ndarray  # (F,) bool
    phones: np.ndarray  # (F,) int: media/audio.PHONES

    @property
    def seconds(self) -> float:
        return len(self.wave) / audio.RATE


def read_speech(path, max_seconds: float | None = None) -> Speech:
    """The speech of an audio file or a video's audio track; NoSpeechError where there is none."""
    wave = audio.load_audio(path, max_seconds=max_seconds)
    active = audio.speech_activity(wave)
    if active.mean() < 0.02 or active.sum() < 10:
        raise NoSpeechError(f"no speech found in {path} (silence or noise only)")
    return Speech(str(path), wave, audio.features(wave), active, audio.phones(wave))


def at_frames(values: np.ndarray, n: int, fps: float) -> np.ndarray:
    """(F, ...) at 100 per second -> (n, ...) at `fps`, linearly interpolated."""
    return lerp_frames(values, np.arange(n) / fps * audio.FEATURE_RATE)[0]


PAUSE_RAMP_S = 0.12  # the mouth closes (and opens) over this long around the speech activity's edges


def speaking(active: np.ndarray) -> np.ndarray:
    """(F,) speech activity -> (F,) in [0, 1]: 1 while speaking, ramping to 0 over PAUSE_RAMP_S into a pause
    (centred: the lips part a little before the sound starts, as real lips do)."""
    from scipy.ndimage import uniform_filter1d

    return np.clip(uniform_filter1d(active.astype(np.float32), int(PAUSE_RAMP_S * audio.FEATURE_RATE), mode="nearest"),
                   0.0, 1.0)


MOUTH_SCALE = 1.5  # animate's articulation: the model's offsets, damped as any regression from sound is, × this


def rendered_offsets(model: SpeechModel, feats: np.ndarray, active: np.ndarray, phones: np.ndarray,
                     mouth_scale: float = MOUTH_SCALE, close_in_pauses: bool = True) -> np.ndarray:
    """(F, 37, 2) offsets at the audio's rate as animate draws them: the model's × mouth_scale, and with
    close_in_pauses × `speaking`, so that where the audio has no speech the mouth is the photo's own (the
    training clips' speakers often hold their lips apart between words, which the model learned)."""
    off = model.predict(feats, phones) * float(mouth_scale)  # (F, 37, 2)
    if close_in_pauses:
        off = off * speaking(active)[:, None, None]
    return off


def mouth_offsets(model: SpeechModel, speech: Speech, n: int, fps: float, mouth_scale: float = MOUTH_SCALE,
                  close_in_pauses: bool = True) -> np.ndarray:
    """(n, 37, 2) mouth and jaw offsets from rest, one per output frame (`rendered_offsets`)."""
    return at_frames(rendered_offsets(model, speech.feats, speech.active, speech.phones, mouth_scale,
                                      close_in_pauses), n, fps)


def loudness_offsets(model: SpeechModel, wave: np.ndarray, n: int, fps: float) -> np.ndarray:
    """The loudness baseline's offsets (n, 37, 2): the jaw opened by the speech's loudness alone."""
    loud = at_frames(audio.loudness(wave), n, fps)  # (n,)
    return (loud[:, None, None] * model.loudness_slope + model.loudness_offset).astype(np.float32)


def head_motion(model: SpeechModel, n: int, fps: float, seed: int = 0) -> np.ndarray:
    """(n, 68, 2) real head motion and blinks: clip `seed` of the motion bank (mod its size) resampled to `fps`,
    played forwards, then backwards, and so on."""
    pts, clip_fps = model.motion.clip(seed % len(model.motion))
    m = len(pts)
    t = np.arange(n) * clip_fps / fps  # positions in the clip's frames, then folded back and forth
    period = max(2 * (m - 1), 1)
    t = np.mod(t, period)
    t = np.where(t > m - 1, period - t, t)
    return lerp_frames(pts, t)[0]


def speech_track(model: SpeechModel, speech: Speech, fps: float = DEFAULT_FPS, driver: DriverTrack | None = None,
                 seed: int = 0, mouth_scale: float = MOUTH_SCALE, close_in_pauses: bool = True) -> DriverTrack:
    """The driver track of `speech`: over the bank's head motion, or over `driver`'s pose and eyes (its frames
    beyond the speech hold the speech's end: silence)."""
    if driver is None:
        n = max(1, int(round(speech.seconds * fps)))
        base = head_motion(model, n, fps, seed) * SKETCH_SCALE + SKETCH_SIZE / 2  # face frame -> a 256² canvas
        width = height = SKETCH_SIZE
        path = speech.path
    else:
        fps, n = driver.fps, len(driver.points)
        base = fill_missing(driver.points)
        width, height, path = driver.width, driver.height, driver.path
    offsets = mouth_offsets(model, speech, n, fps, mouth_scale, close_in_pauses)  # (n, 37, 2)
    pts = with_mouth(base, offsets)
    points = list(pts) if driver is None else [None if p is None else q for p, q in zip(driver.points, pts)]
    # no mouth floor: the rest is a speaker's most closed mouth, which may part the lips a little, and the photo's
    # mouth must stay as it is at silence
    return DriverTrack(path, None if driver is None else driver.indices, points, fps, width, height,
                       0.0 if driver is None else driver.seconds, mouth_floor=False)

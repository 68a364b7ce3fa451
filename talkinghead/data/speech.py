"""Speech training data (DESIGN.md §2, "speech and text as drivers"): clips with audio → one file per clip,
``OUT/speech/<video_id>.npz``, holding every frame's tracked 68 landmarks (the tracker and smoothing of
`animate`'s drivers, NaN where no face was found) beside the clip's audio features, speech activity and loudness
at 100 frames per second (media/audio.py). `preprocess --speech` writes them; `SpeechClips` turns them into
(features, mouth-and-jaw offsets, mask) sequences at the audio's rate for `train --preset speech` and
`evaluate --audio`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.console import log, progress as progress_bar
from talkinghead.errors import TalkingHeadError
from talkinghead.media import audio

SPEECH_DIR = "speech"
MANIFEST = "speech.json"


def _track(rec) -> tuple[np.ndarray, float]:
    """(T, 68, 2) smoothed landmarks of the record's frames (NaN where no face) and the frame rate."""
    from talkinghead.landmarks.cascade import video_cascade
    from talkinghead.landmarks.track import VideoLandmarkTracker
    from talkinghead.media import video

    info = video.probe_video(rec.path)
    tracker = VideoLandmarkTracker(video_cascade(), fps=info.fps)
    frames = video.iter_frames(rec.path, start=rec.frame_start,
                               max_frames=None if rec.frame_stop is None else rec.frame_stop - rec.frame_start)
    faces = tracker.smooth_offline(list(tracker.track_iter(frames, smooth=False)))
    pts = np.full((len(faces), 68, 2), np.nan, np.float32)
    for i, f in enumerate(faces):
        if f is not None:
            pts[i] = f.points
    return pts, float(info.fps)


def process_clip(job) -> dict:
    """One clip -> its npz (in a worker); returns {"id", "frames", "seconds"} or {"id", "skipped": reason}."""
    rec, out_dir = job
    dest = Path(out_dir) / f"{rec.video_id}.npz"
    try:
        pts, fps = _track(rec)
        wave = audio.load_audio(rec.path)
        wave = wave[int(rec.frame_start / fps * audio.RATE):]
        if len(wave) < audio.RATE // 2 or len(pts) < 10:
            return {"id": rec.video_id, "skipped": "shorter than half a second"}
        feats = audio.features(wave)
        vad = audio.speech_activity(wave)
        phones = audio.phones(wave)
        if vad.mean() < 0.05:
            return {"id": rec.video_id, "skipped": "no speech in its audio"}
        if np.isnan(pts[:, 0, 0]).mean() > 0.5:
            return {"id": rec.video_id, "skipped": "no face in most frames"}
        tmp = dest.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, points=pts, fps=np.float32(fps), feats=feats.astype(np.float16), vad=vad, phones=phones,
                            loudness=audio.loudness(wave).astype(np.float16), identity=np.str_(rec.identity),
                            split=np.str_(rec.split), path=np.str_(rec.path))
        tmp.replace(dest)
        return {"id": rec.video_id, "frames": len(pts), "seconds": len(wave) / audio.RATE}
    except TalkingHeadError as e:
        return {"id": rec.video_id, "skipped": str(e)}


def build_speech_set(input, out, split=None, workers: int = 1, progress: bool = True) -> dict:
    """Every clip with audio under `input` (a folder or a VoxCeleb tree; `split` as preprocess's) that is not
    in OUT/speech yet -> its npz; returns {"clips", "skipped", "seconds"} and writes OUT/speech.json."""
    from talkinghead.data.sources import apply_split, find_videos
    from talkinghead.data.workers import run_pooled
    from talkinghead.media import video

    t0 = time.time()
    out = Path(out)
    dest = out / SPEECH_DIR
    dest.mkdir(parents=True, exist_ok=True)
    records = find_videos(input)
    if split is not None:
        records = apply_split(records, split, root=input)
    todo = []
    for r in records:
        if (dest / f"{r.video_id}.npz").is_file():
            continue
        try:
            if not video.probe_video(r.path).has_audio:
                continue
        except TalkingHeadError:
            continue
        todo.append((r, str(dest)))
    skipped = {}
    with progress_bar(len(todo), "speech clips", "clip", progress) as bar:
        if workers > 1 and len(todo) > 1:
            results = run_pooled(process_clip, todo, workers,
                                 lambda job: {"id": job[0].video_id, "skipped": "its worker died"})
        else:
            results = map(process_clip, todo)
        for res in results:
            if "skipped" in res:
                skipped[res["id"]] = res["skipped"]
                log.info("speech: skipped %s: %s", res["id"], res["skipped"])
            bar.update(1)
    clips = sorted(p.stem for p in dest.glob("*.npz") if not p.name.endswith(".tmp.npz"))
    if not clips:
        raise TalkingHeadError(f"no clip with speech and a face under {input}")
    summary = {"clips": len(clips), "skipped": skipped, "seconds": round(time.time() - t0, 1)}
    (out / MANIFEST).write_text(json.dumps({"input": str(input), "clips": clips, "skipped": skipped}, indent=2))
    return summary


@dataclass
class SpeechClip:
    """One clip at the audio's rate (100 frames per second)."""

    video_id: str
    identity: str
    split: str
    feats: np.ndarray  # (F, 41) float32
    offsets: np.ndarray  # (F, 37, 2) float32: mouth and jaw from rest, face frame
    mask: np.ndarray  # (F,) bool: a tracked face on both neighbouring video frames
    vad: np.ndarray  # (F,) bool
    loudness: np.ndarray  # (F,) float32
    rest: np.ndarray  # (68, 2) the clip's mouth at rest, face frame
    face: np.ndarray  # (T, 68, 2) face-frame landmarks at the video's rate (NaN where none)
    points: np.ndarray  # (T, 68, 2) the tracked landmarks in pixels (NaN where none)
    fps: float
    path: str = ""  # the clip's video file
    phones: np.ndarray | None = None  # (F,) int: media/audio.PHONES indices
    _inputs: dict = field(default_factory=dict, repr=False, compare=False)  # clip_inputs, made once


def lerp_frames(values: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, ...) values at fractional frame positions t (M,), linearly interpolated and held at the ends ->
    ((M, ...) float32, (M,) i0, (M,) i1: the frames each position lies between)."""
    t = np.clip(np.asarray(t, np.float64), 0, len(values) - 1)
    i0 = np.floor(t).astype(int)
    i1 = np.minimum(i0 + 1, len(values) - 1)
    w = (t - i0).reshape((-1,) + (1,) * (np.ndim(values) - 1))
    return ((1 - w) * values[i0] + w * values[i1]).astype(np.float32), i0, i1


def _at_audio_rate(values: np.ndarray, found: np.ndarray, fps: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, ...) per video frame -> (n, ...) linearly interpolated at 10-ms steps, and where both frames had a face."""
    t = np.arange(n) * audio.HOP_S * fps
    out, i0, i1 = lerp_frames(np.nan_to_num(values), t)
    return out, found[i0] & found[i1] & (t <= len(values) - 1)


def load_clip(path) -> SpeechClip:
    from talkinghead.landmarks.mouth_motion import displacements, rest_shape, to_face_frame

    z = np.load(path)
    pts, fps = z["points"].astype(np.float64), float(z["fps"])
    found = ~np.isnan(pts).any(axis=(1, 2))
    face = np.full_like(pts, np.nan)
    if found.any():
        face[found] = to_face_frame(pts[found])[0]
    rest = rest_shape(face[found]) if found.any() else np.zeros((68, 2))
    offs = np.zeros((len(pts), 37, 2), np.float32)
    offs[found] = displacements(face[found], rest)
    feats = z["feats"].astype(np.float32)
    n = min(len(feats), int((len(pts) - 1) / fps / audio.HOP_S) + 1)
    offsets, mask = _at_audio_rate(offs, found, fps, n)
    return SpeechClip(Path(path).stem, str(z["identity"]), str(z["split"]), feats[:n], offsets, mask,
                      z["vad"][:n].astype(bool), z["loudness"][:n].astype(np.float32), rest, face,
                      pts.astype(np.float32), fps, str(z["path"]) if "path" in z else "",
                      z["phones"][:n].astype(np.int64) if "phones" in z else np.full(n, audio.PHONES.index("SIL")))


def load_clips(root, split: str | None = None) -> list[SpeechClip]:
    """The clips of a set made by `preprocess --speech` (all, or one split's)."""
    folder = Path(root) / SPEECH_DIR
    if not folder.is_dir():
        raise TalkingHeadError(f"{root} holds no speech clips (no {SPEECH_DIR}/ folder); run "
                               f"`talkinghead preprocess VIDEOS --out {root} --speech` first")
    clips = [load_clip(p) for p in sorted(folder.glob("*.npz")) if not p.name.endswith(".tmp.npz")]
    return [c for c in clips if split is None or c.split == split]


def clip_inputs(clip: SpeechClip, with_phones: bool) -> np.ndarray:
    """(F, C) the model's inputs of a clip (media/audio.model_inputs: its features, and with_phones its phones
    one-hot), made once per clip and kept: every training window reads them."""
    if with_phones not in clip._inputs:
        clip._inputs[with_phones] = audio.model_inputs(clip.feats, clip.phones if with_phones else None)
    return clip._inputs[with_phones]


def sample_windows(clips: list[SpeechClip], batch: int, frames: int, rng: np.random.Generator, tempo: float = 0.0,
                   with_phones: bool = False):
    """A batch of `frames`-long windows, clips drawn by length: ((B, C, L) inputs (`clip_inputs`), (B, L, 37, 2)
    offsets, (B, L) mask), clips shorter than the window padded with mask 0. tempo > 0: each window is read from a
    stretch of (1 ± tempo) × L frames, inputs and offsets resampled together (faster and slower speech)."""
    lengths = np.array([len(c.feats) for c in clips], np.float64)
    picks = rng.choice(len(clips), size=batch, p=lengths / lengths.sum())
    width = clips[0].feats.shape[1] + (audio.NUM_PHONES if with_phones else 0)
    x = np.zeros((batch, width, frames), np.float32)
    y = np.zeros((batch, frames, 37, 2), np.float32)
    m = np.zeros((batch, frames), bool)
    for b, i in enumerate(picks):
        c = clips[i]
        inputs = clip_inputs(c, with_phones)  # (F, C)
        rate = float(np.exp(rng.uniform(np.log(1 - tempo), np.log(1 + tempo)))) if tempo > 0 else 1.0
        span = int(np.ceil(frames * rate))
        s = int(rng.integers(0, max(1, len(c.feats) - span + 1)))
        n = min(frames, int((len(c.feats) - s) / rate))
        if rate == 1.0:
            idx = s + np.arange(n)
            x[b, :, :n], y[b, :n], m[b, :n] = inputs[idx].T, c.offsets[idx], c.mask[idx]
            continue
        t = s + np.arange(n) * rate  # fractional source frames
        xs, i0, i1 = lerp_frames(inputs, t)
        x[b, :, :n], y[b, :n] = xs.T, lerp_frames(c.offsets, t)[0]
        m[b, :n] = c.mask[i0] & c.mask[i1]
    return x, y, m


def fit_loudness(clips: list[SpeechClip]) -> tuple[np.ndarray, np.ndarray]:
    """The loudness baseline: per coordinate, offsets ≈ slope × loudness + offset (least squares over every
    tracked frame of the clips) -> ((37, 2), (37, 2))."""
    xs = np.concatenate([c.loudness[c.mask] for c in clips])
    ys = np.concatenate([c.offsets[c.mask] for c in clips]).reshape(len(xs), -1)
    a = np.stack([xs, np.ones_like(xs)], axis=1)
    coef, *_ = np.linalg.lstsq(a, ys, rcond=None)  # (2, 74)
    return coef[0].reshape(37, 2).astype(np.float32), coef[1].reshape(37, 2).astype(np.float32)


def motion_bank_clips(clips: list[SpeechClip], max_clips: int = 8, max_seconds: float = 20.0,
                      min_seconds: float = 6.0):
    """Real head motion and blinks for speech without a driver: up to `max_clips` clips of distinct people,
    face found in every frame and at least one blink (eye aspect ratio below 0.75 × the clip's median),
    longest first; each as (T, 68, 2) points in the clip's own face frame (its median pose → the mean shape),
    so the head still moves. Returns (points (N, 68, 2), clips (C, 2) [start, length], fps (C,))."""
    from talkinghead.landmarks.mouth_motion import STABLE, canonical_shape
    from talkinghead.landmarks.openness import eyes_open
    from talkinghead.landmarks.retarget import apply_transform, procrustes

    canon = canonical_shape()
    whole = [c for c in clips if not np.isnan(c.points).any()]

    def blinks(c) -> bool:
        ear = eyes_open(c.points)
        return bool((ear < 0.75 * np.median(ear)).any())

    cands = [c for c in whole if len(c.points) / c.fps >= min_seconds and blinks(c)]
    if not cands:  # a small set (tests): the clips with a face throughout, blink or not
        log.warning("speech: no clip of %.0f s with a blink for the motion bank; taking the longest ones", min_seconds)
        cands = whole
    cands = [(len(c.points) / c.fps, c) for c in cands]
    cands.sort(key=lambda t: -t[0])
    chosen, people = [], set()
    for _, c in cands:
        if c.identity in people:
            continue
        people.add(c.identity)
        chosen.append(c)
        if len(chosen) == max_clips:
            break
    if not chosen:
        raise TalkingHeadError("no training clip has a face in every frame: no motion bank")
    points, spans, fps = [], [], []
    start = 0
    for c in chosen:
        n = min(len(c.points), int(max_seconds * c.fps))
        p = c.points[:n].astype(np.float64)
        m = procrustes(np.median(p[:, STABLE], axis=0), canon[STABLE])
        points.append(apply_transform(m, p).astype(np.float32))
        spans.append((start, n))
        fps.append(c.fps)
        start += n
    return np.concatenate(points), np.array(spans, np.int64), np.array(fps, np.float32)

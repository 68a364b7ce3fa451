"""`talkinghead evaluate --audio`: how well speech drives the mouth, on clips with audio (DESIGN.md §2, "speech and
text as drivers"; the LMD of lip-sync papers). For every evaluation clip, the mouth and jaw offsets from rest that
each method predicts from the clip's audio are scored against the clip's tracked ones (train/speech.mouth_scores):
LMD (the 20 lip points, head pose removed, inter-ocular units), the correlation of the inner-lip gap and the L1
of the 37 offsets; and whether the mouth closes in the pauses (the mean inner-lip gap where the audio has speech
and where it has none). Methods, on the same frames:
- speech: the speech model;
- rendered: the speech model as `animate` draws it (its offsets × speech.drive.MOUTH_SCALE, closed in pauses);
- loudness: the jaw opened by the speech's loudness alone (a line fitted on the training clips);
- still (first frame): the clip's first tracked mouth, held;
- still (rest): the clip's mouth at rest, held.
The report also lists, per phone pocketsphinx hears, the tracked and the model's mean inner-lip gap.
`--videos N` also renders N clips for a look: the real clip | its first frame animated with the clip's own pose
and eyes and the mouth from its audio | the difference, with the clip's audio.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from talkinghead.console import log, progress as progress_bar
from talkinghead.train.run_folder import RunFolder
from talkinghead.train.speech import lip_gap, mouth_scores, pooled

METHODS = ("speech", "rendered", "loudness", "still_first", "still_rest")


def method_offsets(name: str, clip, model) -> np.ndarray:
    """(F, 37, 2) offsets of `clip` by method `name`."""
    if name == "speech":
        return model.predict(clip.feats, clip.phones)
    if name == "rendered":
        from talkinghead.speech.drive import rendered_offsets

        return rendered_offsets(model, clip.feats, clip.vad, clip.phones)
    if name == "loudness":
        return (clip.loudness[:, None, None] * model.loudness_slope + model.loudness_offset).astype(np.float32)
    if name == "still_first":
        return np.repeat(clip.offsets[np.flatnonzero(clip.mask)[:1]], len(clip.offsets), axis=0)
    if name == "still_rest":
        return np.zeros_like(clip.offsets)
    raise ValueError(f"unknown method {name!r}")


def pause_gaps(offsets: np.ndarray, clip) -> dict:
    """The mean inner-lip gap (inter-ocular units) on tracked frames with and without speech."""
    g = lip_gap(offsets, clip.rest)
    on, off = clip.mask & clip.vad, clip.mask & ~clip.vad
    return {"gap_speech": float(g[on].mean()) if on.any() else float("nan"),
            "gap_pause": float(g[off].mean()) if off.any() else float("nan")}


def speech_data(data, cache: Path, split, progress: bool) -> Path:
    """A folder of speech clips: `data` itself when `preprocess --speech` made it, else built into `cache`."""
    from talkinghead.data.speech import SPEECH_DIR, build_speech_set

    if (Path(data) / SPEECH_DIR).is_dir():
        return Path(data)
    build_speech_set(data, cache, split=split, workers=1, progress=progress)
    return cache


def evaluate_speech(data, out, split=None, speech_model=None, model=None, videos: int = 0, device: str = "cpu",
                    cache=None, progress: bool = True) -> dict:
    """Scores every method on the evaluation clips (the split's val clips; every clip without a split) ->
    REPORT_DIR/speech.jsonl (appended), speech.md and, with `videos`, videos/*.mp4. Returns the pooled scores."""
    from talkinghead import bundled
    from talkinghead.data.speech import load_clips
    from talkinghead.errors import TalkingHeadError
    from talkinghead.persons.speech_model import load_speech_model

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = speech_data(data, Path(cache) if cache else out / "cache", split, progress)
    clips = load_clips(root)
    if split is not None or any(c.split == "val" for c in clips):
        clips = [c for c in clips if c.split == "val"]
    clips = [c for c in clips if c.mask.sum() > 10]
    if not clips:
        raise TalkingHeadError(f"no evaluation clip with speech and a face in {data}")
    sm = load_speech_model(speech_model or bundled.SPEECH_MODEL, device)
    rows, per_method = [], {m: [] for m in METHODS}
    phone_gaps = []  # (phone, tracked gap, the model's gap) per tracked frame
    with progress_bar(len(clips), "speech clips", "clip", progress) as bar:
        for c in clips:
            for m in METHODS:
                off = method_offsets(m, c, sm)
                if m == "speech" and c.phones is not None:
                    phone_gaps.append(np.stack([c.phones[c.mask], lip_gap(c.offsets, c.rest)[c.mask],
                                                lip_gap(off, c.rest)[c.mask]], axis=1))
                s = {**mouth_scores(off, c), **pause_gaps(off, c)}
                per_method[m].append(s)
                rows.append({"kind": "speech", "video": c.video_id, "identity": c.identity, "method": m, **s})
            rows.append({"kind": "speech", "video": c.video_id, "identity": c.identity, "method": "real",
                         **pause_gaps(c.offsets, c), "frames": int(c.mask.sum())})
            bar.update(1)
    summary = {m: pooled(v) | {k: float(np.nanmean([s[k] for s in v])) for k in ("gap_speech", "gap_pause")}
               for m, v in per_method.items()}
    real = [r for r in rows if r["method"] == "real"]
    summary["real"] = {k: float(np.nanmean([r[k] for r in real])) for k in ("gap_speech", "gap_pause")}
    run = RunFolder(out)
    run.append_jsonl("speech.jsonl", rows)
    made = []
    if videos:
        made = render_comparisons(clips[:videos], sm, out / "videos", model=model, device=device, progress=progress)
    report = speech_report(summary, rows, sm, len(clips), made, by_phone(phone_gaps))
    run.write_text("speech.md", report)
    run.write_text("speech_summary.json", json.dumps(summary, indent=2))
    log.info("evaluate --audio: %d clips in %.0f s", len(clips), time.time() - t0)
    return summary


def by_phone(phone_gaps: list[np.ndarray], min_frames: int = 30) -> list[tuple[str, int, float, float]]:
    """(phone, frames, tracked gap, the model's gap) for every phone heard on at least `min_frames` frames, the
    model's largest under-opening first."""
    from talkinghead.media.audio import PHONES

    if not phone_gaps:
        return []
    a = np.concatenate(phone_gaps)
    out = []
    for i, name in enumerate(PHONES):
        k = a[:, 0] == i
        if k.sum() >= min_frames:
            out.append((name, int(k.sum()), float(a[k, 1].mean()), float(a[k, 2].mean())))
    return sorted(out, key=lambda r: r[3] - r[2])


def speech_report(summary: dict, rows: list[dict], sm, num_clips: int, videos: list[Path],
                  phones: list | None = None) -> str:
    from talkinghead.speech.drive import MOUTH_SCALE

    names = {"speech": "speech model", "rendered": f"as animate draws it (× {MOUTH_SCALE:g}, closed in pauses)",
             "loudness": "loudness → jaw", "still_first": "still (first frame)",
             "still_rest": "still (rest)"}
    lines = [f"# Speech → mouth ({num_clips} clips, {summary['speech']['frames']} frames at 100/s)", "",
             f"Model: {sm.path} (step {sm.info.get('step', '?')}, trained on {sm.info.get('train_seconds', '?')} s "
             f"of {sm.info.get('train_people', '?')} people).", "",
             "LMD: the 20 lip points' mean distance to the tracked ones, head pose removed, in inter-ocular units "
             "(lower is better); LMD of the motion: the same with each sequence's mean over the clip taken out "
             "(what relative retargeting carries onto a photo); r: the correlation of the inner-lip gap with the tracked one; gap with speech / "
             "in pauses: the mean inner-lip gap where the audio has speech and where it has none.", "",
             "| method | LMD | LMD of the motion | r (lip gap) | L1 (37 points) | gap with speech | gap in pauses |",
             "|---|---|---|---|---|---|---|"]
    for m in METHODS:
        s = summary[m]
        lines.append(f"| {names[m]} | {s['lmd']:.4f} | {s['lmd_motion']:.4f} | {s['gap_corr']:.3f} | {s['l1']:.4f} | {s['gap_speech']:.3f} "
                     f"| {s['gap_pause']:.3f} |")
    r = summary["real"]
    lines.append(f"| tracked (real) | – | – | – | – | {r['gap_speech']:.3f} | {r['gap_pause']:.3f} |")
    lines += ["", "## Per clip (speech model; loudness)", "", "| clip | LMD | r | LMD loudness | r loudness |",
              "|---|---|---|---|---|"]
    by = {(x["video"], x["method"]): x for x in rows}
    for vid in dict.fromkeys(x["video"] for x in rows):
        a, b = by[(vid, "speech")], by[(vid, "loudness")]
        lines.append(f"| {vid} | {a['lmd']:.4f} | {a['gap_corr']:.2f} | {b['lmd']:.4f} | {b['gap_corr']:.2f} |")
    if phones:
        lines += ["", "## By phone (pocketsphinx's, speech model)", "",
                  "The mean inner-lip gap on the frames of each phone: the tracked mouth's and the model's "
                  "(largest under-opening first).", "", "| phone | frames | tracked | model | model − tracked |",
                  "|---|---|---|---|---|"]
        lines += [f"| {n} | {k} | {g:.3f} | {q:.3f} | {q - g:+.3f} |" for n, k, g, q in phones]
    if videos:
        lines += ["", "Videos (real | animated from its audio with its own pose and eyes | difference): "
                  + ", ".join(f"`videos/{p.name}`" for p in videos)]
    return "\n".join(lines) + "\n"


def render_comparisons(clips, sm, folder: Path, model=None, device: str = "cpu", progress: bool = True) -> list[Path]:
    """For each clip: real | its first frame animated by its audio (pose and eyes from the clip) | |difference|,
    the clip decoded twice (its first tracked frame, then frame by frame beside the render) rather than held."""
    import itertools

    from talkinghead import bundled
    from talkinghead.inference.animator import Animator
    from talkinghead.inference.pipeline import DriverTrack, driving_targets, render_stream
    from talkinghead.media import video, video_writer
    from talkinghead.persons.avatar import make_ff_avatar
    from talkinghead.persons.checkpoint import LoadedModel, resolve_model
    from talkinghead.speech.drive import read_speech, speech_track

    folder.mkdir(parents=True, exist_ok=True)
    lm = LoadedModel.load(resolve_model(model) if model else bundled.MODEL, device, with_discriminator=False)
    made = []
    for c in clips:
        path = c.path
        if not path or not Path(path).is_file():
            log.warning("evaluate --audio: the video of %s is not found; no comparison video", c.video_id)
            continue
        first = int(np.flatnonzero(c.mask)[0] * c.fps / 100) if c.mask.any() else 0
        photo = next(itertools.islice(video.iter_frames(path), first, None))
        avatar = make_ff_avatar([photo], lm, shots=1, device=device)
        driver = DriverTrack(path, None, [None if np.isnan(p).any() else p for p in c.points], c.fps,
                             photo.shape[1], photo.shape[0])
        track = speech_track(sm, read_speech(path), driver=driver)
        targets = driving_targets(avatar, track)
        animator = Animator(avatar, model=lm, device=device)
        dest = folder / f"{c.video_id}.mp4"
        with video_writer.VideoWriter(dest, c.fps, audio_from=path) as w:
            frames = video.iter_frames(path, max_frames=len(c.points))
            for real, crop in zip(frames, render_stream(animator, targets)):
                fake = avatar.crop.paste_back(avatar.source_image, crop)
                diff = np.clip(np.abs(real.astype(np.int16) - fake.astype(np.int16)) * 3, 0, 255).astype(np.uint8)
                w.write(_at_height(np.concatenate([real, fake, diff], axis=1), 360))
        made.append(dest)
    return made


def _at_height(image: np.ndarray, h: int) -> np.ndarray:
    from PIL import Image

    if image.shape[0] <= h:
        return image
    w = int(round(image.shape[1] * h / image.shape[0])) // 2 * 2
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))

"""Speech and text as drivers: audio features, the speech → mouth network and its training, the mapping onto a
photo's face, and the command line's errors (DESIGN.md §2)."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli, synthetic_face
from talkinghead.config import speech_tiny
from talkinghead.media import audio

RATE = audio.RATE


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def syllables(seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    """A voiced, speech-like signal: a 140 Hz buzz with formants, on for 200 ms, off for 150 ms."""
    t = np.arange(int(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 25))
    env = ((t % 0.35) < 0.2).astype(float)
    return (0.3 * buzz * env / np.abs(buzz).max()).astype(np.float32)


# ---- audio -------------------------------------------------------------------------------------------------

def test_features_of_a_known_tone(tmp_path):
    t = np.arange(22050) / 22050  # one second at 22.05 kHz
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    w = audio.load_audio(write_wav(tmp_path / "tone.wav", tone, 22050))  # resampled to 16 kHz on the way in
    assert abs(len(w) - RATE) < 200 and abs(np.abs(w).max() - 0.5) < 0.05
    f = audio.features(w)
    assert f.shape == (audio.num_feature_frames(len(w)), audio.NUM_FEATURES)
    assert np.isfinite(f).all()
    from python_speech_features import logfbank

    mel = logfbank(w, samplerate=RATE, nfilt=audio.NUM_MELS, nfft=512, lowfreq=60, highfreq=7600)
    # the 1 kHz tone sits in one band: the loudest band is the one whose centre is nearest 1 kHz
    from python_speech_features.base import get_filterbanks

    fb = get_filterbanks(audio.NUM_MELS, 512, RATE, 60, 7600)
    centres = (fb.argmax(axis=1)) * RATE / 512
    assert abs(centres[mel.mean(axis=0).argmax()] - 1000) < 120
    assert not audio.speech_activity(np.zeros(RATE, np.float32)).any()  # digital silence is no speech


def test_phones_of_speech():
    """espeak-ng says a sentence; pocketsphinx hears phones where it speaks and silence around it."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("no espeak-ng (scripts/setup.sh installs it as root)")
    import tempfile

    from talkinghead.speech.tts import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        w = audio.load_audio(synthesize("Hello, my name is Mona.", Path(tmp) / "x.wav"))
    ph = audio.phones(w)
    assert ph.shape == (audio.num_feature_frames(len(w)),)
    sil = audio.PHONES.index("SIL")
    spoken = ph != sil
    active = audio.speech_activity(w)
    assert (spoken == active).mean() > 0.7 and len(set(ph[spoken])) >= 6


def test_speech_activity_follows_syllables():
    s = syllables(2.1)
    act = audio.speech_activity(s)
    on = np.array([(f * 0.01) % 0.35 < 0.2 for f in range(len(act))])
    assert (act == on).mean() > 0.8


def test_loudness_is_in_unit_range():
    s = syllables(1.0)
    loud = audio.loudness(s)
    assert loud.min() >= 0 and loud.max() <= 1 and loud[5] > 0.8 and loud[28] < 0.2


def test_bad_audio_files_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all" * 100)
    for p in (empty, junk, tmp_path / "missing.wav"):
        with pytest.raises(audio.AudioError) as e:
            audio.load_audio(p)
        assert "\n" not in str(e.value)


# ---- the network, the mapping -------------------------------------------------------------------------------

def test_network_shapes_and_gradients():
    from talkinghead.nn.speech import SpeechToMouth

    cfg = speech_tiny()
    net = SpeechToMouth(cfg)
    assert net.num_inputs == audio.NUM_FEATURES + audio.NUM_PHONES  # the features, then the phones one-hot
    x = torch.randn(2, net.num_inputs, 37, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 37, 37, 2)
    assert torch.all(y == 0)  # starts at the rest mouth
    torch.nn.init.normal_(net.out.weight, std=0.1)
    net(x).pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert x.grad.abs().sum() > 0


def test_context_is_about_half_a_second():
    from talkinghead.config import speech
    from talkinghead.nn.speech import SpeechToMouth

    cfg = speech()
    net = SpeechToMouth(cfg).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    x = torch.zeros(1, net.num_inputs, 201, requires_grad=True)
    net(x)[0, 100].sum().backward()
    seen = np.flatnonzero(x.grad[0].abs().sum(0).numpy() > 0)
    assert seen.max() - seen.min() + 1 == cfg.context_frames
    assert 0.35 <= cfg.context_frames / audio.FEATURE_RATE <= 0.6


def test_with_mouth_keeps_the_pose_and_moves_only_mouth_and_jaw():
    from talkinghead.landmarks.mouth_motion import MOUTH_JAW, to_face_frame, with_mouth

    face = synthetic_face(120, 140)
    rot = np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    seq = np.stack([face, face @ rot.T * 1.3 + 40])  # (2, 68, 2): the same face, turned and scaled
    disp = np.zeros((2, 37, 2), np.float32)
    disp[:, 17:, 1] = 0.05  # the lips 5% of the eye distance lower
    out = with_mouth(seq, disp)
    keep = np.setdiff1d(np.arange(68), MOUTH_JAW)
    assert np.allclose(out[:, keep], seq[:, keep], atol=1e-3)
    f_out, _ = to_face_frame(out)
    f_in, _ = to_face_frame(seq)
    assert np.allclose(f_out[:, 48:68, 1] - f_in[:, 48:68, 1], 0.05, atol=1e-3)  # the same in either pose


def _bank_model(points: np.ndarray, cfg=None):
    from talkinghead.nn.speech import SpeechToMouth
    from talkinghead.persons.speech_model import MotionBank, SpeechModel

    cfg = cfg or speech_tiny()
    bank = MotionBank(np.repeat(points[None], 5, 0).astype(np.float32), np.array([[0, 5]]), np.array([25.0]))
    return SpeechModel(cfg, SpeechToMouth(cfg).eval(), bank, np.zeros((37, 2), np.float32),
                       np.zeros((37, 2), np.float32))


def test_silence_keeps_the_photos_face_shape():
    """Offsets 0 (the network's start) over a still head: the retargeted landmarks are the photo's own."""
    from talkinghead.landmarks.mouth_motion import canonical_shape
    from talkinghead.landmarks.retarget import neutral_index, retarget
    from talkinghead.speech.drive import Speech, speech_track

    model = _bank_model(canonical_shape())
    s = syllables(1.0)
    speech = Speech("x.wav", s, audio.features(s), audio.speech_activity(s), audio.phones(s))
    track = speech_track(model, speech, fps=25)
    seq = np.stack(track.points)
    assert seq.shape == (25, 68, 2)
    photo = synthetic_face(90, 130, cx=70, cy=90)  # another face shape than the bank's
    out = retarget(photo, seq, seq[neutral_index(seq)], mouth_floor=track.mouth_floor)
    assert np.abs(out - photo).max() < 1e-2


def test_head_motion_plays_back_and_forth():
    from talkinghead.speech.drive import head_motion

    pts = np.stack([synthetic_face(100, 120, cx=100 + i) for i in range(5)])
    model = _bank_model(pts[0])
    model.motion.points = pts.astype(np.float32)
    x = head_motion(model, 12, 25.0)[:, 30, 0]  # the nose tip's x: 0 1 2 3 4 3 2 1 0 1 2 3 (+ its place)
    assert np.allclose(x - x[0], [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3], atol=1e-4)


# ---- training -----------------------------------------------------------------------------------------------

def _speech_set(root: Path, clips=3, frames=60) -> Path:
    """A speech set by hand (data/speech.py's npz): a face whose mouth opens with the loudness of syllables."""
    folder = root / "speech"
    folder.mkdir(parents=True)
    for k in range(clips):
        s = syllables(frames / 25)
        loud = audio.loudness(s)
        pts = np.stack([synthetic_face(100, 120, mouth_open=0.3 * loud[min(int(i * 4), len(loud) - 1)])
                        for i in range(frames)]).astype(np.float32)
        np.savez_compressed(folder / f"v{k}.npz", points=pts, fps=np.float32(25), feats=audio.features(s).astype(np.float16), phones=audio.phones(s),
                            vad=audio.speech_activity(s), loudness=loud.astype(np.float16), identity=np.str_(f"p{k}"),
                            split=np.str_("val" if k == clips - 1 else "train"), path=np.str_(""))
    return root


def test_train_resume_round_trip(tmp_path, capsys):
    """Two steps, a checkpoint, a new process resuming to four = four steps straight; the CLI's --resume."""
    from talkinghead.persons.speech_model import load_speech_model
    from talkinghead.train.speech import SpeechTrainer

    data = _speech_set(tmp_path / "data")
    rc, _, err = run_cli(["train", "--preset", "speech_tiny", "--data", str(data), "--no-progress", "--run",
                          str(tmp_path / "a"), "--steps", "4"], capsys)
    assert rc == 0, err
    cfg = speech_tiny()
    cfg.steps = 4
    half = SpeechTrainer(cfg, tmp_path / "b", data, progress=False)
    half.train_step(), half.train_step()
    half.save()
    rc, _, err = run_cli(["train", "--run", str(tmp_path / "b"), "--resume", "--no-progress"], capsys)
    assert rc == 0, err
    a = load_speech_model(tmp_path / "a" / "model.safetensors")
    b = load_speech_model(tmp_path / "b" / "model.safetensors")
    assert a.info["step"] == b.info["step"] == 4
    for (ka, va), (kb, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert ka == kb and torch.allclose(va, vb, atol=1e-6), ka
    assert len(a.motion) >= 1 and "val_lmd" in a.info
    rc, _, err = run_cli(["train", "--run", str(tmp_path / "b"), "--resume", "--steps", "6", "--no-progress"], capsys)
    assert rc == 0 and load_speech_model(tmp_path / "b" / "model.safetensors").info["step"] == 6, err


def test_training_learns_the_mouth_from_the_audio(tmp_path):
    from talkinghead.data.speech import load_clips
    from talkinghead.train.speech import SpeechTrainer, mouth_scores

    data = _speech_set(tmp_path / "data", clips=4, frames=100)
    cfg = speech_tiny()
    cfg.steps, cfg.batch_size, cfg.window_s, cfg.lr, cfg.checkpoint_every = 150, 8, 1.0, 3e-3, 1000
    trainer = SpeechTrainer(cfg, tmp_path / "run", data, progress=False)
    clip = load_clips(data, "val")[0]
    before = mouth_scores(trainer.predict(clip), clip)["lmd"]
    for _ in range(cfg.steps):
        trainer.train_step()
    after = mouth_scores(trainer.predict(clip), clip)
    assert after["lmd"] < 0.7 * before and after["gap_corr"] > 0.5


# ---- the command line ---------------------------------------------------------------------------------------

def test_animate_speech_errors_are_one_line(tmp_path, capsys):
    photo = Path(__file__).resolve().parents[1] / "talkinghead" / "assets" / "monalisa.jpg"
    silent = write_wav(tmp_path / "silent.wav", np.zeros(RATE, np.float32))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    out = tmp_path / "o.mp4"
    cases = [
        (["--audio", str(silent)], "no speech"),
        (["--audio", str(empty)], "empty"),
        (["--say", "?!  …  123"], "no letters"),
        (["--say", "hello", "--audio", str(silent)], "not both"),
        (["--voice", "fr"], "--voice"),
    ]
    for extra, words in cases:
        rc, _, err = run_cli(["animate", str(photo), "-o", str(out), "--no-progress", *extra], capsys)
        assert rc == 1 and len(err) == 1 and words in err[0], (extra, err)
        assert not out.exists()


def test_a_video_without_audio_is_a_one_line_error(tmp_path, capsys):
    from talkinghead.media.video_writer import VideoWriter

    clip = tmp_path / "mute.mp4"
    with VideoWriter(clip, 25) as w:
        for _ in range(5):
            w.write(np.zeros((64, 64, 3), np.uint8))
    photo = Path(__file__).resolve().parents[1] / "talkinghead" / "assets" / "monalisa.jpg"
    rc, _, err = run_cli(["animate", str(photo), "--audio", str(clip), "-o", str(tmp_path / "o.mp4")], capsys)
    assert rc == 1 and len(err) == 1 and "no audio" in err[0]


def test_say_without_espeak_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    photo = Path(__file__).resolve().parents[1] / "talkinghead" / "assets" / "monalisa.jpg"
    rc, _, err = run_cli(["animate", str(photo), "--say", "hello", "-o", str(tmp_path / "o.mp4")], capsys)
    assert rc == 1 and len(err) == 1 and "espeak-ng" in err[0]
    assert not (tmp_path / "o.mp4").exists()


def test_tempo_windows_keep_features_and_offsets_together(tmp_path):
    from talkinghead.data.speech import load_clips, sample_windows

    clips = load_clips(_speech_set(tmp_path / "data", clips=2, frames=100))
    x, y, m = sample_windows(clips, 4, 80, np.random.default_rng(0), tempo=0.2, with_phones=True)
    assert x.shape == (4, audio.NUM_FEATURES + audio.NUM_PHONES, 80) and y.shape == (4, 80, 37, 2) and m.shape == (4, 80)
    x1, y1, _ = sample_windows(clips, 4, 80, np.random.default_rng(0), with_phones=True)
    assert np.isfinite(x).all() and np.isfinite(y).all() and not np.allclose(x, x1)


def test_evaluate_audio_scores_every_method(tmp_path, capsys):
    """`evaluate --audio` on a speech set: the model and the three baselines, a report and JSON lines."""
    import json

    data = _speech_set(tmp_path / "data")
    rc, _, err = run_cli(["train", "--preset", "speech_tiny", "--data", str(data), "--run", str(tmp_path / "run"),
                          "--steps", "2", "--no-progress"], capsys)
    assert rc == 0, err
    rc, out, err = run_cli(["evaluate", "--audio", "--data", str(data), "--out", str(tmp_path / "rep"),
                            "--speech-model", str(tmp_path / "run" / "model.safetensors"), "--no-progress"], capsys)
    assert rc == 0, err
    assert "LMD" in out
    rows = [json.loads(ln) for ln in (tmp_path / "rep" / "speech.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"speech", "rendered", "loudness", "still_first", "still_rest", "real"}
    report = (tmp_path / "rep" / "speech.md").read_text()
    assert "loudness → jaw" in report and "still (first frame)" in report
    assert "## By phone" in report and "| SIL |" in report
    rc, _, err = run_cli(["evaluate", "--data", str(data), "--out", str(tmp_path / "rep"), "--videos", "1"], capsys)
    assert rc == 1 and "--audio" in err[-1]


def test_set_overrides_the_speech_preset_as_every_preset(capsys):
    """`--set speech.KEY=VALUE` goes through config.set_value: JSON values of the field's type."""
    import json

    rc, out, err = run_cli(["train", "--preset", "speech", "--dry-run", "--set", "speech.phones=false",
                            "--set", "speech.dilations=[1,2]", "--set", "speech.lr=0.002"], capsys)
    assert rc == 0, err
    cfg = json.loads(out)
    assert cfg["phones"] is False and cfg["dilations"] == [1, 2] and cfg["lr"] == 0.002
    for bad in ("speech.name=x", "speech.phones=3", "model.channels=8", "speech.lr"):
        rc, _, err = run_cli(["train", "--preset", "speech", "--dry-run", "--set", bad], capsys)
        assert rc == 1 and len(err) == 1 and "--set" in err[0], (bad, err)

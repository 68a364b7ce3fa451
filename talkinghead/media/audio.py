"""Speech audio in (DESIGN.md §2 "speech and text as drivers"): any file PyAV reads (wav, mp3, m4a, flac, ogg or
a video's audio track) → mono 16 kHz samples → per-10-ms features for the speech → mouth model: 40 log-mel
filterbank energies and the log energy (python_speech_features), normalised per utterance; the English phone
being spoken (pocketsphinx's phone decoder with the en-us acoustic model its wheel ships: trained on far more
speech than our clips hold, it tells the mouth's shape from the sound better than a small model can learn to);
and speech activity (webrtcvad).

Unreadable files, files without an audio track, empty or silent audio raise `AudioError` with a one-line message.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.media.files import input_file

RATE = 16_000  # samples per second of everything below
HOP_S = 0.01  # one feature frame every 10 ms: FEATURE_RATE frames per second
FEATURE_RATE = 100
WINDOW_S = 0.025
NUM_MELS = 40
NUM_FEATURES = NUM_MELS + 1  # the mel bands and the log energy
AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma")
_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, IndexError)


class AudioError(TalkingHeadError):
    """An audio file that cannot be read, has no audio or holds no speech."""


def is_audio_path(path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def load_audio(path, rate: int = RATE, max_seconds: float | None = None) -> np.ndarray:
    """The first audio track of `path`, mixed to mono at `rate` Hz: (N,) float32 in [-1, 1]."""
    p = input_file(path, "audio", AudioError)
    try:
        container = av.open(str(p), "r")
    except _AV_ERRORS as e:
        raise AudioError(f"cannot read audio {p}: {' '.join(str(e).split())[:200]}") from None
    try:
        if not container.streams.audio:
            raise AudioError(f"{p} has no audio track")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks, total = [], 0
        limit = None if max_seconds is None else int(max_seconds * rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    a = out.to_ndarray().reshape(-1)
                    chunks.append(a)
                    total += len(a)
                if limit is not None and total >= limit:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except _AV_ERRORS as e:
            if not chunks:
                raise AudioError(f"cannot decode the audio of {p}: {' '.join(str(e).split())[:200]}") from None
    finally:
        container.close()
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if limit is not None:
        wave = wave[:limit]
    if len(wave) < rate // 10:
        raise AudioError(f"{p}: the audio is empty or shorter than 0.1 s")
    return np.clip(wave, -1.0, 1.0)


def num_feature_frames(num_samples: int, rate: int = RATE) -> int:
    return max(1, int(np.ceil(num_samples / (HOP_S * rate))))


def features(wave: np.ndarray, rate: int = RATE) -> np.ndarray:
    """(N,) samples -> (F, 41) float32 at FEATURE_RATE frames per second (frame f centred at f × 10 ms): log-mel
    energies and the log energy, each normalised to zero mean and unit variance over the utterance (the
    microphone's colour and level drop out)."""
    from python_speech_features import logfbank

    wave = np.asarray(wave, np.float64)
    n = num_feature_frames(len(wave), rate)
    pad = int(WINDOW_S * rate / 2)
    padded = np.pad(wave, (pad, pad + int(HOP_S * rate)))  # frame f covers [f·hop − 12.5 ms, f·hop + 12.5 ms]
    mel = logfbank(padded, samplerate=rate, winlen=WINDOW_S, winstep=HOP_S, nfilt=NUM_MELS, nfft=512,
                   lowfreq=60, highfreq=7600)[:n]  # (F, 40)
    energy = np.log(np.maximum(frame_power(wave, rate)[:n], 1e-10))[:, None]  # (F, 1)
    x = np.concatenate([mel, energy[:len(mel)]], axis=1)
    if len(x) < n:
        x = np.pad(x, ((0, n - len(x)), (0, 0)), mode="edge")
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-3)
    return x.astype(np.float32)


def frame_power(wave: np.ndarray, rate: int = RATE) -> np.ndarray:
    """(N,) -> (F,): the mean power of each 25-ms window, one every 10 ms."""
    hop, win = int(HOP_S * rate), int(WINDOW_S * rate)
    n = num_feature_frames(len(wave), rate)
    padded = np.pad(np.asarray(wave, np.float64) ** 2, (win // 2, win))
    c = np.concatenate([[0.0], np.cumsum(padded)])
    starts = np.arange(n) * hop
    return (c[starts + win] - c[starts]) / win


def loudness(wave: np.ndarray, rate: int = RATE) -> np.ndarray:
    """(N,) -> (F,) in [0, 1]: the log power between the utterance's quiet (10th percentile) and loud (95th)
    levels — the loudness baseline's one input."""
    db = 10 * np.log10(np.maximum(frame_power(wave, rate), 1e-10))
    lo, hi = np.percentile(db, 10), np.percentile(db, 95)
    return np.clip((db - lo) / max(hi - lo, 1e-3), 0.0, 1.0).astype(np.float32)


def speech_activity(wave: np.ndarray, rate: int = RATE, aggressiveness: int = 2,
                    min_pause_s: float = 0.12, min_speech_s: float = 0.06) -> np.ndarray:
    """(N,) -> (F,) bool per 10-ms frame: webrtcvad's decision, with pauses shorter than `min_pause_s` filled
    and bursts shorter than `min_speech_s` dropped. Silence (a flat or very quiet file) is all False."""
    import webrtcvad

    if rate not in (8000, 16000, 32000, 48000):
        raise ValueError(f"webrtcvad needs 8, 16, 32 or 48 kHz audio, got {rate}")
    hop = int(HOP_S * rate)
    n = num_feature_frames(len(wave), rate)
    pcm = (np.clip(np.pad(wave, (0, n * hop - len(wave))), -1, 1) * 32767).astype("<i2")
    vad = webrtcvad.Vad(aggressiveness)
    quiet = 10 * np.log10(np.maximum(frame_power(wave, rate), 1e-12)) < -60  # digital silence: no speech
    active = np.array([not quiet[f] and vad.is_speech(pcm[f * hop:(f + 1) * hop].tobytes(), rate)
                       for f in range(n)])
    active = _fill_runs(active, False, int(round(min_pause_s / HOP_S)))
    return _fill_runs(active, True, int(round(min_speech_s / HOP_S)))


def _fill_runs(x: np.ndarray, value: bool, shorter_than: int) -> np.ndarray:
    """Runs of `value` shorter than `shorter_than` frames, between runs of the other value, take the other."""
    x = x.copy()
    n, i = len(x), 0
    while i < n:
        j = i
        while j < n and x[j] == x[i]:
            j += 1
        if x[i] == value and j - i < shorter_than and i > 0 and j < n:
            x[i:j] = not value
        i = j
    return x


# CMU phones (pocketsphinx en-us), then silence and the fillers (breath, noise, ...): one class each for the model
PHONES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH "
          "SIL NOISE").split()
NUM_PHONES = len(PHONES)
_PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}
_decoder = None


def _phone_decoder():
    global _decoder
    if _decoder is None:
        import os

        from pocketsphinx import Config, Decoder, get_model_path

        mp = get_model_path()
        cfg = Config(lm=None, hmm=os.path.join(mp, "en-us", "en-us"),
                     allphone=os.path.join(mp, "en-us", "en-us-phone.lm.bin"), lw=1.0,
                     loglevel="FATAL")
        _decoder = Decoder(cfg)
    return _decoder


def phones(wave: np.ndarray, rate: int = RATE) -> np.ndarray:
    """(N,) samples at 16 kHz -> (F,) int8 indices into PHONES, one per 10-ms frame: pocketsphinx's phone
    decoding (allphone search with its en-us phone language model)."""
    if rate != 16000:
        raise ValueError(f"the phone decoder takes 16 kHz audio, got {rate}")
    n = num_feature_frames(len(wave), rate)
    out = np.full(n, _PHONE_INDEX["SIL"], np.int8)
    dec = _phone_decoder()
    dec.start_utt()
    dec.process_raw((np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    dec.end_utt()
    for seg in dec.seg():
        out[max(seg.start_frame, 0):seg.end_frame + 1] = _PHONE_INDEX.get(seg.word, _PHONE_INDEX["NOISE"])
    return out[:n]


def one_hot_phones(idx: np.ndarray) -> np.ndarray:
    """(F,) indices -> (F, NUM_PHONES) float32."""
    return np.eye(NUM_PHONES, dtype=np.float32)[np.asarray(idx, np.int64)]


def model_inputs(feats: np.ndarray, phones: np.ndarray | None = None) -> np.ndarray:
    """What the speech → mouth model reads per frame: (F, 41) `features`, then with `phones` (F,) their one-hot
    -> (F, 41 [+ NUM_PHONES]) float32."""
    feats = np.asarray(feats, np.float32)
    if phones is None:
        return feats
    return np.concatenate([feats, one_hot_phones(np.asarray(phones)[:len(feats)])], axis=1)

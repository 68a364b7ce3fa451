"""The invisible mark in every frame and image the tool writes (DESIGN.md §2 responsible use), and its detector.

Embedding: a fixed pseudo-random TILE × TILE pattern, band-limited to BAND (wavelengths 8-48 px), is tiled over
the frame from its top-left corner and added to the luma — the same integer offset on R, G and B, so chroma is
untouched and 4:2:0 subsampling loses nothing — at an RMS of AMPLITUDE grey levels (PSNR ≈ 40.5 dB). Spread
spectrum (Cox et al. 1997) with a periodic pattern (Kutter 1999): cropping only shifts the tile's phase, which a
cyclic correlation finds; mid-low frequencies survive H.264 at CRF 28 and halving the size. Cost: two
saturating uint8 operations per value against the pattern cached per frame size (benchmarks/bench_watermark.py),
so the live mode marks every frame too.

Detection (`detect`, `detect_frames`, `Detector`; files: talkinghead.media.mark_files): the luma is high-passed and divided by its
local contrast (edges and texture, where the picture drowns the mark, count less than flat areas), folded to
one period (every pixel added at (row mod p, column mod p)), whitened by keeping only the phase of its
spectrum (symmetric phase-only matched filtering), restricted to the band and correlated cyclically with the
key's phase on a 2× finer grid (a resized copy puts the peak between pixels). The score is the correlation
peak in robust standard deviations (median absolute deviation) of the correlation surface: a z-score, 3-6.5
where there is no mark. Resized copies are found by folding at the period the tile takes at each of SCALES
(each covers about ±1.5 %) and at up to three more periods estimated from the autocorrelation of the first
frames, where a periodic mark peaks at a lag of one period (Kutter 1999): any size from 0.3× to 2.1×. A video sums
the whitened spectra of its frames before the correlation, so the evidence of many frames adds up.

Threshold: THRESHOLD = 7, from the false-positive measurement of benchmarks/bench_watermark.py on the real
media of ../shared/data, unmarked: every one of its 118 videos (100 frames each, as `verify` reads them) and
37 images scored at most 5.2; 1,767 single frames (15 per video) at most 5.6, none above 6; 520 unmarked
copies re-encoded at CRF 28, halved, cropped or scaled by 0.8 at most 6.3 — no false positive in 2,442
judgements (95 % upper bound on the rate ~0.12 %). Marked copies of 26 real videos re-encoded at CRF 28 are
found in 26 (medians 37 as is, 35 cropped by 10 %), 25 at 0.8× (median 33) and 24 at half size (median 19, 17
also cropped): the misses are clips of 224 px and less made smaller, too few pixels to carry the mark through
CRF 28.

The key is public (a fixed seed): the mark tells anyone who asks "made with talkinghead"; it is no protection
against someone who sets out to remove it; a resize beyond 0.3×-2.1×, a rotation of more than a degree or
two, or a mirror image hides it from the detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import numpy as np

TILE = 128  # period of the pattern in pixels
AMPLITUDE = 2.4  # RMS of the luma offset in grey levels
BAND = (1 / 48, 1 / 8)  # radial frequencies of the pattern, cycles per pixel of the marked frame
OBSERVED_MAX = 0.3  # cycles per pixel of the image examined: above, lossy codecs leave little of a mark
# sizes relative to the marked frame that detection always tries: half, 1080p/720p -> 720p/480p, 3/4,
# 1080p -> 480p, 1.5× and 2× (each covers about ±1.5 %; others are estimated, see Detector)
SCALES = (1.0, 0.5, 2 / 3, 0.75, 4 / 9, 1.5, 2.0)
LOCAL = (13, 15, 1.0)  # detection's local normalisation: high-pass box, contrast box (px), floor (grey levels)
ESTIMATE_FRAMES, ESTIMATE_SIZE = 6, 512  # the scale estimate: first frames, central square (px)
ESTIMATE_RANGE = (0.3, 2.1)  # sizes the estimate looks for (1080p -> 360p is 0.33)
UPSAMPLE = 2  # correlation surface on a grid this much finer than the pixels
THRESHOLD = 7.0  # score above which a file is called marked (from the false-positive measurement, see above)
_SEED = 0x7A1C1E4EAD  # "talkinghead": the public key


@dataclass(frozen=True)
class Detection:
    score: float  # correlation peak in robust standard deviations (the best of the scales tried)
    marked: bool  # score > THRESHOLD
    scale: float  # the size, relative to the marked original, at which the peak was found
    frames: int  # frames that went into the score


# -- the pattern ---------------------------------------------------------------------------------------------
def _band_mask(p: int, scale: float = 1.0, observed_max: float = 0.5) -> np.ndarray:
    """(p, p) bool: DFT bins of a p-periodic signal inside BAND after resizing by `scale` and at most
    `observed_max` cycles per pixel of the resized image (DC row/column out)."""
    f = np.fft.fftfreq(p)
    r_obs = np.hypot(f[:, None], f[None, :])
    r = r_obs * scale  # cycles per pixel of the original
    m = (r >= BAND[0]) & (r <= BAND[1]) & (r_obs <= observed_max)
    m[0, :] = m[:, 0] = False  # pure horizontal / vertical structure (edges, borders, block grids)
    return m


@lru_cache(maxsize=1)
def key_tile() -> np.ndarray:
    """(TILE, TILE) float64 with unit RMS: white noise kept only inside BAND (fixed seed)."""
    rng = np.random.default_rng(_SEED)
    spec = np.fft.fft2(rng.standard_normal((TILE, TILE)))
    spec[~_band_mask(TILE)] = 0
    t = np.real(np.fft.ifft2(spec))
    return t / t.std()


@lru_cache(maxsize=4)
def _offsets(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pattern tiled over an (h, w) frame as (h, w, 3) uint8 arrays: 255 minus its positive part, its
    positive part and its negative part."""
    t = np.rint(key_tile() * AMPLITUDE).astype(np.int16)
    full = np.tile(t, (-(-h // TILE), -(-w // TILE)))[:h, :w]
    pos = np.repeat(np.clip(full, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    neg = np.repeat(np.clip(-full, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    cap = 255 - pos
    for a in (cap, pos, neg):
        a.flags.writeable = False
    return cap, pos, neg


def embed(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> a marked copy (saturating at 0 and 255). The input is not changed."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.dtype} {frame.shape}")
    cap, pos, neg = _offsets(*frame.shape[:2])
    out = np.minimum(frame, cap)  # x + p saturates at 255
    out += pos
    np.maximum(out, neg, out=out)  # x - n saturates at 0
    out -= neg
    return out


# -- detection -----------------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _key_phase(p: int, scale: float) -> np.ndarray:
    """(p, p) complex: the phase of the key's spectrum as it appears folded at period p (the tile resized by
    `scale`), zero outside the band."""
    spec = np.fft.fft2(key_tile())  # (TILE, TILE)
    f_src = np.rint(np.fft.fftfreq(TILE) * TILE).astype(int)  # integer frequency of each bin
    out = np.zeros((p, p), complex)
    f_dst = np.rint(np.fft.fftfreq(p) * p).astype(int)
    keep = np.abs(f_dst) < min(p, TILE) / 2
    rows = np.flatnonzero(keep)
    src = {f: i for i, f in enumerate(f_src)}
    idx = np.array([src[f] for f in f_dst[rows]])
    out[np.ix_(rows, rows)] = spec[np.ix_(idx, idx)]
    out[~_band_mask(p, scale, OBSERVED_MAX)] = 0
    mag = np.abs(out)
    return np.where(mag > 1e-9, np.conj(out) / np.maximum(mag, 1e-12), 0)


def _luma(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float32."""
    f = frame.astype(np.float32)
    return f[:, :, 0] * 0.299 + f[:, :, 1] * 0.587 + f[:, :, 2] * 0.114


def _period(scale: float) -> tuple[int, float]:
    """The integer fold period for `scale` and the resize factor that makes the tile that long."""
    exact = TILE * scale
    p = int(round(exact))
    return p, p / exact


def _fold(y: np.ndarray, p: int) -> np.ndarray:
    """(H, W) -> (p, p): every pixel added at (row mod p, column mod p), after subtracting the mean (so that the
    partial tiles at the bottom and right edges count too without a step between rows and columns)."""
    h, w = y.shape
    nh, nw = -(-h // p), -(-w // p)
    padded = np.zeros((nh * p, nw * p), np.float32)
    padded[:h, :w] = y - y.mean()
    return padded.reshape(nh, p, nw, p).sum(axis=(0, 2))


def _resized(y: np.ndarray, factor: float) -> np.ndarray:
    from PIL import Image

    h, w = y.shape
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    return np.asarray(Image.fromarray(y.astype(np.float32, copy=False)).resize(size, Image.BILINEAR))  # mode F


def _flattened(y: np.ndarray) -> np.ndarray:
    """(H, W) luma -> (H, W): high-passed and divided by the local contrast (plus a floor)."""
    from scipy.ndimage import uniform_filter

    k_mean, k_contrast, floor = LOCAL
    r = y - uniform_filter(y, k_mean, mode="reflect")
    contrast = np.sqrt(np.maximum(uniform_filter(r * r, k_contrast, mode="reflect"), 0))
    return r / (contrast + floor)


def _power(y: np.ndarray) -> np.ndarray:
    """(H, W) -> the power spectrum of its central square (at most ESTIMATE_SIZE), zero-padded to twice that
    size: its inverse transform is the linear (not wrapped) autocorrelation."""
    h, w = y.shape
    n = min(h, w, ESTIMATE_SIZE)
    c = y[(h - n) // 2:(h - n) // 2 + n, (w - n) // 2:(w - n) // 2 + n]
    return np.abs(np.fft.rfft2(c, s=(2 * n, 2 * n))) ** 2


def _estimated_scales(power: np.ndarray) -> list[float]:
    """Candidate sizes of the tile relative to TILE from the autocorrelation of the summed power spectra: a
    periodic mark repeats at a lag of one period along both axes (Kutter 1999). The highest peak, and the
    fundamentals (a half, a third) under it where they peak too: a multiple of the period can top the period,
    and a picture with a pattern of its own can peak at a lag of its own. The correlation decides."""
    n = power.shape[0] // 2
    ac = np.fft.irfft2(power, s=(2 * n, 2 * n))
    profile = ac[0, :n] + ac[:n, 0]  # lags along x + lags along y
    lo, hi = int(ESTIMATE_RANGE[0] * TILE), min(int(ESTIMATE_RANGE[1] * TILE), n - 2)
    if hi <= lo + 2:
        return []
    top = lo + int(np.argmax(profile[lo:hi]))
    lags = [top]
    for k in (2, 3):
        j = int(round(top / k))
        if j - 1 >= lo:
            j = j - 1 + int(np.argmax(profile[j - 1:j + 2]))
            if profile[j] > 0.5 * profile[top]:
                lags.append(j)
    out = []
    for i in lags:
        a, b, c = profile[i - 1], profile[i], profile[i + 1]
        curvature = a - 2 * b + c
        offset = float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0
        out.append((i + offset) / TILE)
    return out


class Detector:
    """Accumulates evidence over frames: `d = Detector(); d.add(frame)...; d.result()`.

    Scales tried: SCALES, plus up to three estimated from the autocorrelation of the first ESTIMATE_FRAMES
    frames (a copy resized by any factor in ESTIMATE_RANGE), where not within 1 % of one already tried."""

    def __init__(self, scales: Iterable[float] = SCALES):
        self.scales = tuple(scales)
        self._sums: dict[float, np.ndarray] = {}
        self._power = None  # summed power spectra of the first frames (scale estimate)
        self._waiting: list[np.ndarray] | None = []  # their normalised lumas, until the estimate is made
        self._estimated: list[float] = []
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        """One (H, W, 3) uint8 RGB frame (or an (H, W) luma)."""
        frame = np.asarray(frame)
        y = _flattened(_luma(frame) if frame.ndim == 3 else frame.astype(np.float32))
        for s in self.scales:
            self._add_at(y, s)
        if self._waiting is not None:
            p = _power(y)
            if self._power is None or self._power.shape == p.shape:
                self._power = p if self._power is None else self._power + p
                self._waiting.append(y)
            if len(self._waiting) >= ESTIMATE_FRAMES:
                self._estimate()
        else:
            for s in self._estimated:
                self._add_at(y, s)
        self.frames += 1

    def _add_at(self, y: np.ndarray, s: float) -> None:
        p, factor = _period(s)
        yr = y if abs(factor - 1) < 1e-6 else _resized(y, factor)
        if min(yr.shape) < p // 2:
            return
        spec = np.fft.fft2(_fold(yr, p))
        spec /= np.maximum(np.abs(spec), 1e-6)  # phase only: every frequency counts the same
        self._sums[s] = self._sums.get(s, 0) + spec

    def _estimate(self) -> None:
        """Decides the extra scales and adds the frames kept for them."""
        for s in [] if self._power is None else _estimated_scales(self._power):
            if all(abs(s / t - 1) > 0.01 for t in self.scales + tuple(self._estimated)):
                self._estimated.append(s)
                for y in self._waiting:
                    self._add_at(y, s)
        self._waiting = None

    def result(self) -> Detection:
        if self._waiting is not None:
            self._estimate()
        best = Detection(score=0.0, marked=False, scale=1.0, frames=self.frames)
        for s, spec in self._sums.items():
            p, _ = _period(s)
            prod = spec * _key_phase(p, s)
            # zero-padded spectrum: the surface on a finer grid (a resized copy puts the peak between pixels)
            fine = np.zeros((p * UPSAMPLE, p * UPSAMPLE), complex)
            f = np.rint(np.fft.fftfreq(p) * p).astype(int)
            idx = np.where(f < 0, f + p * UPSAMPLE, f)
            fine[np.ix_(idx, idx)] = prod
            surface = np.real(np.fft.ifft2(fine))  # (U·p, U·p) cyclic correlation
            # robust spread (median absolute deviation): the peak's own side lobes do not cap the score
            med = np.median(surface)
            sd = 1.4826 * np.median(np.abs(surface - med))
            z = float((surface.max() - med) / sd) if sd > 0 else 0.0
            if z > best.score:
                best = Detection(score=z, marked=z > THRESHOLD, scale=s, frames=self.frames)
        return best


def detect(frame: np.ndarray) -> Detection:
    """Score and decision for one (H, W, 3) uint8 RGB image."""
    d = Detector()
    d.add(frame)
    return d.result()


def detect_frames(frames: Iterable[np.ndarray]) -> Detection:
    """Score and decision for a sequence of frames of one video (evidence summed over them)."""
    d = Detector()
    for f in frames:
        d.add(f)
    return d.result()


def shared_copy(frames: list[np.ndarray], scale: float = 1.0, crop: bool = False, crf: int | None = 28,
                fps: float = 25.0) -> list[np.ndarray]:
    """What sharing does to a video, to check the mark against it: a 10 % crop (off centre), a bicubic resize
    by `scale` (as ffmpeg's scale filter), H.264 at `crf` (None: no re-encode), decoded again.
    frames: (H, W, 3) uint8 each -> the shared copy's frames (even sizes)."""
    import io

    import av
    from PIL import Image

    out = []
    for f in frames:
        h, w = f.shape[:2]
        if crop:
            f = f[int(0.04 * h):int(0.94 * h), int(0.07 * w):int(0.97 * w)]
        if scale != 1.0:
            h, w = f.shape[:2]
            f = np.asarray(Image.fromarray(f).resize((round(w * scale), round(h * scale)), Image.BICUBIC))
        out.append(np.ascontiguousarray(f[:f.shape[0] // 2 * 2, :f.shape[1] // 2 * 2]))
    if crf is None:
        return out
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=max(1, round(fps)))
        s.height, s.width = out[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
        for f in out:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]

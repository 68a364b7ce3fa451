"""Source photos as people have them (issue 11, item 4): 16-bit, palette, greyscale, CMYK and transparent
images, EXIF-rotated phone photos, very large photos (detected on a downscaled copy, pasted back at full size)
and faces too small for landmarks (one clear error); `--face-index` picks the source's face only (the driver's
is its largest). Every image is made in the test from a real portrait with PIL. Tiny model built in the test."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talkinghead.media import image_files, video, video_writer
from talkinghead.console import log
from talkinghead.errors import NoFaceError, VideoError
from talkinghead.landmarks import detect
from talkinghead.landmarks.align import CropTransform
from talkinghead.landmarks.detect import MIN_INTEROCULAR, DlibDetector, interocular
from talkinghead.persons.shots import prepare_shots

from conftest import MEDIA
from helpers import random_model_file

PORTRAIT = MEDIA / "images" / "seanconnery.jpg"  # 350×466, one face, 89 px between the outer eye corners
SIZE = 128  # crop side


def _png16(path: Path, a: np.ndarray) -> Path:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by the channel count), written by hand: PIL writes 16-bit
    greyscale only."""
    a = np.asarray(a, ">u2")
    a = a[:, :, None] if a.ndim == 2 else a
    h, w, c = a.shape
    raw = b"".join(b"\0" + row.tobytes() for row in a)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def detector():
    return DlibDetector(upsample=1, max_side=1024)


def _grey(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(Image.fromarray(a).convert("L"))[:, :, None], 3, axis=2)


@pytest.mark.media
def test_every_format_reads_as_the_rgb_photo(tmp_path, detector):
    rgb = Image.open(PORTRAIT).convert("RGB")
    a = np.asarray(rgb)
    a16 = a.astype(np.uint16) * 257
    opaque = np.full(a.shape[:2], 65535, np.uint16)
    grey = rgb.convert("L")
    cut = rgb.convert("RGBA")
    cut.putalpha(Image.fromarray(np.where(np.arange(a.shape[1]) < 30, 0, 255).astype(np.uint8)[None].repeat(
        a.shape[0], 0)))  # a transparent strip at the left, away from the face
    rgb.save(tmp_path / "plain.png")
    made = {  # name -> (file, is greyscale)
        "16-bit grey": (tmp_path / "g16.png", True),
        "16-bit grey+alpha": (_png16(tmp_path / "ga16.png", np.dstack([np.asarray(grey, np.uint16) * 257,
                                                                          opaque])), True),
        "16-bit RGB": (_png16(tmp_path / "rgb16.png", a16), False),
        "16-bit RGBA": (_png16(tmp_path / "rgba16.png", np.dstack([a16, opaque])), False),
        "palette": (tmp_path / "p.png", False),
        "palette+transparency": (tmp_path / "pt.png", False),
        "L": (tmp_path / "l.png", True),
        "LA": (tmp_path / "la.png", True),
        "CMYK jpeg": (tmp_path / "cmyk.jpg", False),
        "RGBA": (tmp_path / "rgba.png", False),
        "RGBA, transparent strip": (tmp_path / "cut.png", False),
    }
    Image.fromarray(np.asarray(grey, np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")  # PIL's own conversion: a white image
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pt.png", transparency=0)
    grey.save(tmp_path / "l.png")
    grey.convert("LA").save(tmp_path / "la.png")
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    rgb.convert("RGBA").save(tmp_path / "rgba.png")
    cut.save(tmp_path / "cut.png")

    ref = prepare_shots(tmp_path / "plain.png", SIZE, shots=1, detector=detector)
    for name, (path, is_grey) in made.items():
        im = image_files.read_image(path)
        assert im.shape == a.shape and im.dtype == np.uint8, name
        want = _grey(a) if is_grey else a
        if name == "RGBA, transparent strip":
            assert (im[:, :30] == 255).all(), "transparent pixels are composited onto white"
            im, want = im[:, 30:], want[:, 30:]
        assert np.abs(im.astype(int) - want).mean() < 3, name
        sh = prepare_shots(path, SIZE, shots=1, detector=detector)
        assert np.abs(sh.image_points - ref.image_points).mean() < 1.5, name
        ref_crop = _grey(ref.crops[0]) if is_grey else ref.crops[0]
        assert np.abs(sh.crops[0].astype(int) - ref_crop).mean() < 4, name


# orientation tag -> the transpose that made the stored pixels from the upright photo (exif_transpose undoes it)
_STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_270}


@pytest.mark.media
def test_exif_orientation_gives_the_upright_photo_and_landmarks(tmp_path, detector):
    upright = Image.open(PORTRAIT).convert("RGB")
    upright.save(tmp_path / "upright.png")
    ref = prepare_shots(tmp_path / "upright.png", SIZE, shots=1, detector=detector)
    for tag, op in _STORED.items():
        exif = Image.Exif()
        exif[0x0112] = tag  # Orientation
        # lossless (PNG carries EXIF too): the very same pixels, so the very same landmarks
        upright.transpose(op).save(tmp_path / f"turned_{tag}.png", exif=exif)
        sh = prepare_shots(tmp_path / f"turned_{tag}.png", SIZE, shots=1, detector=detector)
        assert np.array_equal(sh.image, ref.image), tag
        assert np.array_equal(sh.image_points, ref.image_points), tag
        # a phone's JPEG: the same up to JPEG noise (dlib's jaw points move a few px with it)
        upright.transpose(op).save(tmp_path / f"phone_{tag}.jpg", quality=95, exif=exif)
        sh = prepare_shots(tmp_path / f"phone_{tag}.jpg", SIZE, shots=1, detector=detector)
        assert sh.image.shape == ref.image.shape, tag
        assert np.abs(sh.image_points - ref.image_points).mean() < 1.5, tag


@pytest.mark.media
def test_large_photo_is_detected_on_a_small_copy_and_pasted_back_at_full_size(tmp_path, monkeypatch):
    big = tmp_path / "big.jpg"
    Image.open(MEDIA / "images" / "franck_01829.jpg").convert("RGB").resize((6000, 4500), Image.BICUBIC).save(
        big, quality=90)
    hog, predictor = detect._dlib_models()
    seen = []

    class Spy:  # the HOG detector, recording the size of what it is given
        def run(self, image, *args):
            seen.append(image.shape)
            return hog.run(image, *args)

    monkeypatch.setattr(detect, "_dlib_models", lambda: (Spy(), predictor))
    logged = []  # the log calls themselves (handlers differ with the tests run before: the CLI's, caplog's)
    monkeypatch.setattr(log, "info", lambda msg, *args, **kw: logged.append(msg % args))
    sh = prepare_shots(big, SIZE, shots=1)  # the default detector
    assert seen and max(max(s[:2]) for s in seen) <= 1024
    said = [m for m in logged if "copy" in m]
    assert len(said) == 1 and "6000x4500" in said[0], said
    assert sh.image.shape == (4500, 6000, 3)
    assert interocular(sh.image_points) > 1000  # landmarks in full-size pixels
    crop = np.full((64, 64, 3), 128, np.uint8)
    out = sh.transforms[0].paste_back(sh.image, crop)
    assert out.shape == sh.image.shape
    x0, y0, x1, y1 = sh.transforms[0].box
    cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
    assert (out[cy, cx] == 128).all() and np.array_equal(out[:, : int(x0) - 1], sh.image[:, : int(x0) - 1])


def test_paste_back_in_bands_is_one_resample(monkeypatch):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (900, 700, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ct = CropTransform(350.3, 420.8, 811.0, 64)  # spans several bands and leaves the image
    banded = ct.paste_back(img, crop)
    from talkinghead.landmarks import align

    monkeypatch.setattr(align, "_PASTE_ROWS", 10_000)
    assert np.abs(banded.astype(int) - ct.paste_back(img, crop)).max() <= 1  # float32 box coordinates
    # a box smaller than half the crop (more than 2 crop pixels per frame pixel) at an awkward offset
    small = CropTransform(100.9, 100.9, 30.0, 256).paste_back(img, rng.integers(0, 256, (256, 256, 3), np.uint8))
    assert small.shape == img.shape


@pytest.mark.media
def test_tiny_face_is_one_clear_error(tmp_path):
    face = Image.open(MEDIA / "images" / "audrey.jpg").convert("RGB")  # 172 px between the outer eye corners
    for io, ok in ((9, False), (16, True)):
        canvas = Image.new("RGB", (200, 160), (120, 120, 120))
        s = io / 172
        canvas.paste(face.resize((round(face.width * s), round(face.height * s)), Image.LANCZOS), (80, 50))
        canvas.save(tmp_path / f"io{io}.png")
        # a detector that upsamples twice finds faces this small; the landmarks do not follow them down
        det = DlibDetector(upsample=2)
        if ok:
            sh = prepare_shots(tmp_path / f"io{io}.png", SIZE, shots=1, detector=det)
            assert interocular(sh.image_points) >= MIN_INTEROCULAR
            continue
        with pytest.raises(NoFaceError) as e:
            prepare_shots(tmp_path / f"io{io}.png", SIZE, shots=1, detector=det)
        msg = str(e.value)
        assert "too small" in msg and f"at least {MIN_INTEROCULAR}" in msg and "\n" not in msg, msg


def test_unreadable_and_oversized_images_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(VideoError, match="cannot read image"):
        image_files.read_image(tmp_path / "bad.png")
    Image.new("RGB", (400, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # PIL refuses over twice this
    with pytest.raises(VideoError, match="megapixels, above the decoder's limit") as e:
        image_files.read_image(tmp_path / "big.png")
    assert "\n" not in str(e.value)


# ---- --face-index: the source's face, not the driver's ---------------------------------------------------
@pytest.mark.media
def test_face_index_picks_the_source_face_and_the_driver_keeps_its_largest(tmp_path, capsys):
    from talkinghead.cli import main

    random_model_file(tmp_path / "tiny.safetensors", discriminator=False)
    src = MEDIA / "videos" / "pexels_woman.mp4"  # one face
    clip = tmp_path / "drive.mp4"
    with video_writer.VideoWriter(clip, video.probe_video(src).fps, preset="ultrafast") as w:
        for f in video.iter_frames(src, max_frames=5):
            w.write(f)
    # two real portraits side by side: the larger face on the left (franck), the second-largest on the right
    left = Image.open(MEDIA / "images" / "franck_01829.jpg").convert("RGB")  # 720×576
    right = Image.open(PORTRAIT).convert("RGB")  # 350×466
    two = Image.new("RGB", (left.width + right.width, left.height), (128, 128, 128))
    two.paste(left, (0, 0))
    two.paste(right, (left.width, 50))
    two.save(tmp_path / "two.png")
    faces = DlibDetector(upsample=1, max_side=1024).detect(np.asarray(two))
    assert len(faces) == 2

    out, frames = tmp_path / "out.mp4", tmp_path / "frames"
    rc = main(["animate", str(tmp_path / "two.png"), str(clip), "-o", str(out), "--model",
               str(tmp_path / "tiny.safetensors"), "--face-index", "1", "--frames", str(frames), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    from talkinghead.media import watermark

    source = watermark.embed(np.asarray(two))  # every written frame carries the mark, the untouched pixels too
    first = image_files.read_image(sorted(frames.glob("*.png"))[0])
    assert first.shape == source.shape
    changed = np.abs(first.astype(int) - source).max(axis=2) > 0
    assert changed.any() and not changed[:, : left.width].any()  # the right, smaller face was animated
    assert video.probe_video(out).num_frames == 5

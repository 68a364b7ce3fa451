"""The invisible mark (talkinghead.media.watermark, DESIGN.md §2 responsible use): embed/detect round trip, survival
of what sharing does (JPEG, H.264 at CRF 28, half size, a 10 % crop), no detection in unmarked pictures, every
output path marks (VideoWriter, write_image, save_png, an animate output) while preprocessing's crops of real
footage stay unmarked, and `talkinghead verify`'s lines and exit codes."""

from __future__ import annotations

import io
import os

import av
import numpy as np
import pytest
from PIL import Image

from talkinghead.media import image_files, video, video_writer

from talkinghead.media import mark_files, watermark
from talkinghead.cli import main
from talkinghead.media.images import save_png

from conftest import MEDIA
from helpers import random_model_file


def picture(h: int = 256, w: int = 256, seed: int = 0, shift: int = 0) -> np.ndarray:
    """(h, w, 3) uint8: a natural-looking picture (smooth shapes + texture + a little grain), `shift` px along."""
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w + 64, 3))
    for cells, amp in ((4, 60.0), (16, 25.0), (64, 8.0)):
        small = rng.random((cells, cells * (w + 64) // h, 3))
        out += amp * (np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w + 64, h),
                                                                                      Image.BICUBIC)) / 255 - 0.5)
    out += 128 + rng.normal(0, 2, out.shape)
    return np.clip(out[:, shift:shift + w], 0, 255).astype(np.uint8)


share = watermark.shared_copy


def psnr(a, b) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def talking(t: int, h: int = 256, w: int = 256, seed: int = 1) -> np.ndarray:
    """Frame t of a talking-head-like output: a still picture with a moving, changing oval where the face is."""
    face = picture(h, w, seed=seed + 100, shift=3 * t)
    yy, xx = np.mgrid[:h, :w]
    oval = ((yy - h / 2) / (0.3 * h)) ** 2 + ((xx - w / 2 - 4 * np.sin(t / 3)) / (0.22 * w)) ** 2 < 1
    return np.where(oval[:, :, None], face, picture(h, w, seed=seed))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 20-frame 256² output written by VideoWriter (marked) and the same frames unmarked."""
    frames = [talking(t) for t in range(20)]
    path = tmp_path_factory.mktemp("wm") / "out.mp4"
    with video_writer.VideoWriter(path, 25, preset="ultrafast") as w:
        for f in frames:
            w.write(f)
    return {"path": path, "marked": list(video.iter_frames(path)), "plain": frames}


# ---- embed / detect ---------------------------------------------------------------------------------------
def test_round_trip_is_invisible_and_detected():
    for seed, (h, w) in enumerate([(256, 256), (300, 412), (97, 131)]):
        img = picture(h, w, seed=seed)
        marked = watermark.embed(img)
        assert marked.shape == img.shape and marked.dtype == np.uint8
        assert psnr(img, marked) > 39.5
        assert watermark.detect(marked).marked
        assert not watermark.detect(img).marked
        assert watermark.detect(marked).score > 2 * watermark.detect(img).score


def test_embed_keeps_its_input_and_saturates():
    img = picture()
    before = img.copy()
    watermark.embed(img)
    assert np.array_equal(img, before)
    for level in (0, 255):
        flat = np.full((64, 64, 3), level, np.uint8)
        out = watermark.embed(flat).astype(int)
        assert np.abs(out - level).max() <= 12  # clipped, never wrapped around
    with pytest.raises(ValueError):
        watermark.embed(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        watermark.embed(np.zeros((8, 8, 3), np.float32))


def test_unmarked_pictures_are_not_detected():
    rng = np.random.default_rng(3)
    cases = {
        "flat": np.full((256, 256, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "gradient": np.repeat(np.linspace(0, 255, 256)[None, :, None], 3, 2).repeat(256, 0).astype(np.uint8),
        "checkerboard": ((np.indices((256, 256)).sum(0) // 8 % 2) * 255).astype(np.uint8)[:, :, None].repeat(3, 2),
        "stripes": ((np.arange(384) // 4 % 2) * 200).astype(np.uint8)[None, :, None].repeat(200, 0).repeat(3, 2),
    }
    cases.update({f"picture{s}": picture(256, 320, seed=10 + s) for s in range(3)})
    for name, img in cases.items():
        d = watermark.detect(img)
        assert not d.marked, (name, d)
    assert not watermark.detect_frames([picture(seed=20 + t) for t in range(6)]).marked


def test_survives_jpeg():
    img = picture(320, 320, seed=4)
    buf = io.BytesIO()
    Image.fromarray(watermark.embed(img)).save(buf, format="JPEG", quality=75)
    assert watermark.detect(np.asarray(Image.open(buf).convert("RGB"))).marked


@pytest.mark.parametrize("scale,crop", [(1.0, False), (0.5, False), (1.0, True), (0.5, True), (0.83, False)],
                         ids=["crf28", "half+crf28", "crop10+crf28", "half+crop10+crf28", "0.83x+crf28"])
def test_video_survives_sharing(clip, scale, crop):
    marked = watermark.detect_frames(share(clip["marked"], scale, crop))
    plain = watermark.detect_frames(share(clip["plain"], scale, crop))
    assert marked.marked, marked
    assert not plain.marked, plain
    assert marked.scale == pytest.approx(scale, rel=0.01)  # 0.83: none of SCALES, found by the estimate


def test_evidence_adds_up_over_frames():
    """Frames too noisy to judge one by one are judged together."""
    rng = np.random.default_rng(7)

    def noisy(img):
        return np.clip(img + rng.normal(0, 80, img.shape), 0, 255).astype(np.uint8)

    pictures = [picture(seed=30 + t) for t in range(12)]
    marked = [noisy(watermark.embed(p)) for p in pictures]
    single = [watermark.detect(f).score for f in marked]
    together = watermark.detect_frames(marked)
    assert together.marked and together.frames == 12
    assert together.score > 2 * np.median(single)
    assert not watermark.detect_frames([noisy(p) for p in pictures]).marked


# ---- every output is marked, training data is not ----------------------------------------------------------
def test_output_writers_mark_and_dataset_writer_does_not(tmp_path, clip):
    img = picture(200, 240, seed=5)
    image_files.write_image(tmp_path / "out.png", img)
    image_files.write_image(tmp_path / "out.jpg", img)
    save_png(tmp_path / "grid.png", img)
    image_files.write_dataset_image(tmp_path / "crop.png", img)
    for name in ("out.png", "out.jpg", "grid.png"):
        assert watermark.detect(image_files.read_image(tmp_path / name)).marked, name
    assert np.array_equal(image_files.read_image(tmp_path / "crop.png"), img)
    assert mark_files.detect_file(clip["path"]).marked


@pytest.mark.media
def test_landmarks_overlay_is_marked(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(picture(seed=8)).save(photo, quality=98)
    assert main(["landmarks", str(photo), "-o", str(tmp_path / "photo.pts"),
                 "--points=90,110,160,110,125,145,100,180,150,180"]) == 0
    assert watermark.detect(image_files.read_image(tmp_path / "photo.png")).marked
    assert not watermark.detect(picture(seed=8)).marked


@pytest.mark.media
def test_preprocess_crops_of_real_footage_stay_unmarked(tmp_path):
    from talkinghead.data.preprocess import preprocess

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "woman.mp4").symlink_to(MEDIA / "videos" / "pexels_woman.mp4")
    preprocess(tmp_path / "in", tmp_path / "out", resolution=256, every=1, frames_per_video=4, workers=1,
               progress=False)
    crops = sorted((tmp_path / "out").rglob("frames/*.*"))
    assert crops
    assert not watermark.detect_frames(image_files.read_image(p) for p in crops).marked
    # the same crops written by the output writer would carry the mark
    image_files.write_image(tmp_path / "as_output.jpg", image_files.read_image(crops[0]), quality=95)
    assert watermark.detect(image_files.read_image(tmp_path / "as_output.jpg")).marked


@pytest.mark.media
def test_animate_output_is_marked(tmp_path, capsys):
    random_model_file(tmp_path / "tiny.safetensors")
    drv = tmp_path / "drive.mp4"
    with video_writer.VideoWriter(drv, 25, preset="ultrafast") as w:
        for f in video.iter_frames(MEDIA / "videos" / "pexels_woman.mp4", max_frames=8):
            w.write(f)
    out = tmp_path / "out.mp4"  # side by side (driver | output); the PNG frames are the output alone
    rc = main(["animate", str(MEDIA / "images" / "franck_01829.jpg"), str(drv), "-o", str(out), "--side-by-side",
               "--model", str(tmp_path / "tiny.safetensors"), "--frames", str(tmp_path / "frames"),
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    outputs = [out, sorted((tmp_path / "frames").glob("*.png"))[0]]
    rc = main(["verify", *map(str, outputs), str(MEDIA / "images" / "franck_01829.jpg")])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert [ln.split(": ")[1].split(",")[0] for ln in lines] == ["synthetic (made with talkinghead)"] * 2 + \
        ["no mark found"]


def _corrupt_partway(src, dst) -> None:
    """A copy of the mp4 `src` whose frame data after its first third is noise (its index intact)."""
    data = bytearray(src.read_bytes())
    start, end = data.find(b"mdat"), data.find(b"moov")
    start += (end - start) // 3
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    read = []
    with pytest.raises(video.VideoError, match="truncated or corrupt"):
        read.extend(video.iter_frames(dst))
    assert 0 < len(read) < 20  # readable up to the break


# ---- talkinghead verify -----------------------------------------------------------------------------------
def test_verify_lines_and_exit_codes(tmp_path, clip, capsys):
    marked_png, plain_png, junk = tmp_path / "m.png", tmp_path / "p.png", tmp_path / "notes.txt"
    save_png(marked_png, picture(seed=6))
    Image.fromarray(picture(seed=6)).save(plain_png)
    junk.write_text("not a picture")

    def verify(*paths):
        rc = main(["verify", *map(str, paths)])
        cap = capsys.readouterr()
        return rc, cap.out.splitlines(), cap.err.splitlines()

    rc, out, err = verify(clip["path"], marked_png)
    assert rc == 0 and not err
    assert out[0].startswith(f"{clip['path']}: synthetic (made with talkinghead), score ")
    assert out[1].startswith(f"{marked_png}: synthetic (made with talkinghead), score ")
    assert float(out[1].rsplit(" ", 1)[1]) > watermark.THRESHOLD

    rc, out, err = verify(marked_png, plain_png)
    assert rc == 1 and len(out) == 2 and not err
    assert out[1].startswith(f"{plain_png}: no mark found, score ")

    rc, out, err = verify(marked_png, junk, tmp_path / "missing.mp4", plain_png)
    assert rc == 2 and len(out) == 2 and len(err) == 2
    assert err[0].startswith(f"{junk}: error: ") and err[1].startswith(f"{tmp_path / 'missing.mp4'}: error: ")

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opened, it would wait for a writer: refused first
    rc, out, err = verify(fifo, marked_png)
    assert rc == 2 and len(out) == 1 and err == [f"{fifo}: error: cannot read video {fifo}: a named pipe (FIFO), "
                                                 "not a regular file"]

    unmarked = tmp_path / "plain.mp4"  # written without the mark, by PyAV
    with av.open(str(unmarked), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        for f in clip["plain"]:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    for src in (unmarked, clip["path"]):
        _corrupt_partway(src, tmp_path / f"broken_{src.name}")
    rc, out, err = verify(tmp_path / "broken_plain.mp4")  # no mark in the frames before the break: unread
    assert rc == 2 and not out and len(err) == 1
    assert "is truncated or corrupt: decoded" in err[0] and "no mark in the" in err[0]
    rc, out, err = verify(tmp_path / "broken_out.mp4")  # the frames before the break carry the mark
    assert rc == 0 and not err and "synthetic" in out[0]

    assert main(["verify"]) == 2  # usage error
    capsys.readouterr()
    assert main(["verify", "--help"]) == 0
    assert "exit status: 0 every file is marked" in capsys.readouterr().out

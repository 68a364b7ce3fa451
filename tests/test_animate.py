"""Animation (DESIGN.md §2): relative-motion retargeting keeps the source's face shape, the Animator/pipeline
and the `talkinghead animate` CLI on a real driving clip (frame count, fps, audio, paste-back size), and
one-line errors without partial outputs for bad inputs. Tiny model built in the test."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from talkinghead.media import image_files, video, video_writer
from talkinghead.persons.avatar import Avatar, make_ff_avatar
from talkinghead.persons.checkpoint import LoadedModel
from talkinghead.cli import main
from talkinghead.landmarks.retarget import (apply_transform, mouth_opening, neutral_index, procrustes,
                                            retarget)

from conftest import MEDIA
from helpers import leftovers, random_model_file, run_cli, synthetic_face

SOURCE = MEDIA / "images" / "franck_01829.jpg"
DRIVER = MEDIA / "videos" / "pexels_woman.mp4"


# ---- retargeting (no media) -------------------------------------------------------------------------------
def jaw_ratio(p: np.ndarray) -> float:
    """Face width (jaw ends) over jaw height (chin to the jaw-ends line); similarity-invariant."""
    width = np.linalg.norm(p[16] - p[0])
    return float(width / np.linalg.norm(p[8] - (p[0] + p[16]) / 2))


def similarity(points, angle_deg, scale, shift):
    a = math.radians(angle_deg)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = points.mean(0)
    return ((points - c) @ r.T + c + shift).astype(np.float32)


def test_procrustes_recovers_similarity():
    a = synthetic_face(100, 90)
    b = similarity(a, 17, 1.6, [12, -30])
    m = procrustes(a, b)
    assert np.abs(apply_transform(m, a) - b).max() < 1e-3


def test_relative_retargeting_keeps_source_shape():
    source = synthetic_face(130, 100, cx=64, cy=60)  # round face in a crop
    thin = [0.0, 0.0, 0.06, 0.12, 0.06]
    driver = np.stack([similarity(synthetic_face(70, 115, o, cx=300, cy=200), ang, 1.3, [dx, 0])
                       for o, ang, dx in zip(thin, [0, 8, -5, 12, 0], [0, 10, 20, -15, 5])])
    out = retarget(source, driver)
    assert out.shape == (5, 68, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], source, atol=1e-3)  # reference frame: the source itself
    r_src, r_drv = jaw_ratio(source), jaw_ratio(driver[0])
    # frame 1: head moved, no expression -> the source's shape exactly, in the driver's pose
    assert jaw_ratio(out[1]) == pytest.approx(r_src, rel=1e-3)
    # all frames: face shape stays the source's (only the chin drop of the open mouth changes it a little)
    for t in range(5):
        assert abs(jaw_ratio(out[t]) - r_src) < 0.15 * abs(r_drv - r_src), t
    # the expression is transferred: the mouth opens, proportionally to the source's face
    def gap_over_height(p):  # inner-lip gap relative to the face height (brows to chin)
        return mouth_opening(p) * np.linalg.norm(p[36] - p[45]) / (p[8, 1] - p[19, 1])

    assert mouth_opening(out[3]) > mouth_opening(source) + 0.08
    assert gap_over_height(out[3]) - gap_over_height(out[0]) == pytest.approx(
        gap_over_height(similarity(driver[3], -12, 1, [0, 0])) - gap_over_height(driver[0]), rel=0.25)
    assert mouth_opening(out[3]) > mouth_opening(out[2]) > mouth_opening(out[0])
    # the paper's absolute mode leaks the driver's shape
    absolute = retarget(source, driver, absolute=True)
    assert jaw_ratio(absolute[1]) == pytest.approx(r_drv, rel=1e-3)
    # head rotation is carried over (8 degrees in frame 1)
    m = procrustes(out[0], out[1])
    assert math.degrees(math.atan2(m[1, 0], m[0, 0])) == pytest.approx(8, abs=0.5)


def test_neutral_reference_prefers_closed_mouth():
    seq = np.stack([synthetic_face(100, 100, o) for o in (0.1, 0.05, 0.0, 0.08)])
    assert neutral_index(seq) == 2


# ---- pipeline and CLI (real media, tiny model) -------------------------------------------------------
def _cut(src: Path, dst: Path, frames: int) -> Path:
    with video_writer.VideoWriter(dst, video.probe_video(src).fps, audio_from=src, preset="ultrafast") as w:
        for f in video.iter_frames(src, max_frames=frames):
            w.write(f)
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny model files (one with D, one without) and a 16-frame cut of the real driver."""
    d = tmp_path_factory.mktemp("models")
    random_model_file(d / "tiny.safetensors")
    random_model_file(d / "other.safetensors", seed=1, discriminator=False)
    clip = _cut(DRIVER, d / "drive.mp4", 16)
    return {"dir": d, "model": d / "tiny.safetensors", "other": d / "other.safetensors", "clip": clip}


@pytest.mark.media
def test_cli_animate_makes_playable_mp4(models, tmp_path, capsys):
    out, frames = tmp_path / "out.mp4", tmp_path / "frames"
    rc, _, err = run_cli(["animate", str(SOURCE), str(models["clip"]), "-o", str(out), "--model", str(models["model"]),
                        "--frames", str(frames), "--no-progress", "--batch-size", "5"], capsys)
    assert rc == 0, err
    drv, info = video.probe_video(models["clip"]), video.probe_video(out)
    decoded = list(video.iter_frames(out))
    assert len(decoded) == drv.num_frames == 16
    assert info.fps == pytest.approx(drv.fps, rel=1e-3)
    assert info.has_audio
    # paste-back: the whole source image, at its size
    src = image_files.read_image(SOURCE)
    assert decoded[0].shape == src.shape
    pngs = sorted(frames.glob("*.png"))
    assert len(pngs) == 16 and image_files.read_image(pngs[0]).shape == src.shape
    # away from the face the source image is unchanged
    assert np.abs(decoded[3][:40, :40].astype(int) - src[:40, :40]).mean() < 4


@pytest.mark.media
def test_pipeline_crop_only_side_by_side_and_missing_faces(models, tmp_path):
    from talkinghead.inference.pipeline import animate_video, track_driver

    model = LoadedModel.load(models["model"])
    av = make_ff_avatar([str(SOURCE)], model, shots=1)
    track = track_driver(models["clip"], progress=False)
    assert track.missing == 0
    track.points[3:6] = [None] * 3  # frames without a face hold the last pose
    track.points[0] = None
    warnings = []
    res = animate_video(av, models["clip"], None, model=model, crop_only=True, sbs=True, frames_dir=tmp_path / "f",
                        track=track, progress=False, warn=warnings.append)
    assert res.frames == 16 and res.missing_face_frames == 4
    assert len(warnings) == 1 and "4 of 16" in warnings[0]
    f = image_files.read_image(tmp_path / "f" / "000000.png")
    assert f.shape[0] == 256 and f.shape[1] == 256 + round(640 * 256 / 360)  # driver | 64² crop at 256 px
    assert res.frames_per_second > 0


@pytest.mark.media
def test_bad_inputs_one_line_errors_no_partial_output(models, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    clip, model = str(models["clip"]), str(models["model"])
    grey = tmp_path / "grey.png"
    image_files.write_image(grey, np.full((200, 240, 3), 128, np.uint8))
    corrupt = tmp_path / "corrupt.mp4"
    data = Path(clip).read_bytes()
    corrupt.write_bytes(data[: len(data) // 3])
    # an avatar made with another model
    av_path = tmp_path / "p.avatar"
    make_ff_avatar([str(SOURCE)], models["other"], shots=1).save(av_path)
    cases = {
        "no face": [str(grey), clip],
        "corrupt": [str(SOURCE), str(corrupt)],
        "missing": [str(tmp_path / "nobody.jpg"), clip],
        "missing driver": [str(SOURCE), str(tmp_path / "nothing.mp4")],
        "another model": [str(av_path), clip],
    }
    for name, inputs in cases.items():
        rc, _, err = run_cli(["animate", *inputs, "-o", str(out), "--model", model, "--no-progress"], capsys)
        assert rc == 1, name
        assert len(err) == 1 and err[0].startswith("talkinghead animate: error:"), (name, err)
        assert not out.exists(), name
        assert leftovers(tmp_path) == [], name


@pytest.mark.media
def test_driver_without_any_face(models, tmp_path, capsys):
    nf = MEDIA / "videos" / "no_face.mp4"
    if not nf.is_file():
        pytest.skip(f"{nf} not found")
    clip = _cut(nf, tmp_path / "nf.mp4", 6)
    out = tmp_path / "o.mp4"
    rc, _, err = run_cli(["animate", str(SOURCE), str(clip), "-o", str(out), "--model", str(models["model"]),
                        "--no-progress"], capsys)
    assert rc == 1 and len(err) == 1 and "no face" in err[0]
    assert not out.exists()


def test_bundled_model_missing_is_one_line(tmp_path, capsys, monkeypatch):
    import talkinghead.bundled

    monkeypatch.setattr(talkinghead.bundled, "MODEL", tmp_path / "absent" / "model_warp.safetensors")
    img = tmp_path / "a.png"
    image_files.write_image(img, np.zeros((8, 8, 3), np.uint8))
    drv = tmp_path / "d.mp4"
    with video_writer.VideoWriter(drv, 10, preset="ultrafast") as w:
        w.write(np.zeros((16, 16, 3), np.uint8))
    rc, _, err = run_cli(["animate", str(img), str(drv), "-o", str(tmp_path / "o.mp4")], capsys)
    assert rc == 1 and len(err) == 1 and "bundled model" in err[0]


@pytest.mark.media
def test_animator_avatar_file_round_trip_renders_same(models, tmp_path):
    from talkinghead.inference.animator import Animator

    model = LoadedModel.load(models["model"])
    av = make_ff_avatar([str(SOURCE)], model, shots=1)
    av2 = Avatar.load(av.save(tmp_path / "x.avatar"))
    pts = retarget(av.source_points, np.stack([av.source_points, av.source_points * 1.01]))
    a = Animator(av, model=model, fold=False).render_points(pts)
    b = Animator(av2, model=model, fold=True).render_points(pts)
    assert a.shape == (2, 3, 64, 64)
    assert (a - b).abs().max() < 1e-4  # folded spectral norm: same outputs


def test_output_frame_rate_selects_driver_frames():
    from talkinghead.inference.pipeline import _frame_indices

    info = video.VideoInfo(width=64, height=64, fps=25.0, num_frames=100, has_audio=False, duration=4.0)
    assert _frame_indices(info, None) == (None, 25.0)
    idx, fps = _frame_indices(info, 12.5)
    assert fps == 12.5 and idx == list(range(0, 100, 2))


@pytest.mark.slow
def test_demo_with_a_tiny_model(tmp_path, capsys):
    """`talkinghead demo --mode ft` end to end on the bundled assets (tiny model, 2 fine-tuning steps)."""
    from talkinghead.bundled import DRIVING, PORTRAIT

    if not (PORTRAIT.is_file() and DRIVING.is_file()):
        pytest.skip("bundled demo assets missing")
    random_model_file(tmp_path / "tiny.safetensors")
    out = tmp_path / "demo"
    rc = main(["demo", "--model", str(tmp_path / "tiny.safetensors"), "--mode", "ft", "--steps", "2", "--out",
               str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "frames/s" in printed and "monalisa_side_by_side.mp4" in printed
    drv = video.probe_video(DRIVING)
    for name in ("monalisa.mp4", "monalisa_side_by_side.mp4"):
        info = video.probe_video(out / name)
        assert info.num_frames == drv.num_frames and info.has_audio
    assert video.probe_video(out / "monalisa.mp4").height == image_files.read_image(PORTRAIT).shape[0] + 1  # padded even
    assert Avatar.load(out / "monalisa.avatar").mode == "ft"


def test_a_grinning_reference_still_opens_a_closed_mouth():
    """A driver who grins in every frame, its reference included: relative deltas alone leave the photo's closed
    mouth closed; the floor opens it to the driver's gap scaled to the photo's face, the lips keeping their
    thickness. A photo that shows more than the driver keeps it (the floor never closes a mouth)."""
    def gap_over_height(p):
        return mouth_opening(p) * np.linalg.norm(p[36] - p[45]) / (p[8, 1] - p[19, 1])

    source = synthetic_face(130, 100, cx=64, cy=60)
    driver = np.stack([synthetic_face(70, 115, o, cx=300, cy=200) for o in (0.10, 0.12, 0.10)])
    plain = retarget(source, driver, driver[0], mouth_floor=False)
    floored = retarget(source, driver, driver[0])
    assert gap_over_height(plain[0]) < 0.02 and gap_over_height(floored[0]) == pytest.approx(
        gap_over_height(driver[0]), rel=0.2)
    assert mouth_opening(floored[1]) > mouth_opening(floored[0])
    for lip in ((51, 62), (57, 66)):  # the upper and lower lips' thickness in the middle
        t = np.linalg.norm(floored[0][lip[0]] - floored[0][lip[1]])
        assert t == pytest.approx(np.linalg.norm(source[lip[0]] - source[lip[1]]), rel=0.05)
    wide = synthetic_face(130, 100, 0.2, cx=64, cy=60)
    closed = np.stack([synthetic_face(70, 115, 0.0, cx=300, cy=200)] * 2)
    np.testing.assert_allclose(retarget(wide, closed, closed[0]), retarget(wide, closed, closed[0], mouth_floor=False))


def test_retargeting_is_invariant_to_a_tilted_driver():
    """The same motion from a driver whose whole clip is rolled 30° gives the same output."""
    source = synthetic_face(130, 100, cx=64, cy=60)
    driver = np.stack([synthetic_face(70, 115, o, cx=300, cy=200) for o in (0.0, 0.05, 0.12)])
    c = driver[0].mean(0)  # rotate the whole clip about one point
    a = math.radians(30)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    tilted = ((driver - c) @ r.T + c).astype(np.float32)
    np.testing.assert_allclose(retarget(source, tilted), retarget(source, driver), atol=1e-2)


@pytest.mark.slow
def test_demo_with_the_bundled_model(tmp_path, capsys):
    """The README's demo on the shipped weights (feed-forward, as `make demo`): a Mona Lisa video, not a flat one."""
    from talkinghead.bundled import DRIVING, MODEL, PORTRAIT

    if not MODEL.is_file():
        pytest.skip("the bundled model is not in this checkout")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    assert Avatar.load(out / "monalisa.avatar").mode == "ff"
    info = video.probe_video(out / "monalisa.mp4")
    assert info.num_frames == video.probe_video(DRIVING).num_frames and info.has_audio
    frames = list(video.iter_frames(out / "monalisa.mp4", max_frames=40))
    portrait = image_files.read_image(PORTRAIT)
    h, w = portrait.shape[:2]
    stack = np.stack([f[:h, :w] for f in frames]).astype(np.float32)  # (T, H, W, 3), even-padding removed
    assert stack.std(axis=0).max() > 20, "the face does not move"
    assert np.abs(stack[0] - portrait).mean() < 25, "the output does not look like the portrait"


@pytest.mark.media
def test_animate_bad_options_are_refused_before_any_work(models, tmp_path, capsys):
    """--fps above the driver's would invent frames (1,666 from 40 before); --shots 0/-3, --batch-size 0."""
    out = tmp_path / "o.mp4"
    base = ["animate", str(SOURCE), str(models["clip"]), "-o", str(out), "--model", str(models["model"]),
            "--no-progress"]
    for extra, code, word in ((["--fps", "1000"], 2, "--fps"), (["--fps", "60"], 1, "fps"),
                              (["--shots", "0"], 2, "--shots"), (["--shots", "-3"], 2, "--shots"),
                              (["--batch-size", "0"], 2, "--batch-size"), (["--fps", "nan"], 2, "--fps")):
        rc, _, err = run_cli(base + extra, capsys)
        assert rc == code and len(err) == 1 and word in err[0], (extra, err)
        assert not out.exists()


@pytest.mark.media
@pytest.mark.slow
def test_sigterm_and_kill_of_animate_leave_no_partial_files(models, tmp_path):
    """SIGTERM mid-render: exit 143, no output and no hidden partial file; after a kill -9 the next run into
    the folder removes the partial file the killed run left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "o.mp4"
    cmd = [sys.executable, "-m", "talkinghead", "animate", str(SOURCE), str(DRIVER), "-o", str(out),
           "--model", str(models["model"]), "--no-progress", "--batch-size", "1"]

    def start_and_wait_for_partial():
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and not leftovers(tmp_path):
            time.sleep(0.05)
        assert p.poll() is None and leftovers(tmp_path), "the run ended before writing started"
        return p

    for attempt in range(3):
        p = start_and_wait_for_partial()
        seen = leftovers(tmp_path)
        t_sig = time.time()
        p.send_signal(signal.SIGTERM)  # does nothing when the process has already ended
        signalled = p.returncode is None
        out_s, err = p.communicate(timeout=60)
        if signalled:
            break
        out.unlink(missing_ok=True)  # it finished before the signal: the premise failed, not the behaviour
    assert signalled, "three runs ended between the partial file's appearance and the signal"
    assert p.returncode == 143, (seen, time.time() - t_sig, out_s[-500:], err[-2000:], list(tmp_path.iterdir()))
    assert "Traceback" not in err and not out.exists() and leftovers(tmp_path) == []

    p = start_and_wait_for_partial()
    p.kill()
    p.wait(timeout=60)
    assert leftovers(tmp_path), "kill -9 leaves the partial file (nothing can remove it then)"
    rc = subprocess.run([*cmd[:-2], "--fps", "5"], env=env, capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr[-2000:]
    assert out.exists() and leftovers(tmp_path) == []


@pytest.mark.media
def test_truncated_driver_or_source_video_is_an_error_not_two_frames(models, tmp_path, capsys):
    """A video cut to its first 20 KB (its header still counts every frame) decoded as 2 frames and animated
    with exit 0; now animate and finetune stop with one line and write nothing."""
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(DRIVER.read_bytes()[:20_000])
    out = tmp_path / "o.mp4"
    rc, _, err = run_cli(["animate", str(SOURCE), str(cut), "-o", str(out), "--model", str(models["model"]),
                        "--no-progress"], capsys)
    assert rc == 1 and len(err) == 1 and ("truncated" in err[0] or "corrupt" in err[0]), err
    assert not out.exists() and leftovers(tmp_path) == []
    av = tmp_path / "x.avatar"
    rc, _, err = run_cli(["finetune", str(cut), "--model", str(models["model"]), "--out", str(av), "--mode", "ff",
                        "--no-progress"], capsys)
    assert rc == 1 and len(err) == 1 and ("truncated" in err[0] or "corrupt" in err[0]), err
    assert not av.exists()


@pytest.mark.media
def test_cli_animate_finetune_with_a_warp_model(tmp_path, capsys):
    """`animate photo driver --finetune 3` fine-tunes first (paper §3.3 FT) and renders with the fine-tuned
    warp-guided G; the face is composed at its size in the photo and pasted back. --finetune on an .avatar
    file is a one-line error."""
    from talkinghead.config import warp_tiny

    model = random_model_file(tmp_path / "warp.safetensors", warp_tiny())
    clip = _cut(DRIVER, tmp_path / "drive.mp4", 6)
    out = tmp_path / "out.mp4"
    rc = main(["animate", str(SOURCE), str(clip), "-o", str(out), "--model", str(model), "--finetune", "3",
               "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "fine-tuned 3 steps" in captured.out
    frames = list(video.iter_frames(out))
    assert len(frames) == 6 and frames[0].shape == image_files.read_image(SOURCE).shape
    av = tmp_path / "a.avatar"
    make_ff_avatar([str(SOURCE)], model, shots=1).save(av)
    rc, _, err = run_cli(["animate", str(av), str(clip), "-o", str(tmp_path / "x.mp4"), "--finetune", "--no-progress"],
                       capsys)
    assert rc != 0 and len(err) == 1 and "--finetune" in err[0]
    assert not (tmp_path / "x.mp4").exists()


def test_an_output_naming_an_input_is_refused_before_any_work(tmp_path, capsys):
    driver = tmp_path / "driver.mp4"
    with video_writer.VideoWriter(driver, 10) as w:
        for _ in range(3):
            w.write(np.zeros((32, 32, 3), np.uint8))
    photo = tmp_path / "photo.jpg"
    image_files.write_image(photo, np.zeros((32, 32, 3), np.uint8))
    os.link(driver, tmp_path / "hard.mp4")
    (tmp_path / "photo.mp4").symlink_to(photo)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for out in (driver, tmp_path / "hard.mp4", tmp_path / "photo.mp4"):
        rc, _, err = run_cli(["animate", str(photo), str(driver), "-o", str(out), "--no-progress"], capsys)
        assert rc == 1 and len(err) == 1 and "is the input" in err[0], (out, err)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---- the writer thread (no media) --------------------------------------------------------------------------

def test_in_order_writes_everything_in_order_and_hands_errors_back():
    from talkinghead.inference.pipeline import InOrder

    seen = []
    with InOrder(seen.append, depth=2) as w:
        for i in range(50):
            w.put(i)
    assert seen == list(range(50))

    def fail(i):
        if i == 3:
            raise ValueError("disk full")
        seen.append(i)

    seen.clear()
    with pytest.raises(ValueError, match="disk full"):
        with InOrder(fail, depth=2) as w:
            for i in range(50):
                w.put(i)
    assert seen == [0, 1, 2]
    seen.clear()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the render: what waits is dropped, the thread ends
        with InOrder(seen.append, depth=100) as w:
            for i in range(10):
                w.put(i)
            raise KeyboardInterrupt
    assert not w.thread.is_alive() and seen == sorted(seen)


class _CountingAnimator:
    """render_points' stand-in: frames whose pixels say which target they are, with the threads and the
    number of batches at once it saw."""

    def __init__(self, fail_at=None):
        import threading
        import torch

        self.device, self.fail_at = torch.device("cpu"), fail_at
        self.lock, self.running, self.most, self.threads, self.calls = threading.Lock(), 0, 0, set(), 0

    def render_points(self, points, full_size=True):
        import threading
        import time
        import torch

        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
            self.threads.add((threading.current_thread().name, torch.get_num_threads()))
        try:
            time.sleep(0.01)
            if self.fail_at is not None and points[0, 0, 0] == self.fail_at:
                raise ValueError("out of memory")
            return torch.from_numpy(points[:, :1, :1, None].astype(np.float32)).expand(-1, 3, 4, 4) / 127.5 - 1
        finally:
            with self.lock:
                self.running -= 1


def test_render_workers_keep_order_hand_errors_back_and_stop_early():
    """Batches rendered in worker threads (one intra-op thread each, the caller's count untouched) come back in
    order; a worker's error reaches the caller; leaving early renders no more than what was in flight."""
    import torch

    from talkinghead.inference.pipeline import render_stream

    targets = np.repeat(np.arange(40, dtype=np.float32)[:, None, None], 68, 1).repeat(2, 2)  # (40, 68, 2)
    before = torch.get_num_threads()
    fake = _CountingAnimator()
    crops = list(render_stream(fake, targets, batch_size=3, workers=2))
    assert [int(c[0, 0, 0]) for c in crops] == list(range(40))
    assert fake.most == 2 and {n for _, n in fake.threads} == {1} and torch.get_num_threads() == before
    assert all(name.startswith("talkinghead-render") for name, _ in fake.threads)
    with pytest.raises(ValueError, match="out of memory"):
        list(render_stream(_CountingAnimator(fail_at=9), targets, batch_size=3, workers=2))
    fake = _CountingAnimator()
    stream = render_stream(fake, targets, batch_size=3, workers=2)
    assert int(next(stream)[0, 0, 0]) == 0
    stream.close()  # the writer failed: the batches not yet started are cancelled
    assert fake.calls <= 4
    fake = _CountingAnimator()
    list(render_stream(fake, targets, batch_size=3, workers=1))
    assert fake.threads == {("MainThread", before)}


def test_render_workers_give_the_frames_of_one_batch_at_a_time(tmp_path):
    """The warp-guided G and its full-size composition, rendered by two workers of one thread each: the same
    frames as one batch at a time with the caller's threads (within one grey level: float sums in another
    order)."""
    from talkinghead import bundled
    from talkinghead.config import warp_tiny
    from talkinghead.inference.animator import Animator
    from talkinghead.inference.pipeline import render_stream

    model = random_model_file(tmp_path / "warp.safetensors", warp_tiny())
    av = make_ff_avatar([str(bundled.PORTRAIT)], model, shots=1)
    animator = Animator(av, model=model)
    rng = np.random.default_rng(0)
    targets = av.source_points[None] + rng.normal(0, 1.5, (10, 68, 2)).astype(np.float32)
    one = np.stack(list(render_stream(animator, targets, batch_size=3, workers=1)))
    two = np.stack(list(render_stream(animator, targets, batch_size=3, workers=2)))
    assert one.shape == two.shape == (10, animator.output_size, animator.output_size, 3)
    assert np.abs(one.astype(int) - two.astype(int)).max() <= 1

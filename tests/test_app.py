"""The web app's library side (talkinghead/app.py) without a browser: a .pts file's landmarks used where no
detector finds the face, FT and FF jobs, an avatar of the session animated again, one-line errors naming files as
the visitor knows them. A tiny warp-guided model built in the test, the bundled Mona Lisa and a cut of the
bundled clip. The page itself is tested in a real browser in test_app_browser.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talkinghead import bundled

from talkinghead.media import image_files, video, video_writer
from talkinghead.app.page import for_page
from talkinghead.app.studio import Studio
from talkinghead.config import warp_tiny
from talkinghead.errors import NoFaceError, TalkingHeadError

from helpers import random_model_file


def _write_pts(path, points: np.ndarray) -> None:
    rows = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in points)  # .pts files are 1-based
    path.write_text(f"version: 1\nn_points: {len(points)}\n{{\n{rows}\n}}\n")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    d = tmp_path_factory.mktemp("app")
    random_model_file(d / "warp.safetensors", warp_tiny())
    return Studio(d / "warp.safetensors", workdir=d / "out")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The first 6 frames of the bundled clip, with its audio."""
    path = tmp_path_factory.mktemp("clip") / "drive.mp4"
    src = bundled.DRIVING
    with video_writer.VideoWriter(path, video.probe_video(src).fps, audio_from=src, preset="ultrafast") as w:
        for f in video.iter_frames(src, max_frames=6):
            w.write(f)
    return path


def test_for_page_names_uploads_by_their_file_name():
    msg = "no face found in /tmp/gradio/6b4e22fd/grey.png; see /srv/out/job0001/x.avatar and /etc/y.mp4"
    assert for_page(msg, ["/tmp/gradio", "/srv/out/"]) == "no face found in grey.png; see x.avatar and /etc/y.mp4"


@pytest.mark.slow
def test_pts_landmarks_stand_in_where_no_face_is_found(studio, clip, tmp_path):
    """A photo no detector finds a face in is animated with the landmarks of a .pts file (one photo only);
    without it, NoFaceError."""
    from talkinghead.landmarks.detect import DlibDetector, pick_face

    mona = image_files.read_image(bundled.PORTRAIT)
    points = pick_face(DlibDetector(upsample=1).detect(mona), mona.shape).points
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full_like(mona, 128)).save(flat)  # no face to find, the Mona Lisa's landmarks in a file
    pts = tmp_path / "mona.pts"
    _write_pts(pts, points)
    with pytest.raises(NoFaceError, match="no face found in .*flat.png"):
        studio.landmarks_preview(str(flat))
    image, caption = studio.landmarks_preview(str(flat), str(pts))
    assert caption == "flat.png (mona.pts)" and image.ndim == 3 and image.shape[0] < mona.shape[0]
    job = studio.animate(str(clip), photos=[str(flat)], landmarks_file=str(pts))
    assert video.probe_video(job.video).num_frames == 6
    assert job.avatar.suffix == ".avatar" and job.avatar_name == "flat, FF, 1 photo"
    with pytest.raises(TalkingHeadError, match="mona.pts describe one photo"):
        studio.animate(str(clip), photos=[str(flat), str(bundled.PORTRAIT)], landmarks_file=str(pts))
    _write_pts(pts, points[:5])
    with pytest.raises(TalkingHeadError, match="expected 68 points"):
        studio.animate(str(clip), photos=[str(flat)], landmarks_file=str(pts))


def test_a_bad_landmarks_file_is_named_and_the_detected_face_shown(studio, tmp_path):
    """A landmarks file that cannot be used (garbage, NaN, too few points, empty, binary, another photo's) is
    not taken for a missing face: the preview shows the detected face and says why the file was not used; with
    no face either, the error names both."""
    from talkinghead.landmarks.manual import mean_shape

    bad = {"garbage.pts": b"hello", "nan.pts": ("{\n" + "nan nan\n" * 68 + "}\n").encode(),
           "few.pts": b"version: 1\n{\n1 2\n3 4\n}\n", "empty.pts": b"", "binary.pts": bytes(range(256)) * 2}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    _write_pts(tmp_path / "far.pts", mean_shape() * 50 + 5000)
    mona = image_files.read_image(bundled.PORTRAIT)
    want, _ = studio.landmarks_preview(str(bundled.PORTRAIT))
    for name in [*bad, "far.pts"]:
        image, caption = studio.landmarks_preview(str(bundled.PORTRAIT), str(tmp_path / name))
        assert np.array_equal(image, want), name
        assert caption.startswith("monalisa.jpg: the detected face; the landmarks file is not usable: "), caption
        assert name in caption and str(tmp_path) not in caption and "\n" not in caption, caption
    assert "expected 68 points" in studio.landmarks_preview(str(bundled.PORTRAIT), str(tmp_path / "few.pts"))[1]
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full_like(mona[:200, :200], 128)).save(flat)
    with pytest.raises(NoFaceError, match="no face found in .*flat.png.*not usable: nan.pts: .*not numbers"):
        studio.landmarks_preview(str(flat), str(tmp_path / "nan.pts"))


@pytest.mark.slow
def test_fine_tune_then_the_session_avatar_again(studio, clip):
    """FT (2 steps) from the Mona Lisa with every option on; then its avatar alone, cropped, without photos."""
    first = studio.animate(str(clip), photos=[str(bundled.PORTRAIT)], fine_tune=True, steps=2, absolute=True,
                           side_by_side=True)
    assert "fine-tuned 2 steps" in first.summary and first.avatar_name == "monalisa, FT, 1 photo"
    info = video.probe_video(first.video)
    assert info.num_frames == 6 and info.has_audio
    again = studio.animate(str(clip), avatar_path=first.avatar, crop_only=True)
    assert again.avatar == first.avatar and again.avatar_name is None and again.video != first.video
    info = video.probe_video(again.video)
    assert info.num_frames == 6 and info.width == info.height  # the face crop


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(studio, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    with pytest.raises(TalkingHeadError, match="broken.mp4"):
        studio.animate(str(broken), photos=[str(bundled.PORTRAIT)])
    with pytest.raises(TalkingHeadError, match="no driving video"):
        studio.animate(None, photos=[str(bundled.PORTRAIT)])
    with pytest.raises(TalkingHeadError, match="no photo"):
        studio.animate(str(bundled.DRIVING), photos=[])


def test_serve_on_a_taken_port_is_a_one_line_error(capsys):
    """`talkinghead serve --port P` with P in use: exit 1 and one line, before the model loads."""
    import socket

    from talkinghead.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = main(["serve", "--port", str(port)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and err == [f"talkinghead serve: error: cannot serve at 127.0.0.1:{port}: Address already in use "
                               "(try another --port or --host)"]


def test_serve_limit_options_default_to_app_limits():
    """`talkinghead serve`'s limit options take their defaults from AppLimits; each sets its field."""
    import argparse

    from talkinghead.app.limits import AppLimits
    from talkinghead.commands import serve

    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    assert serve.limits_of(p.parse_args([])) == AppLimits()
    got = serve.limits_of(p.parse_args(["--max-driver-seconds", "5", "--max-photos", "2", "--max-upload-mb", "1"]))
    assert (got.driver_seconds, got.photos, got.upload_bytes) == (5.0, 2, 1024 * 1024)


def test_stoppable_bars_raise_once_the_event_is_set():
    import threading

    from talkinghead.console import progress, stoppable
    from talkinghead.errors import Stopped

    stop = threading.Event()
    with stoppable(stop), progress(3, enabled=False) as bar:
        bar.update(1)
        stop.set()
        with pytest.raises(Stopped):
            bar.update(1)
    with stoppable(stop), pytest.raises(Stopped):
        progress(3, enabled=False)
    with progress(3, enabled=False) as bar:  # outside stoppable: nothing to stop
        bar.update(1)


def test_photos_over_the_limits_are_refused_from_their_header_or_shrunk(studio, tmp_path, monkeypatch):
    from talkinghead.app.limits import AppLimits

    monkeypatch.setattr(studio, "limits", AppLimits(photo_megapixels=0.05, photo_side=64, photos=2))
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")  # 0.06 megapixels
    with pytest.raises(TalkingHeadError, match=r"^big.png is 300×200 \(0 megapixels\): .* up to 0.05 megapixels"):
        studio.photos([tmp_path / "big.png"], "s1")
    Image.new("RGB", (128, 96)).save(tmp_path / "wide.jpg")
    (small,) = studio.photos([tmp_path / "wide.jpg"], "s1")
    assert small != str(tmp_path / "wide.jpg") and small.endswith("wide.jpg")
    assert Image.open(small).size == (64, 48)
    assert studio.photos([small], "s1") == [small]  # within the limits: itself
    with pytest.raises(TalkingHeadError, match="3 photos: this server makes an avatar of up to 2"):
        studio.photos([small] * 3, "s1")
    studio.end_session("s1")
    assert not Path(small).exists()


def test_long_or_large_drivers_are_refused_before_any_work(studio, clip, monkeypatch):
    from talkinghead.app.limits import AppLimits

    monkeypatch.setattr(studio, "limits", AppLimits(driver_seconds=0.1))
    with pytest.raises(TalkingHeadError, match=r"^drive.mp4 is 0 s long: .* up to 0.1 s; trim it"):
        studio.animate(str(clip), photos=[str(bundled.PORTRAIT)])
    monkeypatch.setattr(studio, "limits", AppLimits(driver_side=100))
    info = video.probe_video(clip)
    with pytest.raises(TalkingHeadError, match=f"drive.mp4 is {info.width}×{info.height}: .* up to 100 pixels a side"):
        studio.animate(str(clip), photos=[str(bundled.PORTRAIT)])


@pytest.mark.slow
def test_a_stopped_job_stops_and_a_session_keeps_its_last_outputs(studio, clip, monkeypatch):
    """stop() ends the running job at its next bar step (Stopped, its folder gone); a session keeps its last
    `outputs` jobs; end_session removes its files and refuses its queued jobs."""
    from talkinghead.app.limits import AppLimits
    from talkinghead.errors import Stopped

    monkeypatch.setattr(studio, "limits", AppLimits(outputs=1))
    make = studio.make_avatar

    def make_then_stop(*a, **kw):
        avatar = make(*a, **kw)
        assert studio.stop("v")  # the job is running: the landmarks bar stops it
        return avatar

    monkeypatch.setattr(studio, "make_avatar", make_then_stop)
    with pytest.raises(Stopped):
        studio.animate(str(clip), photos=[str(bundled.PORTRAIT)], session="v")
    monkeypatch.setattr(studio, "make_avatar", make)
    folder = studio.workdir / "v"
    assert not list(folder.glob("job*")) and not list(folder.glob("avatars/*"))
    first = studio.animate(str(clip), photos=[str(bundled.PORTRAIT)], session="v")
    second = studio.animate(str(clip), avatar_path=first.avatar, session="v")
    assert first.avatar.exists() and second.video.exists() and not first.video.exists()
    assert not studio.stop("v")  # nothing runs
    studio.end_session("v")
    assert not folder.exists()
    with pytest.raises(Stopped):
        studio.animate(str(clip), avatar_path=first.avatar, session="v")


@pytest.mark.slow
def test_sigterm_removes_the_servers_upload_folder(tmp_path):
    """`talkinghead serve` keeps gradio's files in a folder of its own under $GRADIO_TEMP_DIR; SIGTERM stops
    it (exit 143) and removes that folder."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    random_model_file(tmp_path / "warp.safetensors", warp_tiny())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "talkinghead", "serve", "--port", str(port), "--model",
                             str(tmp_path / "warp.safetensors")], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=5).read(100)
                break
            except OSError:
                assert time.time() < deadline, "no answer within 120 s"
                time.sleep(0.5)
        (own,) = (tmp_path / "gradio").iterdir()
        assert own.name.startswith("talkinghead-gradio-")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
    assert not any((tmp_path / "gradio").iterdir())

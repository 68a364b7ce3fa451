"""The web app's library side (talkinghead/app.py) without a browser: a .pts file's landmarks used where no
detector finds the face, FT and FF jobs, an avatar of the session animated again, one-line errors naming files as
the visitor knows them. A tiny warp-guided model built in the test, the bundled Mona Lisa and a cut of the
bundled clip. The page itself is tested in a real browser in test_app_browser.py."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from talkinghead import bundled

from talkinghead.media import video
from talkinghead.app.page import for_page
from talkinghead.app.studio import Studio
from talkinghead.config import warp_tiny
from talkinghead.errors import NoFaceError, TalkingHeadError

from model_files import random_model_file


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
    with video.VideoWriter(path, video.probe_video(src).fps, audio_from=src, preset="ultrafast") as w:
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

    mona = video.read_image(bundled.PORTRAIT)
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
    mona = video.read_image(bundled.PORTRAIT)
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

"""The face-finding cascade (issue 11, item 1): stage order and up-sampling budget, pickling, each stage on
real faces (HOG, HOG up-sampled, dlib CNN, MediaPipe mesh where installed), a drawing no stage finds, and
preprocess / evaluate / animate finding the face in a small 176×144 clip equally often."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from talkinghead.media import image_files, video, video_writer
from talkinghead.console import log
from talkinghead.landmarks import cascade as cascade_mod
from talkinghead.landmarks.cascade import FaceCascade, NoFaceFoundError, photo_cascade, video_cascade
from talkinghead.landmarks.detect import DlibCnnDetector, DlibDetector, box_iou, interocular
from talkinghead.landmarks.mesh import mesh_available, mesh_to_68

from conftest import MEDIA
from helpers import nme

PORTRAIT = MEDIA / "images" / "chuck_crop.jpg"  # 254×269, one frontal face
needs_mesh = pytest.mark.skipif(not mesh_available(), reason="mediapipe (the `mesh` extra) is not installed")


def test_stages_upsample_only_small_images_and_video_skips_the_slow_ones():
    c = FaceCascade(mesh=False)
    assert c.stages((144, 176)) == ["hog0", "hog1", "hog2", "cnn"]  # 176·4 = 704 px up-sampled
    assert c.stages((800, 600)) == ["hog0", "hog1", "cnn"]  # 1600 px; ×4 would be 3200
    assert c.stages((9000, 12000)) == ["hog0", "hog1", "cnn"]  # detected on a 1024-px copy
    assert FaceCascade(max_side=0, mesh=False).stages((1500, 2000)) == ["hog0", "cnn"]
    v = video_cascade()
    assert v.stages((144, 176)) == ["hog0", "hog1", "hog2"] and v.stages((1080, 1920)) == ["hog0", "hog1"]
    assert video_cascade(min_upsample=3).stages((144, 176)) == ["hog3"]  # preprocess --upsample above the max
    v._start = "hog2"  # sticky: the stage that found the last face first, then the others in order
    assert v.stages((144, 176)) == ["hog2", "hog0", "hog1"]
    v.reset()
    assert v.stages((144, 176))[0] == "hog0"
    photo = photo_cascade().stages((500, 500))  # a photo: HOG ×1 and ×2 together first
    assert photo[:3] == ["hog0+1", "hog2", "cnn"] and ("mesh" in photo) == mesh_available()
    assert photo_cascade().stages((4000, 3000))[:2] == ["hog0+1", "cnn"]


def test_cascade_pickles_by_its_settings():
    c = FaceCascade(max_side=640, min_upsample=1, cnn=False, mesh=False, min_faces=2, sticky=True)
    c.counts["hog1"] = 3
    d = pickle.loads(pickle.dumps(c))
    assert d.__getstate__() == c.__getstate__() and d.counts == {} and d._detectors == {}


@pytest.mark.media
def test_a_frontal_portrait_costs_one_hog_pass_and_matches_dlib():
    img = image_files.read_image(PORTRAIT)
    c = pickle.loads(pickle.dumps(photo_cascade()))  # as a preprocess worker gets it
    faces = c.detect(img)
    assert len(faces) == 1 and c.last_stage == "hog0+1" and c.tried == ["hog0+1"]
    ref = DlibDetector().detect(img)[0]
    assert np.allclose(faces[0].points, ref.points)
    assert np.allclose(c.predict(img, ref.box).points, ref.points)
    assert [tuple(b) for b, _ in c.detect_boxes(img)] == [tuple(ref.box)]


@pytest.mark.media
def test_a_small_face_is_found_by_upsampling_and_verbose_says_so(monkeypatch):
    big = Image.open(PORTRAIT).convert("RGB")
    canvas = Image.new("RGB", (240, 200), (120, 120, 120))
    canvas.paste(big.resize((big.width // 5, big.height // 5), Image.LANCZOS), (90, 60))  # face box ~45 px
    img = np.asarray(canvas)
    assert not DlibDetector(0).detect_boxes(img)
    said = []
    monkeypatch.setattr(log, "debug", lambda msg, *args, **kw: said.append(msg % args))
    c = FaceCascade(mesh=False)
    faces = c.detect(img)
    assert len(faces) == 1 and c.last_stage in ("hog1", "hog2") and c.tried[0] == "hog0"
    assert any("face found by dlib HOG up-sampled" in s and "after dlib HOG found none" in s for s in said), said


@pytest.mark.media
def test_a_photo_gets_the_annotated_face_where_one_hog_pass_alone_picks_another():
    """breakingbad.jpg: HOG ×1 misses the turned main face and finds the other person; einstein.jpg: HOG ×2
    misses Einstein and finds a small false face. The photo cascade's first stage (both, merged) then the
    default choice (largest, central) lands on the annotated face in both."""
    from talkinghead.landmarks.detect import load_pts, pick_face

    for name, wrong in (("breakingbad", 0), ("einstein", 1)):
        img = image_files.read_image(MEDIA / "images" / f"{name}.jpg")
        truth = load_pts(MEDIA / "landmarks" / f"{name}.pts")
        alone = pick_face(DlibDetector(wrong, max_side=1024).detect(img), img.shape)
        assert nme(alone.points, truth) > 1, name  # another face
        face = pick_face(photo_cascade().detect(img), img.shape)
        assert nme(face.points, truth) < 0.1, name


@pytest.mark.media
def test_cnn_stage_gives_predictor_boxes_like_hogs(monkeypatch):
    """With HOG finding nothing the CNN answers; its boxes, mapped to HOG-like boxes, give the 68-point
    predictor the same landmarks as HOG's box within a few % of the eye distance."""
    img = image_files.read_image(PORTRAIT)
    ref = DlibDetector().detect(img)[0]
    cnn = DlibCnnDetector().detect(img)
    assert len(cnn) == 1 and nme(cnn[0].points, ref.points) < 0.05
    monkeypatch.setattr(DlibDetector, "detect_boxes", lambda self, image: [])
    c = FaceCascade(mesh=False)
    faces = c.detect(img)
    assert c.last_stage == "cnn" and c.tried == ["hog0", "hog1", "hog2", "cnn"] and len(faces) == 1


@needs_mesh
@pytest.mark.media
def test_mesh_stage_maps_468_points_onto_dlibs_68():
    """The fitted 468 -> 68 mapping on people it was not fitted on (capman_2 is a val clip, the portrait no
    video frame): within 6 % of the eye distance of dlib's points on average."""
    from talkinghead.landmarks.mesh import MeshDetector

    mesh, hog = MeshDetector(), DlibDetector()
    errors = []
    frames = [f for _, f in video.iter_indexed_frames(MEDIA / "videos" / "capman_2.mp4", indices=[50, 350, 650])]
    for img in frames + [image_files.read_image(PORTRAIT)]:
        ref = hog.detect(img)[0]
        m = mesh.mesh_points(img)
        assert len(m) == 1 and m[0].shape == (468, 2)
        errors.append(nme(mesh_to_68(m[0]), ref.points))
        face = mesh.detect(img)[0]
        assert np.allclose(face.points, mesh_to_68(m[0])) and box_iou(face.box, ref.box) > 0.6
    assert np.mean(errors) < 0.06, errors
    pickle.loads(pickle.dumps(mesh))  # rebuilt in a worker


@needs_mesh
@pytest.mark.media
def test_a_tilted_head_gets_the_meshs_points_where_dlibs_predictor_fails():
    """A portrait turned 70° in the image: HOG finds nothing, the CNN finds the face but dlib's predictor (made
    for upright faces) misplaces its points; the photo cascade checks them against the mesh and takes its."""
    import math

    im = Image.open(PORTRAIT).convert("RGB")
    upright = DlibDetector().detect(np.asarray(im))[0].points
    tilted = im.rotate(70, expand=True, fillcolor=(128, 128, 128))
    a, d = math.radians(70), upright - [im.width / 2, im.height / 2]
    truth = np.stack([math.cos(a) * d[:, 0] + math.sin(a) * d[:, 1] + tilted.width / 2,
                      -math.sin(a) * d[:, 0] + math.cos(a) * d[:, 1] + tilted.height / 2], axis=1)
    img = np.asarray(tilted)
    plain = FaceCascade(mesh=False)
    assert nme(plain.detect(img)[0].points, truth) > 0.3 and plain.last_stage == "cnn"
    c = photo_cascade()
    faces = c.detect(img)
    assert len(faces) == 1 and nme(faces[0].points, truth) < 0.15 and c.replaced == 1


@pytest.mark.media
def test_a_drawing_no_stage_finds_is_a_no_face_found_error():
    from talkinghead.persons.shots import prepare_shots

    with pytest.raises(NoFaceFoundError) as e:
        prepare_shots(MEDIA / "images" / "ironman.jpg", 64, shots=1)  # a drawn Iron Man mask
    assert str(e.value).startswith("no face found in") and e.value.tried[0] == "hog0+1"
    assert "cnn" in e.value.tried and ("mesh" in e.value.tried) == mesh_available()
    msg = e.value.command_line_message()
    assert "--landmarks" in msg and "--points" in msg and "talkinghead landmarks" in msg and "\n" not in msg


@pytest.mark.media
def test_preprocess_evaluate_and_animate_find_a_small_clips_face_equally(tmp_path):
    """176×144 frames of pexels_woman with the face ~50 px wide (under HOG's ~80 px at native size): the
    driver of animate, preprocess and evaluate's preprocessing all find it in every frame (preprocess and
    evaluate found none before they shared the cascade)."""
    from talkinghead.data.preprocess import preprocess
    from talkinghead.data.sources import find_videos
    from talkinghead.evaluation.data import prepare_videos
    from talkinghead.evaluation.settings import EvalSettings
    from talkinghead.inference.pipeline import track_driver

    src = MEDIA / "videos" / "pexels_woman.mp4"
    (tmp_path / "clips").mkdir()
    clip = tmp_path / "clips" / "small.mp4"
    n = 48
    with video_writer.VideoWriter(clip, video.probe_video(src).fps, preset="ultrafast") as w:
        for f in video.iter_frames(src, max_frames=n):
            frame = np.full((144, 176, 3), 90, np.uint8)
            frame[36:108, 24:152] = np.asarray(Image.fromarray(f).resize((128, 72), Image.BILINEAR))
            w.write(frame)
    frames = list(video.iter_frames(clip))
    assert len(frames) == n and frames[0].shape == (144, 176, 3)
    hog0 = DlibDetector(0)
    assert sum(bool(hog0.detect_boxes(f)) for f in frames[::8]) == 0  # the old preprocess detector

    animate_found = sum(p is not None for p in track_driver(clip, progress=False).points)
    summary = preprocess(tmp_path / "clips", tmp_path / "pre", resolution=64, every=1, progress=False)
    st = EvalSettings()
    shards, skipped = prepare_videos(find_videos(tmp_path / "clips"), tmp_path / "clips", tmp_path / "eval", 64, st,
                                     progress=False)
    assert animate_found == n
    assert summary.frames == n and summary.no_face_frames == 0
    assert not skipped and len(shards[0]) == len(range(0, n, st.every))
    assert interocular(np.load(tmp_path / "pre" / "videos" / "small" / "landmarks.npy")[0]) > 10


def test_video_cascade_counts_the_winning_stage():
    c = video_cascade()
    blank = np.zeros((144, 176, 3), np.uint8)
    assert c.detect(blank) == [] and c.last_stage is None and c.tried == ["hog0", "hog1", "hog2"]
    assert c.counts == {None: 1} and c.summary() == "none 1"
    tried = []
    for _ in range(2 * cascade_mod.MISSES):  # a long stretch without a face: the later stages now and then
        c.detect(blank)
        tried.append(len(c.tried))
    k = cascade_mod.MISSES
    assert tried[: k - 1] == [3] * (k - 1) and tried[k - 1] == 3 and tried[k:2 * k - 1] == [1] * (k - 1)
    c.reset()
    c.detect(blank)
    assert c.tried == ["hog0", "hog1", "hog2"]
    assert cascade_mod.STAGE_NAMES["hog2"] == "dlib HOG up-sampled x4"


class _NoDlib:
    """Stands in for a dlib model that must not be reached."""

    def __call__(self, *a, **k):
        raise AssertionError("a detector ran on an image the guard should refuse")

    run = __call__


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (8, 8), (31, 200), (100, 7000), (2000, 30), (40, 400)])
def test_images_too_small_or_elongated_are_refused_before_any_detector_runs(shape, monkeypatch):
    from talkinghead.landmarks.detect import UnsearchableImageError
    from talkinghead.landmarks.mesh import MeshDetector

    img = np.zeros((*shape, 3), np.uint8)
    monkeypatch.setattr(FaceCascade, "_detector", _NoDlib())
    for cascade in (photo_cascade(), video_cascade(), FaceCascade(max_side=0)):
        with pytest.raises(UnsearchableImageError, match=r"cannot search a \d+x\d+-pixel image"):
            cascade.detect(img)
        with pytest.raises(UnsearchableImageError):
            cascade.detect_boxes(img)
    hog, cnn, mesh = DlibDetector(), DlibCnnDetector(), MeshDetector()
    hog._detector = hog._predictor = cnn._cnn = cnn._predictor = _NoDlib()
    mesh._graph = _NoDlib()
    for call in (hog.detect, hog.detect_boxes, cnn.detect, cnn.detect_boxes, mesh.detect):
        with pytest.raises(UnsearchableImageError):
            call(img)


def test_the_guard_error_names_the_photo_and_is_one_line():
    from talkinghead.errors import NoFaceError
    from talkinghead.persons.shots import prepare_shots

    with pytest.raises(NoFaceError) as e:
        prepare_shots([np.zeros((8, 8, 3), np.uint8)], image_size=64, shots=1)
    assert str(e.value).startswith("image: cannot search a 8x8-pixel image") and "\n" not in str(e.value)


def test_a_huge_image_is_searched_on_a_shrunk_copy_with_boxes_in_full_size_pixels():
    import dlib

    from talkinghead.landmarks.detect import MAX_SIDE

    seen = []

    class Hog:
        def run(self, image, upsample, threshold):
            seen.append(image.shape)
            return [dlib.rectangle(10, 20, 110, 120)], [1.5], [0]

    det = DlibDetector(max_side=0)  # no max_side of its own: the ceiling still holds
    det._detector = Hog()
    img = np.zeros((MAX_SIDE // 4, MAX_SIDE * 2, 3), np.uint8)
    (box, score), = det.detect_boxes(img)
    assert seen == [(MAX_SIDE // 8, MAX_SIDE, 3)] and score == 1.5
    assert np.allclose(box, [20, 40, 220, 240])
    small = np.zeros((300, 400, 3), np.uint8)  # within the ceiling: searched as it is
    det.detect_boxes(small)
    assert seen[-1] == small.shape

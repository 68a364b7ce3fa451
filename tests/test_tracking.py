"""talkinghead.landmarks.track: the One-Euro filter, re-detection, holding through occlusions, streaming vs offline.

Most tests drive the tracker with a scripted detector (the tracker is detector-agnostic: detect + predict), so
the truth is known and they run in milliseconds; one media test occludes the mouth on real frames.
"""

import numpy as np
import pytest

from talkinghead.landmarks.detect import Face, interocular
from talkinghead.landmarks.track import (CAUSAL_FILTER, ZERO_LAG_FILTER, OneEuroFilter, VideoLandmarkTracker,
                                         shape_change, similarity_fit, smooth_faces, zero_lag_smooth)

from conftest import MEDIA


def _face(cx=100.0, cy=100.0, r=40.0, mouth_open=0.0) -> np.ndarray:
    """A plausible (68, 2) iBUG-ordered face: jaw arc, brows, nose, eyes, lips around (cx, cy), radius r."""
    t = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    jaw = np.stack([np.cos(t), 0.1 + 0.9 * np.sin(t)], 1)[::-1] * [1, 1]
    jaw[:, 0] *= -1
    brows = np.stack([np.r_[np.linspace(-0.75, -0.15, 5), np.linspace(0.15, 0.75, 5)], np.full(10, -0.45)], 1)
    nose = np.r_[np.stack([np.zeros(4), np.linspace(-0.3, 0.1, 4)], 1),
                 np.stack([np.linspace(-0.2, 0.2, 5), np.full(5, 0.2)], 1)]

    def eye(x):
        a = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        return np.stack([x + 0.18 * np.cos(a + np.pi), -0.25 + 0.07 * np.sin(a + np.pi)], 1)

    a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    outer = np.stack([0.4 * np.cos(a + np.pi), 0.5 + (0.12 + mouth_open) * np.sin(a + np.pi)], 1)
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    inner = np.stack([0.25 * np.cos(a + np.pi), 0.5 + (0.03 + mouth_open) * np.sin(a + np.pi)], 1)
    pts = np.concatenate([jaw, brows, nose, eye(-0.4), eye(0.4), outer, inner])
    assert pts.shape == (68, 2)
    return (pts * r + [cx, cy]).astype(np.float32)


class ScriptedDetector:
    """A detector whose answers are scripted per frame: the frame's index is its pixel (0, 0, 0).
    truth[t]: the shape predict() returns (wherever the box), detections[t]: the shapes detect() returns."""

    def __init__(self, truth, detections=None):
        self.truth = truth
        self.detections = detections or {}
        self.calls = {"detect": [], "predict": []}

    @staticmethod
    def _box(pts):
        lo, hi = pts.min(0), pts.max(0)
        return np.r_[lo, hi].astype(np.float32)

    def detect(self, image):
        t = int(image[0, 0, 0])
        self.calls["detect"].append(t)
        shapes = self.detections.get(t, [self.truth[t]])
        return [Face(self._box(p), p.copy(), 1.0) for p in shapes if p is not None]

    def predict(self, image, box, score=0.0):
        t = int(image[0, 0, 0])
        self.calls["predict"].append(t)
        return Face(np.asarray(box, np.float32), self.truth[t].copy(), score)


def _frames(n):
    out = np.zeros((n, 4, 4, 3), np.uint8)
    out[:, 0, 0, 0] = np.arange(n)
    return list(out)


# -- the filter ----------------------------------------------------------------------------------------------
def test_one_euro_halves_static_noise_and_follows_a_step_and_a_ramp():
    """Causal filter at the tracker's settings, a 40-px face at 25 fps: 1-px point noise on a still face comes out
    at < 0.6 of its size (measured 0.56); a step of a face size is within 5 % after 2 frames; a ramp of 0.1 face
    per frame trails by < 0.3 frames once the filter has opened."""
    mc, beta, dc = CAUSAL_FILTER
    rng = np.random.default_rng(0)
    scale = 40.0
    face = _face()
    f = OneEuroFilter(25, mc, beta, dc)
    noisy = face + rng.normal(0, 1, (200, 68, 2))
    out = np.stack([f(p, scale=scale) for p in noisy])
    assert (out[50:] - face).std() < 0.6 * (noisy[50:] - face).std()

    f = OneEuroFilter(25, mc, beta, dc)
    step = np.stack([face + (40 if t >= 10 else 0) for t in range(30)])
    out = np.stack([f(p, scale=scale) for p in step])
    assert np.abs(out[11:] - step[11:]).max() < 0.05 * 40

    f = OneEuroFilter(25, mc, beta, dc)
    speed = 4.0  # px per frame = 0.1 face scale
    ramp = np.stack([face + [max(t - 10, 0) * speed, 0] for t in range(40)])
    out = np.stack([f(p, scale=scale) for p in ramp])
    lag_frames = (ramp[20:, :, 0] - out[20:, :, 0]).mean() / speed
    assert 0 <= lag_frames < 0.3


def test_zero_lag_smoothing_has_no_lag_and_removes_more_noise():
    """Forwards + backwards: a ramp comes out unshifted (< 0.02 frames), static noise at < 0.6 of its size."""
    mc, beta, dc = ZERO_LAG_FILTER
    rng = np.random.default_rng(1)
    face = _face()
    ramp = np.stack([face + [max(t - 10, 0) * 4.0, 0] for t in range(60)]).astype(np.float32)
    out = zero_lag_smooth(ramp, lambda: OneEuroFilter(25, mc, beta, dc))
    assert np.abs(out[20:50] - ramp[20:50]).max() < 0.02 * 4.0
    noisy = (face + rng.normal(0, 1, (200, 68, 2))).astype(np.float32)
    out = zero_lag_smooth(noisy, lambda: OneEuroFilter(25, mc, beta, dc))
    assert (out[20:-20] - face).std() < 0.6 * (noisy[20:-20] - face).std()


def test_similarity_fit_and_shape_change():
    face = _face()
    ang = 0.3
    A0 = 1.2 * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    moved = face @ A0.T + [5, -7]
    A, t = similarity_fit(face, moved)
    np.testing.assert_allclose(face @ A.T + t, moved, atol=1e-3)
    assert max(shape_change(moved, face)) < 1e-4  # a moved head is no change of shape
    garbled = moved.copy()
    garbled[48:68] += [0, 0.5 * interocular(moved)]  # lips pushed down half an eye distance
    up, low = shape_change(garbled, face)
    assert up < 1e-4 and low > 0.15


# -- the tracker ---------------------------------------------------------------------------------------------
def test_tracks_between_detections_and_checks_for_drift():
    truth = [_face(100 + 2 * t, 100) for t in range(25)]
    det = ScriptedDetector(truth)
    tr = VideoLandmarkTracker(det, redetect_every=10, smoothing=0)
    faces = tr.track(_frames(25))
    for f, p in zip(faces, truth):
        np.testing.assert_allclose(f.points, p)
    assert det.calls["detect"] == [0, 10, 20]  # the first frame, then a drift check every 10 frames
    assert tr.stats["tracked"] == 24 and tr.stats["held"] == 0


def test_degraded_shape_triggers_redetection():
    """The predictor slips on frame 5 (the shape collapses); the tracker re-detects and takes the detection."""
    truth = [_face(100 + t, 100) for t in range(10)]
    slipped = [p.copy() for p in truth]
    slipped[5] = _face(100 + 5, 100, r=40) * [1, 0.5] + [0, 50]  # squashed: implausible
    det = ScriptedDetector(slipped, detections={5: [truth[5]]})
    tr = VideoLandmarkTracker(det, smoothing=0, box_scales=(1.0,))  # scripted: the predictor slips in any box
    faces = tr.track(_frames(10))
    assert 5 in det.calls["detect"]
    np.testing.assert_allclose(faces[5].points, truth[5])
    assert tr.stats["track_failures"] == 1 and tr.stats["held"] == 0


def test_predictor_ensemble_averages_shapes_from_scaled_boxes():
    class Recorder(ScriptedDetector):
        def predict(self, image, box, score=0.0):
            self.calls["predict"].append(np.asarray(box, np.float32).copy())
            t = int(image[0, 0, 0])
            return Face(np.asarray(box, np.float32), self.truth[t] + (box[2] - box[0]) * 0.01, score)

    truth = [_face(100, 100) for _ in range(3)]
    det = Recorder(truth)
    tr = VideoLandmarkTracker(det, smoothing=0, box_scales=(1.0, 1.1, 1 / 1.1))
    faces = tr.track(_frames(3))
    boxes = det.calls["predict"][-3:]  # frame 2: one box, scaled by each factor about its centre
    widths = [b[2] - b[0] for b in boxes]
    np.testing.assert_allclose(widths, [widths[0], widths[0] * 1.1, widths[0] / 1.1], rtol=1e-4)
    np.testing.assert_allclose([(b[:2] + b[2:]) / 2 for b in boxes], [(boxes[0][:2] + boxes[0][2:]) / 2] * 3,
                               atol=1e-3)
    np.testing.assert_allclose(faces[2].points, truth[2] + np.mean(widths) * 0.01, atol=1e-3)


def test_holds_the_last_good_shape_through_an_occlusion():
    """A hand over the mouth for 5 frames while the head moves right: the predictor drags lips and chin down and
    the detector finds no face. The tracker holds the last good shape moved with the upper face, then resumes."""
    truth = [_face(100 + 3 * t, 100) for t in range(20)]
    seen = [p.copy() for p in truth]
    for t in range(8, 13):
        seen[t][48:68] += [0, 25]  # garbage lips
        seen[t][5:12] += [0, 20]  # and chin
    det = ScriptedDetector(seen, detections={t: [] for t in range(8, 13)})
    tr = VideoLandmarkTracker(det, smoothing=0)
    faces = tr.track(_frames(20))
    assert all(f is not None for f in faces)
    assert tr.stats["held"] == 5 and tr.stats["lost"] == 0
    for t in range(8, 13):  # held: the good shape, moved along with the head
        np.testing.assert_allclose(faces[t].points, truth[t], atol=1e-3)
    for t in range(13, 20):
        np.testing.assert_allclose(faces[t].points, truth[t])


def test_a_long_occlusion_is_not_held_forever():
    truth = [_face(100, 100) for _ in range(40)]
    seen = [p.copy() for p in truth]
    for t in range(5, 40):
        seen[t][48:68] += [0, 25]
    det = ScriptedDetector(seen, detections={t: [] for t in range(5, 40)})
    tr = VideoLandmarkTracker(det, smoothing=0, max_hold=6)
    faces = tr.track(_frames(40))
    assert tr.stats["held"] == 6
    assert all(f is not None for f in faces[:11]) and all(f is None for f in faces[11:])


def test_a_change_the_detector_confirms_is_followed_not_held():
    """A head turning fast: the tracked shape jumps (implausible) and the detector sees the new shape: it is
    taken at once (holding would freeze the face)."""
    truth = [_face(100, 100) for _ in range(12)]
    for t in range(6, 12):
        truth[t][48:68] += [0, 25]
    det = ScriptedDetector(truth)
    tr = VideoLandmarkTracker(det, smoothing=0)
    faces = tr.track(_frames(12))
    assert tr.stats["held"] == 0 and 6 in det.calls["detect"]
    for t in range(12):
        np.testing.assert_allclose(faces[t].points, truth[t])


def test_a_new_sequence_resets_a_detector_that_can():
    class Resettable(ScriptedDetector):
        resets = 0

        def reset(self):
            self.resets += 1

    det = Resettable([_face() for _ in range(4)])
    tr = VideoLandmarkTracker(det, smoothing=0)
    tr.track(_frames(4))
    tr.track(_frames(4))
    tr.update(_frames(1)[0])  # streaming: the caller decides when a sequence starts
    assert det.resets == 2


def test_no_face_gives_none_and_the_next_face_is_detected():
    truth = [_face(100, 100) for _ in range(10)]
    det = ScriptedDetector(truth, detections={t: [] for t in range(3, 6)})
    # the predictor still answers on frames 3-5, so make the track fail there: a shape far off its box
    for t in range(3, 6):
        truth[t] = truth[t] + 500
    tr = VideoLandmarkTracker(det, smoothing=0, max_hold=1)
    faces = tr.track(_frames(10))
    assert faces[3] is not None and faces[4] is None and faces[5] is None  # held one frame, then lost
    np.testing.assert_allclose(faces[6].points, truth[6])


def test_streaming_update_equals_causal_track_and_offline_smooths_runs_apart():
    rng = np.random.default_rng(2)
    truth = [_face(100 + 2 * t, 100) + rng.normal(0, 0.5, (68, 2)).astype(np.float32) for t in range(30)]
    frames = _frames(30)
    tracked = VideoLandmarkTracker(ScriptedDetector(truth), fps=25).track(frames)
    live = VideoLandmarkTracker(ScriptedDetector(truth), fps=25)
    streamed = [live.update(f) for f in frames]
    for a, b in zip(tracked, streamed):
        np.testing.assert_array_equal(a.points, b.points)
    assert np.abs(tracked[20].points - truth[20]).max() > 0  # smoothed, not raw

    offline = VideoLandmarkTracker(ScriptedDetector(truth), fps=25).track(frames, zero_lag=True)
    assert len(offline) == 30 and all(f is not None for f in offline)
    lag_causal = np.mean([(t.mean(0) - f.points.mean(0))[0] for t, f in zip(truth[10:25], tracked[10:25])])
    lag_offline = np.mean([(t.mean(0) - f.points.mean(0))[0] for t, f in zip(truth[10:25], offline[10:25])])
    assert abs(lag_offline) < 0.05 < lag_causal  # px: the moving head is not trailed offline

    # a gap splits the offline smoothing: the faces after it do not pull the faces before it
    faces = [Face(np.r_[p.min(0), p.max(0)], p, 1.0) for p in truth]
    far = [Face(f.box + 300, f.points + 300, 1.0) for f in faces[15:]]
    smooth = smooth_faces(faces[:15] + [None] + far[1:], lambda: OneEuroFilter(25, *ZERO_LAG_FILTER))
    assert smooth[15] is None
    assert np.abs(smooth[14].points - faces[14].points).max() < 5


@pytest.mark.media
def test_real_mouth_occlusion_keeps_the_face():
    """pexels_woman: a grey box over the mouth on 5 frames; the face is never lost and the points stay within
    0.1 inter-ocular of the detector's on the clean frames (measured: tracker 0.04–0.06, per-frame detection on
    the occluded frames 0.04–0.05)."""
    from talkinghead.landmarks.detect import DlibDetector, pick_face
    from talkinghead.media.video import iter_frames

    frames = list(iter_frames(MEDIA / "videos" / "pexels_woman.mp4", start=40, max_frames=20))
    det = DlibDetector(upsample=0, max_side=960)
    ref = [pick_face(det.detect(f), f.shape).points for f in frames[5:15]]
    io = interocular(ref[0])
    occluded = list(frames)
    for t in range(8, 13):
        p = ref[t - 5]
        lo = np.floor(p[48:68].min(0) - 0.25 * io).astype(int)
        hi = np.ceil(p[48:68].max(0) + 0.25 * io).astype(int)
        occluded[t] = frames[t].copy()
        occluded[t][lo[1]:hi[1], lo[0]:hi[0]] = 128
    faces = VideoLandmarkTracker(det, fps=23.976).track(occluded)
    assert all(f is not None for f in faces)
    err = [np.linalg.norm(faces[t].points - ref[t - 5], axis=1).mean() / io for t in range(8, 13)]
    assert max(err) < 0.1, err


def test_max_hold_zero_drops_a_lost_face_at_once():
    """preprocess's setting: a frame whose face the detector lost gets no landmarks (never a held shape)."""
    truth = [_face(100, 100) for _ in range(10)]
    det = ScriptedDetector(truth, detections={t: [] for t in range(3, 6)})
    for t in range(3, 6):
        truth[t] = truth[t] + 500
    tr = VideoLandmarkTracker(det, smoothing=0, max_hold=0, box_scales=(1.0,))
    faces = tr.track(_frames(10))
    assert [f is None for f in faces[2:7]] == [False, True, True, True, False]
    assert tr.stats["held"] == 0


def _blinking(n=60, blink=(30,), closed=0.2, noise=0.3, seed=4):
    """n noisy frames of a still face whose eyelids close to `closed` of their opening on the `blink` frames."""
    rng = np.random.default_rng(seed)
    face = _face()
    out = []
    for t in range(n):
        p = face.copy()
        if t in blink:
            for eye in (slice(36, 42), slice(42, 48)):
                mid = p[eye, 1][[0, 3]].mean()
                p[eye, 1] = mid + closed * (p[eye, 1] - mid)
        out.append((p + rng.normal(0, noise, (68, 2))).astype(np.float32))
    return out


def test_offline_smoothing_keeps_a_one_frame_blink_and_still_smooths_the_eyes():
    """A blink of one frame keeps its depth through the tracker's zero-lag smoothing (a low-pass filter alone
    leaves the eye mostly open); elsewhere the eyes are smoothed as before and the rest of the face unchanged."""
    from talkinghead.landmarks.openness import eye_aperture

    truth = _blinking()
    tracker = VideoLandmarkTracker(ScriptedDetector(truth), fps=25, smoothing=1.0)
    faces = tracker.track(_frames(60), zero_lag=True)
    ear = np.array([eye_aperture(f.points) for f in faces])  # (T, 2)
    raw = np.array([eye_aperture(p) for p in truth])
    open_ear = np.median(raw, axis=0)
    assert (ear[30] / open_ear < raw[30] / open_ear + 0.1).all(), ear[30] / open_ear
    quiet = np.r_[5:25, 35:55]
    assert ear[quiet].std(axis=0).max() < 0.7 * raw[quiet].std(axis=0).min()
    plain = smooth_faces([Face(np.r_[p.min(0), p.max(0)], p, 1.0) for p in truth],
                         lambda: tracker.make_filter(zero_lag=True))
    not_lids = np.setdiff1d(np.arange(68), [37, 38, 40, 41, 43, 44, 46, 47])
    smoothed = zero_lag_smooth(np.stack(truth), lambda: tracker.make_filter(zero_lag=True))
    np.testing.assert_allclose(np.stack([f.points for f in plain])[:, not_lids], smoothed[:, not_lids], atol=1e-4)

"""`talkinghead evaluate` (paper §4 protocol, DESIGN.md §6): the shot/target split, the quick protocol end to end
on the real validation videos with a tiny model made here (no bundled weights needed), the report files, and
one-line errors for bad input. The full protocol is the slow test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.cli import main
from talkinghead.errors import TalkingHeadError
from talkinghead.evaluation import BASELINES, EvalSettings, split_video
from talkinghead.evaluation.report import verdict
from talkinghead.nn import build_models

from helpers import random_model_file


def _model_file(tmp_path_factory, cfg, name: str) -> Path:
    """A randomly initialised model of `cfg` (seed 0) saved as NAME.safetensors in a fresh folder."""
    return random_model_file(tmp_path_factory.mktemp(name) / f"{name}.safetensors", cfg)


# ---- the split of a video into shot and target parts ---------------------------------------------------
def test_split_video_parts_never_overlap():
    for n in (20, 40, 41, 255, 1000):
        for T in (1, 8):
            shots, targets = split_video(n, T, 5)
            assert len(shots) == T and len(targets) == min(5, max(1, n // 4))
            assert max(shots) < n // 2 <= min(targets)  # shots in the first half, targets in the last quarter
            assert min(targets) >= n - max(1, n // 4) and max(targets) == n - 1
            assert shots[0] == 0 and not set(shots) & set(targets)
    # nested shot sets: the T=1 shot is in the T=8 set, the first shot is shared (the baselines' source)
    assert set(split_video(255, 1, 5)[0]) <= set(split_video(255, 8, 5)[0])
    # the same targets whatever T
    assert split_video(255, 1, 7)[1] == split_video(255, 32, 7)[1]
    with pytest.raises(ValueError, match="fewer than T"):
        split_video(40, 32, 5)


# ---- the protocol end to end (quick) --------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_report(tiny_model, media, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "report"
    rc = main(["evaluate", "--model", str(tiny_model), "--data", str(media / "videos"), "--split", "shared", "--quick",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.media
def test_quick_protocol_writes_every_method_and_T(quick_report):
    out = quick_report
    for name in ("results.jsonl", "report.md", "config.json", "metrics_vs_T.png", "examples.png",
                 "cross_examples.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = _lines(out)
    self_rows = [r for r in rows if r["protocol"] == "self" and r["video"] != "all"]
    videos = {r["video"] for r in self_rows}
    assert videos == {"capman_2", "pexels_woman"}  # quick: the two cheapest validation videos, two people
    for v in videos:
        for method in (*BASELINES, "ff", "ft"):
            for T in (1, 8):
                sel = [r for r in self_rows if r["video"] == v and r["method"] == method and r["T"] == T]
                assert len(sel) == 1, (v, method, T)
                m = sel[0]["metrics"]
                assert m["n"] == 5 and {"ssim", "psnr", "lpips", "csim", "akd", "akd_no_face_rate"} <= set(m)
                assert 0 <= m["akd_no_face_rate"] <= 1
                assert sel[0]["model"]["sha256"] and sel[0]["settings"]["quick"] and sel[0]["date"]
                if method in ("ff", "ft"):  # ‖ê‖ is recorded (0 everywhere = a dead embedder, warned about)
                    assert sel[0]["embedding_norm"] > 0
    fid = [r for r in rows if r["video"] == "all"]
    assert {(r["method"], r["T"]) for r in fid} == {(m, T) for m in (*BASELINES, "ff", "ft") for T in (1, 8)}
    assert all(r["metrics"]["fid_frames"] == 10 and r["metrics"]["fid_reliable"] is False for r in fid)
    cross = [r for r in rows if r["protocol"] == "cross"]
    assert {(r["video"], r["driver"]) for r in cross} == {("capman_2", "pexels_woman"), ("pexels_woman", "capman_2")}
    assert all({"csim", "akd"} <= set(r["metrics"]) for r in cross)
    # the baselines on real frames behave as they must: the warp follows the target's landmarks
    warp = [r["metrics"]["akd"] for r in self_rows if r["method"] == "warp" and r["T"] == 1]
    copy = [r["metrics"]["akd"] for r in self_rows if r["method"] == "copy" and r["T"] == 1]
    assert sum(warp) < sum(copy)


@pytest.mark.media
def test_shots_and_targets_never_overlap(quick_report):
    rows = [r for r in _lines(quick_report) if r["protocol"] == "self" and r["video"] != "all"]
    for r in rows:
        shots, targets = r["shot_frames"], r["target_frames"]
        assert len(shots) == r["shots_used"] and len(targets) == 5
        assert not set(shots) & set(targets) and max(shots) < min(targets), r["video"]
        if r["method"] in ("ff", "ft"):
            assert len(shots) == r["T"]
    # the same hold-out frames for every method and T of a video
    for v in {r["video"] for r in rows}:
        assert len({tuple(r["target_frames"]) for r in rows if r["video"] == v}) == 1


@pytest.mark.media
def test_report_markdown_has_baselines_and_models(quick_report):
    md = (quick_report / "report.md").read_text()
    assert "| method | T | SSIM ↑ | PSNR dB ↑ | LPIPS-like ↓ | CSIM ↑ | AKD ↓ |" in md
    for name in ("copy source (baseline)", "landmark warp (baseline)", "model FF", "model FT"):
        for T in (1, 8):
            assert f"| {name} | {T} |" in md, (name, T)
    assert "Does the model beat the baselines?" in md and "Cross-identity" in md
    assert "unreliable" in md  # FID on 10 frames per set is flagged


# ---- bad input: one line, non-zero exit -----------------------------------------------------------------
def test_missing_model_is_one_line_error(tmp_path, capsys):
    rc = main(["evaluate", "--model", str(tmp_path / "nope.safetensors"), "--data", str(tmp_path), "--quick",
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "model file not found" in err and len(err.splitlines()) == 1


def test_no_videos_is_one_line_error(tiny_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["evaluate", "--model", str(tiny_model), "--data", str(tmp_path / "empty"), "--quick",
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "no videos found" in err and len(err.splitlines()) == 1


@pytest.mark.media
def test_no_face_is_one_line_error(tiny_model, media, tmp_path, capsys):
    data = tmp_path / "videos"
    data.mkdir()
    (data / "no_face.mp4").symlink_to(media / "videos" / "no_face.mp4")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"default_split": "skip", "videos": [{"path": "no_face.mp4", "split": "val"}]}))
    rc = main(["evaluate", "--model", str(tiny_model), "--data", str(data), "--split", str(split), "--quick",
               "--frames-per-video", "8", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "no usable validation video" in err[-1] and "no face" in err[-1]


@pytest.fixture
def bad_video_data(tmp_path) -> list[str]:
    """--data/--split arguments: a folder whose one validation video is not a video."""
    data = tmp_path / "videos"
    data.mkdir()
    (data / "bad.mp4").write_bytes(b"\x00not a video" * 100)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"default_split": "skip", "videos": [{"path": "bad.mp4", "split": "val"}]}))
    return ["--data", str(data), "--split", str(split)]


def test_unreadable_videos_are_one_line_error(tiny_model, bad_video_data, tmp_path, capsys):
    rc = main(["evaluate", "--model", str(tiny_model), *bad_video_data, "--quick", "--out", str(tmp_path / "r"),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "no usable validation video" in err[-1] and "bad" in err[-1]


@pytest.mark.parametrize("args, message", [
    (["--shots", "0"], "--shots: 0 is below the smallest allowed value 1"),
    (["--shots", "1,-3"], "--shots: -3 is below the smallest allowed value 1"),
    (["--shots", "1,x"], "--shots: 'x' is not a whole number"),
    (["--modes", "ff,xx"], "--modes: unknown mode(s) xx; valid: ff, ft"),
    (["--metrics", "ssim,bogus"], "--metrics: unknown metric(s) bogus"),
    (["--targets", "0"], "--targets: 0 is below"),
    (["--every", "-1"], "--every: -1 is below"),
])
def test_bad_options_are_usage_errors(args, message, tmp_path, capsys):
    rc = main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--device", "bogus"], "unknown device 'bogus'"),
    (["--out", "FILE"], "cannot create the report folder"),
])
def test_bad_device_or_out_is_one_line_error(args, message, tiny_model, bad_video_data, tmp_path, capsys):
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / a) if a == "FILE" else a for a in args]
    rc = main(["evaluate", "--model", str(tiny_model), *bad_video_data, "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("value, message", [
    ("nope=1", "--ft-set 'nope=1': no such config value"),
    ("lr_g", "--ft-set 'lr_g': no such config value"),
    ("lr_g=abc", "--ft-set 'lr_g=abc': cannot parse 'abc'"),
    ("steps=1.5", "--ft-set 'steps=1.5': steps takes a int"),
    ("lr_g=0", "--ft-set: finetune.lr_g = 0 (must be > 0)"),
    ("train_parts=most", "finetune.train_parts = 'most' (all, decoder, psi or auto)"),
])
def test_bad_finetune_overrides_are_one_line_errors_before_anything_runs(value, message, tmp_path, capsys):
    rc = main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--ft-set", value])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_cross_identity_keeps_one_example_per_source_and_at_most_the_limit(monkeypatch):
    """Every pair is scored, but the example grid gets the first pair of each source video only (capped):
    408 pairs of 21 videos had made a 52,000-pixel-tall PNG."""
    from types import SimpleNamespace

    from talkinghead.evaluation import protocol

    monkeypatch.setattr(protocol, "_cross_pair", lambda run, a, b, persons, names: (
        [{"source": a.video_id, "driver": b.video_id}], {"source": a.video_id, "driver": b.video_id}))
    videos = [SimpleNamespace(video_id=f"v{i}", identity=f"p{i // 2}", shots={1: None}) for i in range(6)]
    run = SimpleNamespace(st=SimpleNamespace(metrics=("csim",), cross=True), progress=False)
    rows, examples = protocol.cross_identity(run, videos, {})
    assert len(rows) == 6 * 4  # each video against the 4 of other people
    assert [(e["source"], e["driver"]) for e in examples] == [
        ("v0", "v2"), ("v1", "v2"), ("v2", "v0"), ("v3", "v0"), ("v4", "v0"), ("v5", "v0")]
    monkeypatch.setattr(protocol, "CROSS_EXAMPLES", 2)
    assert len(protocol.cross_identity(run, videos, {})[1]) == 2


def test_settings_are_checked_in_the_library():
    for bad in (dict(shots=(0, 8)), dict(modes=("ff", "xx")), dict(metrics=("ssim", "bogus")), dict(targets=0),
                dict(ft_set=("lr_g=-1",))):
        with pytest.raises(TalkingHeadError):
            EvalSettings(**bad).checked()
    st = EvalSettings(shots=(8, 1, 8), modes=("ft", "ff", "ft")).checked()
    assert st.shots == (1, 8) and st.modes == ("ft", "ff")


def test_results_are_appended_whole(tmp_path):
    from talkinghead.evaluation.protocol import append_jsonl

    path = tmp_path / "results.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    append_jsonl(path, [{"a": 3}])
    assert [r["a"] for r in _lines(tmp_path)] == [1, 2, 3]
    assert [f.name for f in tmp_path.iterdir()] == ["results.jsonl"]  # no temporary file left


def test_verdict_takes_directions_from_the_registry():
    # lower is better for LPIPS-like and AKD, higher for SSIM: the same numbers give opposite verdicts
    agg = {("copy", 1): {"ssim": 0.5, "lpips": 0.5}, ("warp", 1): {"ssim": 0.6, "lpips": 0.4},
           ("ff", 1): {"ssim": 0.7, "lpips": 0.6}}
    ssim, lpips = verdict(agg, {}, ["copy", "warp", "ff"], [1], ["ssim", "lpips"])
    assert "**SSIM ↑**" in ssim and "beats copy" in ssim and "beats warp" in ssim and "1 of 1" in ssim
    assert "**LPIPS-like ↓**" in lpips and "does NOT beat copy" in lpips and "0 of 1" in lpips


# ---- the full protocol ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.media
def test_full_protocol(tiny_model, media, tmp_path):
    """Every validation video, T = 1, 8, 32, the model's FT steps (tiny: 20), 32 targets (a few minutes)."""
    out = tmp_path / "full"
    assert main(["evaluate", "--model", str(tiny_model), "--data", str(media / "videos"), "--split", "shared", "--full",
                 "--out", str(out), "--no-progress"]) == 0
    rows = _lines(out)
    self_rows = [r for r in rows if r["protocol"] == "self" and r["video"] != "all"]
    assert {r["video"] for r in self_rows} == {"franck_tail", "capman_2", "pexels_woman"}
    assert {(r["method"], r["T"]) for r in self_rows} == {(m, T) for m in (*BASELINES, "ff", "ft") for T in (1, 8, 32)}
    assert all(r["metrics"]["n"] == 32 for r in self_rows)
    assert all(max(r["shot_frames"]) < min(r["target_frames"]) for r in self_rows)
    ft = [r for r in self_rows if r["method"] == "ft"]
    assert all(r["finetune"]["steps"] >= 1 for r in ft)
    franck = [r for r in self_rows if r["video"] == "franck_tail"]
    assert all(min(r["shot_frames"]) >= 4000 for r in franck)  # the held-out tail only, never training frames
    cross = {(r["video"], r["driver"]) for r in rows if r["protocol"] == "cross"}
    assert len(cross) == 6  # every ordered pair of the three people


@pytest.mark.media
def test_evaluate_on_a_plain_folder_without_a_split(tiny_model, media, tmp_path, capsys):
    """`--data DIR` alone: every video in the folder is a validation video (no split file needed)."""
    import os

    data = tmp_path / "mine"
    data.mkdir()
    os.symlink(media / "videos" / "capman_2.mp4", data / "someone.mp4")
    out = tmp_path / "report"
    rc = main(["evaluate", "--model", str(tiny_model), "--data", str(data), "--shots", "1", "--modes", "ff",
               "--metrics", "ssim,psnr", "--targets", "2", "--frames-per-video", "40", "--no-cross", "--out",
               str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    rows = [r for r in _lines(out) if r["protocol"] == "self" and r["video"] != "all"]
    assert {r["video"] for r in rows} == {"someone"} and {r["method"] for r in rows} == {*BASELINES, "ff"}


# ---- the warp-guided generator (model.generator = "warp") ------------------------------------------------
def test_warp_render_draws_each_target_from_its_nearest_shot():
    """renders.render with an untrained warp G: a target whose landmarks equal shot k's is that shot's texture
    under the identity flow, so it comes back as shot k (the untrained G is the classical warp,
    nn/warp_generator.py), whichever order the targets come in."""
    from talkinghead.config import warp_tiny
    from talkinghead.evaluation.renders import WarpSources, render
    from talkinghead.landmarks.rasterize import landmark_image_tensor

    torch.manual_seed(0)
    cfg = warp_tiny()
    S = cfg.model.image_size
    _, G, _ = build_models(cfg.model)
    rng = np.random.default_rng(0)
    th = np.linspace(math.pi * 0.95, math.pi * 0.05, 17)
    base = np.concatenate([np.stack([np.cos(th), np.sin(th) * 1.1], 1) * S * 0.33 + S / 2,
                           rng.uniform(-0.25, 0.25, (51, 2)) * S + [S / 2, S * 0.45]])
    jaw_down = base.copy()
    jaw_down[5:12, 1] += 4.0  # another expression (nearest_pose ignores position and size)
    points = np.stack([base, jaw_down, base * [1.0, 1.08] - [0, 2.5]]).astype(np.float32)  # (3, 68, 2)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    xs = torch.stack([torch.stack([torch.sin((3 + k) * xx), torch.cos((2 + k) * yy), (k - 1) * xx * yy])
                      for k in range(3)]) * 0.8  # (3, 3, S, S): a different texture per shot
    ys = landmark_image_tensor(points, S)  # (3, 3, S, S)
    order = [2, 0, 1, 2, 1]
    warp = WarpSources(xs, ys, points, points[order])
    assert warp.source.tolist() == order  # nearest in pose: the shot with the same landmarks
    psi = G.project(torch.zeros(1, cfg.model.embed_dim))
    out = render(G, psi, ys[order], batch=2, warp=warp)  # (5, 3, S, S), in batches of 2
    assert out.shape == (5, 3, S, S)
    assert (out - xs[order]).abs().amax(dim=(1, 2, 3)).max() <= 1e-4
    assert (out[0] - xs[0]).abs().max() > 0.1  # another shot's texture would not do


@pytest.fixture(scope="module")
def warp_model(tmp_path_factory) -> Path:
    from talkinghead.config import warp_tiny

    return _model_file(tmp_path_factory, warp_tiny(), "warp_tiny")


@pytest.mark.media
def test_evaluate_warp_generator_end_to_end(warp_model, media, tmp_path, capsys):
    """A warp_tiny model through the whole protocol on a plain folder of two people: baseline, FF and FT rows
    for each T with finite metrics, the texture shot of every target recorded, cross-identity rows; the
    untrained FF at T = 1 (texture: the first shot, as the warp baseline's) scores close to the warp baseline."""
    import os

    data = tmp_path / "two"
    data.mkdir()
    for name in ("capman_2", "pexels_woman"):
        os.symlink(media / "videos" / f"{name}.mp4", data / f"{name}.mp4")
    out = tmp_path / "report"
    rc = main(["evaluate", "--model", str(warp_model), "--data", str(data), "--shots", "1,2", "--metrics",
               "ssim,psnr,csim,akd", "--targets", "2", "--frames-per-video", "40", "--ft-steps", "2", "--out",
               str(out), "--no-progress", "--ft-set", "lr_g=1e-4", "--ft-set", "train_parts=decoder"])
    assert rc == 0, capsys.readouterr().err
    ft = json.loads((out / "config.json").read_text())["settings"]["ft"]  # the model's, with the overrides
    assert (ft["lr_g"], ft["train_parts"], ft["steps"]) == (1e-4, "decoder", 2)
    assert "lr 0.0001, weights decoder (--ft-set lr_g=1e-4 train_parts=decoder)" in (out / "report.md").read_text()
    rows = _lines(out)
    self_rows = [r for r in rows if r["protocol"] == "self"]
    assert {(r["video"], r["method"], r["T"]) for r in self_rows} == {
        (v, m, T) for v in ("capman_2", "pexels_woman") for m in (*BASELINES, "ff", "ft") for T in (1, 2)}
    for r in self_rows:
        m = r["metrics"]
        assert m["n"] == 2 and all(math.isfinite(m[k]) for k in ("ssim", "psnr", "csim")), (r["method"], m)
        if r["method"] in ("ff", "ft"):
            assert len(r["texture_frames"]) == 2 and set(r["texture_frames"]) <= set(r["shot_frames"])
    assert all(r["finetune"]["steps"] == 2 for r in self_rows if r["method"] == "ft")
    for v in ("capman_2", "pexels_woman"):
        ssim = {r["method"]: r["metrics"]["ssim"] for r in self_rows if r["video"] == v and r["T"] == 1}
        assert abs(ssim["ff"] - ssim["warp"]) < 0.02, ssim
    cross = [r for r in rows if r["protocol"] == "cross"]
    assert {(r["video"], r["method"], r["T"]) for r in cross if r["method"] in ("ff", "ft")} == {
        (v, m, T) for v in ("capman_2", "pexels_woman") for m in ("ff", "ft") for T in (1, 2)}
    assert all(math.isfinite(r["metrics"]["csim"]) for r in cross)


# ---- the open-mouth and closing-eyes subsets -------------------------------------------------------------
def _face(gap: float = 0.0, ear: float = 0.3, size: int = 64) -> np.ndarray:
    """A synthetic (68, 2) face in a size² crop: its inner lips `gap` inter-ocular distances apart, both eyes of
    aspect ratio `ear`."""
    s = size / 64
    rng = np.random.default_rng(0)
    p = rng.uniform(16, 48, (68, 2))  # jaw, brows, nose: anywhere on the face
    for k, x0 in enumerate((14.0, 34.0)):  # the subject's right eye (36-41), then the left (42-47); width 16
        h = ear * 16 / 2  # half the lids' distance: (2h + 2h) / (2 · 16) = ear
        p[36 + 6 * k:42 + 6 * k] = [[x0, 24], [x0 + 5, 24 - h], [x0 + 11, 24 - h], [x0 + 16, 24],
                                    [x0 + 11, 24 + h], [x0 + 5, 24 + h]]
    iod = 50 - 14  # outer corners 36 (x 14) and 45 (x 50)
    p[48:60] = [[22 + 20 * (1 - np.cos(a)) / 2, 44 + 6 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 13)[:-1]]
    lo = 44 + gap * iod
    p[60:68] = [[24, 44], [28, 44], [32, 44], [36, 44], [40, 44], [36, lo], [32, lo], [28, lo]]
    return (p * s).astype(np.float32)


def test_openness_of_the_synthetic_face():
    from talkinghead.landmarks.openness import eye_aperture, mouth_gap

    assert mouth_gap(_face(gap=0.2)) == pytest.approx(0.2, abs=1e-6)
    assert mouth_gap(np.stack([_face(gap=0.0), _face(gap=0.3)])).tolist() == pytest.approx([0.0, 0.3], abs=1e-6)
    assert eye_aperture(_face(ear=0.25)) == pytest.approx([0.25, 0.25], abs=1e-6)


def test_subset_selection_on_synthetic_landmarks():
    from talkinghead.evaluation.subsets import closing_eyes, median_ear, open_mouth, texture_shots

    closed, opened, ajar = _face(gap=0.0), _face(gap=0.3), _face(gap=0.1)
    targets = np.stack([opened, closed, opened, ajar])
    shots = np.stack([closed, closed, opened, closed])
    # an open target over a closed shot: selected; a closed one, or an open one over an open shot, or ajar: not
    assert open_mouth(targets, shots).tolist() == [True, False, False, False]
    video = np.stack([_face(ear=0.3)] * 8 + [_face(ear=0.05)] * 2)  # mostly open, two blinks
    ear = median_ear(video)
    assert ear == pytest.approx(0.3)
    blink, open_eyes, wide = _face(ear=0.1), _face(ear=0.3), _face(ear=0.35)
    targets = np.stack([blink, open_eyes, blink, blink])
    shots = np.stack([wide, wide, _face(ear=0.25), blink])
    # a blink over an open shot (above the median): selected; open eyes, or a blink over a less open shot: not
    assert closing_eyes(targets, shots, ear).tolist() == [True, False, False, False]
    # the texture shot: the nearest in pose unless given
    cand = np.stack([closed, opened])
    assert np.array_equal(texture_shots(cand, np.stack([opened, closed])), np.stack([opened, closed]))
    assert np.array_equal(texture_shots(cand, np.stack([opened, closed]), source=[0, 0]), np.stack([closed] * 2))


def test_subset_scores_only_on_the_subset_frames(monkeypatch):
    """The region metrics see the qualifying frames only; None and 0 frames where nothing qualifies."""
    import talkinghead.metrics as metrics
    from talkinghead.evaluation.subsets import KEYS, subset_scores

    seen = []

    def fake_metric(name):
        def fn(fake, real, real_points=None):
            seen.append((name, len(fake), len(real_points)))
            return {name: torch.full((len(fake),), 0.5), name + "_l1": torch.full((len(fake),), 0.25)}
        return fn

    monkeypatch.setattr(metrics, "mouth_metrics", fake_metric("mouth"))
    monkeypatch.setattr(metrics, "eyes_metrics", fake_metric("eyes"))
    x = torch.zeros(3, 3, 64, 64)
    targets = np.stack([_face(gap=0.3), _face(), _face(gap=0.3)])
    subs = subset_scores(x, x, targets, np.stack([_face()] * 3), 0.3)
    assert set(subs) == set(KEYS) and seen == [("mouth", 2, 2)]
    assert subs == {"mouth_open": 0.5, "mouth_l1_open": 0.25, "open_frames": 2, "eyes_closing": None,
                    "eyes_l1_closing": None, "closing_frames": 0}
    subs = subset_scores(x, x, targets, np.stack([_face()] * 3), 0.3, measure=False)  # counts only
    assert subs["open_frames"] == 2 and subs["mouth_open"] is None and len(seen) == 1


@pytest.mark.parametrize("preset", ["tiny", "warp_tiny"])
def test_self_rows_carry_the_subsets_for_every_method(preset, tmp_path):
    """Baselines and FF rows of a synthetic video (random tiny models): the six subset keys on every row; the
    open-mouth target measured where its texture shot is closed (the baselines' first shot; FF's at T = 1) and
    None at T = 2, where FF's texture shot is the nearer, ajar one; the closing-eyes values None (no blink)."""
    from types import SimpleNamespace

    from talkinghead import config
    from talkinghead.evaluation import protocol
    from talkinghead.evaluation.data import EvalVideo
    from talkinghead.evaluation.subsets import KEYS
    from talkinghead.landmarks.rasterize import landmark_image_tensor
    from talkinghead.persons.checkpoint import LoadedModel

    cfg = getattr(config, preset)()
    S = cfg.model.image_size
    lm = LoadedModel.load(random_model_file(tmp_path / "m.safetensors", cfg), "cpu", with_discriminator=False)
    pts = np.stack([_face(size=S), _face(gap=0.1, size=S), _face(gap=0.3, size=S), _face(size=S)])  # (4, 68, 2)
    x = torch.rand(4, 3, S, S) * 2 - 1
    y = landmark_image_tensor(pts, S)
    shard = SimpleNamespace(landmarks=pts, frame_indices=[0, 3, 6, 9])
    v = EvalVideo("synthetic", "someone", shard, [2, 3], x[2:], y[2:], pts[2:],
                  {1: ([0], x[:1], y[:1], pts[:1]), 2: ([0, 1], x[:2], y[:2], pts[:2])})
    st = SimpleNamespace(metrics=("ssim", "mouth"), shots=(1, 2), modes=("ff",), seed=0, baselines=BASELINES)
    run = SimpleNamespace(st=st, lm=lm, device=torch.device("cpu"), common={}, want_fid=False, teeth=None)
    res = protocol.SelfResult()
    renders = protocol._self_baselines(run, v, res)
    for T in (1, 2):
        protocol._self_models(run, v, T, renders, res)
    assert {(r["method"], r["T"]) for r in res.rows} == {(m, T) for m in ("copy", "warp", "ff") for T in (1, 2)}
    for r in res.rows:
        assert set(KEYS) <= set(r) and r["closing_frames"] == 0
        assert r["eyes_closing"] is None and r["eyes_l1_closing"] is None
        if r["method"] == "ff" and r["T"] == 2:  # drawn from the ajar shot: nothing qualifies
            assert r["open_frames"] == 0 and r["mouth_open"] is None and r["mouth_l1_open"] is None
        else:  # the open target over the closed first shot
            assert r["open_frames"] == 1 and math.isfinite(r["mouth_open"]) and math.isfinite(r["mouth_l1_open"])
    if preset == "warp_tiny":
        assert [r["texture_frames"] for r in res.rows if r["method"] == "ff"] == [[0, 0], [3, 0]]
    json.dumps(res.rows)  # plain numbers and None: JSONL as they are


def test_report_shows_the_subset_table():
    from talkinghead.evaluation.report import aggregate_subsets, subset_table

    def row(video, method, mouth, frames):
        return {"video": video, "method": method, "T": 1, "mouth_open": mouth, "mouth_l1_open": mouth,
                "open_frames": frames, "eyes_closing": None, "eyes_l1_closing": None, "closing_frames": 0}

    rows = [row("a", "copy", 0.2, 1), row("b", "copy", 0.5, 3), row("a", "ff", None, 0), row("b", "ff", 0.1, 2)]
    agg = aggregate_subsets(rows, ["copy", "ff"], [1])
    assert agg[("copy", 1)]["mouth_open"] == pytest.approx((0.2 + 3 * 0.5) / 4)  # frame-weighted over videos
    assert agg[("ff", 1)]["mouth_open"] == pytest.approx(0.1) and agg[("ff", 1)]["open_frames"] == 2
    lines = subset_table(agg, ["copy", "ff"], [1])
    assert lines[0] == ("| method | T | mouth LPIPS-like (open) ↓ | mouth L1 (open) ↓ | open frames | "
                        "eyes LPIPS-like (closing) ↓ | eyes L1 (closing) ↓ | closing frames |")
    assert lines[2] == "| copy source (baseline) | 1 | 0.4250 | 0.4250 | 4 | – | – | 0 |"
    assert lines[3] == "| model FF | 1 | 0.1000 | 0.1000 | 2 | – | – | 0 |"


@pytest.mark.media
def test_quick_rows_and_report_carry_the_subsets(quick_report):
    from talkinghead.evaluation.subsets import KEYS

    rows = [r for r in _lines(quick_report) if r["protocol"] == "self" and r["video"] != "all"]
    for r in rows:
        assert set(KEYS) <= set(r), (r["video"], r["method"], r["T"])
        for frames, keys in (("open_frames", KEYS[:2]), ("closing_frames", KEYS[3:5])):
            assert isinstance(r[frames], int) and 0 <= r[frames] <= 5
            assert all((r[k] is None) == (r[frames] == 0) for k in keys), r  # measured: null iff none qualifies
    md = (quick_report / "report.md").read_text()
    assert "## Open mouth and closing eyes" in md and "| method | T | mouth LPIPS-like (open) ↓ |" in md
    for name in ("copy source (baseline)", "landmark warp (baseline)", "model FF", "model FT"):
        assert sum(line.startswith(f"| {name} | 1 |") for line in md.splitlines()) >= 2  # main table + subsets
    assert "inner-lip gap (points 61-63 to 67-65) is above 0.15 inter-ocular distances" in md


@pytest.mark.media
def test_evaluate_with_a_teeth_bank(tiny_model, media, tmp_path, capsys):
    """--build-teeth-bank writes --teeth-bank FILE from a preprocessed train folder; the run scores a third
    baseline, teeth_bank, in the self and cross rows."""
    import os

    from helpers import run_cli
    from test_teeth_bank import people_shards

    data = tmp_path / "mine"
    data.mkdir()
    for name in ("capman_2", "pexels_woman"):
        os.symlink(media / "videos" / f"{name}.mp4", data / f"{name}.mp4")
    train, bank, out = tmp_path / "train", tmp_path / "teeth.npz", tmp_path / "report"
    people_shards(train, [("t1", "T", "train", [0.2, 0.3, 0.4])])
    args = ["evaluate", "--model", str(tiny_model), "--data", str(data), "--shots", "1", "--modes", "ff",
            "--metrics", "ssim,csim", "--targets", "2", "--frames-per-video", "40", "--out", str(out),
            "--no-progress", "--teeth-bank", str(bank)]
    rc, _, err = run_cli(args[:-2] + ["--build-teeth-bank", str(train)], capsys)
    assert rc != 0 and len(err) == 1 and "--teeth-bank" in err[0]
    rc, stdout, err = run_cli(args + ["--build-teeth-bank", str(train)], capsys)
    assert rc == 0, err
    assert "teeth bank of 3 mouths from 1 people" in stdout and bank.is_file()
    rows = [r for r in _lines(out) if r["video"] != "all"]
    for protocol in ("self", "cross"):
        assert {r["method"] for r in rows if r["protocol"] == protocol} == {*BASELINES, "teeth_bank", "ff"}
    assert "| warp + teeth bank (baseline) | 1 |" in (out / "report.md").read_text()

"""Avatars (paper §3.3): FF and FT save/load round trips, FT beats FF on its shots, version checks, loading
without the training code. Tiny model built in the test; real portraits from ../shared/data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.inference.animator import Animator
from talkinghead.persons.avatar import Avatar, make_ff_avatar
from talkinghead.persons.checkpoint import LoadedModel, save_model
from talkinghead.errors import CheckpointError, NoFaceError
from talkinghead.nn import build_models
from talkinghead.persons.shots import prepare_shots
from talkinghead.train.finetune import make_avatar

from conftest import MEDIA
from helpers import random_model_file

IMAGES = MEDIA / "images"


def _tiny_model(path: Path, seed: int) -> Path:
    return random_model_file(path, seed=seed)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("model2") / "other.safetensors", 1)


SHOTS = [str(IMAGES / "franck_01829.jpg"), str(IMAGES / "franck_04000.jpg")]


@pytest.fixture(scope="module")
def ff_avatar(tiny_model):
    if not Path(SHOTS[0]).is_file():
        pytest.skip(f"real media not found in {MEDIA}")
    return make_ff_avatar(SHOTS, tiny_model, shots=2)


@pytest.fixture(scope="module")
def ft_avatar(tiny_model):
    if not Path(SHOTS[0]).is_file():
        pytest.skip(f"real media not found in {MEDIA}")
    return make_avatar(SHOTS, tiny_model, mode="ft", shots=2, steps=12, patience=0, progress=False)


def _render(avatar, model=None, points=None):
    an = Animator(avatar, model=model)
    pts = avatar.source_points[None] if points is None else points
    return an.render_points(pts)


@pytest.mark.media
def test_ff_round_trip(ff_avatar, tiny_model, tmp_path):
    p = ff_avatar.save(tmp_path / "f.avatar")
    av = Avatar.load(p)
    assert av.mode == "ff" and av.shots == 2 and av.generator_state is None
    assert len(av.source_hashes) == 2
    assert av.model["sha256"] == LoadedModel.load(tiny_model).sha256
    assert av.source_image.shape == (576, 720, 3)
    assert np.array_equal(av.source_crop, ff_avatar.source_crop)
    assert av.crop == ff_avatar.crop
    a, b = _render(ff_avatar), _render(av)
    assert a.shape == (1, 3, 64, 64)
    assert torch.equal(a, b)


@pytest.mark.media
def test_ft_round_trip_self_contained(ft_avatar, tmp_path):
    p = ft_avatar.save(tmp_path / "t.avatar")
    av = Avatar.load(p)
    assert av.mode == "ft" and av.psi is not None and av.generator_state
    av.model["path"] = str(tmp_path / "gone.safetensors")  # FT avatars need no model file
    pts = np.stack([av.source_points, av.source_points + 1.5])
    assert torch.equal(_render(ft_avatar, points=pts), _render(av, points=pts))
    st = av.info["finetune"]
    assert st["steps"] == 12 and st["adversarial"]


@pytest.mark.media
def test_ft_lowers_reconstruction_loss_on_shots(ff_avatar, ft_avatar, tiny_model):
    """FT (ψ' and G' trained on the shots) reconstructs the shots better than FF (ψ̂ = P·ê)."""
    model = LoadedModel.load(tiny_model)
    sh = prepare_shots(SHOTS, 64, shots=2)
    x, y = sh.tensors()
    l_ff = float((Animator(ff_avatar, model=model).render(y) - x).abs().mean())
    l_ft = float((Animator(ft_avatar, model=model).render(y) - x).abs().mean())
    st = ft_avatar.info["finetune"]
    assert st["ft"]["l1"] < st["ff"]["l1"]
    assert l_ft < 0.98 * l_ff, (l_ff, l_ft)
    assert abs(l_ff - st["ff"]["l1"]) < 1e-4  # same measure as the fine-tuning report


@pytest.mark.media
def test_mismatched_model_is_a_checkpoint_error(ff_avatar, other_model, tmp_path):
    p = ff_avatar.save(tmp_path / "f.avatar")
    av = Avatar.load(p)
    with pytest.raises(CheckpointError, match="another model"):
        Animator(av, model=other_model)
    av.model["path"] = str(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="needs its model file"):
        Animator(av)


@pytest.mark.media
def test_load_errors(ff_avatar, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Avatar.load(tmp_path / "nope.avatar")
    bad = tmp_path / "bad.avatar"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError):
        Avatar.load(bad)
    p = ff_avatar.save(tmp_path / "f.avatar")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError):
        Avatar.load(p)
    # a newer format version
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    p = ff_avatar.save(tmp_path / "g.avatar")
    with safe_open(str(p), framework="pt") as f:
        meta = dict(f.metadata())
    meta["format_version"] = "99"
    save_file(load_file(str(p)), str(p), metadata=meta)
    with pytest.raises(CheckpointError, match="format 99") as ei:
        Avatar.load(p)
    assert "\n" not in str(ei.value)


def test_no_face_in_source_is_one_line_error(tiny_model, tmp_path):
    grey = np.full((240, 320, 3), 128, np.uint8)
    with pytest.raises(NoFaceError) as ei:
        make_ff_avatar([grey], tiny_model, shots=1)
    assert "\n" not in str(ei.value)


@pytest.mark.media
def test_avatar_loads_without_training_code(ft_avatar, tmp_path):
    p = ft_avatar.save(tmp_path / "t.avatar")
    code = (
        "import sys, json\n"
        "from talkinghead.persons.avatar import Avatar\n"
        "from talkinghead.inference.animator import Animator\n"
        f"a = Avatar.load({str(p)!r})\n"
        "Animator(a).render_points(a.source_points[None])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('talkinghead.train'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.media
def test_finetune_cli(tiny_model, other_model, tmp_path, capsys):
    from talkinghead.cli import main

    out = tmp_path / "p.avatar"
    rc = main(["finetune", *SHOTS, "--model", str(tiny_model), "--out", str(out), "--mode", "ft", "--steps", "3",
               "--no-progress", "--run", str(tmp_path / "run")])
    assert rc == 0
    logs = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert len(logs) == 3 and json.loads(logs[-1])["step"] == 3
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["finetune"]["steps"] == 3
    assert (tmp_path / "run" / "samples.png").is_file()
    assert "(FF) ->" in capsys.readouterr().out
    # bad options and write failures: one line, exit 1 or 2, no file
    for argv, code in ((["--shots", "0"], 2), (["--shots", "-3"], 2), (["--steps", "0"], 2), (["--steps", "-1"], 2)):
        rc = main(["finetune", *SHOTS, "--model", str(tiny_model), "--out", str(tmp_path / "z.avatar"), *argv])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert rc == code and len(err) == 1 and argv[0] in err[0], (argv, err)
    blocked = tmp_path / "file_not_folder"
    blocked.write_text("x")
    rc = main(["finetune", SHOTS[0], "--model", str(tiny_model), "--mode", "ff", "--out",
               str(blocked / "w.avatar"), "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "cannot write" in err[0], err
    assert not (tmp_path / "z.avatar").exists()
    av = Avatar.load(out)
    assert av.mode == "ft" and av.shots == 2 and av.info["finetune"]["steps"] == 3
    # bad input: no face -> one line, no file
    grey = tmp_path / "grey.png"
    from talkinghead.media.image_files import write_image

    write_image(grey, np.full((120, 160, 3), 128, np.uint8))
    out2 = tmp_path / "q.avatar"
    rc = main(["finetune", str(grey), "--model", str(tiny_model), "--out", str(out2), "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "no face" in err[0] and not out2.exists()


@pytest.mark.media
def test_write_failure_inside_safetensors_is_one_line(ff_avatar, tmp_path, monkeypatch):
    """A SafetensorError while writing (disk full, say) becomes one line and leaves no file behind."""
    import safetensors.torch
    from safetensors import SafetensorError

    from talkinghead.errors import TalkingHeadError

    def failing_save(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(TalkingHeadError, match="cannot write") as ei:
        ff_avatar.save(tmp_path / "full.avatar")
    assert "\n" not in str(ei.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.media
def test_warp_generator_avatars_ff_and_ft_round_trip(tmp_path):
    """model.generator = "warp": FF and FT avatars make, save, load and render; the untrained FF avatar shown
    its own pose gives back its source crop (identity flow, zero correction)."""
    from talkinghead.config import warp_tiny
    from talkinghead.media.images import from_uint8

    model = random_model_file(tmp_path / "warp.safetensors", warp_tiny())
    ff = make_ff_avatar(SHOTS, model, shots=2)
    out = Animator(ff, model=model).render_points(ff.source_points[None])  # (1, 3, 64, 64)
    assert (out[0] - from_uint8(ff.source_crop)).abs().max() < 1e-4
    ft = make_avatar(SHOTS, model, mode="ft", shots=2, steps=3, patience=0, progress=False)
    assert ft.info["finetune"]["steps"] == 3
    back = Avatar.load(ft.save(tmp_path / "w.avatar"))
    pts = np.stack([ft.source_points, ft.source_points + 1.5])
    a, b = Animator(ft, fold=False).render_points(pts), Animator(back, fold=True).render_points(pts)
    assert a.shape == (2, 3, 64, 64) and (a - b).abs().max() < 1e-4


@pytest.mark.media
def test_warp_full_size_render_keeps_the_source_detail(tmp_path):
    """Full-resolution composition (DESIGN.md §2): the warp-guided G renders at the face's size in the source
    image, moving the source's own pixels. Shown its own pose, the untrained FF avatar gives back the sharp
    source crop at R, much closer to it than the S render upsampled."""
    import torch.nn.functional as F

    from talkinghead.config import warp_tiny
    from talkinghead.media.images import from_uint8

    model = random_model_file(tmp_path / "warp.safetensors", warp_tiny())
    ff = make_ff_avatar(SHOTS[:1], model, shots=1)
    an = Animator(ff, model=model)
    r = an.output_size
    assert r == min(round(ff.crop.side), 1024) and r > 64
    full = an.render_points(ff.source_points[None], full_size=True)  # (1, 3, R, R)
    assert full.shape == (1, 3, r, r)
    sharp = from_uint8(ff.crop.resized(r).crop(ff.source_image))  # (3, R, R)
    small = F.interpolate(an.render_points(ff.source_points[None]), size=(r, r), mode="bicubic",
                          align_corners=False)
    err_full, err_small = float((full[0] - sharp).abs().mean()), float((small[0] - sharp).abs().mean())
    assert err_full < 1e-3 and err_full < 0.5 * err_small
    assert Animator(ff, model=model, max_output_size=96).output_size == 96


def test_grid_at_size_keeps_the_box_geometry():
    """Identity at S stays identity at R, and a shift by d S-pixels becomes d·R/S R-pixels (pixel centres at
    (i + 0.5)/S of the box; grid_sample units with align_corners=True at both sizes)."""
    from talkinghead.nn.motion import grid_at_size, identity_grid

    s, r = 16, 40
    ident = grid_at_size(identity_grid(1, s), r)
    inner = slice(3, -3)  # the outermost R pixels lie beyond S's outer pixel centres (clamped there)
    assert torch.allclose(ident[:, inner, inner], identity_grid(1, r)[:, inner, inner], atol=1e-5)
    shifted = identity_grid(1, s).clone()
    shifted[..., 0] += 2 * 1.5 / (s - 1)  # sample 1.5 S-pixels to the right
    dx = (grid_at_size(shifted, r) - identity_grid(1, r))[0, inner, inner, 0] * (r - 1) / 2  # in R pixels
    assert torch.allclose(dx, torch.full_like(dx, 1.5 * r / s), atol=1e-4)


def test_full_size_composition_is_its_formula():
    """compose_full's one interpolation of grid, mask and correction and its grid units are
    warp(source_R, grid_at_size(grid, R)) + (1 − mask_R)·(generated − warped)_R, each field resampled alone."""
    import torch.nn.functional as F

    from talkinghead.nn import GenOutput
    from talkinghead.nn.motion import grid_at_size, identity_grid, warp

    torch.manual_seed(0)
    s, r, b = 16, 40, 2
    an = Animator.__new__(Animator)  # only what compose_full reads
    an.output_size, an.source_full = r, torch.rand(1, 3, r, r) * 2 - 1
    warped, generated = torch.rand(b, 3, s, s) * 2 - 1, torch.rand(b, 3, s, s) * 2 - 1
    out = GenOutput(image=generated, mask=torch.rand(b, 1, s, s), warped=warped, generated=generated,
                    grid=identity_grid(b, s) + 0.1 * torch.randn(b, s, s, 2))
    up = lambda t: F.interpolate(t, size=(r, r), mode="bilinear", align_corners=False)  # noqa: E731
    want = (warp(an.source_full.expand(b, -1, -1, -1), grid_at_size(out.grid, r))
            + (1 - up(out.mask)) * up(generated - warped)).clamp(-1, 1)
    assert torch.allclose(an.compose_full(out), want, atol=1e-5)


@pytest.mark.media
def test_finetune_train_parts(tmp_path):
    """FinetuneConfig.train_parts: "psi" leaves every weight of G as it was, "decoder" only the AdaIN decoder
    and RGB head, "auto" = ψ' alone from one photo of a warp G and every weight from two."""
    from talkinghead.config import warp_tiny
    from talkinghead.train.finetune import DECODER_PARTS, trained_parameters

    torch.manual_seed(0)
    cfg = warp_tiny()
    E, G, D = build_models(cfg.model)
    names = {id(p): n for n, p in G.named_parameters()}
    assert trained_parameters(G, "psi") == []
    dec = [names[id(p)] for p in trained_parameters(G, "decoder")]
    assert dec and all(n.startswith(DECODER_PARTS) for n in dec)
    assert len(trained_parameters(G, "all")) == sum(1 for n, _ in G.named_parameters() if not n.startswith("proj."))
    cfg.finetune.train_parts = "auto"
    model = tmp_path / "warp.safetensors"
    save_model(model, cfg, E, G, D)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    for shots, changed in ((SHOTS[:1], False), (SHOTS, True)):
        av = make_avatar(shots, model, mode="ft", shots=len(shots), steps=2, patience=0, progress=False)
        moved = [k for k, v in av.generator_state.items()  # weights, not spectral norm's power-iteration vectors
                 if k.startswith("encoder.") and not k.endswith(("._u", "._v")) and not torch.equal(v, before[k])]
        assert bool(moved) == changed, (len(shots), moved[:3])


@pytest.mark.media
def test_animator_leaves_the_shared_model_as_it_was(tiny_model):
    """An FF Animator folds spectral norm into its own copy of G: the LoadedModel it was given keeps its
    parametrized G, so an FT avatar made from the same model afterwards still loads (it failed to)."""
    model = LoadedModel.load(tiny_model)
    keys = set(model.G.state_dict())
    Animator(make_ff_avatar(SHOTS[:1], model, shots=1), model=model)  # fold=True
    assert set(model.G.state_dict()) == keys
    ft = make_avatar(SHOTS[:1], model, mode="ft", shots=1, steps=1, patience=0, progress=False)
    Animator(ft, model=model).render_points(ft.source_points[None])

"""Region generators at work (DESIGN.md §2): inside model files and avatars (FF and FT round trips), the
render-time fill of the driving mouth's hole (nothing outside the hole changes, no hole no change), and the
Animator and evaluation using them. Tiny random networks, the bundled portrait."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from talkinghead.bundled import PORTRAIT
from talkinghead.config import mouth_region_tiny, warp_tiny
from talkinghead.errors import CheckpointError
from talkinghead.inference.animator import Animator
from talkinghead.inference.regions import MouthFill
from talkinghead.nn.regions import RegionGenerator
from talkinghead.persons.avatar import Avatar, make_ff_avatar
from talkinghead.persons.checkpoint import LoadedModel
from talkinghead.persons.regions import attach_regions
from talkinghead.train.finetune import make_avatar
from helpers import random_model_file


def _region(seed: int = 0) -> RegionGenerator:
    torch.manual_seed(seed)
    G = RegionGenerator(mouth_region_tiny())
    with torch.no_grad():  # a fresh P gives ψ ≈ 0: make the person count
        G.P.weight.normal_(0, 0.5)
    return G.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    if not PORTRAIT.is_file():
        pytest.skip("bundled portrait missing")
    d = tmp_path_factory.mktemp("regions")
    plain = random_model_file(d / "warp.safetensors", warp_tiny())
    attach_regions(plain, d / "warp_mouth.safetensors", {"mouth": _region()}, note="test")
    return plain, d / "warp_mouth.safetensors"


def open_mouth(points: np.ndarray, px: float = 5.0) -> np.ndarray:
    """The landmarks with the lower lip (inner and outer) and chin moved down by px."""
    p = np.array(points, np.float32)
    p[[55, 56, 57, 58, 59, 65, 66, 67], 1] += px
    p[6:11, 1] += 0.6 * px
    return p


def test_model_file_carries_its_region_generators(models):
    plain, with_mouth = models
    a, b = LoadedModel.load(plain), LoadedModel.load(with_mouth)
    assert a.regions == {} and set(b.regions) == {"mouth"} and b.meta["regions_note"] == "test"
    assert all(torch.equal(v, b.G.state_dict()[k]) for k, v in a.G.state_dict().items())
    G = _region()
    x = [torch.rand(1, 3, 32, 32) * 2 - 1 for _ in range(5)]
    assert torch.equal(G(x[0], (x[1] > 0).float()[:, :1], *x[2:]).image,
                       b.regions["mouth"](x[0], (x[1] > 0).float()[:, :1], *x[2:]).image)


def test_broken_region_entries_are_one_line_errors(models, tmp_path):
    _, with_mouth = models
    tensors = load_file(str(with_mouth))
    from safetensors import safe_open

    with safe_open(str(with_mouth), "pt") as f:
        meta = dict(f.metadata())
    for bad in ('{"mouth": {"crop_size": 7}}', '{"mouth": {"channels": [8, 16, 99999, 16]}}', "[1, 2]", "{"):
        path = tmp_path / "bad.safetensors"
        save_file(tensors, str(path), metadata={**meta, "regions": bad})
        with pytest.raises(CheckpointError, match="region") as e:
            LoadedModel.load(path)
        assert "\n" not in str(e.value)


def test_fill_changes_only_the_hole_and_nothing_without_one(models):
    lm = LoadedModel.load(models[1])
    av = make_ff_avatar([str(PORTRAIT)], lm, shots=1)
    fill = MouthFill.of_person(lm.regions["mouth"], av.source_crop[None], av.source_points[None], 64)
    frames = torch.rand(2, 3, 160, 160) * 2 - 1  # R = 160 > S = 64: the fill works at the frames' size
    same = fill.fill(frames, av.source_points[None], av.source_points[None])
    assert torch.equal(same, frames)  # equal landmarks: no hole, the frames untouched
    pts = np.stack([av.source_points, open_mouth(av.source_points)])
    out = fill.fill(frames, pts, av.source_points[None])
    hole = torch.from_numpy(fill.hole(av.source_points, pts[1], 160))
    assert hole.sum() > 20 and torch.equal(out[0], frames[0])
    changed = (out[1] != frames[1]).any(dim=0)
    assert changed.any() and not changed[hole == 0].any()  # inside the hole only, bit for bit outside


def test_animator_fills_the_open_mouth_and_can_be_told_not_to(models):
    lm = LoadedModel.load(models[1])
    av = make_ff_avatar([str(PORTRAIT)], lm, shots=1)
    pts = open_mouth(av.source_points)[None]
    on, off = Animator(av, model=lm), Animator(av, model=lm, regions=False)
    assert len(on.regions) == 1 and off.regions == []
    for full in (False, True):
        a, b = on.render_points(pts, full_size=full), off.render_points(pts, full_size=full)
        r = a.shape[-1]
        hole = torch.from_numpy(on.regions[0].hole(av.source_points, pts[0], r))
        changed = (a[0] != b[0]).any(dim=0)
        assert changed.any() and not changed[hole == 0].any()
    plain = make_ff_avatar([str(PORTRAIT)], models[0], shots=1)  # a model without region generators
    assert plain.regions == {} and Animator(plain, model=models[0]).regions == []


@pytest.mark.parametrize("mode", ["ff", "ft"])
def test_avatars_with_region_generators_round_trip(models, mode, tmp_path):
    path = models[1]
    av = (make_ff_avatar([str(PORTRAIT)], path, shots=1) if mode == "ff" else
          make_avatar([str(PORTRAIT)], path, mode="ft", shots=1, steps=2, patience=0, progress=False))
    assert set(av.regions) == {"mouth"}
    back = Avatar.load(av.save(tmp_path / "a.avatar"))
    assert torch.equal(back.regions["mouth"].embedding, av.regions["mouth"].embedding)
    if mode == "ft":  # self-contained: the region generator and its ψ travel in the file
        assert back.regions["mouth"].state is not None and back.regions["mouth"].psi is not None
    pts = open_mouth(av.source_points)[None]
    a = Animator(av, model=path if mode == "ff" else None).render_points(pts)
    b = Animator(back, model=path if mode == "ff" else None).render_points(pts)
    assert (a - b).abs().max() < 1e-4


def test_avatar_with_a_broken_region_entry_is_refused(models, tmp_path):
    av = make_ff_avatar([str(PORTRAIT)], models[1], shots=1)
    good = av.save(tmp_path / "a.avatar")
    tensors = load_file(str(good))
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta = dict(f.metadata())
    tensors["R.mouth.embedding"] = torch.zeros(3)
    save_file(tensors, str(tmp_path / "b.avatar"), metadata=meta)
    with pytest.raises(CheckpointError, match="R.mouth.embedding"):
        Avatar.load(tmp_path / "b.avatar")
    meta["regions"] = json.dumps({"mouth": {"crop_size": 12}})
    save_file(load_file(str(good)), str(tmp_path / "c.avatar"), metadata=meta)
    with pytest.raises(CheckpointError, match="crop_size"):
        Avatar.load(tmp_path / "c.avatar")


def test_mouth_and_eyelid_generators_together(models, tmp_path):
    from talkinghead.config import eye_region_tiny

    torch.manual_seed(1)
    eyes = RegionGenerator(eye_region_tiny()).eval()
    both = tmp_path / "both.safetensors"
    attach_regions(models[1], both, {"eyes": eyes}, note="eyes: test")
    lm = LoadedModel.load(both)
    assert set(lm.regions) == {"mouth", "eyes"} and lm.meta["regions_note"] == "test; eyes: test"
    av = Avatar.load(make_ff_avatar([str(PORTRAIT)], lm, shots=1).save(tmp_path / "b.avatar"))
    assert set(av.regions) == {"mouth", "eyes"}
    an = Animator(av, model=lm)
    p = np.array(av.source_points)
    for ring in (list(range(36, 42)), list(range(42, 48))):  # close both eyes
        p[ring, 1] = p[ring, 1].mean() + 0.2 * (p[ring, 1] - p[ring, 1].mean())
    a = an.render_points(p[None])
    b = Animator(av, model=lm, regions=False).render_points(p[None])
    changed = (a[0] != b[0]).any(dim=0).nonzero()
    assert len(changed) and changed[:, 0].max() < p[36:48, 1].max() + 8  # only around the eyes


def test_ft_fits_the_mouths_psi_to_the_shots_open_mouths_and_leaves_the_generator_alone(models):
    from talkinghead.data.regions import openness
    from talkinghead.train.region_finetune import finetune_mouth_psi

    av = make_ff_avatar([str(PORTRAIT)], models[0], shots=1)
    G = _region()
    G.cfg.open_threshold = 0.1
    before = {k: v.clone() for k, v in G.state_dict().items()}
    closed = av.source_points
    opened = open_mouth(closed, 8.0)
    assert openness(opened) > 0.1 > openness(closed)
    rng = np.random.default_rng(0)
    crops = np.stack([av.source_crop] + [rng.integers(0, 255, av.source_crop.shape, dtype=np.uint8)] * 2)
    psi = torch.zeros(1, G.num_psi) if hasattr(G, "num_psi") else G.psi(torch.zeros(1, G.cfg.embed_dim)).detach()
    same, info = finetune_mouth_psi(G, crops, np.stack([closed, closed, closed]), psi, steps=5)
    assert info["open_shots"] == 0 and torch.equal(same, psi)  # no open mouth to learn from: FF's ψ
    fitted, info = finetune_mouth_psi(G, crops, np.stack([closed, opened, opened]), psi, steps=20, lr=1e-2)
    assert info["open_shots"] == 2 and info["l1_ft"] < info["l1_ff"] and not torch.equal(fitted, psi)
    assert info["l1_ff"] <= 2.0  # crops in [-1, 1], as the generator sees them (not 0-255 pixels)
    assert fitted.shape == psi.shape and not fitted.requires_grad
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert all(p.requires_grad for p in G.parameters())

"""Region generators (DESIGN.md §2): mouth crops from shards, the U-Net and its composite, its model file, and
a trainer smoke run, all at tiny sizes."""


import cv2
import numpy as np
import pytest
import torch

from talkinghead.config import mouth_region_tiny
from talkinghead.data.dataset import VideoShard
from talkinghead.data.regions import MouthCropDataset, crop_transform, load_crops, openness, shard_crops
from talkinghead.landmarks.manual import mean_shape
from talkinghead.nn import GenInputs
from talkinghead.nn.regions import RegionGenerator
from talkinghead.persons.regions import load_region_model, save_region_model
from talkinghead.train.regions import train_region
from helpers import write_shards


def _face_points(size: int, gap: float, angle: float = 0.0) -> np.ndarray:
    """The mean 68-point shape in a size² crop, rotated by `angle`, its inner lips `gap` × the mouth's width
    apart."""
    p = mean_shape() * size * 0.3
    width = np.linalg.norm(p[54] - p[48])
    up, low = [61, 62, 63], [67, 66, 65]  # pairs as data.regions.GAPS
    mid = (p[up] + p[low]) / 2
    p[up], p[low] = mid - [0, gap * width / 2], mid + [0, gap * width / 2]
    c, s = np.cos(angle), np.sin(angle)
    return (p @ np.array([[c, s], [-s, c]]) + size / 2).astype(np.float32)


def _fake_root(root, size=64, videos=(("a0", "a", 4, "train"), ("a1", "a", 3, "train"), ("b0", "b", 4, "train"),
                                     ("c0", "c", 4, "val"))):
    """Shards of noisy frames whose landmarks open and close the mouth (frame j: gap 0.1·j), tilted a little."""
    rng = np.random.default_rng(0)
    return write_shards(root, [(vid, ident, split, rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
                                np.stack([_face_points(size, 0.1 * j, 0.1) for j in range(n)]))
                               for vid, ident, n, split in videos])


def _inputs(cfg, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.crop_size
    crop, lips, ref, ref_lips = (torch.rand(b, 3, s, s, generator=g) * 2 - 1 for _ in range(4))
    mask = torch.zeros(b, 1, s, s)
    mask[:, :, s // 3:2 * s // 3, s // 4:3 * s // 4] = 1
    return crop, mask, lips, ref, ref_lips


def test_region_generator_shapes_and_gradients_reach_every_parameter():
    cfg = mouth_region_tiny()
    G = RegionGenerator(cfg)
    crop, mask, lips, ref, ref_lips = _inputs(cfg)
    out = G(crop * (1 - mask), mask, lips, ref, ref_lips)
    s = cfg.crop_size
    assert out.image.shape == (3, 3, s, s) and out.colour.shape == (3, 3, s, s) and out.alpha.shape == (3, 1, s, s)
    assert float(out.alpha.detach().min()) >= 0 and float(out.alpha.detach().max()) <= 1
    ((out.image - crop) * mask).abs().mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or float(p.grad.abs().sum()) == 0]
    assert not missing
    # K references average to one ê; render(GenInputs) is fill with the given ψ
    e = G.embed(ref[:, None].expand(-1, 2, -1, -1, -1), ref_lips[:, None].expand(-1, 2, -1, -1, -1))
    assert e.shape == (3, cfg.embed_dim) and torch.allclose(e, G.embed(ref, ref_lips), atol=1e-5)
    psi = G.psi(e)
    r = G.render(GenInputs(y=lips, psi=psi, extra={"crop": crop, "mask": mask, "ref": ref}))
    assert torch.allclose(r.image, G.fill(crop, mask, lips, ref, psi).image)


def test_output_outside_the_mask_is_the_input_exactly():
    cfg = mouth_region_tiny()
    G = RegionGenerator(cfg)
    crop, mask, lips, ref, ref_lips = _inputs(cfg, seed=1)
    out = G(crop, mask, lips, ref, ref_lips).image
    outside = mask.expand_as(crop) < 0.5
    assert torch.equal(out[outside], crop[outside])
    assert not torch.equal(out[~outside], crop[~outside])
    # what the crop holds inside the hole is blended by alpha, never seen by the network
    other = torch.where(outside, crop, -crop)
    o2 = G(other, mask, lips, ref, ref_lips)
    o1 = G(crop, mask, lips, ref, ref_lips)
    assert torch.equal(o1.colour, o2.colour) and torch.equal(o1.alpha, o2.alpha)


def test_crop_item_from_a_synthetic_shard(tmp_path):
    root = _fake_root(tmp_path / "data")
    sc = shard_crops(VideoShard(root / "videos" / "a0"), 32, scale=1.9, dilate=1)
    assert sc.crops.shape == (4, 32, 32, 3) and sc.masks.shape == (4, 32, 32) and sc.lips.shape == (4, 32, 32, 3)
    assert np.allclose(sc.openness, [0.1 * j for j in range(4)], atol=0.02)
    # the crop is level: the corners share a row, the outer lips' mean is the centre
    assert abs(sc.points[0, 48, 1] - sc.points[0, 54, 1]) < 1e-3
    assert np.allclose(sc.points[0, 48:60].mean(0), 15.5, atol=1e-3)
    assert np.allclose(np.linalg.norm(sc.points[0, 54] - sc.points[0, 48]), 32 / 1.9, atol=1e-3)
    for j in range(1, 4):  # the mask holds every pixel centre inside the inner-lip polygon
        poly = sc.points[j, 60:68].astype(np.float32)
        inside = [(x, y) for y in range(32) for x in range(32) if cv2.pointPolygonTest(poly, (x, y), False) >= 0]
        assert inside and all(sc.masks[j, y, x] for x, y in inside)
        assert sc.masks[j].sum() <= len(inside) + 4 * 32  # a one-pixel ring, not more
    videos = load_crops(root, "train", 32, cache_dir=tmp_path / "cache")
    assert [v.video_id for v in videos] == ["a0", "a1", "b0"]
    assert all(v.crops.shape[1:] == (32, 32, 3) for v in load_crops(root, "train", 32, cache_dir=tmp_path / "cache"))
    ds = MouthCropDataset(videos, length=20, seed=2, open_threshold=0.15, flip=True)
    for n in range(len(ds)):
        it = ds[n]
        assert it["crop"].shape == it["lips"].shape == it["ref"].shape == it["blanked"].shape == (3, 32, 32)
        assert it["mask"].shape == (1, 32, 32)
        assert torch.equal(it["blanked"], it["crop"] * (1 - it["mask"]))
        t, r = it["index"].tolist()
        assert t != r and ds.person_of[t] == ds.person_of[r]  # the same person's other frame
    assert torch.equal(ds[3]["crop"], ds[3]["crop"])  # deterministic
    opened = MouthCropDataset(videos, length=20, open_threshold=0.15, open_only=True)
    assert all(float(opened[n]["openness"]) > 0.15 for n in range(20))


def test_crop_transform_maps_the_corners_level():
    p = _face_points(100, 0.3, angle=0.4)
    m = crop_transform(p, 64)
    q = p @ m[:, :2].T + m[:, 2]
    assert abs(q[48, 1] - q[54, 1]) < 1e-6 and q[48, 0] < q[54, 0]
    assert abs(openness(p) - 0.3) < 1e-6


def test_region_model_file_round_trip(tmp_path):
    cfg = mouth_region_tiny()
    G = RegionGenerator(cfg)
    with torch.no_grad():
        G.P.weight.normal_()  # weights that differ from a fresh model's
    save_region_model(tmp_path / "mouth.safetensors", cfg, G, {"step": "7"})
    cfg2, G2, meta = load_region_model(tmp_path / "mouth.safetensors")
    assert cfg2 == cfg and meta["step"] == "7" and not G2.training
    x = _inputs(cfg)
    G.eval()
    assert torch.equal(G(*x).image, G2(*x).image)


def test_train_region_smoke_and_resume(tmp_path):
    root = _fake_root(tmp_path / "data")
    cfg = mouth_region_tiny()
    cfg.open_threshold = 0.15
    run = tmp_path / "run"
    rec = train_region(cfg, root, run, minutes=5, cache_dir=tmp_path / "cache", val_per_person=2, max_steps=2)
    assert rec["step"] == 2 and {"val_l1", "mean_fill", "blanked", "warp", "closed_warp"} <= set(rec)
    assert (run / "region.safetensors").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert list((run / "samples").glob("*.png"))
    rec = train_region(cfg, root, run, minutes=5, cache_dir=tmp_path / "cache", val_per_person=2, max_steps=3,
                       resume=True)
    assert rec["step"] == 3
    assert len((run / "val.jsonl").read_text().splitlines()) == 4  # start and end of each run


def test_adversarial_region_training_steps_its_discriminator_and_resumes_it(tmp_path):
    import json

    from talkinghead.persons.checkpoint import load_training_state

    root = _fake_root(tmp_path / "data")
    cfg = mouth_region_tiny()
    cfg.open_threshold, cfg.adv_weight = 0.15, 0.1
    run = tmp_path / "run"
    train_region(cfg, root, run, minutes=5, cache_dir=tmp_path / "cache", val_per_person=2, max_steps=2)
    first = load_training_state(run / "checkpoints" / "last.pt")["D"]
    train_region(cfg, root, run, minutes=5, cache_dir=tmp_path / "cache", val_per_person=2, max_steps=10,
                 resume=True)
    state = load_training_state(run / "checkpoints" / "last.pt")
    assert state["region_config"]["adv_weight"] == 0.1
    assert any(not torch.equal(first[k], state["D"][k]) for k in first)  # D kept learning after the resume
    logged = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert {"adv", "d_real", "d_fake", "loss_d"} <= set(logged)


@pytest.mark.parametrize("size", [64, 96])
def test_mouth_presets_build(size):
    from talkinghead.config import mouth_region

    G = RegionGenerator(mouth_region(size))
    assert sum(p.numel() for p in G.parameters()) < 1.1e6


def test_train_region_command_trains_and_attaches(tmp_path, capsys, tiny_model):
    from talkinghead.persons.checkpoint import LoadedModel
    from helpers import run_cli

    root = _fake_root(tmp_path / "data")
    run = tmp_path / "run"
    rc, out, err = run_cli(["train-region", "--data", str(root), "--run", str(run), "--preset", "mouth_tiny",
                            "--steps", "2", "--attach", str(tiny_model)], capsys)
    assert rc == 0, err
    lm = LoadedModel.load(run / "model.safetensors")
    note = lm.meta["regions_note"]  # how it was trained: the command, as typed again
    assert set(lm.regions) == {"mouth"} and note.startswith("mouth: talkinghead train-region --preset mouth_tiny")
    assert f"--run {run}" in note and "--steps 2" in note and note.endswith(", step 2")
    rc, _, err = run_cli(["train-region", "--run", str(tmp_path / "nothing"), "--minutes", "0", "--attach",
                          str(tiny_model)], capsys)
    assert rc == 1 and len(err) == 1 and "train first" in err[0]
    rc, _, err = run_cli(["train-region", "--data", str(tmp_path), "--run", str(run), "--steps", "1"], capsys)
    assert rc == 1 and len(err) == 1 and "preprocess" in err[0]


def test_a_teeth_bank_generator_starts_from_other_peoples_mouths(tmp_path):
    """preset mouth_bank: the hole starts from the nearest bank mouth of another person (its base), the bank
    travels in the generator's buffers through its file."""
    from talkinghead.config import REGION_PRESETS

    root = _fake_root(tmp_path / "data", videos=(("a0", "a", 8, "train"), ("b0", "b", 8, "train"),
                                                 ("c0", "c", 6, "val")))
    cfg = REGION_PRESETS["mouth_bank_tiny"]()
    cfg.open_threshold = 0.15
    run = tmp_path / "run"
    rec = train_region(cfg, root, run, minutes=5, cache_dir=tmp_path / "cache", val_per_person=2, max_steps=2)
    assert "teeth_bank" in rec
    _, G, _ = load_region_model(run / "region.safetensors")
    assert G.bank_crops.shape == (6, 16, 16, 3) and G.bank_crops.float().std() > 0
    from talkinghead.data.teeth_bank import TeethBank, build_teeth_bank

    bank = build_teeth_bank(root, "train", max_entries=6, size=16)
    assert np.array_equal(TeethBank.of_generator(G).crops, bank.crops)
    ds = MouthCropDataset(load_crops(root, "train", 32), bank=bank, open_threshold=0.15)
    from talkinghead.data.teeth_bank import normalise

    t = next(int(k) for k in np.flatnonzero(ds.open)
             if len(bank.query(normalise(ds.arrays(k).points)[60:68], exclude=(ds.arrays(k).identity,))))
    item = ds.pair(t, t)
    own = ds.arrays(t).identity
    idx = bank.query(normalise(ds.arrays(t).points)[60:68], exclude=(own,))
    assert bank.identity[idx[0]] != own
    m = item["mask"][0] > 0
    assert not torch.equal(item["base"][:, m], item["crop"][:, m])  # another mouth inside the hole

"""The mouth discriminator (nn/mouth.py, DESIGN.md §2): crops computed by hand, its two phases' losses on known
scores, the Trainer updating it and resuming it, and a run started from a model file (--init)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from talkinghead.persons.checkpoint import load_training_state, read_model_file
from talkinghead.config import warp_tiny
from talkinghead.errors import TalkingHeadError
from talkinghead.landmarks.rasterize import mouth_square
from talkinghead.nn.mouth import MouthDiscriminator, crop_boxes
from talkinghead.train.meta import CHECKPOINT, MODEL_FILE, Trainer
from talkinghead.train.objective import mouth_crops, mouth_discriminator_terms, mouth_generator_terms, mouth_term

from test_train import SyntheticWarpEpisodes


def test_crop_boxes_samples_pixel_centres_and_zero_outside():
    """A ramp image (value = x + 10·y) is linear, so bilinear samples equal the coordinates exactly: the box
    (2, 3)-(6, 7) cut into 4×4 has its pixel centres at x = 2.5 … 5.5, y = 3.5 … 6.5."""
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    img = (xs + 10 * ys)[None, None]  # (1, 1, 16, 16)
    out = crop_boxes(img, torch.tensor([[2.0, 3.0, 6.0, 7.0]]), 4)[0, 0]  # (4, 4)
    want = torch.tensor([2.5, 3.5, 4.5, 5.5])[None] + 10 * torch.tensor([3.5, 4.5, 5.5, 6.5])[:, None]
    assert torch.allclose(out, want, atol=1e-4)
    far = crop_boxes(img, torch.tensor([[40.0, 40.0, 48.0, 48.0]]), 4)  # wholly outside: zeros
    assert torch.equal(far, torch.zeros_like(far))
    img.requires_grad_(True)
    crop_boxes(img, torch.tensor([[2.0, 3.0, 6.0, 7.0]]), 4).sum().backward()
    assert img.grad[0, 0, 3:8, 2:7].sum() > 0 and img.grad[0, 0, 10:, 10:].abs().sum() == 0


def test_mouth_square_is_centred_on_the_lips_box():
    pts = np.zeros((68, 2), np.float32)
    pts[48:68] = [[10, 20], [30, 20], [20, 24]] * 6 + [[10, 20], [30, 20]]  # lips from x 10..30, y 20..24
    # mouth_box: width 20, margin 5 each side -> (5, 15, 35, 29); longer side 30, centre (20, 22)
    assert np.allclose(mouth_square(pts), [5, 7, 35, 37])
    assert mouth_square(np.stack([pts, pts + 1])).shape == (2, 4)


def test_mouth_term_is_the_l1_inside_the_lips_box_only():
    """mouth_box of lips spanning x 10..30, y 20..24 is (5, 15, 35, 29): an error of 0.4 inside it and of 9
    outside gives mouth_weight · 0.4, whatever the image holds elsewhere; weight 0 gives 0."""
    pts = np.zeros((68, 2), np.float32)
    pts[48:68] = [[10, 20], [30, 24]] * 10
    real = torch.zeros(1, 3, 40, 40)
    fake = torch.full((1, 3, 40, 40), 9.0)
    fake[..., 15:30, 5:36] = 0.4  # rows y 15..29, columns x 5..35: the pixels box_mask marks
    lc = warp_tiny().loss
    lc.mouth_weight = 2.0
    assert float(mouth_term(fake, real, pts[None], lc)) == pytest.approx(0.8)
    assert float(mouth_term(fake, real, torch.as_tensor(pts[None]), lc)) == pytest.approx(0.8)
    lc.mouth_weight = 0.0
    assert float(mouth_term(fake, real, pts[None], lc)) == 0.0


def _stub_d(x, y):
    """Scores = mean of the crop (one patch), features = the crop itself."""
    return x.mean(dim=(1, 2, 3))[:, None], [x]


def test_mouth_phase_losses_by_hand():
    real = torch.full((2, 3, 8, 8), 0.5)
    fake = torch.full((2, 3, 8, 8), -2.0, requires_grad=True)
    y = torch.zeros(2, 3, 8, 8)
    lc = warp_tiny().loss
    lc.mouth_adv_weight, lc.mouth_fm_weight = 3.0, 10.0
    g = mouth_generator_terms(_stub_d, fake, real, y, lc)
    assert float(g["mouth_adv"]) == pytest.approx(3.0 * 2.0)  # −mean D(x̂) = 2
    assert float(g["mouth_fm"]) == pytest.approx(10.0 * 2.5)  # |0.5 − (−2)|
    d = mouth_discriminator_terms(_stub_d, real, fake, y)
    assert float(d["loss"]) == pytest.approx(0.5 + 0.0)  # relu(1 − 0.5) + relu(1 − 2)
    assert float(d["real"]) == pytest.approx(0.5) and float(d["fake"]) == pytest.approx(-2.0)
    assert d["loss"].requires_grad is False  # the fake is detached, the stub has no weights


def test_mouth_discriminator_shapes_and_gradient_to_the_output():
    Dm = MouthDiscriminator(channels=8)
    fake = torch.rand(2, 3, 64, 64, requires_grad=True)
    pts = torch.from_numpy(np.tile(np.linspace(20, 44, 68, dtype=np.float32)[:, None], (2, 1, 2)))
    fc, rc, yc = mouth_crops(fake, torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64), pts)
    assert fc.shape == rc.shape == yc.shape == (2, 3, 16, 16)
    scores, feats = Dm(fc, yc)
    assert scores.shape == (2, 4) and len(feats) == 3
    scores.sum().backward()
    assert fake.grad.abs().sum() > 0


def _warp_cfg(steps=4):
    cfg = warp_tiny()
    cfg.loss.mouth_adv_weight, cfg.loss.mouth_fm_weight = 1.0, 10.0  # the mouth D on
    cfg.train.steps, cfg.train.sample_every, cfg.train.log_every = steps, 0, 1
    cfg.train.ckpt_every_steps = 1000
    return cfg


def test_trainer_trains_the_mouth_discriminator_and_resumes_it(tmp_path):
    ds = SyntheticWarpEpisodes(num_videos=3)
    assert Trainer(warp_tiny(), tmp_path / "off", dataset=ds, progress=False).Dm is None  # off by default
    tr = Trainer(_warp_cfg(), tmp_path / "w", dataset=ds, progress=False)
    before = {n: p.detach().clone() for n, p in tr.Dm.named_parameters()}
    tr.train()
    log = [json.loads(line) for line in (tmp_path / "w/log.jsonl").read_text().splitlines()]
    assert all(r["loss_dm"] > 0 and r["mouth_fm"] > 0 for r in log)
    # the head's bias may not move yet: the hinge's gradients on it cancel while every score is inside the
    # margin (as for D's b in test_train)
    still = [n for n, p in tr.Dm.named_parameters() if n != "head.bias" and torch.equal(before[n], p.detach())]
    assert not still, f"not updated: {still}"
    state = load_training_state(tmp_path / "w" / CHECKPOINT)
    assert "Dm" in state and "opt_dm" in state
    resumed = Trainer(_warp_cfg(), tmp_path / "w", dataset=ds, resume=True, progress=False)
    for n, p in resumed.Dm.state_dict().items():
        assert torch.equal(p, tr.Dm.state_dict()[n]), n
    # model files do not keep it
    _, tensors, _ = read_model_file(tmp_path / "w" / MODEL_FILE)
    assert tensors and not any(k.startswith("Dm") for k in tensors)


def test_a_run_starts_from_a_model_file(tmp_path):
    ds = SyntheticWarpEpisodes(num_videos=3)
    first = Trainer(_warp_cfg(2), tmp_path / "a", dataset=ds, progress=False)
    first.train()
    model = tmp_path / "a" / MODEL_FILE
    second = Trainer(_warp_cfg(2), tmp_path / "b", dataset=SyntheticWarpEpisodes(num_videos=5), progress=False,
                     init=model)
    for mine, theirs in ((second.E, first.E), (second.G, first.G)):
        for (n, p), q in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(p, q), n
    assert torch.equal(second.D.w0, first.D.w0) and second.D.W.weight.shape[0] == 5
    other = _warp_cfg(2)
    other.model.motion_channels = 4
    with pytest.raises(TalkingHeadError, match="motion_channels"):
        Trainer(other, tmp_path / "c", dataset=ds, progress=False, init=model)

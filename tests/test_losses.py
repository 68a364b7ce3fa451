"""Losses (paper §3.2) against hand-computed values; gradients reach only the generated image."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from talkinghead.train import losses
from talkinghead.backbones.perceptual import FeatureBackbone


class _Toy(FeatureBackbone):
    """A frozen two-layer 'backbone' with known weights: features [2x, 2x + 1]."""

    name = "toy"

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.freeze()

    def preprocess(self, x):
        return x

    def extract(self, x):
        a = self.w * x
        return [a, a + 1.0]


def test_hinge_d_loss_value():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 − r): 0, 0.5, 2 → mean 2.5/3
    fake = torch.tensor([-2.0, 0.0])  # relu(1 + f): 0, 1 → mean 0.5
    assert losses.hinge_d_loss(real, fake).item() == pytest.approx(2.5 / 3 + 0.5)


def test_generator_adv_loss_value():
    assert losses.generator_adv_loss(torch.tensor([1.0, -3.0, 0.5])).item() == pytest.approx(0.5)


def test_feature_matching_value_and_grads():
    real = [torch.tensor([[1.0, 2.0]], requires_grad=True), torch.zeros(1, 3, requires_grad=True)]
    fake = [torch.tensor([[0.0, 4.0]], requires_grad=True), torch.tensor([[1.0, -1.0, 4.0]], requires_grad=True)]
    loss = losses.feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx((1 + 2) / 2 + (1 + 1 + 4) / 3)
    loss.backward()
    assert all(r.grad is None for r in real)  # real features detached
    assert torch.allclose(fake[0].grad, torch.tensor([[-0.5, 0.5]]))  # d mean|r − f| / df
    with pytest.raises(ValueError):
        losses.feature_matching_loss(real, fake[:1])


def test_embedding_match_and_pixel_l1_values():
    w = torch.tensor([[1.0, -1.0], [0.0, 2.0]], requires_grad=True)
    e = torch.tensor([[0.0, 1.0], [0.0, 0.0]], requires_grad=True)
    loss = losses.embedding_match_loss(w, e)
    assert loss.item() == pytest.approx((1 + 2 + 0 + 2) / 4)
    loss.backward()
    assert w.grad is not None and e.grad is not None  # L_MCH trains both W_i and the embedder
    assert losses.pixel_l1(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)).item() == pytest.approx(1.0)


def test_content_loss_value_and_grads_to_fake_only():
    toy = _Toy()
    fake = torch.tensor([[[[1.0, 0.0]]]]).expand(1, 3, 1, 2).clone().requires_grad_(True)
    real = torch.zeros(1, 3, 1, 2, requires_grad=True)
    # layer 1: |2·fake − 0| mean = 1; layer 2: same difference = 1 → per backbone 2; weights 0.5 + 2
    loss = losses.content_loss(fake, real, [(toy, 0.5), (toy, 2.0)])
    assert loss.item() == pytest.approx(0.5 * 2 + 2.0 * 2)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None
    assert toy.w.grad is None
    assert losses.content_loss(fake, real, []).item() == 0.0


def test_content_losses_of_several_fakes_share_the_targets_features():
    """Two fakes of one target: 2 and 0 per backbone by hand (fake 1 = the toy example, fake 2 = the target),
    each as content_loss alone gives, with the targets' features computed once."""
    toy = _Toy()
    calls = []
    toy.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    fake = torch.tensor([[[[1.0, 0.0]]]]).expand(1, 3, 1, 2).clone()
    real = torch.zeros(1, 3, 1, 2)
    a, b = losses.content_losses([fake, real.clone()], real, [(toy, 0.5)])
    assert a.item() == pytest.approx(0.5 * 2) and b.item() == 0.0
    assert calls == [1, 2]  # the target once, both fakes in one batch
    assert a.item() == pytest.approx(losses.content_loss(fake, real, [(toy, 0.5)]).item())


def test_content_loss_with_real_backbone_grads_to_fake_only():
    from talkinghead.backbones.perceptual import load_backbone

    net = load_backbone("dlib_resnet")
    fake = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    real = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    loss = losses.content_loss(fake, real, [(net, 1.0)])
    loss.backward()
    assert loss.item() > 0 and fake.grad.abs().sum() > 0
    assert real.grad is None
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())


def test_flow_smoothness_value():
    r = torch.zeros(1, 2, 3, 2)  # (B, H, W, 2)
    r[0, :, 2, 0] = 3.0  # last column moves by 3 in x: horizontal steps |0-0|, |3-0| per row
    # horizontal: 2 rows × 2 steps × 2 comps = 8 entries, sum 2·3 = 6 → 0.75; vertical: all equal → 0
    assert losses.flow_smoothness(r).item() == pytest.approx(0.75)
    r.requires_grad_(True)
    losses.flow_smoothness(r).backward()
    assert r.grad.abs().sum() > 0


def test_weighted_l1_value():
    real = torch.zeros(1, 3, 1, 2)
    fake = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)  # errors 1 and 3 in every channel
    w = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)  # (1·1 + 3·3)·3 channels / (3·4) = 30/12
    assert losses.weighted_l1(fake, real, w).item() == pytest.approx(2.5)
    assert losses.weighted_l1(fake, real, torch.ones(1, 1, 1, 2)).item() == pytest.approx(losses.pixel_l1(fake, real).item())

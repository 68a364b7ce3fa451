"""E, G, D (talkinghead.nn) on the tiny preset: shapes, gradients, spectral norm, AdaIN, round trips."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from talkinghead.config import small, tiny
from talkinghead.nn import (Discriminator, Embedder, Generator, build_models, count_parameters,
                            fold_spectral_norm, has_spectral_norm)
from talkinghead.nn.layers import SelfAttention


def _cfg(num_videos: int = 5):
    cfg = tiny().model
    cfg.num_videos = num_videos
    return cfg


def _models(seed: int = 0, num_videos: int = 5):
    torch.manual_seed(seed)
    return build_models(_cfg(num_videos))


def _batch(b: int = 2, s: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    y = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    return x, y


def test_shapes_tiny():
    E, G, D = _models()
    x, y = _batch()
    e = E(x, y)
    assert e.shape == (2, 32) and (e < 0).any()  # tiny: linear output (cfg.embed_relu False)
    cfg_relu = dataclasses.replace(tiny().model, embed_relu=True)
    assert (Embedder(cfg_relu)(x, y) >= 0).all()  # the paper's ReLU
    xs, ys = torch.stack([x, x], 1), torch.stack([y, y], 1)  # (B, K, 3, S, S)
    E.eval()  # train mode runs a power iteration per call, which changes the weights slightly
    mean, per = E.embed_shots(xs, ys, per_shot=True)
    assert mean.shape == (2, 32) and per.shape == (2, 2, 32)
    torch.testing.assert_close(mean, E(x, y), atol=1e-5, rtol=1e-5)
    E.train()
    psi = G.project(e)
    assert psi.shape == (2, G.num_adain_params)
    out = G(y, psi)
    assert out.shape == (2, 3, 64, 64)
    assert out.abs().max() < 1  # tanh: strictly inside (-1, 1)
    assert G(y, psi[:1]).shape == (2, 3, 64, 64)  # one cached ψ for a batch of poses
    score, feats = D(x, y, torch.tensor([0, 4]))
    assert score.shape == (2,)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 4]  # every down block + the 4×4 block
    assert D(x, y, w=torch.randn(2, 32))[0].shape == (2,)
    assert D(x, y)[0].shape == (2,)
    assert D.video_vectors(torch.tensor([1, 2])).shape == (2, 32)


def test_psi_layout_is_contiguous_and_documented():
    G = Generator(_cfg())
    off = 0
    for name, o, ch in G.adain_layout:
        assert o == off
        off += 2 * ch
    assert off == G.num_adain_params
    assert G.adain_layout[0][0] == "res0.norm1" and G.adain_layout[-1][0] == "out_norm"


@pytest.mark.slow
def test_forward_small_128():
    cfg = small().model
    torch.manual_seed(0)
    E, G, D = build_models(cfg)
    x, y = _batch(1, 128)
    with torch.no_grad():
        out = G.generate(y, E(x, y))
        assert out.shape == (1, 3, 128, 128)
        assert D(x, y, torch.tensor([0]))[0].shape == (1,)


def test_gradients_reach_every_parameter():
    E, G, D = _models()
    for m in [*E.modules(), *G.modules(), *D.modules()]:
        if isinstance(m, SelfAttention):  # γ₀ = 0 blocks the gradient to f, g, h; open the gate
            nn.init.constant_(m.gamma, 0.1)
    x, y = _batch()
    idx = torch.tensor([1, 3])
    e = E(x, y)
    fake = G.generate(y, e)
    score, feats = D(fake, y, idx)
    loss = score.sum() + sum(f.mean() for f in feats) + (D.video_vectors(idx) - e).abs().mean()
    loss.backward()
    for net in (E, G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None, f"{type(net).__name__}.{name} has no grad"
            g = p.grad.to_dense() if p.grad.is_sparse else p.grad
            assert g.abs().sum() > 0, f"{type(net).__name__}.{name} has a zero grad"
    gw = D.W.weight.grad
    assert gw.is_sparse
    rows = gw.coalesce().indices()[0].unique().tolist()
    assert rows == [1, 3]  # only the used rows


def test_spectral_norm_on_every_conv_and_linear():
    E, G, D = _models()
    n = 0
    for net in (E, G, D):
        for name, m in net.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                assert has_spectral_norm(m), f"{name} lacks spectral norm"
                n += 1
    assert n > 20
    assert has_spectral_norm(G.proj)


def test_adain_uses_every_psi_slice():
    E, G, D = _models()
    G.eval()
    _, y = _batch(1)
    psi = torch.randn(1, G.num_adain_params) * 0.1
    with torch.no_grad():
        base = G(y, psi)
        for name, off, ch in G.adain_layout:
            p2 = psi.clone()
            p2[:, off:off + 2 * ch] += 0.5
            assert (G(y, p2) - base).abs().max() > 1e-4, f"{name} ignores its ψ slice"
        # ê changes ψ̂ and the output
        assert (G.generate(y, torch.rand(1, 32)) - G.generate(y, torch.rand(1, 32) + 1)).abs().max() > 1e-4


def test_initial_adain_scales_near_one():
    E, G, _ = _models()
    x, y = _batch()
    with torch.no_grad():
        psi = G.project(E(x, y))
    for _, off, ch in G.adain_layout:
        assert psi[:, off:off + ch].abs().max() < 0.5  # scale = 1 + δ


def test_state_dict_round_trip():
    E, G, D = _models(seed=0)
    E2, G2, D2 = _models(seed=123)
    for a, b in ((E, E2), (G, G2), (D, D2)):
        b.load_state_dict(a.state_dict())
        a.eval(), b.eval()
    x, y = _batch()
    idx = torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(E(x, y), E2(x, y))
        e = E(x, y)
        assert torch.equal(G.generate(y, e), G2.generate(y, e))
        assert torch.equal(D(x, y, idx)[0], D2(x, y, idx)[0])


def test_discriminator_trunk_and_resize():
    _, _, D = _models(num_videos=5)
    sd = D.trunk_state_dict()
    assert not any(k.startswith("W.") for k in sd) and "w0" in sd and "b" in sd
    D2 = Discriminator(_cfg(num_videos=1))
    D2.load_trunk_state_dict(sd)
    D.eval(), D2.eval()
    x, y = _batch()
    w = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(D(x, y, w=w)[0], D2(x, y, w=w)[0])
    old = D.W.weight.detach().clone()
    D.resize_videos(8)
    assert D.W.weight.shape == (8, 32) and torch.equal(D.W.weight[:5], old) and D.W.sparse
    D.resize_videos(3)
    assert torch.equal(D.W.weight, old[:3])


def test_fold_spectral_norm_keeps_outputs():
    E, G, D = _models()
    for m in [*E.modules(), *G.modules(), *D.modules()]:
        if isinstance(m, SelfAttention):
            nn.init.constant_(m.gamma, 0.3)  # make attention matter
    x, y = _batch()
    idx = torch.tensor([0, 1])
    for net in (E, G, D):
        net.eval()
    with torch.no_grad():
        e = E(x, y)
        ref = (e, G.generate(y, e), D(x, y, idx)[0])
        for net in (E, G, D):
            fold_spectral_norm(net)
            assert not any(has_spectral_norm(m) for m in net.modules())
        e2 = E(x, y)
        new = (e2, G.generate(y, e2), D(x, y, idx)[0])
    for a, b in zip(ref, new):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_count_parameters():
    E, G, D = _models(num_videos=5)
    total = count_parameters(D)
    trunk = count_parameters(D, exclude=("W.",))
    assert total - trunk == 5 * 32
    assert count_parameters(E) > 0 and count_parameters(G) > G.proj.weight.numel()

"""Warp-guided generator (DESIGN.md §2, nn/warp_generator.py): shapes, gradients to every parameter group,
identity flow for equal landmarks, and the untrained generator reproducing the classical warp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from talkinghead.evaluation.baselines import warp_baseline
from talkinghead.config import warp_tiny
from talkinghead.landmarks.rasterize import landmark_image_tensor
from talkinghead.landmarks.warp import flow_grid
from talkinghead.nn import GenInputs, Texture, WarpGenerator, build_models
from talkinghead.nn.motion import identity_grid

S = 64


def face_points(size: int = S, open_mouth: float = 0.0, shift=(0.0, 0.0)) -> np.ndarray:
    """68 plausible iBUG points in an S×S crop (jaw, brows, nose, eyes, lips)."""
    rng = np.random.default_rng(0)
    c = np.array([size / 2, size / 2]) + shift
    th = np.linspace(math.pi * 0.95, math.pi * 0.05, 17)
    jaw = np.stack([np.cos(th), np.sin(th) * 1.1], 1) * size * 0.33 + c
    inner = rng.uniform(-0.25, 0.25, (51, 2)) * size + c - [0, 0.05 * size]
    pts = np.concatenate([jaw, inner]).astype(np.float32)
    pts[48:68, 1] += np.where(np.arange(20) % 2 == 0, open_mouth, 0.0) * size
    return pts


def smooth_source(size: int = S) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy])[None] * 0.8  # (1, 3, S, S)


def inputs(batch: int = 2, driving_shift=(2.0, -1.5), open_mouth: float = 0.04):
    src_p = face_points()
    drv_p = face_points(open_mouth=open_mouth, shift=driving_shift)
    x = smooth_source().expand(batch, -1, -1, -1)
    y_s = landmark_image_tensor(src_p, S)[None].expand(batch, -1, -1, -1)
    y_d = landmark_image_tensor(drv_p, S)[None].expand(batch, -1, -1, -1)
    grid = flow_grid(src_p, drv_p, S)[None].expand(batch, -1, -1, -1)  # (B, S, S, 2)
    return x, y_s, y_d, grid, src_p, drv_p


@pytest.fixture()
def G() -> WarpGenerator:
    torch.manual_seed(0)
    return WarpGenerator(warp_tiny().model)


def test_shapes_and_psi(G):
    x, y_s, y_d, grid, *_ = inputs()
    psi = G.project(torch.randn(2, warp_tiny().model.embed_dim))
    out = G.render(GenInputs(y_d, psi, Texture(x, y_s, grid)))
    assert out.image.shape == out.warped.shape == out.generated.shape == (2, 3, S, S)
    assert out.mask.shape == out.occlusion.shape == (2, 1, S, S) and out.grid.shape == (2, S, S, 2)
    assert torch.isfinite(out.image).all() and out.image.abs().max() <= 1
    one_psi = G(y_d, psi[:1], x[:1], y_s[:1], grid)  # one ψ and one source for a batch of poses
    assert one_psi.shape == (2, 3, S, S)
    G.eval()  # (training mode runs a spectral-norm power iteration per call)
    with torch.no_grad():
        cached = G(y_d, psi, x, y_s, grid, features=G.encode(x[:1]))  # source features cached per avatar
        assert torch.allclose(cached, G(y_d, psi, x, y_s, grid), atol=1e-6)


def test_equal_landmarks_give_the_identity_flow():
    p = face_points()
    assert torch.allclose(flow_grid(p, p, S), identity_grid(1, S)[0], atol=1e-5)


def test_untrained_generator_reproduces_the_classical_warp(G):
    """A zero residual flow and a zero RGB correction Δ: the output is the classical warp, whatever the mask."""
    x, y_s, y_d, grid, src_p, drv_p = inputs(batch=1)
    psi = G.project(torch.zeros(1, warp_tiny().model.embed_dim))
    with torch.no_grad():
        out = G.render(GenInputs(y_d, psi, Texture(x, y_s, grid)))
    classical = warp_baseline(x[0], src_p, drv_p)  # (3, S, S), the evaluation's warp baseline
    assert torch.allclose(out.warped[0], classical, atol=1e-5), "the initial flow is the classical warp"
    assert (out.image[0] - classical).abs().max() <= 1e-5
    assert torch.equal(out.generated, out.warped)


def test_gradients_reach_every_parameter_group(G):
    """Two Adam steps on an L1 loss move every parameter (the zero-initialised heads first, then the rest)."""
    torch.manual_seed(1)
    E, _, _ = build_models(warp_tiny().model)
    x, y_s, y_d, grid, *_ = inputs()
    target = -smooth_source().expand(2, -1, -1, -1)
    before = {n: p.detach().clone() for n, p in G.named_parameters()}
    opt = torch.optim.Adam(list(G.parameters()) + list(E.parameters()), lr=1e-3)
    for _ in range(2):
        e = E(x, y_s)  # (B, N)
        out = G.render(GenInputs(y_d, G.project(e), Texture(x, y_s, grid)))
        loss = (out.image - target).abs().mean() + 0.1 * (out.generated - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    still = [n for n, p in G.named_parameters() if torch.equal(before[n], p.detach())]
    assert not still, f"not updated: {still}"
    groups = {n.split(".")[0] for n in before}
    assert {"encoder", "motion", "inject", "res", "up", "out_conv", "proj"} <= groups


def test_both_generators_render_the_same_inputs():
    """One interface: `render(GenInputs) -> GenOutput` for either kind; the paper's G ignores the texture, the
    warp-guided G needs it; `forward` equals `render(...).image`."""
    from talkinghead.config import tiny
    from talkinghead.nn import GenOutput, build_generator

    x, y_s, y_d, grid, *_ = inputs()
    for cfg in (tiny().model, warp_tiny().model):
        torch.manual_seed(0)
        G = build_generator(cfg).eval()
        psi = G.project(torch.randn(1, cfg.embed_dim))
        with torch.no_grad():
            out = G.render(GenInputs(y_d, psi, Texture(x, y_s, grid)))
            assert isinstance(out, GenOutput) and out.image.shape == (2, 3, S, S)
            plain = G(y_d, psi) if not G.needs_texture else G(y_d, psi, x, y_s, grid)
            assert torch.equal(out.image, plain)
        if G.needs_texture:
            with pytest.raises(ValueError, match="texture"):
                G.render(GenInputs(y_d, psi))

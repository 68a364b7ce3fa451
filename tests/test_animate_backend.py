"""Fast inference paths. Animator's ONNX Runtime backend (optional `fast` extra): same frames as the torch
path within the stated tolerance (max |Δ| ≤ 1/255 on outputs in [-1, 1], half an 8-bit level), batch sizes
other than the export's, a clean fall-back to torch with a warning when the packages are missing; and the
chunked inference form of self-attention. Tiny model, bundled portrait."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from talkinghead.inference.animator import Animator
from talkinghead.persons.avatar import make_ff_avatar
from talkinghead.bundled import PORTRAIT
from talkinghead.persons.checkpoint import LoadedModel, save_model
from talkinghead.config import tiny
from talkinghead.media.images import to_uint8
from talkinghead.nn import build_models

TOL = 1 / 255


@pytest.fixture(scope="module")
def avatar_and_model(tmp_path_factory):
    if not PORTRAIT.is_file():
        pytest.skip("bundled portrait missing")
    d = tmp_path_factory.mktemp("backend")
    torch.manual_seed(0)
    cfg = tiny()
    E, G, D = build_models(cfg.model)
    with torch.no_grad():  # fresh G has γ = 0 in its self-attention; make it count
        for name, p in G.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    save_model(d / "tiny.safetensors", cfg, E, G, D)
    model = LoadedModel.load(d / "tiny.safetensors")
    return make_ff_avatar([str(PORTRAIT)], model, shots=1), model


def _poses(av, n):
    rng = np.random.default_rng(0)
    return np.stack([av.source_points + rng.normal(0, 1.0, av.source_points.shape) for _ in range(n)]).astype(
        np.float32)


def test_onnx_backend_matches_torch(avatar_and_model):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    av, model = avatar_and_model
    ref = Animator(av, model=model, fold=False)  # plain path: live spectral norm
    fast = Animator(av, model=model, backend="onnx")
    assert ref.backend == "torch" and fast.backend == "onnx"
    for n in (1, 3):  # exported with batch 1; other batch sizes go through the dynamic axis
        pts = _poses(av, n)
        a, b = ref.render_points(pts), fast.render_points(pts)
        assert b.shape == a.shape == (n, 3, 64, 64) and b.dtype == torch.float32
        d = (a - b).abs()
        assert d.max() <= TOL, f"max |Δ| {d.max():.2e}"
        assert np.abs(to_uint8(a).astype(int) - to_uint8(b).astype(int)).max() <= 1


def test_onnx_backend_falls_back_without_onnxruntime(avatar_and_model, monkeypatch, caplog):
    av, model = avatar_and_model
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with caplog.at_level("WARNING", logger="talkinghead"):
        an = Animator(av, model=model, backend="onnx")
    assert "onnxruntime" in caplog.text
    assert an.backend == "torch"
    pts = _poses(av, 2)
    assert torch.equal(an.render_points(pts), Animator(av, model=model).render_points(pts))


def test_bad_backend_is_rejected(avatar_and_model):
    av, model = avatar_and_model
    with pytest.raises(ValueError, match="backend"):
        Animator(av, model=model, backend="tensorrt")
    with pytest.raises(ValueError, match="float32"):
        Animator(av, model=model, backend="onnx", dtype=torch.bfloat16)


def test_chunked_self_attention_at_inference_matches_training_form():
    """SelfAttention without autograd takes queries `chunk` at a time; same outputs as the one-shot form."""
    from talkinghead.nn.layers import SelfAttention

    torch.manual_seed(0)
    att = SelfAttention(32).eval()
    with torch.no_grad():
        att.gamma.fill_(0.7)
    x = torch.randn(2, 32, 40, 40)  # 1600 positions: 4 blocks of 512, the last one partial
    one_shot = att(x)  # grad enabled: the training form
    assert one_shot.requires_grad
    with torch.no_grad():
        chunked = att(x)
    with torch.inference_mode():
        chunked_im = att(x)
    assert (chunked - one_shot).abs().max() <= 1e-6 and torch.equal(chunked, chunked_im)

"""Perceptual backbones (talkinghead.backbones.perceptual): input conventions, layer shapes, file validation, freezing.

A wrong input scale silently shrinks a loss term, so each backbone's conversion from [-1, 1] RGB is pinned here.
The dlib port's convention is checked end to end against dlib itself in test_face_resnet.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from talkinghead.backbones import perceptual as P
from talkinghead.errors import CheckpointError
from talkinghead.media.images import from_uint8


def _random_vgg_state(cfg, last: int, names=None) -> dict[str, torch.Tensor]:
    feats = P._vgg_features(cfg, last)
    sd = {}
    ci = 0
    for idx, m in enumerate(feats):
        if isinstance(m, nn.Conv2d):
            prefix = names[ci] if names else f"features.{idx}"
            sd[f"{prefix}.weight"] = torch.randn_like(m.weight) * 0.05
            sd[f"{prefix}.bias"] = torch.zeros_like(m.bias)
            ci += 1
    return sd


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    sd = _random_vgg_state(P._VGG19_CFG, 36)
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # extra keys of a full torchvision file are ignored
    torch.save(sd, path)
    return path


def test_dlib_backbone_convention_and_shapes():
    bb = P.load_backbone("dlib_resnet")
    assert bb.name == "dlib_resnet" and not bb.training
    assert not any(p.requires_grad for p in bb.parameters())
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 150, 150)
    got = bb.preprocess(x)[0, :, 0, 0]
    want = (torch.tensor([0.0, 127.5, 255.0]) - torch.tensor(P.DlibFaceResNet.MEAN_RGB)) / 256.0  # RGB order
    assert torch.allclose(got, want)
    assert bb.preprocess(torch.zeros(1, 3, 64, 64)).shape[-2:] == (150, 150)
    feats = bb(torch.zeros(2, 3, 96, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 35, 35), (64, 17, 17), (128, 8, 8), (256, 4, 4),
                                                    (256, 2, 2), (128, 1, 1)]
    bb.train()
    assert not bb.training  # stays frozen inside a module put in train mode
    assert P.load_backbone("dlib_resnet") is bb  # cached


def test_inception_backbone_convention_and_shapes():
    bb = P.load_backbone("inception")
    x = torch.tensor([-1.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    got = bb.preprocess(x)[0, :, 0, 0]
    # fid-helper's range: pixel 0 → −1, pixel 255 → 0.9921875 = 127/128
    assert torch.allclose(got, torch.tensor([-1.0, 0.9921875, -0.00390625]))
    feats = bb(torch.zeros(1, 3, 128, 128))
    assert [f.shape[1] for f in feats] == [64, 192, 256, 288]
    assert [f.shape[-1] for f in feats] == [61, 28, 13, 13]
    assert not any(p.requires_grad for p in bb.parameters())
    bb96 = P.load_backbone("inception", resolution=96)
    assert bb96 is not bb and bb96(torch.zeros(1, 3, 128, 128))[0].shape[-1] == 45


def test_vgg19_from_user_file(vgg19_file):
    bb = P.VGG19Backbone(vgg19_file)
    x = torch.zeros(1, 3, 4, 4)  # mid-grey → (0.5 − mean) / std
    want = (0.5 - torch.tensor(P.VGG19Backbone.MEAN)) / torch.tensor(P.VGG19Backbone.STD)
    assert torch.allclose(bb.preprocess(x)[0, :, 0, 0], want)
    feats = bb(torch.rand(2, 3, 64, 64) * 2 - 1)  # relu1_1 … relu5_1
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8),
                                                    (512, 4, 4)]
    assert all((f >= 0).all() for f in feats)  # ReLU outputs
    assert not any(p.requires_grad for p in bb.parameters())


def test_vggface_both_key_styles_and_bgr(tmp_path):
    for names in (None, P._VGG16_CAFFE_NAMES):
        path = tmp_path / f"vggface_{bool(names)}.pth"
        torch.save(_random_vgg_state(P._VGG16_CFG, 30, names), path)
        bb = P.VGGFaceBackbone(path)
        feats = bb(torch.rand(1, 3, 32, 32) * 2 - 1)
        assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4),
                                                        (512, 2, 2)]
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)  # pure red, RGB in [-1, 1]
    got = bb.preprocess(red)[0, :, 0, 0]  # Caffe: BGR, 0..255 minus BGR mean
    assert torch.allclose(got, torch.tensor([0.0, 0.0, 255.0]) - torch.tensor(P.VGGFaceBackbone.MEAN_BGR))
    rgb = P.VGGFaceBackbone(path, channel_order="rgb")
    assert torch.allclose(rgb.preprocess(red)[0, :, 0, 0],
                          torch.tensor([255.0, 0.0, 0.0]) - torch.tensor(P.VGGFaceBackbone.MEAN_BGR[::-1]))


def test_wrong_files_raise_checkpoint_error(tmp_path, vgg19_file):
    with pytest.raises(CheckpointError, match="needs a local weights file"):
        P.load_backbone("vgg19", "")
    with pytest.raises(CheckpointError, match="not found"):
        P.VGG19Backbone(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        P.VGG19Backbone(junk)
    with pytest.raises(CheckpointError, match="not a VGGFace"):  # a VGG19 file is not a VGG16 face net
        P.VGGFaceBackbone(vgg19_file)
    vgg16 = tmp_path / "vgg16.pth"
    torch.save(_random_vgg_state(P._VGG16_CFG, 30), vgg16)
    with pytest.raises(CheckpointError, match="not a VGG19"):
        P.VGG19Backbone(vgg16)
    with pytest.raises(ValueError, match="unknown perceptual backbone"):
        P.load_backbone("resnet50")


@pytest.mark.media
@pytest.mark.parametrize("name", ["inception", "dlib_resnet"])
def test_features_are_alive_on_a_real_face(name, media):
    """On a real face, with the right input scale, ReLU features are neither dead nor saturated."""
    from PIL import Image

    img = Image.open(media / "images" / "franck_01829.jpg").convert("RGB").resize((128, 128))
    feats = P.load_backbone(name)(from_uint8(np.array(img))[None])
    for f in feats[:-1] if name == "dlib_resnet" else feats:
        frac = (f > 0).float().mean().item()
        assert 0.02 < frac < 0.98, (name, tuple(f.shape), frac)

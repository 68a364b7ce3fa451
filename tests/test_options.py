"""Options as data, defaults once: shared CLI options, exit codes, and the crop framing a model records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from talkinghead.cli import build_parser, main
from talkinghead.commands.options import param_default
from talkinghead.config import CROP_MARGIN, CROP_SHIFT_Y, Config, validate
from talkinghead.errors import ExitStatus


def _face(cx=300.0, cy=260.0, scale=120.0) -> np.ndarray:
    """A plausible 68-point face (the mean shape) at (cx, cy), `scale` px between the outer eye corners."""
    from talkinghead.landmarks.manual import mean_shape

    return (mean_shape() * scale + (cx, cy)).astype(np.float32)


def test_exit_status_values_are_the_documented_codes():
    assert (ExitStatus.SUCCESS, ExitStatus.ERROR, ExitStatus.USAGE) == (0, 1, 2)
    assert (ExitStatus.INTERRUPTED, ExitStatus.TERMINATED) == (130, 143)
    assert main(["animate", "--no-such-option"]) == ExitStatus.USAGE


@pytest.mark.parametrize("command", ["animate", "finetune"])
def test_shots_means_t_and_its_default_is_written_once(command):
    from talkinghead.persons.avatar import make_ff_avatar
    from talkinghead.persons.shots import DEFAULT_SHOTS
    from talkinghead.train.finetune import make_avatar

    args = build_parser(command).parse_args([command, "a.jpg", "b.mp4", "-o", "x"])
    assert args.shots == DEFAULT_SHOTS == param_default(make_ff_avatar, "shots") == param_default(make_avatar, "shots")


def test_train_takes_k_as_k_shots_not_shots(capsys):
    args = build_parser("train").parse_args(["train", "--k-shots", "3", "--dry-run"])
    assert args.shots == 3
    assert main(["train", "--shots", "3", "--dry-run"]) == ExitStatus.USAGE
    assert "--shots" in capsys.readouterr().err


def test_train_defaults_to_the_bundled_models_preset(capsys):
    assert main(["train", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "warp"


def test_library_defaults_reach_the_cli():
    from talkinghead.app.page import serve
    from talkinghead.inference.pipeline import render_stream
    from talkinghead.live.puppet import LivePuppet

    assert build_parser("animate").parse_args(["animate", "a", "b", "-o", "c"]).batch_size == \
        param_default(render_stream, "batch_size")
    assert build_parser("live").parse_args(["live", "--avatar", "a.jpg"]).max_size == \
        param_default(LivePuppet.__init__, "max_size")
    assert build_parser("serve").parse_args(["serve"]).port == param_default(serve, "port")


def test_demo_steps_need_fine_tuning(capsys):
    assert main(["demo", "--steps", "3", "--out", "unused"]) == ExitStatus.ERROR
    assert "--mode ft" in capsys.readouterr().err


# ---- the crop framing ----------------------------------------------------------------------------------------
def test_old_model_configs_get_the_framing_they_were_trained_with():
    d = Config().to_dict()
    del d["model"]["crop_margin"], d["model"]["crop_shift_y"]  # a file written before the framing was recorded
    m = Config.from_dict(d).model
    assert (m.crop_margin, m.crop_shift_y) == (CROP_MARGIN, CROP_SHIFT_Y)


def test_a_bad_framing_is_refused():
    cfg = Config()
    cfg.model.crop_margin = -1.0
    assert any("crop_margin" in p for p in validate(cfg))


def test_photos_are_cropped_with_the_models_framing():
    """prepare_shots crops as the model's data was cropped: a wider margin gives a proportionally larger box."""
    from talkinghead.landmarks.manual import ManualLandmarks
    from talkinghead.persons.shots import model_framing, prepare_shots

    image = np.full((600, 600, 3), 128, np.uint8)
    pts = _face()
    cfg = Config()
    default = prepare_shots([image], 64, shots=1, detector=ManualLandmarks(pts),
                            framing=model_framing(cfg.model)).transforms[0]
    cfg.model.crop_margin = 0.8
    wide = prepare_shots([image], 64, shots=1, detector=ManualLandmarks(pts),
                         framing=model_framing(cfg.model)).transforms[0]
    assert wide.side / default.side == pytest.approx((1 + 2 * 0.8) / (1 + 2 * CROP_MARGIN), rel=1e-5)
    assert (wide.cx, wide.cy) == pytest.approx((default.cx, default.cy))


def test_a_preprocessed_set_records_its_framing(tmp_path):
    from talkinghead.data.shards import check_dataset_info, dataset_framing, write_manifest
    from talkinghead.errors import TalkingHeadError

    assert dataset_framing(tmp_path) == (CROP_MARGIN, CROP_SHIFT_Y)  # a set from before: the defaults
    (tmp_path / "manifest.jsonl").write_text("")
    check_dataset_info(tmp_path, {"resolution": 64, "margin": 0.6, "shift_y": CROP_SHIFT_Y})
    write_manifest(tmp_path)
    assert dataset_framing(tmp_path) == (0.6, CROP_SHIFT_Y)
    with pytest.raises(TalkingHeadError, match="margin"):
        check_dataset_info(tmp_path, {"resolution": 64, "margin": 0.45, "shift_y": CROP_SHIFT_Y})


@pytest.mark.parametrize("raised, code", [("terminated", ExitStatus.TERMINATED), ("interrupted", ExitStatus.INTERRUPTED),
                                          ("error", ExitStatus.ERROR)])
def test_the_cli_maps_each_ending_to_its_exit_status(monkeypatch, capsys, raised, code):
    import types

    from talkinghead import cli
    from talkinghead.errors import TalkingHeadError, Terminated

    exc = {"terminated": Terminated(), "interrupted": KeyboardInterrupt(), "error": TalkingHeadError("bad")}[raised]

    def run(args):
        raise exc

    real = cli.command_module
    monkeypatch.setattr(cli, "command_module", lambda name: types.SimpleNamespace(
        add_arguments=real(name).add_arguments, run=run))
    assert main(["verify", "x.png"]) == code
    assert "Traceback" not in capsys.readouterr().err

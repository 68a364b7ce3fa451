"""Trainer (paper §3.2): one step updates every parameter group, exact resume, no collapse, overfitting a
real video, checkpoint round trips, torchrun with 2 gloo processes, CLI behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.persons.checkpoint import LoadedModel, load_training_state, save_model
from talkinghead.config import tiny
from talkinghead.errors import CheckpointError, TalkingHeadError, Terminated
from talkinghead.train.meta import CHECKPOINT, MODEL_FILE, Trainer

REPO = Path(__file__).resolve().parents[1]


class SyntheticEpisodes(torch.utils.data.Dataset):
    """Deterministic episodes (a function of the index) with a learnable relation between y and x."""

    def __init__(self, num_videos=3, shots=2, size=64):
        self.num_videos, self.shots, self.size = num_videos, shots, size

    def __len__(self):
        return self.num_videos * 10

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1000 + i)
        v = i % self.num_videos
        s = self.size
        yy = torch.linspace(-1, 1, s).view(s, 1).expand(s, s)

        def frame():
            c = torch.rand(2, generator=g) * 0.6 - 0.3
            y = torch.zeros(3, s, s)
            y[v % 3] = ((yy - c[0]).abs() < 0.05).float() * 2 - 1
            x = torch.tanh(torch.stack([yy + c[0], yy.t() + c[1], yy * 0 + v / 3.0]))
            return x, y

        frames = [frame() for _ in range(self.shots + 1)]
        return {"shots_x": torch.stack([f[0] for f in frames[:-1]]),
                "shots_y": torch.stack([f[1] for f in frames[:-1]]),
                "target_x": frames[-1][0], "target_y": frames[-1][1],
                "video_index": torch.tensor(v, dtype=torch.long)}


def tiny_cfg(steps=6):
    cfg = tiny()
    cfg.train.steps = steps
    cfg.train.ckpt_every_steps = 1000
    cfg.train.sample_every = 0
    return cfg


def test_one_step_updates_every_parameter_group(tmp_path):
    tr = Trainer(tiny_cfg(), tmp_path / "run", dataset=SyntheticEpisodes(num_videos=5), progress=False)
    before = {n: p.detach().clone() for n, p in
              [*(("E." + k, v) for k, v in tr.E.named_parameters()),
               *(("G." + k, v) for k, v in tr.G.named_parameters()),
               *(("D." + k, v) for k, v in tr.D.named_parameters())]}
    batch = torch.utils.data.default_collate([tr.dataset[0], tr.dataset[1]])  # videos 0 and 1
    res = tr.train_step(batch)  # step 1: attention's f, g, h get no gradient while its γ is still 0
    res = tr.train_step(batch)
    assert all(np.isfinite(v) for v in res.losses.values())
    after = dict([*(("E." + k, v) for k, v in tr.E.named_parameters()),
                  *(("G." + k, v) for k, v in tr.G.named_parameters()),
                  *(("D." + k, v) for k, v in tr.D.named_parameters())])
    # D's bias b: the hinge loss' gradient −1[r<1] + 1[f>−1] cancels while every score is inside the
    # margin (as at the start), and the G/E phase keeps D fixed — so b legitimately may not move yet.
    unchanged = [n for n in before if n not in ("D.W.weight", "D.b") and torch.equal(before[n], after[n])]
    assert not unchanged, f"not updated: {unchanged}"
    W0, W1 = before["D.W.weight"], after["D.W.weight"]
    changed_rows = [r for r in range(W0.shape[0]) if not torch.equal(W0[r], W1[r])]
    assert changed_rows == [0, 1], "only the batch's rows of W may move (sparse update)"
    assert res.losses["gnorm_g"] > 0 and res.losses["gnorm_d"] > 0


class SyntheticWarpEpisodes(SyntheticEpisodes):
    """SyntheticEpisodes plus what the warp-guided generator needs: source shot, coarse grid, target points."""

    def __getitem__(self, i):
        from talkinghead.landmarks.warp import flow_grid

        item = super().__getitem__(i)
        s = self.size
        t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        src = (np.stack([np.cos(t), np.sin(t)], 1) * s * 0.3 + s / 2).astype(np.float32)
        tgt = src + np.float32(i % 3)  # the face moves by up to 2 px
        item.update(source_index=torch.tensor(i % self.shots), coarse_grid=flow_grid(src, tgt, s),
                    target_points=torch.from_numpy(tgt))
        return item


def test_warp_generator_trains_every_parameter_group_and_resumes(tmp_path):
    """model.generator = "warp": the same Trainer, the warp terms logged, every part of G updated."""
    from talkinghead.config import warp_tiny

    cfg = warp_tiny()
    cfg.train.steps, cfg.train.sample_every, cfg.train.log_every = 4, 0, 1
    ds = SyntheticWarpEpisodes(num_videos=3)
    tr = Trainer(cfg, tmp_path / "w", dataset=ds, progress=False)
    before = {n: p.detach().clone() for n, p in tr.G.named_parameters()}
    tr.train()
    log = [json.loads(line) for line in (tmp_path / "w/log.jsonl").read_text().splitlines()]
    assert all(r["warp"] > 0 and r["smooth"] >= 0 and r["mouth"] > 0 for r in log)
    still = [n for n, p in tr.G.named_parameters() if torch.equal(before[n], p.detach())]
    assert not still, f"not updated: {still}"
    m = LoadedModel.load(tmp_path / "w" / MODEL_FILE)
    assert m.cfg.model.generator == "warp" and type(m.G).__name__ == "WarpGenerator"


def test_resume_continues_with_the_same_losses(tmp_path):
    ds = SyntheticEpisodes()
    full = Trainer(tiny_cfg(6), tmp_path / "full", dataset=ds, progress=False)
    full.train()
    log_full = [json.loads(line) for line in (tmp_path / "full/log.jsonl").read_text().splitlines()]

    part = Trainer(tiny_cfg(6), tmp_path / "part", dataset=ds, progress=False)
    part.train(max_steps=3)  # "killed" after 3 steps (the checkpoint at the end of train())
    part.save_checkpoint()
    assert (tmp_path / "part" / CHECKPOINT).is_file()
    resumed = Trainer(tiny_cfg(6), tmp_path / "part", dataset=ds, resume=True, progress=False)
    assert resumed.step == 3
    resumed.train()
    log_part = [json.loads(line) for line in (tmp_path / "part/log.jsonl").read_text().splitlines()]
    f6 = next(r for r in log_full if r["step"] == 6)
    p6 = next(r for r in log_part if r["step"] == 6)
    for k in ("loss_g", "cnt", "loss_d", "mch"):
        assert f6[k] == pytest.approx(p6[k], rel=1e-5, abs=1e-6), k
    for (n, a), b in zip(full.G.state_dict().items(), resumed.G.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), n


def test_interrupt_mid_step_checkpoints_a_whole_step_and_resumes_exactly(tmp_path):
    """Ctrl-C (or SIGTERM) arriving inside a step: the step finishes, its checkpoint is written, then the run
    stops; the resumed run's losses equal an uninterrupted run's from the next step on."""
    import signal

    ds = SyntheticEpisodes()
    full = Trainer(tiny_cfg(6), tmp_path / "full", dataset=ds, progress=False)
    full.train()
    log_full = {r["step"]: r for r in map(json.loads, (tmp_path / "full/log.jsonl").read_text().splitlines())}

    for sig, exc in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)):
        run = tmp_path / f"part{int(sig)}"
        part = Trainer(tiny_cfg(6), run, dataset=ds, progress=False)
        step_ge = part.opt_ge.step

        def interrupted_step(*a, _orig=step_ge, _tr=part, _sig=sig, **k):
            out = _orig(*a, **k)  # G/E weights updated; the D phase of this step has not run yet
            if _tr.step == 2:
                os.kill(os.getpid(), _sig)
            return out

        part.opt_ge.step = interrupted_step
        with pytest.raises(exc):
            part.train()
        resumed = Trainer(tiny_cfg(6), run, dataset=ds, resume=True, progress=False)
        assert resumed.step == 3
        resumed.train()
        log_part = {r["step"]: r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())}
        for k in ("loss_g", "cnt", "loss_d", "mch"):
            assert log_part[6][k] == pytest.approx(log_full[6][k], rel=1e-5, abs=1e-6), (sig, k)


def test_sigterm_to_the_loader_workers_too_still_checkpoints(tmp_path):
    """A stop that signals the whole process group (Ctrl-C in a terminal, a session ending) reaches the
    DataLoader workers as well: they leave it to the main process, which finishes the step and checkpoints."""
    import time

    cfg = tiny_cfg(20)
    cfg.train.num_workers = 1
    tr = Trainer(cfg, tmp_path / "run", dataset=SyntheticEpisodes(), progress=False)
    step_ge = tr.opt_ge.step

    def interrupted_step(*a, **k):
        out = step_ge(*a, **k)
        if tr.step == 2:
            me = os.getpid()
            children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
            assert children  # the loader's worker
            # sent by another process, as a group signal is (a worker exits quietly on its parent's SIGTERM)
            subprocess.run(["kill", "-TERM", *children, str(me)], check=True)
            time.sleep(0.5)  # the workers' fate is known before the step ends
        return out

    tr.opt_ge.step = interrupted_step
    with pytest.raises(Terminated):
        tr.train()
    assert load_training_state(tmp_path / "run" / CHECKPOINT)["step"] == 3


def test_crafted_training_checkpoint_cannot_run_code(tmp_path):
    """`train --resume` reads checkpoints/last.pt with weights_only: a pickle that would run code is refused."""
    ran = tmp_path / "code_ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    run = tmp_path / "r"
    (run / CHECKPOINT).parent.mkdir(parents=True)
    torch.save({"format_version": 2, "config": tiny_cfg().to_dict(), "x": Exploit()}, run / CHECKPOINT)
    with pytest.raises(CheckpointError, match="cannot read training checkpoint"):
        Trainer(tiny_cfg(), run, dataset=SyntheticEpisodes(), resume=True, progress=False)
    with pytest.raises(CheckpointError):
        load_training_state(run / CHECKPOINT)
    assert not ran.exists(), "loading the checkpoint ran code"


def test_resume_keeps_the_model_and_takes_training_values_from_the_command_line(tmp_path, caplog):
    """Model shape from the checkpoint; --steps/--batch-size/--set applied (and reported); the step budget
    is the run's own unless --steps is given; a model change is an error."""
    from talkinghead.cli import build_parser
    from talkinghead.commands.train import _resumed_config

    ds = SyntheticEpisodes()
    cfg = tiny_cfg(4)
    cfg.train.steps = 4
    Trainer(cfg, tmp_path / "r", dataset=ds, progress=False).train()

    def resumed(*extra):
        args = build_parser("train").parse_args(["train", "--run", str(tmp_path / "r"), "--resume", *extra])
        return _resumed_config(args, tmp_path / "r")[0]

    assert resumed().train.steps == 4, "the saved step budget, not the preset's default"
    with caplog.at_level("INFO", logger="talkinghead"):
        c = resumed("--steps", "9", "--batch-size", "3", "--set", "loss.fm_weight=2.5")
    assert (c.train.steps, c.train.batch_size, c.loss.fm_weight) == (9, 3, 2.5)
    assert c.model.image_size == 64 and c.name == "tiny"
    assert "train.batch_size: 2 -> 3" in caplog.text and "loss.fm_weight" in caplog.text
    with pytest.raises(TalkingHeadError, match="keeps its model"):
        resumed("--set", "model.embed_dim=16")
    with pytest.raises(TalkingHeadError, match="preset tiny"):
        resumed("--preset", "paper")
    tr = Trainer(c, tmp_path / "r", dataset=ds, resume=True, progress=False)
    assert tr.step == 4 and tr.cfg.train.steps == 9 and tr.cfg.train.batch_size == 3


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size"), (["--k-shots", "0"], "--k-shots"), (["--preset", "huge"], "--preset"),
    (["--steps", "0"], "--steps"), (["--workers", "-1"], "--workers"), (["--minutes", "0"], "--minutes"),
    (["--set", "train.batch_size=0"], "train.batch_size"), (["--set", "train.steps=abc"], "train.steps"),
    (["--set", "train.random_source=1.5"], "train.random_source = 1.5 (a probability"),
])
def test_train_bad_options_give_one_line_errors(argv, message, capsys):
    from talkinghead.cli import main

    code = main(["train", "--dry-run", *argv])
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_dry_run_needs_no_run_folder(capsys):
    from talkinghead.cli import main

    assert main(["train", "--preset", "paper", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["image_size"] == 256


def test_existing_run_needs_resume(tmp_path):
    ds = SyntheticEpisodes()
    Trainer(tiny_cfg(2), tmp_path / "r", dataset=ds, progress=False).train()
    with pytest.raises(TalkingHeadError, match="--resume"):
        Trainer(tiny_cfg(2), tmp_path / "r", dataset=ds, progress=False)
    with pytest.raises(TalkingHeadError, match="no checkpoint"):
        Trainer(tiny_cfg(2), tmp_path / "other", dataset=ds, resume=True, progress=False)


def test_model_file_round_trip_identical_outputs(tmp_path):
    tr = Trainer(tiny_cfg(2), tmp_path / "r", dataset=SyntheticEpisodes(), progress=False)
    tr.train()
    path = tmp_path / "r" / MODEL_FILE
    m = LoadedModel.load(path)
    cfg, E, G, D = m.cfg, m.E, m.G, m.D
    assert cfg.model.image_size == 64 and D is not None
    b = torch.utils.data.default_collate([tr.dataset[3]])
    tr.E.eval(), tr.G.eval(), tr.D.eval()
    with torch.no_grad():
        e1 = tr.E(b["shots_x"][:, 0], b["shots_y"][:, 0])
        e2 = E(b["shots_x"][:, 0], b["shots_y"][:, 0])
        o1 = tr.G(b["target_y"], tr.G.project(e1))
        o2 = G(b["target_y"], G.project(e2))
        s1, _ = tr.D(b["target_x"], b["target_y"], w=tr.D.w0.expand(1, -1) + e1)
        s2, _ = D(b["target_x"], b["target_y"], w=D.w0.expand(1, -1) + e2)
    assert torch.equal(e1, e2) and torch.equal(o1, o2) and torch.allclose(s1, s2)
    assert not any(k.startswith("D.W.") for k in __import__("safetensors.torch").torch.load_file(str(path)))

    half = tmp_path / "half.safetensors"
    save_model(half, cfg, E, G, None, dtype=torch.float16)
    m16 = LoadedModel.load(half)
    G16, D16 = m16.G, m16.D
    assert D16 is None
    with torch.no_grad():
        o3 = G16(b["target_y"], G16.project(e2))
    assert (o3 - o2).abs().max() < 0.05
    assert half.stat().st_size < path.stat().st_size


def test_broken_model_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        LoadedModel.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        LoadedModel.load(bad)


def test_tiny_run_does_not_collapse(tmp_path):
    cfg = tiny_cfg(40)
    tr = Trainer(cfg, tmp_path / "r", dataset=SyntheticEpisodes(), progress=False)
    tr.train()
    b = torch.utils.data.default_collate([tr.dataset[i] for i in range(3)])
    tr.E.eval(), tr.G.eval()
    with torch.no_grad():
        fake = tr.EG(b["shots_x"], b["shots_y"], b["target_y"])["out"].image
    assert torch.isfinite(fake).all()
    assert fake.std() > 0.05, "outputs collapsed to a constant image"
    assert fake.mean(dim=(2, 3)).std(dim=1).max() > 0.01 or fake.std(dim=(2, 3)).min() > 0.02
    assert (fake.abs() < 0.999).float().mean() > 0.5, "outputs saturated"
    with torch.no_grad():  # the embedding must not collapse either (dead ReLU: ê = 0 for every video)
        e = torch.stack([tr.E(b["shots_x"][i], b["shots_y"][i]).mean(0) for i in range(3)])  # (3, N)
    assert (e.norm(dim=1) > 1e-3).all(), "embedding collapsed to zero"
    assert (e[0] - e[1]).norm() > 1e-3 and (e[1] - e[2]).norm() > 1e-3, "embedding ignores the video"


def test_cli_dry_run_and_bad_override(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "talkinghead", "train", "--preset", "paper", "--run",
                          str(tmp_path / "r"), "--dry-run", "--set", "loss.fm_weight=5"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["model"]["image_size"] == 256 and cfg["model"]["embed_dim"] == 512
    assert cfg["train"]["shots"] == 8 and cfg["loss"]["fm_weight"] == 5
    bad = subprocess.run([sys.executable, "-m", "talkinghead", "train", "--run", str(tmp_path / "r"),
                          "--dry-run", "--set", "loss.nope=1"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode != 0 and "no such config value" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    nodata = subprocess.run([sys.executable, "-m", "talkinghead", "train", "--run", str(tmp_path / "r"),
                             "--data", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert nodata.returncode != 0 and "manifest.json" in nodata.stderr and "Traceback" not in nodata.stderr


@pytest.mark.slow
def test_torchrun_two_processes_keep_identical_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           str(REPO / "tests" / "dist_worker.py"), str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    s0 = torch.load(tmp_path / "rank0.pt")
    s1 = torch.load(tmp_path / "rank1.pt")
    assert s0.keys() == s1.keys()
    for k in s0:
        assert torch.allclose(s0[k], s1[k], atol=1e-6), k
    assert (tmp_path / "run" / MODEL_FILE).is_file()


SHARED = REPO.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "videos" / "capman_1.mp4").is_file(),
                    reason="real media not found at ../shared/data (see its fetch.sh)")
def test_tiny_run_overfits_one_real_video(tmp_path):
    from talkinghead.data.preprocess import preprocess

    src = tmp_path / "videos"
    src.mkdir()
    os.symlink(SHARED / "videos" / "capman_1.mp4", src / "capman_1.mp4")
    preprocess(src, tmp_path / "data", resolution=64, frames_per_video=12, every=8, progress=False)
    cfg = tiny_cfg(100)
    cfg.train.log_every = 1
    cfg.train.lr_ge = 1e-3  # overfitting a single video in 100 steps: a larger step than the paper's 5e-5
    tr = Trainer(cfg, tmp_path / "run", data_root=tmp_path / "data", progress=False)
    assert tr.cfg.model.num_videos == 1
    tr.train()
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    first = np.mean([r["cnt"] for r in log[:10]])
    last = np.mean([r["cnt"] for r in log[-10:]])
    print(f"overfit: content loss {first:.3f} -> {last:.3f}")
    assert last < 0.6 * first, (first, last)
    assert all(np.isfinite(r["loss_g"]) and np.isfinite(r["loss_d"]) for r in log)

"""`talkinghead preprocess` under abuse: out-of-range options, a killed parent, shards broken on disk."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talkinghead.cli import main as cli_main
from talkinghead.data.preprocess import preprocess
from talkinghead.data.shards import verify_shard
from talkinghead.errors import TalkingHeadError
from talkinghead.media.files import pid_alive

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("option, value", [("--every", "0"), ("--frames-per-video", "-1"), ("--resolution", "8"),
                                           ("--workers", "0"), ("--redetect-every", "0"),
                                           ("--segment-seconds", "-1"), ("--upsample", "-1"), ("--every", "x")])
def test_cli_option_ranges(tmp_path, capsys, option, value):
    assert cli_main(["preprocess", str(tmp_path), "--out", str(tmp_path / "out"), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("talkinghead preprocess: error: argument") and option in err[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kw", [{"every": 0}, {"frames_per_video": -1}, {"resolution": 8}, {"workers": 0},
                                {"redetect_every": 0}, {"segment_seconds": -1.0}, {"quality": 101},
                                {"image_format": "gif"}, {"min_frames": 0}])
def test_library_option_ranges(tmp_path, kw):
    with pytest.raises(TalkingHeadError) as ei:
        preprocess(tmp_path, tmp_path / "out", progress=False, **kw)
    assert "\n" not in str(ei.value) and next(iter(kw)) in str(ei.value)
    assert not (tmp_path / "out").exists()


def test_help_shows_defaults_from_options():
    from talkinghead.cli import build_parser
    from talkinghead.data.options import PreprocessOptions

    p = build_parser("preprocess")
    args = p.parse_args(["preprocess", "in", "--out", "o"])
    d = PreprocessOptions()
    assert (args.resolution, args.every, args.frames_per_video, args.workers, args.redetect_every,
            args.segment_seconds, args.image_format, args.upsample) == (
        d.resolution, d.every, d.frames_per_video, d.workers, d.redetect_every, d.segment_seconds,
        d.image_format, d.upsample)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    try:  # a zombie has exited already
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_pool_workers_die_with_their_parent(tmp_path):
    """kill -9 of the parent must not leave workers running (they raced the next run and broke its shards)."""
    script = textwrap.dedent("""
        import sys, time
        from talkinghead.data.preprocess import _start_pool
        pool = _start_pool(2)
        assert list(pool.map(sum, [[1, 2], [3]])) == [3, 3]  # workers are up and initialised
        pool.submit(time.sleep, 60)  # one worker busy (a long video), one idle
        time.sleep(1)
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        workers = _children(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        alive = [w for w in workers if _alive(w)]
    finally:
        proc.kill()
        proc.wait()
    for w in alive:  # clean up after a failing run
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their parent"


# -- verification of shards on disk (no media needed) -------------------------------------------------------
def _shard(root: Path, vid: str, n: int = 4, size: int = 16) -> Path:
    d = root / "videos" / vid
    (d / "frames").mkdir(parents=True)
    for j in range(n):
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(d / "frames" / f"{j:06d}.png")
    np.save(d / "landmarks.npy", np.zeros((n, 68, 2), np.float32))
    np.save(d / "boxes.npy", np.zeros((n, 3), np.float32))
    meta = {"video_id": vid, "identity": vid, "group": vid, "split": "train", "resolution": size, "fps": 25.0,
            "image_format": "png", "frame_indices": list(range(n)), "num_frames": n}
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_verify_shard(tmp_path):
    d = _shard(tmp_path, "ok")
    assert verify_shard(d) is None
    (d / "frames" / "000002.png").unlink()
    assert "3 of 4 frames" in verify_shard(d)
    d = _shard(tmp_path, "lm")
    np.save(d / "landmarks.npy", np.zeros((3, 68, 2), np.float32))
    assert "landmarks" in verify_shard(d)
    d = _shard(tmp_path, "meta")
    (d / "meta.json").write_text('{"video_id": "me')
    assert "meta.json" in verify_shard(d)
    d = _shard(tmp_path, "boxes")
    (d / "boxes.npy").unlink()
    assert "boxes" in verify_shard(d)
    assert "meta.json" in verify_shard(tmp_path / "videos" / "nothing")


# -- containers without a frame count, workers that die ---------------------------------------------------
def test_sampling_lists_only_the_frames_it_picks():
    from talkinghead.data.preprocess import sample_indices

    t0 = time.perf_counter()
    assert sample_indices(0, 10**12, 4, 5) == [0, 250_000_000_000, 500_000_000_000, 749_999_999_996,
                                               999_999_999_996]
    assert time.perf_counter() - t0 < 1
    assert sample_indices(3, 20, 5, 0) == [3, 8, 13, 18] and sample_indices(0, 10, 1, 3) == [0, 4, 9]


def test_a_jpeg_named_mp4_finishes_quickly_reported_as_skipped(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(src / "photo.mp4", format="JPEG")
    t0 = time.perf_counter()
    summary = preprocess(src, tmp_path / "out", progress=False)
    assert time.perf_counter() - t0 < 30
    assert summary.processed == 0 and [s["video_id"] for s in summary.skipped] == ["photo"]
    assert summary.skipped[0]["reason"] == "no face: found in 0 of 1 sampled frames"


def test_a_header_frame_count_the_duration_does_not_bear_out_is_counted(tmp_path, monkeypatch):
    from talkinghead.data import preprocess as pre
    from talkinghead.media.video import VideoInfo
    from talkinghead.media.video_writer import VideoWriter

    clip = tmp_path / "c.mp4"
    with VideoWriter(clip, 10) as w:
        for _ in range(5):
            w.write(np.zeros((16, 16, 3), np.uint8))
    info = VideoInfo(16, 16, 10.0, 10**9, False, 0.5)  # an absurd header
    assert pre._frame_count(clip, info) == 5
    assert pre._frame_count(clip, VideoInfo(16, 16, 10.0, 0, False, 0.0)) == 5
    assert pre._frame_count(clip, VideoInfo(16, 16, 10.0, 7, False, 0.7)) == 7  # a plausible one is trusted


def test_a_job_whose_worker_dies_fails_alone_and_the_run_goes_on():
    import functools
    import operator

    from talkinghead.data.workers import run_pooled

    jobs = [functools.partial(abs, -1), functools.partial(os._exit, 3), functools.partial(abs, -2),
            functools.partial(abs, -3), functools.partial(abs, -4)]
    t0 = time.perf_counter()
    results = list(run_pooled(operator.call, jobs, 2, on_dead=lambda job: ("died", job.args)))
    assert sorted(map(str, results)) == ["('died', (3,))", "1", "2", "3", "4"]
    assert time.perf_counter() - t0 < 60


def test_pooled_preprocess_reports_every_video(tmp_path, monkeypatch):
    from talkinghead.data import preprocess as pre

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(src / f"{name}.mp4", format="JPEG")
    died, dead_result = [], pre._worker_died
    monkeypatch.setattr(pre, "_worker_died", lambda args: died.append(args) or dead_result(args))
    summary = preprocess(src, tmp_path / "out", progress=False, workers=2)
    assert sorted(s["video_id"] for s in summary.skipped) == ["a", "b", "c"] and not died
    assert dead_result(({"video_id": "a", "identity": "a", "path": "/x/a.mp4"}, "", {}))["reason"] == \
        "its worker process died (out of memory, or a crash decoding it)"

"""talkinghead.data: sources and splits, preprocessing (resumable, bad inputs skipped), episode dataset."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from talkinghead.cli import main as cli_main
from talkinghead.data.dataset import EpisodeDataset, VideoShard
from talkinghead.data.preprocess import preprocess, sample_indices
from talkinghead.data.shards import verify_shard
from talkinghead.data.sources import apply_split, find_videos, load_split
from talkinghead.errors import TalkingHeadError
from talkinghead.media.video import iter_frames
from talkinghead.media.video_writer import VideoWriter
from helpers import write_shards

DEAD_PID = 4_194_399  # above Linux's largest pid_max (2**22): never a live process


def _touch(root: Path, *rels):
    for r in rels:
        p = root / r
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_find_videos_folder_and_identities(tmp_path):
    _touch(tmp_path, "a.mp4", "sub/b.MOV", "sub/c.txt", ".hidden/d.mp4", "e.webm")
    recs = find_videos(tmp_path)
    assert [r.video_id for r in recs] == ["a", "e", "sub__b"]
    assert [r.identity for r in recs] == ["a", "e", "b"]
    recs = find_videos(tmp_path, identities={"a": "P1", "sub/b.MOV": "P1"})
    assert [r.identity for r in recs] == ["P1", "e", "P1"]


def test_find_videos_voxceleb_layout(tmp_path):
    _touch(tmp_path, "id10001/vidA/00001.mp4", "id10001/vidA/00002.mp4", "id10002/vidB/00001.mp4")
    recs = find_videos(tmp_path)
    assert [(r.identity, r.group) for r in recs] == [("id10001", "id10001/vidA")] * 2 + [("id10002", "id10002/vidB")]
    assert len({r.video_id for r in recs}) == 3


def test_shared_split_file(tmp_path):
    _touch(tmp_path, "capman_1.mp4", "capman_2.mp4", "franck.mp4", "pexels_woman.mp4", "no_face.mp4")
    spec = load_split("shared")
    assert "reason" in spec or "about" in spec
    recs = {r.video_id: r for r in apply_split(find_videos(tmp_path), "shared", root=tmp_path)}
    assert set(recs) == {"capman_1", "franck", "franck_tail", "capman_2", "pexels_woman"}
    assert {k for k, r in recs.items() if r.split == "train"} == {"capman_1", "franck"}
    assert (recs["franck"].frame_start, recs["franck"].frame_stop) == (0, 4000)
    assert (recs["franck_tail"].frame_start, recs["franck_tail"].frame_stop) == (4000, None)
    assert recs["capman_1"].identity == recs["capman_2"].identity != recs["pexels_woman"].identity
    with pytest.raises(TalkingHeadError):
        load_split(tmp_path / "missing.json")


def test_sample_indices():
    assert sample_indices(0, 10, 3, 0) == [0, 3, 6, 9]
    idx = sample_indices(4000, 4800, 2, 5)
    assert len(idx) == 5 and idx[0] == 4000 and idx[-1] == 4798 and all(i % 2 == 0 for i in idx)


# -- preprocessing on real media ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prep_input(tmp_path_factory, media):  # only for tests marked `media`
    """A folder with a short real talking clip, a face-less clip and a truncated mp4."""
    root = tmp_path_factory.mktemp("prep_in")
    with VideoWriter(root / "talk.mp4", 25) as w:
        for f in iter_frames(media / "videos" / "capman_2.mp4", start=100, step=2, max_frames=12):
            w.write(f)
    with VideoWriter(root / "noface.mp4", 25) as w:
        for f in iter_frames(media / "videos" / "no_face.mp4", step=8, max_frames=6):
            w.write(f[::2, ::2])
    src = (media / "videos" / "capman_2.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(src[:200_000])  # header intact, most frames gone
    return root


@pytest.fixture(scope="module")
def prepped(prep_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep_out")
    summary = preprocess(prep_input, out, resolution=64, every=1, frames_per_video=10, workers=1, progress=False)
    return out, summary


@pytest.mark.media
def test_preprocess_writes_shards_and_skips_bad_videos(prepped):
    out, s = prepped
    assert s.videos == 3 and s.processed == 1 and s.frames == 10
    reasons = {k["video_id"]: k["reason"] for k in s.skipped}
    assert set(reasons) == {"noface", "truncated"}
    assert "no face" in reasons["noface"] and "truncated or corrupt: decoded" in reasons["truncated"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [v["video_id"] for v in manifest["videos"]] == ["talk"] and manifest["resolution"] == 64
    shard = VideoShard(out / "videos" / "talk")
    assert len(shard) == 10 and shard.landmarks.shape == (10, 68, 2) and shard.boxes.shape == (10, 3)
    assert shard.frame(0).shape == (64, 64, 3)
    lm = shard.landmarks
    assert lm.min() > 0 and lm.max() < 64  # the face sits inside its crop
    assert shard.meta["source"].endswith("talk.mp4") and shard.meta["frame_indices"] == sample_indices(0, 12, 1, 10)
    assert not list((out / "videos").glob(".tmp-*"))


@pytest.mark.media
def test_preprocess_twice_does_no_work(prepped, prep_input):
    out, _ = prepped
    before = {p: p.stat().st_mtime_ns for p in (out / "videos").rglob("*")}
    s = preprocess(prep_input, out, resolution=64, every=1, frames_per_video=10, workers=1, progress=False)
    assert (s.processed, s.already_done, s.previously_skipped, s.frames, s.skipped) == (0, 1, 2, 0, [])
    assert s.seconds < 2.0
    assert {p: p.stat().st_mtime_ns for p in (out / "videos").rglob("*")} == before
    # the CLI on the same folder: also nothing to do; a different resolution is refused
    assert cli_main(["preprocess", str(prep_input), "--out", str(out), "--resolution", "64", "--every", "1",
                     "--frames-per-video", "10", "--no-progress"]) == 0
    assert cli_main(["preprocess", str(prep_input), "--out", str(out), "--resolution", "128", "--quiet"]) == 1


def _tree(root: Path) -> dict:
    """{relative path: bytes} of every file of a dataset's shards (videos/*), and its manifest's shard list."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "videos").rglob("*")) if p.is_file()}
    return {"files": files, "videos": json.loads((root / "manifest.json").read_text())["videos"]}


@pytest.mark.media
def test_two_parts_in_two_processes_make_the_shards_of_one_run(prep_input, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "in"  # the fixture's three videos and a second talking one: both parts get work
    shutil.copytree(prep_input, src)
    shutil.copy(src / "talk.mp4", src / "talk2.mp4")
    one = tmp_path / "one"
    preprocess(src, one, resolution=64, every=1, frames_per_video=6, workers=1, progress=False)
    many = tmp_path / "many"
    args = [str(src), "--out", str(many), "--resolution", "64", "--every", "1", "--frames-per-video", "6",
            "--workers", "1", "--quiet"]
    jobs = [subprocess.Popen([sys.executable, "-m", "talkinghead", "preprocess", *args, "--part", f"{k}/2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in (1, 2)]
    for j in jobs:
        assert j.wait(timeout=300) == 0, j.stderr.read().decode()
    parts = sorted(p.name for p in (many / "parts").iterdir())
    assert parts == ["1-of-2", "2-of-2"]
    ids = [{v["video_id"] for v in json.loads((many / "parts" / p / "manifest.json").read_text())["videos"]}
           for p in parts]
    assert ids[0] and ids[1] and not ids[0] & ids[1]  # each part did some of the work, none twice
    s = preprocess(src, many, resolution=64, every=1, frames_per_video=6, workers=1, progress=False, merge=True)
    assert (s.adopted, s.processed, s.left, s.previously_skipped) == (2, 0, 0, 2)
    assert not (many / "parts").exists()
    mine, theirs = _tree(one), _tree(many)
    assert mine["videos"] == theirs["videos"] and mine["files"].keys() == theirs["files"].keys()
    for name, data in mine["files"].items():
        if name.endswith("meta.json"):  # the same but for how long it took
            a, b = json.loads(data), json.loads(theirs["files"][name])
            a.pop("seconds"), b.pop("seconds")
            assert a == b, name
        else:
            assert data == theirs["files"][name], name
    # a plain rerun has nothing left to do
    s = preprocess(src, many, resolution=64, every=1, frames_per_video=6, workers=1, progress=False)
    assert (s.processed, s.already_done, s.adopted) == (0, 2, 0)


def test_part_option_is_checked(tmp_path, capsys):
    for bad in ("0/2", "3/2", "1", "a/b"):
        assert cli_main(["preprocess", str(tmp_path), "--out", str(tmp_path / "o"), "--part", bad]) == 2
        assert "K/N" in capsys.readouterr().err


@pytest.mark.media
@pytest.mark.slow
def test_preprocess_parallel_workers(prep_input, tmp_path):
    s = preprocess(prep_input, tmp_path / "out", resolution=32, every=3, workers=2, progress=False)
    assert s.processed == 1 and len(s.skipped) == 2


@pytest.mark.media
def test_preprocess_with_no_usable_video_is_an_error(prep_input, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("noface.mp4", "truncated.mp4"):
        (src / name).symlink_to(prep_input / name)
    rc = cli_main(["preprocess", str(src), "--out", str(tmp_path / "out"), "--resolution", "64", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("talkinghead preprocess: error: no usable video in")
    assert "noface: no face" in err[-1] and "truncated or corrupt" in err[-1]
    # a rerun (both remembered as skipped) says so too
    with pytest.raises(TalkingHeadError, match="2 skipped by an earlier run"):
        preprocess(src, tmp_path / "out", resolution=64, progress=False, require_usable=True)


@pytest.mark.media
def test_rerun_redoes_broken_and_partial_shards(prepped, prep_input, tmp_path):
    """What a killed run racing a rerun left: a listed shard missing frames, a stale temporary folder."""
    out = tmp_path / "out"
    shutil.copytree(prepped[0], out)
    shard = out / "videos" / "talk"
    frames = sorted((shard / "frames").iterdir())
    for f in frames[:3] + frames[-2:]:
        f.unlink()
    assert "5 of 10 frames on disk" in verify_shard(shard)
    stale = out / "videos" / f".tmp-talk-{DEAD_PID}"
    (stale / "frames").mkdir(parents=True)
    s = preprocess(prep_input, out, resolution=64, every=1, frames_per_video=10, progress=False)
    assert [r["video_id"] for r in s.redone] == ["talk"] and s.processed == 1 and s.already_done == 0
    assert verify_shard(shard) is None and len(VideoShard(shard)) == 10
    assert [v["video_id"] for v in json.loads((out / "manifest.json").read_text())["videos"]] == ["talk"]
    assert not list((out / "videos").glob(".tmp-*"))
    # a shard renamed into place but never listed (killed in between) and a broken one never listed
    m = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join(line for line in m if '"talk"' not in line) + "\n")
    s = preprocess(prep_input, out, resolution=64, every=1, frames_per_video=10, progress=False)
    assert (s.processed, s.already_done, s.redone) == (0, 1, [])
    assert [v["video_id"] for v in json.loads((out / "manifest.json").read_text())["videos"]] == ["talk"]


@pytest.mark.media
def test_episodes_from_real_shard(prepped):
    out, _ = prepped
    ds = EpisodeDataset(out, shots=3, split="train", episodes_per_video=4)
    assert ds.num_videos == 1 and len(ds) == 4
    item = ds[0]
    assert item["shots_x"].shape == (3, 3, 64, 64) and item["shots_y"].shape == (3, 3, 64, 64)
    assert item["target_y"].max() > 0  # a visible landmark drawing


# -- episode dataset on synthetic shards ------------------------------------------------------------------
def _fake_root(root: Path, videos=(("v0", 6, "train"), ("v1", 9, "train"), ("v2", 5, "val"), ("v3", 2, "train")),
               size=32):
    """Shards whose frame j of video v is a flat colour (40 v, 20 j, 0), so an episode's source is checkable."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lm = (np.stack([np.cos(t), np.sin(t)], 1) * size * 0.3 + size / 2).astype(np.float32)
    return write_shards(root, [(vid, vid, split, [np.full((size, size, 3), (40 * v, 20 * j, 0), np.uint8) for j in range(n)],
                                np.repeat(lm[None], n, 0)) for v, (vid, n, split) in enumerate(videos)])


def _colour_ids(x):  # (..., 3, S, S) in [-1, 1] -> (video, frame) per image
    rgb = ((x[..., :, 0, 0] + 1) * 127.5).round().long()
    return [(int(c[0]) // 40, int(c[1]) // 20) for c in rgb.reshape(-1, 3)]


def test_episode_dataset_shapes_and_one_video(tmp_path):
    root = _fake_root(tmp_path)
    ds = EpisodeDataset(root, shots=4, split="train", episodes_per_video=3, seed=1)
    assert ds.num_videos == 2 and ds.video_ids == ["v0", "v1"] and ds.excluded == ["v3"]  # v3: < K+1 frames
    assert len(ds) == 6
    for n in range(len(ds)):
        it = ds[n]
        assert it["shots_x"].shape == (4, 3, 32, 32) and it["shots_x"].dtype == torch.float32
        assert it["target_x"].shape == (3, 32, 32) and it["target_y"].shape == (3, 32, 32)
        assert it["video_index"].dtype == torch.int64 and it["video_index"].ndim == 0
        ids = _colour_ids(torch.cat([it["shots_x"], it["target_x"][None]]))
        vids = {v for v, _ in ids}
        assert vids == {int(it["video_index"])}  # all from one video, the one the index names
        assert len({j for _, j in ids}) == 5  # K+1 distinct frames
        assert float(it["shots_x"].min()) >= -1 and float(it["shots_x"].max()) <= 1
    # deterministic per (seed, epoch, index), different across epochs
    a = ds[2]["target_x"]
    assert torch.equal(a, ds[2]["target_x"])
    ds.set_epoch(1)
    assert any(not torch.equal(ds[n]["target_x"], EpisodeDataset(root, 4, episodes_per_video=3, seed=1)[n]["target_x"])
               for n in range(len(ds)))
    val = EpisodeDataset(root, shots=2, split="val", image_size=16)
    assert val.num_videos == 1 and val[0]["shots_x"].shape == (2, 3, 16, 16)


def test_episode_dataset_group_by(tmp_path):
    root = _fake_root(tmp_path)
    m = json.loads((root / "manifest.json").read_text())
    for e in m["videos"]:
        if e["video_id"] in ("v1", "v3"):
            e["group"] = "g13"  # two clips of one source video
    (root / "manifest.json").write_text(json.dumps(m))
    ds = EpisodeDataset(root, shots=10, group_by="group", episodes_per_video=5)  # 11 frames: needs both clips
    assert ds.video_ids == ["g13"] and ds.excluded == ["v0"]
    for n in range(len(ds)):
        ids = _colour_ids(torch.cat([ds[n]["shots_x"], ds[n]["target_x"][None]]))
        assert {v for v, _ in ids} == {1, 3} and len(set(ids)) == 11


def test_episode_dataset_loader_workers_and_distributed(tmp_path):
    root = _fake_root(tmp_path)
    ds = EpisodeDataset(root, shots=2, episodes_per_video=4)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        seen.append(list(sampler))
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) + len(seen[1]) == len(ds)
    dl = DataLoader(ds, batch_size=2, num_workers=2, sampler=DistributedSampler(ds, num_replicas=2, rank=0))
    batches = list(dl)
    assert sum(b["shots_x"].shape[0] for b in batches) == len(ds) // 2
    assert batches[0]["shots_x"].shape[1:] == (2, 3, 32, 32) and batches[0]["video_index"].shape == (2,)


def test_dataset_broken_shard_is_a_one_line_error(tmp_path):
    root = _fake_root(tmp_path / "frames_gone")
    (root / "videos" / "v1" / "frames" / "000004.png").unlink()
    with pytest.raises(TalkingHeadError, match=r"broken shard videos/v1: 8 of 9 frames on disk.*preprocess") as ei:
        EpisodeDataset(root, shots=2)
    assert "\n" not in str(ei.value)
    shard = VideoShard(root / "videos" / "v1")
    with pytest.raises(TalkingHeadError, match="frame"):
        shard.frame(4)
    root = _fake_root(tmp_path / "landmarks")
    np.save(root / "videos" / "v0" / "landmarks.npy", np.zeros((3, 68, 2), np.float32))
    with pytest.raises(TalkingHeadError, match="landmarks"):
        EpisodeDataset(root, shots=2)
    with pytest.raises(TalkingHeadError, match="landmarks"):
        VideoShard(root / "videos" / "v0").points(0)
    root = _fake_root(tmp_path / "meta")
    (root / "videos" / "v0" / "meta.json").write_text('{"video_id": ')
    with pytest.raises(TalkingHeadError, match="meta.json"):
        VideoShard(root / "videos" / "v0")
    with pytest.raises(TalkingHeadError, match="meta.json"):
        EpisodeDataset(root, shots=2)


def test_dataset_errors(tmp_path):
    with pytest.raises(TalkingHeadError, match="preprocess"):
        EpisodeDataset(tmp_path, shots=2)
    root = _fake_root(tmp_path / "r")
    with pytest.raises(TalkingHeadError):
        EpisodeDataset(root, shots=20)
    with pytest.raises(TalkingHeadError):
        VideoShard(tmp_path)


def test_csv_split_like_clips_csv(tmp_path):
    """`--split` takes a CSV with path, split and identity columns; videos it does not list are skipped."""
    from talkinghead.data.sources import apply_split, find_videos

    _touch(tmp_path / "vox", "id1/src/a.mp4", "id1/src/b.mpg", "id2/src/c.mp4")
    (tmp_path / "s.csv").write_text("path,identity,split,extra\nid1/src/a.mp4,id1,train,x\nid2/src/c.mp4,id2,val,y\n")
    recs = apply_split(find_videos(tmp_path / "vox"), tmp_path / "s.csv", root=tmp_path / "vox")
    assert sorted((r.identity, r.split) for r in recs) == [("id1", "train"), ("id2", "val")]
    (tmp_path / "bad.csv").write_text("file,set\na.mp4,train\n")
    with pytest.raises(TalkingHeadError, match="'path' and 'split'"):
        apply_split(find_videos(tmp_path / "vox"), tmp_path / "bad.csv")


@pytest.mark.media
def test_bundled_talking_split_matches_the_shared_clips(media):
    from talkinghead.data.sources import apply_split, find_videos

    root = media / "talking"
    recs = apply_split(find_videos(root), "talking", root=root)
    assert len(recs) == 113 and sum(r.split == "val" for r in recs) == 21
    assert len({r.identity for r in recs if r.split == "train"}) == 79
    assert not {r.identity for r in recs if r.split == "train"} & {r.identity for r in recs if r.split == "val"}

"""Where training videos come from: a folder of videos (recursive) or the VoxCeleb layout `id/video/clip.mp4`,
and the train/validation split (DESIGN.md §6).

Identities. In the VoxCeleb layout the identity is the top folder (`id10001`) and the paper's "video" (one
row of the discriminator's W, §3.2) is `id/video`; every clip is one record with `group = "id/video"`.
In a plain folder every file is its own video and its identity is the file stem, unless you give a mapping:
`identities={"capman_1": "A", "capman_2": "A"}` (keys: stem or path relative to the root), or a split file
(below) whose entries carry an "identity".

Split files (JSON), e.g. `talkinghead/data/splits/shared.json` (the split of ../shared/data from its
MANIFEST.md; pass `--split shared` or a path):
    {"default_split": "train" | "val" | "skip",           # for videos the file doesn't list
     "videos": [{"path": "franck.mp4", "id": "franck", "identity": "B", "split": "train",
                 "frames": [0, 4000]}, ...]}              # frames: [start, stop) (stop null = to the end)
One file may appear several times with disjoint frame ranges (e.g. a held-out tail of a training video).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from talkinghead.errors import TalkingHeadError
from talkinghead.media.video import VIDEO_EXTENSIONS

SPLITS_DIR = Path(__file__).resolve().parent / "splits"


@dataclass
class VideoRecord:
    video_id: str  # unique, file-system safe: the shard's folder name
    identity: str
    path: str  # absolute path of the source file
    split: str = "train"
    group: str = ""  # the paper's "video" (W row); defaults to video_id
    frame_start: int = 0
    frame_stop: int | None = None  # exclusive; None = to the end

    def __post_init__(self):
        if not self.group:
            self.group = self.video_id

    def to_dict(self) -> dict:
        return asdict(self)


def safe_id(text: str) -> str:
    """A folder-name-safe id: path separators become '__', other odd characters '_'."""
    text = text.replace("/", "__").replace("\\", "__")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text).strip(".") or "video"


def _walk_videos(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def is_voxceleb_layout(root: Path, files: list[Path]) -> bool:
    """All videos at depth id/video/clip.ext, with VoxCeleb-like identity folders (id + digits)."""
    if not files or root.is_file():
        return False
    rels = [f.relative_to(root).parts for f in files]
    return all(len(r) == 3 for r in rels) and all(re.fullmatch(r"id\d+", r[0]) for r in rels)


def find_videos(root, layout: str = "auto", identities: dict | None = None) -> list[VideoRecord]:
    """All videos under `root` (recursive; video.VIDEO_EXTENSIONS: mp4, mpg, mov, mkv, …), sorted by path.

    layout: "auto" (VoxCeleb if every file sits at idNNNNN/video/clip.ext), "voxceleb" or "folder".
    identities: optional {stem or relative path: identity} for plain folders.
    """
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise TalkingHeadError(f"input not found: {root}")
    files = _walk_videos(root)
    if layout not in ("auto", "voxceleb", "folder"):
        raise TalkingHeadError(f"unknown layout {layout!r}; use auto, voxceleb or folder")
    vox = layout == "voxceleb" or (layout == "auto" and is_voxceleb_layout(root, files))
    identities = identities or {}
    records = []
    for f in files:
        rel = f.name if root.is_file() else f.relative_to(root).as_posix()
        if vox:
            parts = Path(rel).parts
            if len(parts) < 3:
                raise TalkingHeadError(f"not in the VoxCeleb layout id/video/clip: {rel}")
            ident, vid = parts[0], parts[1]
            records.append(VideoRecord(video_id=safe_id(str(Path(rel).with_suffix(""))), identity=ident,
                                       path=str(f), group=f"{ident}/{vid}"))
        else:
            stem = Path(rel).stem
            ident = identities.get(rel, identities.get(stem, stem))
            records.append(VideoRecord(video_id=safe_id(str(Path(rel).with_suffix(""))), identity=str(ident),
                                       path=str(f)))
    return records


def load_split(spec) -> dict:
    """A split spec: the name of a bundled split (e.g. "shared", "talking"), a path to a JSON file, a CSV file
    with `path`, `split` and optional `identity` columns (like ../shared/data/talking/clips.csv; videos it does
    not list are skipped), or a dict."""
    if isinstance(spec, dict):
        return spec
    p = Path(str(spec)).expanduser()
    for bundled in (SPLITS_DIR / f"{spec}.json", SPLITS_DIR / f"{spec}.csv"):
        if not p.exists() and bundled.exists():
            p = bundled
    if not p.exists():
        names = ", ".join(sorted(q.stem for q in SPLITS_DIR.glob("*.*")))
        raise TalkingHeadError(f"split file not found: {spec} (bundled splits: {names})")
    if p.suffix.lower() == ".csv":
        return _csv_split(p)
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise TalkingHeadError(f"split file {p} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("videos", []), list):
        raise TalkingHeadError(f"split file {p}: expected an object with a 'videos' list")
    return d


def _csv_split(p: Path) -> dict:
    """A CSV split (columns path, split[, identity]) as a split spec; unlisted videos are skipped."""
    import csv

    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "split"} <= set(rows[0]):
        raise TalkingHeadError(f"split file {p}: a CSV split needs 'path' and 'split' columns")
    videos = [{"path": r["path"], "split": r["split"], **({"identity": r["identity"]} if r.get("identity") else {})}
              for r in rows]
    return {"name": p.stem, "default_split": "skip", "videos": videos}


def apply_split(records: list[VideoRecord], split, root=None) -> list[VideoRecord]:
    """Records with split, identity, id and frame range set from a split spec (see module doc). Entries
    match a record by path relative to `root`, by file name, or by video_id."""
    spec = load_split(split)
    default = spec.get("default_split", "train")
    by_key: dict[str, list[dict]] = {}
    for e in spec.get("videos", []):
        if "path" not in e and "id" not in e:
            raise TalkingHeadError(f"split entry without 'path': {e}")
        by_key.setdefault(str(e.get("path", e.get("id"))), []).append(e)
    root = None if root is None else Path(root).expanduser().resolve()
    out = []
    for r in records:
        keys = [Path(r.path).name, r.video_id]
        if root is not None and root.is_dir():
            keys.insert(0, Path(r.path).relative_to(root).as_posix())
        entries = next((by_key[k] for k in keys if k in by_key), None)
        if entries is None:
            if default != "skip":
                out.append(VideoRecord(**{**r.to_dict(), "split": default}))
            continue
        for e in entries:
            if e.get("split", "train") == "skip":
                continue
            start, stop = (list(e.get("frames") or [0, None]) + [None])[:2]
            vid = safe_id(str(e.get("id", r.video_id)))
            out.append(VideoRecord(video_id=vid, identity=str(e.get("identity", r.identity)), path=r.path,
                                   split=str(e.get("split", "train")), group=str(e.get("group", vid)),
                                   frame_start=int(start or 0), frame_stop=None if stop is None else int(stop)))
    ids = [r.video_id for r in out]
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise TalkingHeadError(f"split gives several videos the same id: {', '.join(dup)}")
    return out

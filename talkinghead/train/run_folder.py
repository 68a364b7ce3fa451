"""The run folder every stage writes (DESIGN.md §4): meta-learning (train/meta.py), fine-tuning
(train/finetune.py, paper §3.3) and the evaluation protocol — config.json, JSON lines, text files."""

from __future__ import annotations

import json
from pathlib import Path

from talkinghead.media.files import atomic_write


class RunFolder:
    """``write_config(dict)`` -> config.json; ``open_log(name, append)`` then ``log(record)``: one JSON line per
    record, flushed; ``append_jsonl(name, rows)``: all rows or none; ``write_text(name, text)``: atomic."""

    def __init__(self, path):
        self.path = Path(path)
        self._log = None

    def write_text(self, name: str, text: str) -> None:
        """`name` holds `text` afterwards, or is unchanged (written under a temporary name, then renamed)."""
        atomic_write(self.path / name, lambda tmp: Path(tmp).write_text(text))

    def write_config(self, config: dict) -> None:
        self.write_text("config.json", json.dumps(config, indent=2))

    def append_jsonl(self, name: str, rows: list[dict]) -> None:
        """Appends one JSON line per row to `name`, all or none of them."""
        p = self.path / name
        old = p.read_text() if p.exists() else ""
        self.write_text(name, old + "".join(json.dumps(r) + "\n" for r in rows))

    def open_log(self, name: str = "log.jsonl", append: bool = True) -> "RunFolder":
        self.path.mkdir(parents=True, exist_ok=True)
        self._log = open(self.path / name, "a" if append else "w")
        return self

    def log(self, record: dict) -> None:
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

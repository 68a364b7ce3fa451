"""Exports a training run's model file as a compact bundled model (fp16 safetensors, E + G + D's trunk and
the region generators it holds).

    python scripts/export_model.py runs/warp/model.safetensors talkinghead/weights/model_warp.safetensors \
        --note "command that reproduced it" [--metrics runs/eval/report.json]

The metadata records the training step, the reproduction note and (optionally) validation metrics, so the
file describes itself (`talkinghead.persons.checkpoint.describe`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from talkinghead.persons.checkpoint import LoadedModel, save_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="model file written by `talkinghead train` (RUN/model.safetensors)")
    ap.add_argument("dst", help="output file")
    ap.add_argument("--fp32", action="store_true", help="keep fp32 (default: fp16)")
    ap.add_argument("--no-discriminator", action="store_true", help="drop D (then only FF avatars work)")
    ap.add_argument("--note", default="", help="how the weights were made (stored in the metadata)")
    ap.add_argument("--metrics", help="JSON file of validation metrics to store in the metadata")
    ap.add_argument("--finetune-from-preset", action="store_true",
                    help="replace the file's fine-tuning settings with its preset's current ones")
    a = ap.parse_args()
    m = LoadedModel.load(a.src, with_discriminator=not a.no_discriminator)
    cfg, E, G, D, meta = m.cfg, m.E, m.G, m.D, m.meta
    if a.finetune_from_preset:
        from talkinghead.config import preset

        cfg.finetune = preset(cfg.name).finetune
    extra = {"step": meta.get("step", ""), "reproduce": a.note,
             **{k: meta[k] for k in ("regions_note",) if k in meta}}
    if a.metrics:
        extra["validation_metrics"] = json.dumps(json.loads(Path(a.metrics).read_text()))
    save_model(a.dst, cfg, E, G, D, dtype=None if a.fp32 else torch.float16, extra_metadata=extra,
               regions=m.regions)
    size = Path(a.dst).stat().st_size / 2**20
    print(f"{a.dst}: {size:.1f} MB, step {extra['step']}, preset {cfg.name}")


if __name__ == "__main__":
    main()

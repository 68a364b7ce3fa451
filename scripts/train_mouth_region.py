"""Trains the mouth-interior generator (talkinghead.train.regions) on a preprocessed set into a run folder.

    python scripts/train_mouth_region.py --data RUNS/talking256 --run RUNS/mouth_region/run --minutes 35
"""

from __future__ import annotations

import argparse
import logging

import torch

from talkinghead.config import REGION_PRESETS
from talkinghead.train.regions import train_region


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="preprocessed set (manifest.json with train and val splits)")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--preset", default="mouth", choices=sorted(REGION_PRESETS))
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: by --minutes)")
    p.add_argument("--eval-minutes", type=float, default=3.0)
    p.add_argument("--cache", default=None, help="folder for the crops (default: RUN/../crops)")
    p.add_argument("--content-weight", type=float, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = REGION_PRESETS[a.preset]()
    if a.content_weight is not None:
        cfg.content_weight = a.content_weight
    from pathlib import Path

    cache = a.cache or str(Path(a.run).parent / "crops")
    print(train_region(cfg, a.data, a.run, a.minutes, a.eval_minutes, cache, resume=a.resume, max_steps=a.steps))


if __name__ == "__main__":
    main()

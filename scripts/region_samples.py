"""Sample grids of a region model on val open mouths: blanked input | output | the warp | real | reference |
alpha, one row per item, rows spread over the val people; any-frame and closed-mouth references.

    python scripts/region_samples.py --model RUN/region.safetensors --data RUNS/talking256 --out DIAG --rows 16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from talkinghead.data.regions import MouthCropDataset, load_crops
from talkinghead.media.images import save_grid
from talkinghead.persons.regions import load_region_model
from talkinghead.train.regions import ValSet, balanced_items, mean_hole_colour


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=None)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--per-person", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(1)
    cfg, G, meta = load_region_model(a.model)
    cache = a.cache or str(Path(a.model).parent.parent / "crops")
    train_v = load_crops(a.data, "train", cfg.crop_size, cfg.crop_scale, cfg.dilate, cache)
    val_ds = MouthCropDataset(load_crops(a.data, "val", cfg.crop_size, cfg.crop_scale, cfg.dilate, cache),
                              open_threshold=cfg.open_threshold)
    mean, out_dir, summary = mean_hole_colour(train_v), Path(a.out), {"step": meta.get("step")}
    for name, closed in (("any_ref", None), ("closed_ref", 0.05)):
        items = balanced_items(val_ds, a.per_person, closed_ref=closed)
        val = ValSet.build(val_ds, a.data, items, mean)
        l1, out = val.evaluate(G)
        with torch.no_grad():
            b = val.batch
            alpha = G(b["blanked"], b["mask"], b["lips"], b["ref"], b["ref_lips"]).alpha * b["mask"]
        rows = np.linspace(0, len(items) - 1, min(a.rows, len(items))).round().astype(int)
        grid = [[b["blanked"][i], out[i], val.warp[i], b["crop"][i], b["ref"][i], alpha[i].expand(3, -1, -1) * 2 - 1]
                for i in rows]
        save_grid(out_dir / f"mouth_{name}_step{meta.get('step')}.png", grid)
        # the same items with another val item's reference (mostly another person): what the reference adds
        perm = torch.roll(torch.arange(len(items)), len(items) // 2)
        shuffled = ValSet(dict(b, ref=b["ref"][perm], ref_lips=b["ref_lips"][perm]), val.mean_fill, val.warp)
        summary[name] = {"items": len(items), "val_l1": round(l1, 4),
                         "val_l1_other_ref": round(shuffled.evaluate(G)[0], 4), **{k: round(v, 4) for k, v in val.baselines.items()},
                         "people": [val_ds.identities[val_ds.person_of[items[i][0]]] for i in rows]}
    (out_dir / f"mouth_summary_step{meta.get('step')}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

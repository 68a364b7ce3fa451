"""Launched by test_train.py under `torchrun --nproc_per_node=2` (gloo, CPU): trains a few tiny steps with
DDP and saves each rank's weights (E, G, D including W) for comparison."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import SyntheticEpisodes, tiny_cfg  # noqa: E402

from talkinghead.train.meta import Trainer  # noqa: E402

out = Path(sys.argv[1])
tr = Trainer(tiny_cfg(4), out / "run", dataset=SyntheticEpisodes(num_videos=6), device="cpu", progress=False)
tr.train()
tr.save_checkpoint()
state = {f"{p}.{k}": v for p, m in (("E", tr.E), ("G", tr.G), ("D", tr.D)) for k, v in m.state_dict().items()}
torch.save(state, out / f"rank{tr.info.rank}.pt")
tr.close()

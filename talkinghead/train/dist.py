"""Distributed set-up the standard way (DESIGN.md §4): launched by `torchrun`, rank and world size come from
the environment, DDP wraps the modules; on a single process everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto") -> torch.device:
    """`auto` → CUDA if available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialises the process group when launched by torchrun (RANK/WORLD_SIZE set), else a single process.

    Backend: NCCL on CUDA, gloo on CPU. Each rank uses cuda:LOCAL_RANK when on GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=pick_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def allreduce_mean_(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place mean over ranks (for logging values); no-op on one process."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def allreduce_sparse_grad_(param: torch.nn.Parameter, info: DistInfo) -> None:
    """Averages a sparse gradient (the discriminator's per-video table W) over ranks without densifying it.

    DDP would all-reduce W's gradient as a dense (num_videos, N) tensor every step — 286 MB on VoxCeleb2.
    Instead each rank gathers the (index, row) pairs of every rank: traffic and memory grow with the batch,
    not with the number of videos. All ranks have the same number of rows (same batch size).
    """
    if not info.enabled or param.grad is None:
        return
    g = param.grad.coalesce() if param.grad.is_sparse else param.grad.to_sparse()
    idx, val = g.indices()[0], g.values()  # (R,), (R, N)
    # ranks may hold a different number of distinct rows: pad to the max
    count = torch.tensor([idx.numel()], device=idx.device)
    counts = [torch.zeros_like(count) for _ in range(info.world_size)]
    dist.all_gather(counts, count)
    m = int(max(c.item() for c in counts))
    pad_idx = torch.zeros(m, dtype=idx.dtype, device=idx.device)
    pad_val = torch.zeros(m, val.shape[1], dtype=val.dtype, device=val.device)
    pad_idx[: idx.numel()] = idx
    pad_val[: idx.numel()] = val
    all_idx = [torch.zeros_like(pad_idx) for _ in range(info.world_size)]
    all_val = [torch.zeros_like(pad_val) for _ in range(info.world_size)]
    dist.all_gather(all_idx, pad_idx)
    dist.all_gather(all_val, pad_val)
    idx_cat = torch.cat([a[: int(c.item())] for a, c in zip(all_idx, counts)])
    val_cat = torch.cat([v[: int(c.item())] for v, c in zip(all_val, counts)]) / info.world_size
    param.grad = torch.sparse_coo_tensor(idx_cat[None], val_cat, param.shape).coalesce()

"""The order and the workers of meta-learning's data (paper §3.2): which episodes each step of each process
draws, reproducibly across a resume, and DataLoader workers that leave interrupts to the main process."""

from __future__ import annotations

from torch.utils.data import Sampler


class EpisodeBatchSampler(Sampler):
    """Yields, for every step from `start_step`, the episode indices of this rank's batch.

    Episode index j of step s is a pure function of (s, rank, j), and the dataset draws an episode's
    frames from an RNG seeded by that index — so a resumed run sees exactly the batches it would have.
    """

    def __init__(self, dataset_len: int, batch_size: int, start_step: int, total_steps: int, rank: int = 0,
                 world_size: int = 1):
        self.dataset_len, self.batch_size = dataset_len, batch_size
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            base = (step * self.world_size + self.rank) * self.batch_size
            yield [(base + j) % self.dataset_len for j in range(self.batch_size)]


def leave_interrupts_to_main(_worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM: a terminal's Ctrl-C (or a stop that signals the whole
    process group) reaches them too, and a worker killed mid-step made the main process fail with a traceback
    instead of finishing the step and checkpointing. Workers still end with the main process (PyTorch's
    parent watchdog)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

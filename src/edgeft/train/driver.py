"""The one training loop driver: epochs of batches in the one batch order, from where a checkpoint left off.

It decides only *when* things happen; a `LoopHooks` object says *what* happens. The single-device
Trainer (edgeft.train.loop) and every runtime strategy (edgeft.runtime.strategies.loop) are such hook
objects, so both walk the same batches in the same order and resume the same way.
"""

from __future__ import annotations

from typing import Protocol

from edgeft.train.batches import epoch_batches


class LoopHooks(Protocol):
    def start(self) -> tuple[int, int]:
        """Prepare for the first step; (epoch, batch within it) to begin at: (0, 0), or a checkpoint's."""

    def epoch_start(self, epoch: int, first_batch: int) -> None:
        """Before epoch `epoch`'s first batch (first_batch > 0: the epoch resumes part-way)."""

    def step(self, epoch: int, b: int, indices: list[int], last_of_epoch: bool) -> None:
        """Batch `b` of the epoch, whose samples are `indices`."""

    def epoch_end(self, epoch: int, first_batch: int, n_batches: int) -> None:
        """After the epoch's last batch (n_batches: the epoch's length, first_batch as in epoch_start)."""


def drive(hooks: LoopHooks, n: int, batch_size: int, seed: int, epochs: int, limit: int | None = None) -> None:
    """Run `epochs` epochs over n samples in batches of `batch_size` (the first `limit` batches of each
    epoch when given), starting where `hooks.start()` says."""
    epoch, first = hooks.start()
    while epoch < epochs:
        batches = epoch_batches(n, batch_size, seed, epoch, limit)
        hooks.epoch_start(epoch, first)
        for b in range(first, len(batches)):
            hooks.step(epoch, b, batches[b], b + 1 == len(batches))
        hooks.epoch_end(epoch, first, len(batches))
        epoch, first = epoch + 1, 0

"""The one batch order every training loop follows (single device, runtime strategies, the launcher's
plans): a seeded permutation per epoch, so the same seed gives the same batches everywhere."""

from __future__ import annotations

import torch


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Sample indices 0..n-1 in epoch `epoch`'s order (independent of any global RNG state)."""
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, limit: int | None = None) -> list[list[int]]:
    """Epoch `epoch`'s batches of indices; `limit` keeps only the first ones (max_steps_per_epoch)."""
    order = epoch_order(n, seed, epoch)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return batches[:limit] if limit else batches

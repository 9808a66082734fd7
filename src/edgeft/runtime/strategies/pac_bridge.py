"""The few PAC internals the pipeline needs, in one place (edgeft.methods.pac has no public API for them).

A pipeline stage owns some taps. Because ParallelAdapters combines taps by a closed-form weighted
sum (combine 'gated' or 'sum'), stage s can compute its taps' part of that sum and pass it on; the
last stage adds its own and finishes the side network. `fill_cache` stores taps a device received
into PAC's ActivationCache through PacModel.store_taps, so later epochs hit the cache.
"""

from __future__ import annotations

import torch

from edgeft.errors import ConfigError


def check(model) -> None:
    if model.side.combine not in ("gated", "sum"):
        raise ConfigError(f"PAC combine '{model.side.combine}' is sequential over taps: the pipeline needs "
                          "combine=gated or combine=sum.")


def partial_side(side, taps: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """Part of the combined side feature from taps `idx` ((..., len(idx), H) -> (..., r)).

    Same arithmetic as ParallelAdapters.adapters + the gated/sum combination, restricted to idx.
    """
    sel = torch.tensor(idx, device=taps.device)
    z = side.adapters(taps, sel)
    if side.combine == "sum":
        return z.sum(-2) / side.num_taps
    return torch.einsum("...nr,n->...r", z, side.tap_weights()[sel])


def finish_side(side, s: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The side network after the combination (its attention over positions included)."""
    return side.finish(s, mask)


def stage_taps(model, start: int, end: int) -> list[int]:
    """Indices (into model.taps) of the tapped blocks inside [start, end)."""
    return [i for i, t in enumerate(model.taps) if start <= t < end]


@torch.no_grad()
def run_stage_backbone(model, hidden, start: int, end: int, mask) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Blocks [start, end) without autograd; (output hidden, tapped outputs at the kept positions)."""
    from edgeft.methods.pac.taps import select

    outs, pos = [], start
    for i in stage_taps(model, start, end):
        t = model.taps[i]
        hidden = model.view.run_blocks(hidden, pos, t + 1, mask)
        pos = t + 1
        outs.append(select(hidden, mask, model.positions))
    hidden = model.view.run_blocks(hidden, pos, end, mask)
    return hidden, (torch.stack(outs, dim=-2) if outs else None)


def fill_cache(model, input_ids, attention_mask, token_type_ids, sample_ids: list, taps: torch.Tensor) -> int:
    """Put taps (B, P, n_taps, H) of these samples into the model's ActivationCache (PacModel's encoding)."""
    from edgeft.methods.pac.model import batch_hashes

    if model.cache is None or not len(sample_ids):
        return 0
    model.store_taps([str(s) for s in sample_ids], batch_hashes(input_ids, attention_mask, token_type_ids), taps,
                     attention_mask)
    return len(sample_ids)


__all__ = ["check", "partial_side", "finish_side", "stage_taps", "run_stage_backbone", "fill_cache"]

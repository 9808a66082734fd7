"""Count what a (possibly compressed) model holds."""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module) -> int:
    """Parameters the model holds, counting tied tensors once and a packed layer by its weight's size."""
    from edgeft.compress.qlinear import QuantLinear

    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    for m in model.modules():
        if isinstance(m, QuantLinear):
            n += m.in_features * m.out_features
    return n


def nonzero_weights(model: nn.Module, names: list[str]) -> tuple[int, int]:
    """(non-zero, total) weights over the named linear layers."""
    nz = total = 0
    for name in names:
        w = model.get_submodule(name).weight
        nz += int((w != 0).sum())
        total += w.numel()
    return nz, total

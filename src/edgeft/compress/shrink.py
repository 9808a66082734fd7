"""Cut rows/columns out of a Llama block's linear layers: how structured pruning makes a layer smaller.

Kept indices are applied to every tensor that shares the pruned dimension (LLM-Pruner's dependency
group): the outputs of q/k/v (or gate/up) and the inputs of o_proj (or down_proj). Whole KV groups
are removed, so the number of query heads per key/value head (GQA) stays what the code expects.
"""

from __future__ import annotations

import torch
from torch import nn


def _slice_linear(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype, device=w.device)
    new.weight.data.copy_(w)
    if b is not None:
        new.bias.data.copy_(b)
    new.weight.requires_grad_(lin.weight.requires_grad)
    return new


def _head_rows(groups: list[int], rows_per_group: int) -> torch.Tensor:
    return torch.cat([torch.arange(g * rows_per_group, (g + 1) * rows_per_group) for g in groups])


def prune_kv_groups(attn: nn.Module, keep: list[int], head_dim: int) -> None:
    """Keep only the listed key/value heads and the query heads that attend with them."""
    n_kv = attn.k_proj.out_features // head_dim
    rep = attn.q_proj.out_features // head_dim // n_kv
    q_rows = _head_rows(keep, rep * head_dim)
    kv_rows = _head_rows(keep, head_dim)
    attn.q_proj = _slice_linear(attn.q_proj, rows=q_rows)
    attn.k_proj = _slice_linear(attn.k_proj, rows=kv_rows)
    attn.v_proj = _slice_linear(attn.v_proj, rows=kv_rows)
    attn.o_proj = _slice_linear(attn.o_proj, cols=q_rows)


def prune_mlp_channels(mlp: nn.Module, keep: list[int]) -> None:
    idx = torch.tensor(keep, dtype=torch.long)
    mlp.gate_proj = _slice_linear(mlp.gate_proj, rows=idx)
    mlp.up_proj = _slice_linear(mlp.up_proj, rows=idx)
    mlp.down_proj = _slice_linear(mlp.down_proj, cols=idx)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)

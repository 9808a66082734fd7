"""Pruning: magnitude (the baseline SparseGPT is compared with) and LLM-Pruner-style structured pruning.

Magnitude: per linear layer, zero the weights of smallest |w| (a fraction, or N of every M inputs).

Structured (Ma et al., "LLM-Pruner", NeurIPS 2023; our reading of their code, hf_llama_pruner.py):
dependency groups are whole attention heads and MLP channels. For a Llama block a *KV group* is one
key/value head with the query heads that share it (q, k, v rows and o_proj columns); an *MLP channel*
is one gate/up row with its down_proj column. A group's importance is the first-order Taylor estimate
of the loss change when it is removed, from gradients of the task loss on calibration data:
  param_first  (default, their "element-wise first order"):  sum |w * dL/dw|
  vectorize    (their "vector-wise"):                          |sum w * dL/dw| per row/column
  param_second (second order, Fisher diagonal):               sum w * F * w,  F = sum over samples g²
  param_mix                                                     sum (-w*g + 0.5 * w*F*w)
summed over the group's parameters. Every pruned block loses the same fraction of its groups (their
"block-wise" mode); like LLM-Pruner the first and last blocks can be left whole. The layers are then
physically cut smaller (see shrink.py), so the model is smaller and faster, not just sparse. One
addition: the kept channel count is rounded to a multiple of 32 so the pruned down_proj rows are
whole ggml blocks (llama.cpp can then quantise them) and SIMD-friendly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from edgeft.compress.shrink import prune_kv_groups, prune_mlp_channels
from edgeft.errors import ConfigError

Importance = Literal["param_first", "vectorize", "param_second", "param_mix"]


# -- magnitude ---------------------------------------------------------------------------------------------

def magnitude_mask(W: torch.Tensor, sparsity: float, prune_n: int = 0, prune_m: int = 0) -> torch.Tensor:
    """Bool mask (True = prune) of the smallest-magnitude weights of one matrix."""
    a = W.detach().abs().float()
    if prune_n:
        rows, cols = a.shape
        if cols % prune_m:
            raise ConfigError(f"{prune_n}:{prune_m} sparsity needs the input width ({cols}) to be a multiple of "
                              f"{prune_m}.")
        groups = a.view(rows, cols // prune_m, prune_m)
        idx = torch.topk(groups, prune_n, dim=-1, largest=False)[1]
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
        return mask.view(rows, cols)
    k = int(a.numel() * sparsity)
    if k == 0:
        return torch.zeros_like(a, dtype=torch.bool)
    thresh = torch.kthvalue(a.flatten(), k).values
    mask = a <= thresh
    extra = int(mask.sum()) - k  # ties at the threshold: keep the count exact
    if extra > 0:
        tied = torch.nonzero((a == thresh).flatten()).flatten()[:extra]
        mask.view(-1)[tied] = False
    return mask


# -- structured --------------------------------------------------------------------------------------------

@dataclass
class StructuredPlan:
    """Which KV groups and MLP channels each block keeps (indices into the original layer)."""

    keep_kv_groups: dict[int, list[int]]
    keep_channels: dict[int, list[int]]


def _grads_and_fisher(model: nn.Module, batches: list[dict], need_fisher: bool, progress=None):
    """Accumulate dL/dw over the calibration batches (and the per-sample squared gradients if asked)."""
    params = [p for n, p in model.named_parameters() if ".layers." in n and p.dim() == 2]
    wanted = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
    grads = {id(p): torch.zeros_like(p) for p in params}
    fisher = {id(p): torch.zeros_like(p) for p in params} if need_fisher else None
    model.train(False)
    for batch in batches:
        rows = [{k: v[i:i + 1] for k, v in batch.items()} for i in range(batch["input_ids"].shape[0])] \
            if need_fisher else [batch]
        for b in rows:
            model.zero_grad(set_to_none=True)
            labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels)
            out.loss.backward()
            for p in params:
                if p.grad is not None:
                    grads[id(p)] += p.grad
                    if fisher is not None:
                        fisher[id(p)] += p.grad ** 2
        if progress:
            progress()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return grads, fisher


def _salience(w: torch.Tensor, g: torch.Tensor, f: torch.Tensor | None, kind: str, dim: int) -> torch.Tensor:
    """Per-row (dim=1) or per-column (dim=0) importance of one weight matrix."""
    w = w.detach()
    if kind == "param_second":
        return (w * f * w).sum(dim)
    if kind == "param_mix":
        return (-w * g + 0.5 * w * f * w).sum(dim)
    s = w * g
    return s.sum(dim).abs() if kind == "vectorize" else s.abs().sum(dim)


def plan_structured(model: nn.Module, batches: list[dict], ratio: float, blocks: range, importance: Importance,
                    attention: bool = True, mlp: bool = True, progress=None,
                    round_to: int = 32) -> tuple[StructuredPlan, dict]:
    """Score every KV group and MLP channel by its Taylor importance and keep the best (1 - ratio) per block."""
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ratio={ratio}: the fraction of heads/channels to remove must be in [0, 1).")
    if importance not in ("param_first", "vectorize", "param_second", "param_mix"):
        raise ConfigError(f"importance '{importance}': choose param_first, vectorize, param_second or param_mix.")
    grads, fisher = _grads_and_fisher(model, batches, importance in ("param_second", "param_mix"), progress)
    cfg = model.config
    layers = model.model.layers
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    plan = StructuredPlan({}, {})
    scores = {"kv_groups": {}, "channels": {}}

    def sal(lin, dim):
        f = fisher[id(lin.weight)] if fisher is not None else None
        return _salience(lin.weight, grads[id(lin.weight)], f, importance, dim)

    for i in blocks:
        attn, ffn = layers[i].self_attn, layers[i].mlp
        if attention:
            n_kv = attn.k_proj.out_features // head_dim
            rep = attn.q_proj.out_features // head_dim // n_kv
            q = sal(attn.q_proj, 1).view(n_kv, rep * head_dim).sum(1)
            k = sal(attn.k_proj, 1).view(n_kv, head_dim).sum(1)
            v = sal(attn.v_proj, 1).view(n_kv, head_dim).sum(1)
            o = sal(attn.o_proj, 0).view(n_kv, rep * head_dim).sum(1)
            imp = q + k + v + o
            n_keep = max(1, n_kv - int(round(ratio * n_kv)))
            plan.keep_kv_groups[i] = sorted(torch.topk(imp, n_keep).indices.tolist())
            scores["kv_groups"][i] = imp.tolist()
        if mlp:
            imp = sal(ffn.gate_proj, 1) + sal(ffn.up_proj, 1) + sal(ffn.down_proj, 0)
            n = imp.numel()
            n_keep = max(1, n - int(round(ratio * n)))
            if round_to > 1 and n % round_to == 0:  # whole ggml blocks / SIMD widths for the pruned down_proj
                n_keep = max(round_to, round_to * round(n_keep / round_to))
            plan.keep_channels[i] = sorted(torch.topk(imp, n_keep).indices.tolist())
            scores["channels"][i] = {"min": float(imp.min()), "median": float(imp.median()), "max": float(imp.max())}
    return plan, scores


def apply_structured(model: nn.Module, plan: StructuredPlan) -> None:
    """Cut the planned groups out of the model; if every block ends up the same size, update the config."""
    cfg = model.config
    layers = model.model.layers
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    for i, keep in plan.keep_kv_groups.items():
        prune_kv_groups(layers[i].self_attn, keep, head_dim)
    for i, keep in plan.keep_channels.items():
        prune_mlp_channels(layers[i].mlp, keep)
    n_heads = {layer.self_attn.q_proj.out_features // head_dim for layer in layers}
    n_kv = {layer.self_attn.k_proj.out_features // head_dim for layer in layers}
    n_ff = {layer.mlp.gate_proj.out_features for layer in layers}
    cfg.head_dim = head_dim  # keep it explicit: hidden_size / heads no longer gives it
    if len(n_heads) == 1 and len(n_kv) == 1:
        cfg.num_attention_heads, cfg.num_key_value_heads = n_heads.pop(), n_kv.pop()
    if len(n_ff) == 1:
        cfg.intermediate_size = n_ff.pop()

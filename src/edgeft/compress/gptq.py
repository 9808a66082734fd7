"""GPTQ (OPTQ; Frantar et al., ICLR 2023): one-shot weight quantisation with second-order error feedback.

Written here in plain torch because none of the libraries runs it on a CPU with our torch (see
docs/compress.md): gptqmodel needs torch >= 2.14.1, torchao's GPTQ asserts CUDA, llmcompressor pins
transformers <= 5.17, optimum-quanto has no GPTQ. This follows Algorithm 1 and the reference code
(IST-DASLab/gptq, gptq.py `fasterquant`): columns are quantised left to right; each column's error,
scaled by the inverse-Hessian Cholesky factor, is pushed onto the columns not yet quantised; updates
are applied lazily in blocks of 128 columns; optional act-order visits columns by decreasing H_ii.

Two documented choices: (1) group parameters come from the up-to-date weights (blocks are aligned to
groups, so a group never straddles a lazy block); (2) with act-order, groups are computed up front
in the original column order ("static groups" of the reference code), so storage needs no g_idx.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeft.compress.hessian import prepare_hessian
from edgeft.compress.quantizer import QuantGrid, group_count


@dataclass
class GPTQResult:
    codes: torch.Tensor  # (rows, cols) integer codes in [0, maxq], original column order
    scales: torch.Tensor  # (rows, groups) float16-exact
    zeros: torch.Tensor  # (rows, groups) integer-valued
    weight: torch.Tensor  # (rows, cols) dequantised weight, equal to what the packed codes give back
    loss: float  # sum over rows of the GPTQ objective estimate (w - q)² / [H⁻¹]_ii / 2


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, grid: QuantGrid, group_size: int = 128, blocksize: int = 128,
                  percdamp: float = 0.01, act_order: bool = False) -> GPTQResult:
    """Quantise one weight matrix W (out, in) given the Hessian H (in, in) of its inputs."""
    rows, cols = W.shape
    W = W.detach().float().clone()
    H = H.float()
    gs = cols if group_size == -1 else group_size
    if group_size != -1:
        blocksize = gs * max(1, blocksize // gs)
    n_groups = group_count(cols, group_size)
    scales = torch.zeros(rows, n_groups)
    zeros = torch.zeros(rows, n_groups)

    W[:, torch.diag(H) == 0] = 0  # dead inputs, as the reference does (prepare_hessian repeats it)
    static = act_order or group_size == -1
    if static:  # parameters up front, from the original column order
        for g in range(n_groups):
            scales[:, g], zeros[:, g] = grid.params(W[:, g * gs:(g + 1) * gs])
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols)
    if act_order:
        W = W[:, perm]
        H = H[perm][:, perm]
    W, Hinv = prepare_hessian(H, W, percdamp)
    col_group = (perm // gs).tolist()  # group of the column at each (possibly permuted) position

    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    losses = torch.zeros(rows)
    g_now, s, z = -1, None, None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        C1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        dinv = (1.0 / torch.diag(Hinv1)).tolist()
        for i in range(i2 - i1):
            col = i1 + i
            g = col_group[col]
            if not static and col % gs == 0:
                scales[:, g], zeros[:, g] = grid.params(W1[:, i:i + gs])
                g_now = -1
            if g != g_now:
                g_now, s, z = g, scales[:, g].clone(), zeros[:, g].clone()
            w = W1[:, i]
            q_int = grid.quantize(w, s, z)
            q = grid.dequantize(q_int, s, z)
            C1[:, i] = q_int
            Q1[:, i] = q
            err = (w - q).mul_(dinv[i])
            W1[:, i:].addr_(err, Hinv1[i, i:], alpha=-1)
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        codes[:, i1:i2] = C1
        losses += (Err1 ** 2).sum(1) / 2  # (w - q)^2 / [H^-1]_ii^2 / 2, the reference's Losses
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    if act_order:
        inv = torch.argsort(perm)
        Q = Q[:, inv]
        codes = codes[:, inv]
    return GPTQResult(codes=codes, scales=scales, zeros=zeros, weight=Q, loss=float(losses.sum()))


def gptq_by_row_groups(W: torch.Tensor, H: torch.Tensor, grid: QuantGrid, group_size: int = 128, blocksize: int = 128,
                       percdamp: float = 0.01, act_order: bool = False) -> GPTQResult:
    """gptq_quantize with H (in, in), or with one Hessian per contiguous group of output rows (K, in, in).

    Rows never interact in GPTQ, so each row group is quantised on its own with its own Hessian
    (guided GPTQ weights each group's tokens by that group's output gradients) and the parts are stacked.
    """
    if H.dim() == 2:
        return gptq_quantize(W, H, grid, group_size, blocksize, percdamp, act_order)
    parts = [gptq_quantize(w, h, grid, group_size, blocksize, percdamp, act_order)
             for w, h in zip(torch.tensor_split(W, H.shape[0], dim=0), H)]
    return GPTQResult(codes=torch.cat([p.codes for p in parts]), scales=torch.cat([p.scales for p in parts]),
                      zeros=torch.cat([p.zeros for p in parts]), weight=torch.cat([p.weight for p in parts]),
                      loss=sum(p.loss for p in parts))

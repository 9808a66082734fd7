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
    return _gptq(W[None], H[None], grid, group_size, blocksize, percdamp, act_order)


def gptq_by_row_groups(W: torch.Tensor, H: torch.Tensor, grid: QuantGrid, group_size: int = 128, blocksize: int = 128,
                       percdamp: float = 0.01, act_order: bool = False) -> GPTQResult:
    """gptq_quantize with H (in, in), or with one Hessian per contiguous group of output rows (K, in, in).

    Rows never interact in GPTQ, so each row group is quantised on its own with its own Hessian (guided GPTQ
    weights each group's tokens by that group's output gradients). Groups of equal size run as one batch: the
    column loop is sequential Python, so K groups in one pass take about 1/K of its iterations.
    """
    if H.dim() == 2:
        return gptq_quantize(W, H, grid, group_size, blocksize, percdamp, act_order)
    k, (rows, cols) = H.shape[0], W.shape
    if rows % k == 0:
        return _gptq(W.reshape(k, rows // k, cols), H, grid, group_size, blocksize, percdamp, act_order)
    parts = [gptq_quantize(w, h, grid, group_size, blocksize, percdamp, act_order)
             for w, h in zip(torch.tensor_split(W, k, dim=0), H)]
    return GPTQResult(codes=torch.cat([p.codes for p in parts]), scales=torch.cat([p.scales for p in parts]),
                      zeros=torch.cat([p.zeros for p in parts]), weight=torch.cat([p.weight for p in parts]),
                      loss=sum(p.loss for p in parts))


def _params(grid: QuantGrid, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """grid.params over (K, rows, cols) groups of rows: (scale, zero), each (K, rows)."""
    s, z = grid.params(w.reshape(-1, w.shape[-1]))
    return s.view(w.shape[:2]), z.view(w.shape[:2])


def _take_columns(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x (K, rows, cols) with each group's columns taken in its own order (K, cols)."""
    return torch.gather(x, 2, order[:, None, :].expand(x.shape[0], x.shape[1], order.shape[1]))


def _group_params(grid: QuantGrid, W1: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, i1: int, gs: int):
    """params(i) for _block_columns when groups are computed on the fly: at each group's first column, from the
    group's columns as they are then (recorded in scales/zeros); the group's (scale, zero) for the others."""
    current = {}

    def params(i):
        if (i1 + i) % gs == 0:
            current["sz"] = _params(grid, W1[:, :, i:i + gs])
            scales[:, :, (i1 + i) // gs], zeros[:, :, (i1 + i) // gs] = current["sz"]
        return current["sz"]
    return params


def _block_columns(W1: torch.Tensor, Hinv1: torch.Tensor, grid: QuantGrid, Q1: torch.Tensor, C1: torch.Tensor,
                   Err1: torch.Tensor, params) -> None:
    """Quantise one lazy block's columns left to right, pushing each column's scaled error onto the block's later
    columns; fills Q1 (dequantised), C1 (codes) and Err1 (scaled errors) in place.

    This loop is GPTQ's Python hot spot (one iteration per input column of every layer): each column's results
    are written straight into their slots of Q1/C1/Err1 (column views made once per block), not into
    temporaries that are then copied.
    """
    dinv = (1.0 / torch.diagonal(Hinv1, dim1=-2, dim2=-1)[:, :, None]).unbind(1)  # (K, 1) per column
    w_cols, q_cols, c_cols, e_cols = W1.unbind(2), Q1.unbind(2), C1.unbind(2), Err1.unbind(2)
    for i in range(W1.shape[2]):
        s, z = params(i)
        w = w_cols[i]
        q = grid.dequantize(grid.quantize(w, s, z, out=c_cols[i]), s, z, out=q_cols[i])
        err = torch.sub(w, q, out=e_cols[i]).mul_(dinv[i])
        W1[:, :, i:].sub_(err[:, :, None] * Hinv1[:, None, i, i:])  # product, then difference: as addr_ rounds


def _gptq(W: torch.Tensor, H: torch.Tensor, grid: QuantGrid, group_size: int, blocksize: int, percdamp: float,
          act_order: bool) -> GPTQResult:
    """The column loop over K row groups at once: W (K, rows, cols), each group with its Hessian H (K, cols, cols)."""
    K, rows, cols = W.shape
    W = W.detach().float().clone()
    H = H.float()
    gs = cols if group_size == -1 else group_size
    if group_size != -1:
        blocksize = gs * max(1, blocksize // gs)
    n_groups = group_count(cols, group_size)
    scales = torch.zeros(K, rows, n_groups)
    zeros = torch.zeros(K, rows, n_groups)

    diag = torch.diagonal(H, dim1=-2, dim2=-1)
    W.masked_fill_((diag == 0)[:, None, :], 0)  # dead inputs, as the reference does (prepare_hessian repeats it)
    static = act_order or group_size == -1
    if static:  # parameters up front, from the original column order
        for g in range(n_groups):
            scales[:, :, g], zeros[:, :, g] = _params(grid, W[:, :, g * gs:(g + 1) * gs])
    perm = torch.argsort(diag, dim=1, descending=True) if act_order else torch.arange(cols).expand(K, cols)
    if act_order:
        W = _take_columns(W, perm)
        H = torch.stack([h[p][:, p] for h, p in zip(H, perm)])
    prepared = [prepare_hessian(h, w, percdamp) for h, w in zip(H, W)]
    W = torch.stack([w for w, _ in prepared])
    Hinv = torch.stack([u for _, u in prepared])
    if static:  # each position's scale and zero (each group visits its columns in its own order)
        col_group = perm // gs
        S, Z = _take_columns(scales, col_group), _take_columns(zeros, col_group)

    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    losses = torch.zeros(K, rows)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, :, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        C1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[:, i1:i2, i1:i2]
        if static:
            fixed = (S[:, :, i1:i2].unbind(2), Z[:, :, i1:i2].unbind(2))
            _block_columns(W1, Hinv1, grid, Q1, C1, Err1, lambda i: (fixed[0][i], fixed[1][i]))
        else:  # blocks are aligned to groups: a group's parameters come from its columns' up-to-date weights
            _block_columns(W1, Hinv1, grid, Q1, C1, Err1, _group_params(grid, W1, scales, zeros, i1, gs))
        Q[:, :, i1:i2] = Q1
        codes[:, :, i1:i2] = C1
        losses += (Err1 ** 2).sum(-1) / 2  # (w - q)^2 / [H^-1]_ii^2 / 2, the reference's Losses
        for k in range(K):  # 2-D products, as one group alone computes them: the same floats whatever the BLAS
            W[k, :, i2:] -= Err1[k] @ Hinv[k, i1:i2, i2:]

    if act_order:
        inv = torch.argsort(perm, dim=1)
        Q, codes = _take_columns(Q, inv), _take_columns(codes, inv)
    return GPTQResult(codes=codes.reshape(K * rows, cols), scales=scales.reshape(K * rows, n_groups),
                      zeros=zeros.reshape(K * rows, n_groups), weight=Q.reshape(K * rows, cols),
                      loss=float(losses.sum()))

"""SparseGPT (Frantar & Alistarh, ICML 2023): one-shot pruning with second-order weight reconstruction.

Written here in torch, like GPTQ and for the same reasons (docs/compress.md). Follows the reference
code (IST-DASLab/sparsegpt, sparsegpt.py `fasterprune`): for each block of Bs = 128 columns the mask
is chosen adaptively from the weights *as already updated* by the previous columns' errors, by the
saliency w² / [H⁻¹]_cc² (the OBS error of removing w); unstructured sparsity keeps the same fraction
in every block, N:M sparsity picks the N least salient weights in every group of M input columns.
Pruned weights' errors are pushed onto the remaining columns exactly as in GPTQ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeft.compress.hessian import prepare_hessian


@dataclass
class SparseGPTResult:
    weight: torch.Tensor  # (rows, cols) with exact zeros where pruned
    mask: torch.Tensor  # bool (rows, cols), True = pruned
    loss: float


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float = 0.5, prune_n: int = 0, prune_m: int = 0,
                    blocksize: int = 128, percdamp: float = 0.01) -> SparseGPTResult:
    """Prune W (out, in) to `sparsity` (unstructured) or N:M (prune_n of every prune_m columns)."""
    rows, cols = W.shape
    W = W.detach().float().clone()
    W, Hinv = prepare_hessian(H.float(), W, percdamp)
    if prune_n:
        blocksize = prune_m * max(1, blocksize // prune_m)  # N:M groups never straddle a block
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    losses = torch.zeros(rows)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        hdiag = torch.diag(Hinv1)
        if prune_n == 0:
            score = W1 ** 2 / hdiag.reshape(1, -1) ** 2
            k = int(score.numel() * sparsity)
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
            if k > 0:
                thresh = torch.sort(score.flatten())[0][k - 1]
                mask1 = score <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        dinv = (1.0 / hdiag).tolist()
        for i in range(count):
            w = W1[:, i]
            if prune_n != 0 and i % prune_m == 0:
                score = W1[:, i:i + prune_m] ** 2 / hdiag[i:i + prune_m].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(score, prune_n, dim=1, largest=False)[1], True)
            q = w.masked_fill(mask1[:, i], 0.0)
            Q1[:, i] = q
            err = (w - q).mul_(dinv[i])
            W1[:, i:].addr_(err, Hinv1[i, i:], alpha=-1)
            Err1[:, i] = err
        losses += (Err1 ** 2).sum(1) / 2
        W[:, i1:i2] = Q1
        pruned[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    W[pruned] = 0.0  # exact zeros (the error update never touches pruned, already-final columns)
    return SparseGPTResult(weight=W, mask=pruned, loss=float(losses.sum()))

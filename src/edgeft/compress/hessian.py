"""The layer-wise Hessian H = 2 X Xᵀ / n of a linear layer's inputs, and its damped inverse factor.

GPTQ and SparseGPT both solve min ||W X - Ŵ X||² per linear layer; everything they need from the
calibration data is this matrix. Padding positions are left out, so batches of ragged examples
(instructions, classification prompts) give the same H as the unpadded examples would.
"""

from __future__ import annotations

import torch


class HessianAccumulator:
    """Sum of x xᵀ over the real (unpadded) token positions fed to one linear layer, optionally weighted.

    Weights with a trailing group dimension (..., K) give K matrices, one per group of output rows
    (guided GPTQ's channel groups): hessian() is then (K, columns, columns). The sum is allocated by
    the first add, which fixes K.
    """

    def __init__(self, columns: int, device="cpu"):
        self.columns, self.device = columns, device
        self.sum: torch.Tensor | None = None
        self.count = 0

    def add(self, x: torch.Tensor, keep: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> None:
        """x: (..., columns) inputs; keep: bool mask over the leading dims (True = real token);
        weight: per-position weights over the leading dims, optionally (..., K) (None = every token once)."""
        x = x.detach()
        w = weight
        if keep is not None:
            x = x[keep]
            w = None if w is None else w[keep]
        x = x.reshape(-1, x.shape[-1]).float()
        if w is None:
            term, n = x.T @ x, x.shape[0]  # float32 products per batch (as the reference), float64 running sum
        else:
            w = w.reshape(x.shape[0], -1).float()  # (tokens, K)
            if w.shape[1] == 1:
                term, n = x.T @ (x * w), float(w.sum())
            else:
                term, n = torch.einsum("tc,tk,td->kcd", x, w, x), w.sum(0).double()
        if self.sum is None:
            groups = term.shape[:-2]  # () or (K,)
            self.sum = torch.zeros(*groups, self.columns, self.columns, dtype=torch.float64, device=self.device)
        self.sum += term.double()
        self.count = self.count + n

    def hessian(self) -> torch.Tensor:
        count = torch.as_tensor(self.count, dtype=torch.float64)
        if self.sum is None or bool((count == 0).any()):
            raise RuntimeError("no calibration tokens reached this layer")
        scale = 2.0 / count
        return (scale[..., None, None] * self.sum if self.sum.dim() == 3 else scale * self.sum).float()


def prepare_hessian(H: torch.Tensor, W: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Dead inputs (never active) are zeroed in W; returns (W, upper Cholesky factor of the damped H⁻¹).

    As in the reference code: H[dead, dead] = 1, W[:, dead] = 0; damp = percdamp · mean(diag H);
    Hinv = chol(chol_inverse(chol(H + damp I)))ᵀ. If the factorisation fails the damping grows
    tenfold until it succeeds (tiny calibration sets can leave H numerically singular).
    """
    H = H.clone()
    W = W.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    cols = H.shape[0]
    idx = torch.arange(cols, device=H.device)
    damp = percdamp * torch.mean(torch.diag(H))
    for _ in range(6):
        Hd = H.clone()
        Hd[idx, idx] += damp
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0:
                return W, U
        damp = damp * 10
    raise RuntimeError("the layer Hessian is not positive definite even with heavy damping; use more calibration "
                       "samples")

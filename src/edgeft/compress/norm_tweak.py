"""Norm tweaking (Li et al., "Norm Tweaking: High-performance Low-bit Quantization of Large Language Models",
AAAI 2024): after a block's linear layers are quantised, adjust only that block's float normalisation
weights (Llama: the input_layernorm and post_attention_layernorm RMSNorm gammas) so that the quantised
block's output on the calibration data matches what the float block gave on the same inputs.

Following the paper's Algorithm 1, block by block: the block's float output on the *quantised* model's
inputs is recorded before its weights are quantised; once they are, the linear weights stay frozen and
a few Adam steps over the calibration sequences move the norm weights to lower the channel-wise
distribution loss L_dist = 1/C Σ_c (μ_f,c − μ_q,c)² + (σ_f,c − σ_q,c)² (each channel's mean and standard
deviation over the real tokens), or plain MSE on the outputs. The next block is fed the tweaked
block's outputs. The quantised weights are untouched, so the stored format is the same GPTQ codes plus
float norms. If the tweaked norms do not lower the loss over the whole calibration set, the block's
original norms are put back.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn


def block_norm_weights(block: nn.Module) -> dict[str, nn.Parameter]:
    """The block's normalisation weights (RMSNorm / LayerNorm gammas) by module name."""
    return {name: m.weight for name, m in block.named_modules()
            if type(m).__name__.endswith(("RMSNorm", "LayerNorm")) and isinstance(getattr(m, "weight", None), nn.Parameter)}


def channel_distribution_loss(q: torch.Tensor, f: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The paper's L_dist: mean over channels of the squared differences of each channel's mean and standard
    deviation over the real tokens (keep: bool over the leading dims)."""
    q, f = q[keep].float(), f[keep].float()
    dm = q.mean(0) - f.mean(0)
    ds = q.std(0, correction=0) - f.std(0, correction=0)
    return (dm.pow(2) + ds.pow(2)).mean()


def output_mse(q: torch.Tensor, f: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return (q[keep].float() - f[keep].float()).pow(2).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "dist": channel_distribution_loss, "mse": output_mse}
NormLoss = Literal["dist", "mse"]


class NormTweak:
    """A block hook for compress_layerwise: called with a block's (quantised-model) inputs and the float block's
    outputs on them before the block is compressed, it returns the function that tweaks the norms afterwards."""

    def __init__(self, lr: float = 1e-4, epochs: int = 1, loss: NormLoss = "mse", seqs_per_step: int = 1,
                 seed: int = 0):
        self.lr, self.epochs, self.loss_fn, self.seqs_per_step, self.seed = lr, epochs, LOSSES[loss], seqs_per_step, seed
        self.stats: dict[int, dict] = {}  # block index -> loss before/after, whether the tweak was kept

    def _slices(self, batch_size: int) -> list[slice]:
        return [slice(s, s + self.seqs_per_step) for s in range(0, batch_size, self.seqs_per_step)]

    def _chunks(self, hidden, batches, targets):
        out = []
        for h, b, t in zip(hidden, batches, targets):
            mask = b["attention_mask"]
            out.extend((h[sl].detach(), mask[sl], t[sl].detach()) for sl in self._slices(h.shape[0]))
        return out

    @staticmethod
    def _outputs(view, i, hidden, batches) -> list[torch.Tensor]:
        """The block's outputs batch by batch, exactly as the layer-wise driver computes the next block's inputs."""
        with torch.no_grad():
            return [view.run_blocks(h, i, i + 1, b["attention_mask"]) for h, b in zip(hidden, batches)]

    def _loss(self, outputs, batches, targets) -> float:
        """The loss per training chunk (seqs_per_step sequences), weighted by its real tokens."""
        total, n = 0.0, 0
        for out, b, t in zip(outputs, batches, targets):
            mask = b["attention_mask"]
            for sl in self._slices(out.shape[0]):
                tokens = int(mask[sl].sum())
                total += float(self.loss_fn(out[sl], t[sl], mask[sl].bool())) * tokens
                n += tokens
        return total / max(n, 1)

    def __call__(self, view, i: int, hidden: list[torch.Tensor], batches: list[dict],
                 outputs: list[torch.Tensor] | None = None) -> Callable[[], list[torch.Tensor] | None]:
        """outputs: the float block's outputs on `hidden` where the caller has them (its Hessian pass ran that
        block), else computed here. The returned function gives the tweaked block's outputs on `hidden`."""
        targets = outputs if outputs is not None else self._outputs(view, i, hidden, batches)

        def tweak() -> list[torch.Tensor] | None:
            self.stats[i], out = self.tweak(view, i, hidden, batches, targets)
            return out
        return tweak

    def tweak(self, view, i: int, hidden, batches, targets) -> tuple[dict, list[torch.Tensor] | None]:
        """Tweak block i's norms; returns the stats and the block's outputs with the norms it keeps (the passes
        that measure the loss before and after already computed them, so the driver need not run it again)."""
        block = view.blocks[i]
        norms = block_norm_weights(block)
        if not norms:
            return {"norms": 0}, None
        start = self._outputs(view, i, hidden, batches)
        before = self._loss(start, batches, targets)
        saved = {n: p.detach().clone() for n, p in norms.items()}
        self._train(view, i, block, norms, self._chunks(hidden, batches, targets))
        end = self._outputs(view, i, hidden, batches)
        after = self._loss(end, batches, targets)
        kept = after < before
        if not kept:
            with torch.no_grad():
                for n, p in norms.items():
                    p.copy_(saved[n])
            end = start
        return {"norms": len(norms), "loss_before": before, "loss_after": after, "kept": kept}, end

    def _train(self, view, i: int, block: nn.Module, norms: dict[str, nn.Parameter], chunks) -> None:
        flags = {p: p.requires_grad for p in block.parameters()}
        for p in block.parameters():
            p.requires_grad_(False)
        for p in norms.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(list(norms.values()), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed * 1000 + i)
        try:
            with torch.enable_grad():
                for _ in range(self.epochs):
                    for k in torch.randperm(len(chunks), generator=gen).tolist():
                        h, mask, t = chunks[k]
                        loss = self.loss_fn(view.run_blocks(h, i, i + 1, mask), t, mask.bool())
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
                p.grad = None

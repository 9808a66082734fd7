"""PAC's cached training step with static shapes, replayed as CUDA graphs.

Why: once the activation cache sits on the device (`DeviceCacheView`), a cached step is a gather, a
decode and the side network's forward and backward: a few hundred small kernels whose launches cost
more host time than the GPU spends running them. A CUDA graph launches them all at once.

How: a graph needs fixed shapes, so each batch is padded on the left to a length bucket (a multiple of
`bucket` tokens) with masked positions, which the side network ignores (its attention masks padding, the
rest is per token, the head reads the last real token or pools over real ones; left padding keeps "the
last k positions" where they were). The part from (sample indices, attention mask) to logits, forward
and backward, is captured once per (batch size, bucket) with `torch.cuda.make_graphed_callables`; the
loss, the optimizer (fused AdamW) and the schedule stay eager. Only full batches are graphed (a smaller
last batch runs eagerly), and any capture that fails falls back to the eager step for good, with a note.
On CPU none of this runs: the eager path is today's.
"""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext

import torch
from torch import nn

from edgeft.models.blocks import token_ids_on

MAX_GRAPHS = 16


class _ViewStep(nn.Module):
    """(indices, attention mask) -> logits over the device cache view: the graphed callable. Its parameters
    are the trainable ones (side network, task head); the frozen head is read through the model."""

    def __init__(self, model, logits_to_keep: int | None):
        super().__init__()
        self.side, self.task_head = model.side, model.task_head
        self._model = [model]  # not a submodule: the backbone is not part of the graph's inputs
        self.logits_to_keep = logits_to_keep

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._model[0].view_logits(idx, attention_mask, self.logits_to_keep)


def bucket_length(length: int, bucket: int) -> int:
    return max(bucket, math.ceil(length / bucket) * bucket)


def pad_left(mask: torch.Tensor, width: int) -> torch.Tensor:
    extra = width - mask.shape[1]
    return mask if extra <= 0 else torch.cat([mask.new_zeros(mask.shape[0], extra), mask], 1)


def _no_autocast_cache():
    """Under bf16/fp16 autocast, the same autocast without its weight-cast cache, which
    `make_graphed_callables` refuses (measured on an H200: the capture failed and PAC's bf16 steps ran eagerly).
    The graph holds the casts as kernels; the side network's weights are small."""
    if not torch.is_autocast_enabled("cuda"):
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)


class CachedStep:
    """Runs the cached training forward over the view: bucketed (`bucket` > 0) and graphed (`capture`)."""

    def __init__(self, model, bucket: int = 16, capture: bool = True):
        self.model, self.bucket, self.capture = model, bucket, capture
        self.graphs: dict[tuple, nn.Module] = {}
        self.full_batch = 0  # the largest batch seen: only that size is graphed
        self.failed: str | None = None
        self.replays = 0

    def __call__(self, idx: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int | None,
                 vocab_ids: list[int] | None = None) -> torch.Tensor:
        """Logits of the view's samples `idx`; with `vocab_ids`, the LM head's logits for those tokens only (the
        bucketed steps compute the whole head inside their graph and pick the tokens after it)."""
        b, t = attention_mask.shape
        if not self.bucket:
            return self.model.view_logits(idx, attention_mask, logits_to_keep, vocab_ids)
        width = bucket_length(t, self.bucket)
        mask = pad_left(attention_mask, width)
        self.full_batch = max(self.full_batch, b)
        graphed = None
        if self.capture and self.failed is None and b == self.full_batch and torch.is_grad_enabled():
            graphed = self._graph(b, width, logits_to_keep, idx, mask)
        if graphed is not None:
            logits = graphed(idx, mask)
            self.replays += 1
        else:
            logits = self.model.view_logits(idx, mask, logits_to_keep)
        if logits.dim() == 3 and not logits_to_keep and width > t:
            logits = logits[:, width - t:]  # every position's logits: drop the bucket's padding again
        if vocab_ids is not None and self.model.task_head is None:
            logits = logits.index_select(-1, token_ids_on(vocab_ids, logits.device))  # a list index would sync
        return logits

    def _graph(self, b: int, width: int, logits_to_keep, idx, mask):
        key = (b, width, logits_to_keep)
        if key in self.graphs:
            return self.graphs[key]
        if len(self.graphs) >= MAX_GRAPHS:
            return None
        try:
            step = _ViewStep(self.model, logits_to_keep)
            with _no_autocast_cache():
                self.graphs[key] = torch.cuda.make_graphed_callables(step, (idx.clone(), mask.clone()),
                                                                     num_warmup_iters=3, allow_unused_input=True)
        except Exception as err:  # noqa: BLE001 - any capture problem: the eager step is always right
            self.failed = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            print(f"[edgeft] PAC: CUDA graph capture failed ({self.failed}); cached steps run eagerly.",
                  file=sys.stderr)
            return None
        return self.graphs[key]

    def describe(self) -> dict:
        return {"graphs": len(self.graphs), "replays": self.replays, "bucket": self.bucket,
                "capture": self.capture, "failed": self.failed}

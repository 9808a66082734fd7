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

The whole step (`CachedStep.train_step`, when the trainer asks for it: fp32/tf32, no gradient accumulation): the
forward, the loss, the backward and the gradient clipping captured as ONE graph per (batch size, bucket), instead
of a forward graph, a backward graph and the loss, the autograd engine and the clipping's launches in between
(h17's profile on an H100: the host spent ~2.4 ms a step on those against ~1.1 ms of GPU work). The optimizer
(fused AdamW: one launch) and the schedule stay eager, so checkpoints and the lr are as before. The first
`WARM_STEPS` steps of each shape run eagerly (real steps, not repeats), which initialises what the capture must not
record; the capture then replays for the next one. The gradients live in the graphs' one memory pool and are handed
to the parameters after each replay. The warm-ups run on the caller's stream, not on a side stream: with a side
stream, a graphed run did not repeat itself under load (h23, one H100, SmolLM2: 5 of 5 processes parted from their
own earlier pass between steps 2 and 11, where warm-ups and captures happen; 0 of 5 on the caller's stream, and 0 of
5 with the device synchronised around each warm-up). The parameters' gradient accumulators are made on the
caller's stream, so a side stream's backward hands them gradients across streams, which the caching allocator does
not track (the likely channel; PyTorch warns of the mismatch).
"""

from __future__ import annotations

import math
import sys
import warnings
import weakref
from contextlib import nullcontext

import torch
from torch import nn

from edgeft.models.blocks import token_ids_on

MAX_GRAPHS = 16
WARM_STEPS = 2  # eager steps of a shape before its whole step is captured


class _ViewStep(nn.Module):
    """(indices, attention mask) -> logits over the device cache view: the graphed callable. Its parameters
    are the trainable ones (side network, task head); the frozen head is read through the model."""

    def __init__(self, model, logits_to_keep: int | None):
        super().__init__()
        self.side, self.task_head = model.side, model.task_head
        # not a submodule (the backbone is not part of the graph's inputs), and weak: the model holds this step
        # through its CachedStep, and a cycle would keep the model, its device cache and graphs past its last use
        self._model = weakref.ref(model)
        self.logits_to_keep = logits_to_keep

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._model().view_logits(idx, attention_mask, self.logits_to_keep)


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


def _reason(err: Exception) -> str:
    """A failed capture's note: the error's type and its first line."""
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


class NotCachedPath(RuntimeError):
    """A whole step's forward did not take the cached path (so it cannot be graphed: it would read the cache)."""


class _WholeStep:
    """One captured training step: its static inputs, graph, loss and the gradients it writes."""

    def __init__(self, idx: torch.Tensor, mask: torch.Tensor, label: torch.Tensor):
        self.idx, self.mask, self.label = idx.clone(), mask.clone(), label.clone()
        self.warm, self.graph, self.loss, self.grads = 0, None, None, []

    def batch(self) -> dict:
        # the cached path reads no token ids: the mask stands in for their shape; `ids` are the view's indices
        return {"input_ids": self.mask, "attention_mask": self.mask, "label": self.label, "ids": self.idx}


class CachedStep:
    """Runs the cached training forward over the view: bucketed (`bucket` > 0) and graphed (`capture`)."""

    def __init__(self, model, bucket: int = 16, capture: bool = True):
        # the model owns this step (model.cached_step): a weak reference back, so that dropping the model frees
        # its device cache, graphs and their memory pool at once, not whenever Python's cycle collector runs (with
        # the cycle, a second fine-tune in the same process, a notebook or an in-process sweep, could find the first
        # one's memory still held)
        self._model = weakref.ref(model)
        self.bucket, self.capture = bucket, capture
        self.graphs: dict[tuple, nn.Module] = {}
        self.steps: dict[tuple, _WholeStep] = {}
        self.full_batch = 0  # the largest batch seen: only that size is graphed
        self.failed: str | None = None
        self.step_failed: str | None = None  # the whole step's own: its failure leaves the forward's graphs on
        self.replays = 0
        self.step_replays = 0
        self._whole = False  # inside a whole step (its warm-up or capture): no graph of the forward's own
        self._trainable: list | None = None
        self._pool = None  # the step graphs' one memory pool (see _capture)

    @property
    def model(self):
        return self._model()

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
        if (self.capture and self.failed is None and b == self.full_batch and torch.is_grad_enabled()
                and not self._whole and self._no_gradients_yet()):
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

    def _no_gradients_yet(self) -> bool:
        """The graphed backward hands out its static gradient buffers, and a parameter without a gradient takes
        the buffer itself as its `.grad`: the next replay would overwrite it. So a step that accumulates onto
        gradients already there (gradient accumulation's later micro-batches) runs eagerly."""
        if self._trainable is None:
            self._trainable = [p for p in _ViewStep(self.model, None).parameters() if p.requires_grad]
        return all(p.grad is None for p in self._trainable)

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
            self.failed = _reason(err)
            print(f"[edgeft] PAC: CUDA graph capture failed ({self.failed}); cached steps run eagerly.",
                  file=sys.stderr)
            return None
        return self.graphs[key]

    def train_step(self, idx: torch.Tensor, batch: dict, loss_fn, params: list, max_grad_norm: float | None):
        """One training step of a full, bucketed batch as a whole-step graph: the loss (a tensor the next replay
        overwrites), with the parameters' gradients set and clipped; None when this batch cannot (the caller
        then runs the eager step)."""
        mask = batch["attention_mask"]
        b, t = mask.shape
        if not (self.capture and self.bucket) or self.step_failed is not None or not torch.is_grad_enabled():
            return None
        self.full_batch = max(self.full_batch, b)
        width = bucket_length(t, self.bucket)
        key = (b, width)
        if b < self.full_batch or (key not in self.steps and len(self.steps) >= MAX_GRAPHS):
            return None
        mask = pad_left(mask, width)
        step = self.steps.get(key)
        if step is None:
            step = self.steps[key] = _WholeStep(idx, mask, batch["label"])
        else:
            step.idx.copy_(idx)
            step.mask.copy_(mask)
            step.label.copy_(batch["label"])
        if step.graph is None and step.warm < WARM_STEPS:
            # a warm-up step: the same work, eagerly, on the caller's stream (what a capture's first run must not
            # see: cuBLAS workspaces, the autograd engine's device threads, lazily made tensors)
            try:
                loss = self._losses(step, loss_fn, params, max_grad_norm)
            except NotCachedPath as err:  # raised before any work: this objective's step reads the cache instead
                self._give_up(str(err))
                return None
            step.warm += 1
            return loss
        if step.graph is None and not self._capture(step, loss_fn, params, max_grad_norm):
            return None
        step.graph.replay()
        for p, g in zip(params, step.grads):
            p.grad = g
        self.step_replays += 1
        return step.loss

    def _losses(self, step: _WholeStep, loss_fn, params: list, max_grad_norm: float | None) -> torch.Tensor:
        self._whole = True
        try:
            with warnings.catch_warnings():
                # the parameters' AccumulateGrad nodes were made on the caller's stream (the steps before); the
                # capture's stream differs from it, as it must
                warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
                loss = loss_fn(self.model, step.batch())
                loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        finally:
            self._whole = False
        return loss.detach()

    def _capture(self, step: _WholeStep, loss_fn, params: list, max_grad_norm: float | None) -> bool:
        for p in params:
            p.grad = None  # the captured backward allocates them in the graph's memory
        graph = torch.cuda.CUDAGraph()
        # One pool for every step graph: a later capture may reuse what an earlier one freed (its intermediates),
        # never what it still holds (its loss, its gradients). A replay may so overwrite another graph's loss or
        # gradients, which is safe because the trainer reads each replay's loss and steps on its gradients before
        # the next replay, and never replays two at once.
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        try:
            with torch.cuda.graph(graph, pool=self._pool):
                step.loss = self._losses(step, loss_fn, params, max_grad_norm)
        except Exception as err:  # noqa: BLE001 - any capture problem: the eager step is always right
            self._give_up(_reason(err))
            for p in params:
                p.grad = None
            return False
        step.graph, step.grads = graph, [p.grad for p in params]
        return True

    def _give_up(self, why: str) -> None:
        self.step_failed = why
        print(f"[edgeft] PAC: the training step is not captured as one CUDA graph ({why}); cached steps run as "
              "before.", file=sys.stderr)

    def describe(self) -> dict:
        return {"graphs": len(self.graphs), "replays": self.replays, "bucket": self.bucket,
                "capture": self.capture, "failed": self.failed, "step_graphs": len(self.steps),
                "step_replays": self.step_replays, "step_failed": self.step_failed}

"""PacModel: frozen backbone + parallel adapters + activation cache, behind the HF call convention.

`model(input_ids, attention_mask, token_type_ids=None, logits_to_keep=None, sample_ids=None)` returns
an object with `.logits`, like any Hugging Face model, so the single-device trainer, the evaluator
and the runtime use it unchanged. `accepts_sample_ids = True` makes them pass the batch's sample ids,
which is how the cache knows which sample it sees.

The backbone runs through BlockView (embed -> blocks in segments between taps) under torch.no_grad(),
so it stores no activations for backward and gets no gradient; it stays in eval mode whatever mode
the PacModel is in (dropout off, so its activations are a pure function of the tokens).
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeft.errors import ModelError
from edgeft.methods.pac import codec
from edgeft.methods.pac.cache import ActivationCache
from edgeft.methods.pac.device_view import DeviceCacheView
from edgeft.methods.pac.graphs import CachedStep, NotCachedPath
from edgeft.methods.pac.side_network import ParallelAdapters
from edgeft.methods.pac.streaming import HostResidency, chunks_by_memory, fill_numerics
from edgeft.methods.pac.taps import Positions, select
from edgeft.models.blocks import BlockView


# stream_batch's default by device type: the fill is launch-bound on a GPU (issue 18: 4,000 sentences filled in
# 1.62 s at 256 and 3.44 s at 64 on an H100) and compute-bound on a CPU (MiniLM: 1.49 s at 64, 4.23 s at 256)
FILL_MICRO_BATCH = {"cuda": 256, "cpu": 64}


def fill_micro_batch(stream_batch: int | None, device: torch.device) -> int:
    """Samples per backbone call of the fill: the option when given, else FILL_MICRO_BATCH by device type."""
    return stream_batch or FILL_MICRO_BATCH.get(device.type, FILL_MICRO_BATCH["cpu"])


STATS_BATCH = 16  # samples per batch of the channel-statistics pass (tap_norm=channel)


@dataclass
class PacOutput:
    logits: torch.Tensor


class PacModel(nn.Module):
    accepts_sample_ids = True
    accepts_vocab_ids = True  # forward(vocab_ids=): the LM head's logits for those tokens only (a verbalizer)

    def __init__(self, backbone_model: nn.Module, family: str, taps: tuple[int, ...], positions: Positions,
                 side: ParallelAdapters, task_head: nn.Module | None = None, cache: ActivationCache | None = None,
                 cache_dtype: codec.CacheDtype = "fp16", cache_eval: bool = True, offload_backbone: bool = False,
                 head_pool: Positions = "last", fill: str = "batch", stream_mb: float = 64.0,
                 stream_batch: int | None = None, fill_precision: str = "run", head_norm: str = "none",
                 pair_encoding: str = "joint"):
        super().__init__()
        self.backbone = backbone_model
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()
        self.family = family
        self.view = BlockView(backbone_model, family)
        self.taps, self.positions = tuple(taps), positions
        self.head_pool = head_pool  # how a task head pools when every position is tapped
        self.head_norm = head_norm  # "final": the task head reads the backbone's frozen final norm of the state
        self.pair_encoding = pair_encoding  # joint | segments | siamese (PacOptions.pair_encoding, as resolved)
        self.side, self.task_head = side, task_head
        self.cache, self.cache_dtype, self.cache_eval = cache, cache_dtype, cache_eval
        self.offload_backbone = offload_backbone
        self._offloaded = False
        self._offload_given_up = False
        self.fill, self.stream_mb, self.stream_batch = fill, stream_mb, stream_batch
        self.fill_precision = fill_precision  # the fill's backbone pass (streaming.fill_numerics)
        self._host: HostResidency | None = None  # set by keep_backbone_on_host(): blocks are lent one at a time
        self.backbone_calls = 0  # forward passes of the backbone (tests and benchmarks read this)
        self.device_view: DeviceCacheView | None = None  # the cache packed on the device (pack_device_cache)
        self.cached_step: CachedStep | None = None  # how training steps read it (bucketed, CUDA graphs)
        self.phase_s: dict[str, float] = {}  # seconds spent in the fill, the packing, ... (benchmarks read it)
        if task_head is None and self.view.is_classifier:
            raise ModelError("PAC on a classifier backbone needs its own task head (the backbone's is untrained).")

    # -- modes -----------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # never dropout in the frozen backbone: cached activations must be reproducible
        return self

    @property
    def device(self) -> torch.device:
        return self.side.up.weight.device

    @contextmanager
    def timed(self, phase: str):
        """Adds the wall time of the block (the device synchronised) to phase_s[phase]."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync()
            self.phase_s[phase] = self.phase_s.get(phase, 0.0) + time.perf_counter() - t0

    def fast_path(self) -> dict:
        """What the cached epochs ran on: the device view (MB) and the cached step (buckets, graphs)."""
        view = self.device_view
        return {"device_view_mb": None if view is None else view.nbytes / 2**20,
                "cached_step": None if self.cached_step is None else self.cached_step.describe()}

    # -- the frozen backbone ---------------------------------------------------------------------------
    def _offloadable(self) -> list[nn.Module]:
        """Modules that only the backbone pass needs: the blocks, and the embedding unless the head shares it."""
        mods = list(self.view.blocks)
        embed = self.view.embedding
        head_params = {id(p) for p in self.view.head.parameters()} if self.view.head is not None else set()
        if self.task_head is not None or not any(id(p) in head_params for p in embed.parameters()):
            mods.append(embed)
        return mods

    def keep_backbone_on_host(self, device: torch.device) -> "PacModel":
        """Place the model on `device` but keep the backbone's blocks in pinned host memory for good.

        Backbone passes then lend one block at a time (streamed); nothing else changes. Only worth it
        on an accelerator with an activation cache: the cache is filled in a few large streamed passes.
        """
        self._host = HostResidency(self._offloadable(), device)
        self._host.move_rest(self)
        self._offloaded = False
        return self

    def after_frozen_cast(self) -> None:
        """Precision.cast_frozen's hook: the host-kept blocks it re-stored in bf16 are pinned and kept as the copies
        to lend now, before the fill (which would otherwise pin them on their first lend, inside its timing)."""
        if self._host is not None:
            self._host.unload_all()

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if getattr(self, "_host", None) is not None:
            self._host.unload_all()  # a later .to()/.cuda() must not bring the host-kept blocks back for good
        return out

    def release_backbone(self) -> None:
        """Move the backbone's blocks off the accelerator (to CPU): cached epochs do not need them."""
        if self._offloaded or self.device.type == "cpu" or self._host is not None:
            return
        for m in self._offloadable():
            m.to("cpu")
        self._offloaded = True
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _leave_backbone(self) -> None:
        """Cached steps from here on: offload the backbone if asked to (once)."""
        if self.offload_backbone and not self._offload_given_up:
            self.release_backbone()

    def _ensure_backbone(self) -> None:
        if self._offloaded:
            for m in self._offloadable():
                m.to(self.device)
            self._offloaded = False

    @torch.no_grad()
    def run_backbone(self, input_ids, attention_mask, token_type_ids, positions: Positions) -> torch.Tensor:
        """(B, P, n_taps, H) tapped block outputs at the kept positions, without autograd."""
        if self.fill == "stream" or self.pair_encoding == "siamese":  # _blockwise encodes the segments apart
            outs: list[torch.Tensor] = []
            self._blockwise([(input_ids, attention_mask, token_type_ids)], positions,
                            lambda m, j, taps: outs.append(taps))
            return torch.stack(outs, dim=-2)
        self._ensure_backbone()
        self.backbone_calls += 1
        view = self.view
        # One run_blocks call (one attention mask, one rotary table) with forward hooks reading the tapped
        # blocks' outputs: cheaper than a call per tap segment, which rebuilds both every time.
        captured: dict[int, torch.Tensor] = {}
        hooks = [view.blocks[t].register_forward_hook(_capture(captured, t, attention_mask, positions))
                 for t in self.taps]
        try:
            hidden = view.embed(input_ids, attention_mask, token_type_ids)
            view.run_blocks(hidden, 0, self.taps[-1] + 1, attention_mask)
        finally:
            for h in hooks:
                h.remove()
        return torch.stack([captured[t] for t in self.taps], dim=-2)

    @torch.no_grad()
    def _blockwise(self, micro: list[tuple], positions: Positions, on_tap) -> None:
        """The backbone over micro-batches, block by block: each block is lent once for all of them.

        `micro` holds (input_ids, attention_mask, token_type_ids) on the model's device; `on_tap(m, j,
        taps)` receives micro-batch m's output of the j-th tapped block at the kept positions (B, P, H).
        """
        view = self.view
        lend = self._host.lent if self._host is not None else (lambda module: nullcontext())
        embed = view.embedding
        siamese = self.pair_encoding == "siamese"  # each segment of a pair through the backbone as a sentence
        runs = [split_pair(*inp) if siamese else [inp] for inp in micro]
        with lend(embed):
            hidden = [[view.embed(*inp) for inp in run] for run in runs]
        inputs = [[view.block_inputs(h, inp[1]) for h, inp in zip(hs, run)] for hs, run in zip(hidden, runs)]
        tap_of = {t: j for j, t in enumerate(self.taps)}
        for i in range(self.taps[-1] + 1):
            with lend(view.blocks[i]):
                for m, (_, mask, types) in enumerate(micro):
                    hidden[m] = [view.run_block(i, h, kw) for h, kw in zip(hidden[m], inputs[m])]
                    if i in tap_of:
                        out = merge_pair(*hidden[m], mask, types) if siamese else hidden[m][0]
                        on_tap(m, tap_of[i], select(out, mask, positions))
        self.backbone_calls += len(micro)

    def fill_cache(self, feats: list[dict], collate) -> int:
        """Epoch 1's backbone work, up front: stream the backbone over every uncached training sample.

        Samples are sorted by length and cut into micro-batches of `stream_batch` and chunks whose
        hidden states fit `stream_mb`; every block runs once per chunk over all its micro-batches,
        and each tapped output is encoded and sent to the host as soon as it exists. Training then reads
        epoch 1 from the cache too, so it sees the same (encoded) activations as every later epoch.
        Returns how many samples were computed.
        """
        if self.cache is None:
            return 0
        todo = [f for f in feats if not self.cache.holds(str(f["id"]), _feature_hash(f))]
        n_taps = len(self.taps)
        mb = fill_micro_batch(self.stream_batch, self.device)
        for chunk in chunks_by_memory([len(f["input_ids"]) for f in todo], self.side.hidden, self.stream_mb, mb):
            batches = [collate([todo[i] for i in chunk[k:k + mb]]) for k in range(0, len(chunk), mb)]
            micro = [self._inputs_on_device(b) for b in batches]
            parts = [[None] * n_taps for _ in batches]

            # the real positions' rows, found once per micro-batch (a boolean index per tap would sync each time)
            real = [mask.reshape(-1).nonzero().squeeze(1) if self.positions == "all" else None
                    for _, mask, _ in micro]

            def keep(m, j, taps, real=real, parts=parts):
                flat = taps.reshape(-1, taps.shape[-1]).index_select(0, real[m]) if real[m] is not None else taps[:, 0]
                parts[m][j] = codec.encode(flat.unsqueeze(1), self.cache_dtype)  # one scale per (row, tap)

            with fill_numerics(self.fill_precision, self.device):
                self._blockwise(micro, self.positions, keep)
            for b, (ids, mask, types), got in zip(batches, micro, parts):
                # the encoded taps stay on the device until the chunk is done: one copy to the host per micro-batch
                data = torch.cat([d for d, _ in got], dim=1).cpu()
                scale = None if got[0][1] is None else torch.cat([s for _, s in got], dim=1).cpu()
                self._store([str(s) for s in b["ids"]], batch_hashes(ids, mask, types), data, scale, self._rows(mask))
        if todo and self.device.type == "cuda":
            # the fill's activations go back to the GPU: kept in the allocator's cache they stay reserved for the
            # whole run (h26, SmolLM2's shape on an H100: the cached epochs' peak reserved 862 MB -> 510 MB)
            torch.cuda.empty_cache()
        return len(todo)

    @torch.no_grad()
    def pack_device_cache(self, feats: list[dict], mode: str = "auto", share: float = 0.25, graphs: bool = True,
                          bucket: int = 16) -> bool:
        """After the fill: pack the training samples' cache entries on the training device (DeviceCacheView) so
        cached epochs gather a batch at once; on CUDA also bucket and graph the cached step (CachedStep).

        mode auto: on CUDA when the view fits `share` of the free device memory; on: any device (CPU too); off.
        Each entry is read through the cache's checks (token hash, CRC-32) once, here. Returns whether it packed.
        """
        if self.cache is None or mode == "off" or self.device_view is not None:
            return self.device_view is not None
        if self.pair_encoding != "joint":
            return False  # the packed view's step has no token types, which a segment-pooled head needs
        device = self.device
        if mode == "auto" and device.type != "cuda":
            return False
        ids = [str(f["id"]) for f in feats]
        if len(set(ids)) != len(ids) or any(self.cache.store.meta(i) is None for i in ids):
            return False  # sample ids must name one sample each, and the cache must hold every one
        if mode == "auto":
            free, _ = torch.cuda.mem_get_info(device)
            if DeviceCacheView.bytes_needed(self.cache, ids) > share * free:
                return False
        self.device_view = DeviceCacheView.pack(self.cache, ids, [_feature_hash(f) for f in feats], len(self.taps),
                                                self.side.hidden, self.positions == "all", device)
        if self.device_view is not None:
            graphed = graphs and device.type == "cuda" and self.side.copies is None  # copies: positions matter
            self.cached_step = CachedStep(self, bucket=bucket if graphed else 0, capture=graphed)
        return self.device_view is not None

    @torch.no_grad()
    def fit_tap_stats(self, feats: list[dict], collate, samples: int) -> int:
        """tap_norm=channel: the side network's channel statistics from the first `samples` training samples.

        Their taps come from the cache when it holds them (fill=stream has just filled it), else from the
        backbone, so a cached and an uncached run measure the same rows. Batches of STATS_BATCH samples, so
        the pass holds no more activations than a training step. Returns the rows counted."""
        if self.side.tap_norm != "channel":
            return 0
        chosen = feats[:samples]

        def batches():
            for k in range(0, len(chosen), STATS_BATCH):
                b = collate(chosen[k:k + STATS_BATCH])
                ids, mask, types = self._inputs_on_device(b)
                yield self.tapped(ids, mask, types, b["ids"], self.positions), (mask if self.positions == "all" else None)

        return self.side.fit_tap_stats(batches())

    def _inputs_on_device(self, batch: dict) -> tuple:
        """(input_ids, attention_mask, token_type_ids or None) of a collated batch, on the model's device."""
        types = batch.get("token_type_ids")
        return (batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                None if types is None else types.to(self.device))

    def _rows(self, attention_mask: torch.Tensor) -> list[int]:
        """Cached rows per sample: its real tokens when every position is kept, else one."""
        return attention_mask.sum(1).tolist() if self.positions == "all" else [1] * len(attention_mask)

    def _kept(self, taps: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, P, ...) tapped outputs -> the cached rows of every sample, sample by sample."""
        return taps[attention_mask.bool()] if self.positions == "all" else taps[:, 0]

    def store_taps(self, sample_ids: list[str], hashes: list[str], taps: torch.Tensor,
                   attention_mask: torch.Tensor) -> tuple[list[np.ndarray], list[int]]:
        """Encode tapped outputs (B, P, n_taps, H) of these samples into one cache entry each."""
        rows = self._rows(attention_mask)
        data, scale = codec.encode(self._kept(taps, attention_mask), self.cache_dtype)
        return self._store(sample_ids, hashes, data, scale, rows), rows

    def _store(self, sample_ids: list[str], hashes: list[str], data: torch.Tensor, scale: torch.Tensor | None,
               rows: list[int]) -> list[np.ndarray]:
        """Encoded activations of consecutive samples (sum(rows), n_taps, H) -> one cache entry each."""
        payload = codec.to_payload(data, scale)
        per = [r * len(self.taps) * self.side.hidden * codec.ITEMSIZE[self.cache_dtype] for r in rows]
        scale_per = [r * len(self.taps) * 4 for r in rows] if scale is not None else [0] * len(rows)
        payloads = _split_payload(payload, per, scale_per)
        self.cache.put(sample_ids, hashes, payloads, rows)
        return payloads

    # -- the cache ---------------------------------------------------------------------------------------
    def _uses_cache(self, sample_ids, positions) -> bool:
        return (self.cache is not None and sample_ids is not None and positions == self.positions
                and (self.training or self.cache_eval))

    def _cached_taps(self, input_ids, attention_mask, token_type_ids, sample_ids) -> torch.Tensor:
        hashes = batch_hashes(input_ids, attention_mask, token_type_ids)
        sample_ids = [str(s) for s in sample_ids]
        found = self.cache.lookup(sample_ids, hashes)
        missing = [b for b, f in enumerate(found) if f is None]
        if missing:
            if self._offloaded and self.training:
                self._offload_given_up = True  # training samples keep missing (budget, ...): stop moving weights
            idx = torch.tensor(missing, device=input_ids.device)
            sub_mask = attention_mask[idx]
            taps = self.run_backbone(input_ids[idx], sub_mask, None if token_type_ids is None else token_type_ids[idx],
                                     self.positions)
            payloads, rows = self.store_taps([sample_ids[b] for b in missing], [hashes[b] for b in missing], taps,
                                             sub_mask)
            for b, p, r in zip(missing, payloads, rows):
                found[b] = (p, r)
        elif self.training and self.offload_backbone and not self._offload_given_up:
            # A whole training batch came from the cache: the backbone's blocks can leave the accelerator. A later
            # miss brings them back (evaluation of new dev samples, say); a training miss keeps them back for good.
            self.release_backbone()
        data, scale = codec.from_payloads([f[0] for f in found], [f[1] for f in found], len(self.taps),
                                          self.side.hidden, self.cache_dtype)
        flat = codec.decode(data.to(self.device, non_blocking=True),
                            None if scale is None else scale.to(self.device, non_blocking=True))
        if self.positions != "all":
            return flat.unsqueeze(1)
        out = flat.new_zeros(*attention_mask.shape, len(self.taps), self.side.hidden)
        out[attention_mask.bool()] = flat
        return out

    def tapped(self, input_ids, attention_mask, token_type_ids=None, sample_ids=None,
               positions: Positions | None = None) -> torch.Tensor:
        """The side network's input (B, P, n_taps, H), from the cache when it can, else from the backbone."""
        positions = positions or self.positions
        if self._uses_cache(sample_ids, positions):
            idx = self.device_view.indices(sample_ids) if self.device_view is not None else None
            if idx is not None:  # packed on the device (checked when packed): one gather
                self._served_on_device(sample_ids)
                return self.device_view.taps(idx, attention_mask)
            # The cache reads and writes its entries through numpy, which torch.func's transforms (fwdgrad's vmapped
            # jvp) cannot see into: a traceback. The taps come from the frozen backbone, constants to any transform.
            with torch._C._DisableFuncTorch():
                return self._cached_taps(input_ids, attention_mask, token_type_ids, sample_ids)
        return self.run_backbone(input_ids, attention_mask, token_type_ids, positions).float()

    # -- the HF call convention ---------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, logits_to_keep: int | None = None,
                sample_ids: list | None = None, vocab_ids: list[int] | None = None, **unused) -> PacOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None and self.pair_encoding != "joint":
            token_type_ids = torch.zeros_like(input_ids)  # BERT's own default: one segment
        positions = self.positions
        if positions == "last" and not logits_to_keep and self.task_head is None:
            positions = "all"  # every position's logits were asked for: the side network is per token, so it can
        if self.device_view is not None and self.training and sample_ids is not None and positions == self.positions:
            idx = self.device_view.indices(sample_ids)
            if idx is not None:  # every sample of the batch is in the device view: one gather, maybe a graph
                self._served_on_device(sample_ids)
                self._leave_backbone()
                return PacOutput(logits=self.cached_step(idx, attention_mask, logits_to_keep, vocab_ids))
        if torch.is_tensor(sample_ids):
            raise NotCachedPath("PAC: view indices reach only the cached training path, which this call does not "
                                f"take (positions {positions!r}, training {self.training})")
        taps = self.tapped(input_ids, attention_mask, token_type_ids, sample_ids, positions)
        return PacOutput(logits=self.logits_from_taps(taps, attention_mask, positions, logits_to_keep, token_type_ids,
                                                      vocab_ids))

    def graphed_train_step(self, batch: dict, loss_fn, params: list, max_grad_norm: float | None):
        """A cached training step as one CUDA graph (CachedStep.train_step): the loss, with gradients set and
        clipped; None when this batch takes the ordinary step (no graphs, not every sample in the view, ...)."""
        if (self.cached_step is None or self.device_view is None or not self.training or "ids" not in batch
                or "label" not in batch):  # one label a sample (token labels of a language-model task: eager)
            return None
        idx = self.device_view.indices(batch["ids"])
        if idx is None:
            return None
        self._leave_backbone()
        loss = self.cached_step.train_step(idx, batch, loss_fn, params, max_grad_norm)
        if loss is not None:  # otherwise the trainer's ordinary step reads the view (and counts the batch) itself
            self._served_on_device(batch["ids"])
        return loss

    def _served_on_device(self, sample_ids) -> None:
        """Counts a batch the device view served, for the cache's report and progress line. A tensor of view
        indices is a whole-step graph's own warm-up or capture, inside a step already counted."""
        if self.cache is not None and not torch.is_tensor(sample_ids):
            self.cache.stats.served_on_device += len(sample_ids)

    def view_logits(self, idx: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int | None,
                    vocab_ids: list[int] | None = None) -> torch.Tensor:
        """Logits of the view's samples `idx` (training: the cached path's positions)."""
        taps = self.device_view.taps(idx, attention_mask)
        return self.logits_from_taps(taps, attention_mask, self.positions, logits_to_keep, vocab_ids=vocab_ids)

    def logits_from_taps(self, taps: torch.Tensor, attention_mask: torch.Tensor, positions: Positions,
                         logits_to_keep: int | None, token_type_ids: torch.Tensor | None = None,
                         vocab_ids: list[int] | None = None) -> torch.Tensor:
        """The side network over tapped outputs (B, P, n_taps, H), then the task head or the frozen LM head
        (its logits for `vocab_ids` only, when given)."""
        side = self.side(taps, attention_mask if positions == "all" else None, block_inputs=self.view.block_inputs)
        hidden = self.side.join(taps[..., -1, :], side)  # the last tap is the last block: the final hidden state
        if self.task_head is not None and self.pair_encoding != "joint":
            if token_type_ids is None:
                raise ModelError(f"pair_encoding={self.pair_encoding} needs the pair's token_type_ids.")
            return self.task_head(pair_features(self.head_input(hidden), attention_mask, token_type_ids))
        if self.task_head is not None:
            hidden = self.head_input(hidden)
            pooled = select(hidden, attention_mask, self.head_pool) if positions == "all" else hidden
            return self.task_head(pooled[:, 0])
        if logits_to_keep and positions == "all":
            hidden = hidden[:, -int(logits_to_keep):]
        return self.view.final(hidden, vocab_ids=vocab_ids)

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the task head reads. A Llama block's output is the raw residual stream (a few outlier channels
        at 12-24x the token's RMS in SmolLM2); the backbone's own classifier reads it through the final RMSNorm.
        head_norm=final does the same with that frozen norm; a BERT block's output is LayerNormed already."""
        if self.head_norm == "final" and self.family == "llama":
            return self.view.core.norm(hidden)
        return hidden

    # -- generation (causal LM) ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 20,
                 do_sample: bool = False, pad_token_id: int | None = None, eos_token_id=None,
                 temperature: float | None = 1.0, top_p: float | None = None, streamer=None,
                 **unused) -> torch.Tensor:
        """Greedy (or sampled: temperature, nucleus top_p) decoding with the backbone's KV cache; the side
        network corrects each new token. `streamer` (transformers' TextStreamer protocol: the prompt, then each
        new token, then end()) lets `edgeft chat` show the answer as it is written.

        Runs the backbone (the activation cache is for training samples, not for text being written).
        Tapped block outputs are read with forward hooks, since BlockView has no KV cache.
        """
        if self.task_head is not None or self.family != "llama":
            raise ModelError("generation needs a causal-LM backbone with its LM head (this PAC model has a task head).")
        from transformers import DynamicCache

        resident = self._host is not None
        if resident:
            for m in self._offloadable():
                self._host.load(m)  # decoding runs the whole backbone per token: lend it all for the call
        else:
            self._ensure_backbone()
        was_training = self.training
        self.eval()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
        pad = pad_token_id if pad_token_id is not None else (next(iter(eos)) if eos else 0)
        captured: dict[int, torch.Tensor] = {}
        hooks = [self.view.blocks[t].register_forward_hook(_capture(captured, t)) for t in self.taps]
        if streamer is not None:
            streamer.put(input_ids.cpu())
        cache_arg = _cache_keyword(self.view.core)
        try:
            past = DynamicCache(config=self.view.base.config)
            mask = attention_mask.clone()
            pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
            step_ids, out, done = input_ids, [], torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
            seen = None  # every position's taps so far, kept only when the side network attends across positions
            for _ in range(max_new_tokens):
                self.view.core(input_ids=step_ids, attention_mask=mask, position_ids=pos, use_cache=True,
                               **{cache_arg: past})
                if not self.side.heads:  # a per-token side network: the new position alone
                    taps = torch.stack([captured[t][:, -1:] for t in self.taps], dim=-2).float()
                    hidden = self.side.join(taps[..., -1, :], self.side(taps, block_inputs=self.view.block_inputs))
                else:
                    new = torch.stack([captured[t] for t in self.taps], dim=-2).float()
                    seen = new if seen is None else torch.cat([seen, new], 1)
                    hidden = self.side.join(seen[..., -1, :],
                                            self.side(seen, mask, block_inputs=self.view.block_inputs))[:, -1:]
                logits = self.view.final(hidden)[:, -1].float()
                if do_sample:
                    nxt = torch.multinomial(_nucleus(torch.softmax(logits / max(temperature or 1.0, 1e-5), -1),
                                                     top_p), 1).squeeze(-1)
                else:
                    nxt = logits.argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
                out.append(nxt)
                if streamer is not None:
                    streamer.put(nxt.cpu())
                if eos:
                    done |= torch.isin(nxt, torch.tensor(sorted(eos), device=nxt.device))
                if bool(done.all()):
                    break
                step_ids = nxt[:, None]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                pos = pos[:, -1:] + 1
            return torch.cat([input_ids, torch.stack(out, 1)], 1) if out else input_ids
        finally:
            if streamer is not None:
                streamer.end()
            for h in hooks:
                h.remove()
            if resident:
                self._host.unload_all()
            self.train(was_training)

    # -- what is trained and saved ---------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        state = {f"side.{k}": v for k, v in self.side.state_dict().items()}
        if self.task_head is not None:
            state.update({f"task_head.{k}": v for k, v in self.task_head.state_dict().items()})
        return state


def _cache_keyword(core: nn.Module) -> str:
    """The name the backbone's forward takes its KV cache under: `cache` from transformers 5.2x on (where
    `past_key_values` warns that it is going away), `past_key_values` before (5.17 on the GPU machine)."""
    return "cache" if "cache" in inspect.signature(core.forward).parameters else "past_key_values"


def _nucleus(probs: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """`probs` (B, V) kept on the smallest set of tokens whose mass reaches top_p (all of them without one)."""
    if top_p is None or top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(-1, descending=True)
    drop = sorted_p.cumsum(-1) - sorted_p > top_p  # tokens after the mass is already reached
    return probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))


def split_pair(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> list[tuple]:
    """A BERT pair batch ([CLS] a [SEP] b [SEP]) as two sentence batches: [CLS] a [SEP] (the pair's first segment,
    a prefix, with segment b masked out) and [CLS] b [SEP] (the [CLS] copied, b's tokens moved to the front),
    token type 0 for both, as a bi-encoder reads each sentence. merge_pair puts the outputs back in the pair's layout."""
    second = attention_mask.bool() & token_type_ids.bool()
    first = attention_mask.bool() & ~token_type_ids.bool()
    lens = second.sum(1)
    cols = torch.arange(int(lens.max()) + 1, device=input_ids.device)[None, :]
    dest = (cols >= 1) & (cols <= lens[:, None])
    ids_b = torch.zeros(len(input_ids), cols.shape[1], dtype=input_ids.dtype, device=input_ids.device)
    ids_b[:, 0] = input_ids.gather(1, first.long().argmax(1, keepdim=True))[:, 0]  # the pair's [CLS]
    ids_b[dest] = input_ids[second]
    mask_b = (cols <= lens[:, None]).to(attention_mask.dtype)
    zeros = torch.zeros_like(token_type_ids)
    return [(input_ids, first.to(attention_mask.dtype), zeros), (ids_b, mask_b, torch.zeros_like(ids_b))]


def merge_pair(first: torch.Tensor, second: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor) -> torch.Tensor:
    """The two sentence runs of split_pair (B, T, H) and (B, T2, H) -> the pair's layout (B, T, H): segment a's
    positions from the first run, segment b's from the second (its [CLS] dropped)."""
    second_pos = attention_mask.bool() & token_type_ids.bool()
    lens = second_pos.sum(1)
    cols = torch.arange(second.shape[1], device=second.device)[None, :]
    out = first.clone()
    out[second_pos] = second[(cols >= 1) & (cols <= lens[:, None])]
    return out


def pair_features(hidden: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (B, 2H): [|u-v| sqrt(H), u*v H] of the two segments' L2-normalised mean vectors u, v. The sum of
    u*v is their cosine, what a bi-encoder's similarity is; the scales make each feature O(1), like the LayerNormed
    state a joint head reads (unscaled, u*v's entries are ~1/H and a fresh head barely moves in 3 epochs)."""
    real = attention_mask.to(hidden.dtype)
    b = real * token_type_ids.to(hidden.dtype)
    means = [(hidden * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0) for m in (real - b, b)]
    u, v = (torch.nn.functional.normalize(x, dim=-1) for x in means)
    h = hidden.shape[-1]
    return torch.cat([(u - v).abs() * h ** 0.5, u * v * h], dim=-1)


def _capture(store: dict, index: int, mask: torch.Tensor | None = None, positions: Positions = "all"):
    """A forward hook keeping a block's output (only the positions the side network needs)."""
    def hook(module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        store[index] = out if mask is None else select(out, mask, positions)

    return hook


def batch_hashes(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids) -> list[str]:
    """Each row's token hash over its real (unpadded) tokens."""
    ids, mask = input_ids.cpu().numpy(), attention_mask.bool().cpu().numpy()
    types = token_type_ids.cpu().numpy() if token_type_ids is not None else None
    return [codec.token_hash(ids[b][mask[b]], None if types is None else types[b][mask[b]]) for b in range(len(ids))]


def _feature_hash(feat: dict) -> str:
    """The same hash, from one featurised sample before collation (all its tokens are real)."""
    types = feat.get("token_type_ids")
    return codec.token_hash(np.asarray(feat["input_ids"]), None if types is None else np.asarray(types))


def _split_payload(payload: np.ndarray, data_sizes: list[int], scale_sizes: list[int]) -> list[np.ndarray]:
    """One batch buffer (all data, then all scales) -> one buffer per sample (its data, then its scales)."""
    total = sum(data_sizes)
    d_off, s_off, out = 0, total, []
    for nd, ns in zip(data_sizes, scale_sizes):
        parts = [payload[d_off:d_off + nd]]
        if ns:
            parts.append(payload[s_off:s_off + ns])
        out.append(np.concatenate(parts) if len(parts) > 1 else parts[0].copy())
        d_off, s_off = d_off + nd, s_off + ns
    return out

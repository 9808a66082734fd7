"""Keeping PAC's frozen backbone in host memory and lending it to the accelerator one block at a time.

Why: the backbone never trains, yet on an accelerator its weights are most of PAC's training memory
(SmolLM2-135M: 553 of 673 MB). A backbone pass that runs block by block over a chunk of samples
needs one block resident at a time, so the activation cache can be filled while the weights wait in
(pinned) host memory, and the cached epochs never need them at all. Each block crosses the bus once
per chunk, so a large chunk keeps the transfer small beside the compute. This is the layer-by-layer
offloading of inference engines such as FlexGen, applied to the one pass PAC makes; nothing in
torch or accelerate lends a module's weights per call without hooks on every forward, so it is
written here (a few lines of `.data` swaps).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return list(module.parameters()) + list(module.buffers())


class HostResidency:
    """Modules whose weights live in host memory; `lent(m)` puts m's on the accelerator for a while."""

    def __init__(self, modules: list[nn.Module], device: torch.device):
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self._pairs: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for m in modules:
            pairs = []
            for t in _tensors(m):
                host = t.data.to("cpu")
                if self.pin:
                    host = host.pin_memory()  # page-locked: copies to the GPU run at full bus speed
                t.data = host
                pairs.append((t, host))
            self._pairs[id(m)] = pairs
        self.kept = {id(t) for pairs in self._pairs.values() for t, _ in pairs}
        self.bytes_lent = 0  # host -> accelerator traffic so far (benchmarks read it)

    def manages(self, module: nn.Module) -> bool:
        return id(module) in self._pairs

    def _resting(self, t: torch.Tensor, host: torch.Tensor) -> torch.Tensor:
        """The host copy to lend: `host`, unless the tensor was re-stored on the host since (Precision.cast_frozen
        keeps frozen weights in bf16 under mixed precision): then that one, pinned once, is kept from now on."""
        now = t.data
        if now.device.type != "cpu" or (now.data_ptr() == host.data_ptr() and now.dtype == host.dtype):
            return host
        return now.pin_memory() if self.pin else now

    def _refreshed(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`pairs` with each host copy brought up to date (_resting), in place."""
        for k, (t, host) in enumerate(pairs):
            pairs[k] = (t, self._resting(t, host))
        return pairs

    def load(self, module: nn.Module) -> None:
        for t, host in self._refreshed(self._pairs[id(module)]):
            t.data = host.to(self.device, non_blocking=True)
            self.bytes_lent += host.nbytes

    def unload(self, module: nn.Module) -> None:
        for t, host in self._pairs[id(module)]:
            t.data = host  # the accelerator copy is freed once the queued kernels that read it are done

    def unload_all(self) -> None:
        for pairs in self._pairs.values():
            for t, host in self._refreshed(pairs):
                t.data = host

    def lent(self, module: nn.Module):
        return self._lent(module) if self.manages(module) else nullcontext()

    @contextmanager
    def _lent(self, module: nn.Module):
        self.load(module)
        try:
            yield
        finally:
            self.unload(module)

    def move_rest(self, root: nn.Module) -> None:
        """Put every tensor of `root` that is not kept on the host on the accelerator (a `.to()` that skips ours)."""
        for m in root.modules():
            for name, p in m._parameters.items():
                if p is not None and id(p) not in self.kept:
                    p.data = p.data.to(self.device)
            for name, b in m._buffers.items():
                if b is not None and id(b) not in self.kept:
                    m._buffers[name] = b.to(self.device)


@contextmanager
def _tf32_products():
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before  # the run's own setting (Precision) again


def fill_numerics(choice: str, device: torch.device):
    """The context the fill's backbone pass runs in (PAC's `fill_precision`): the run's (`run`, and anywhere but
    CUDA), TF32 matrix products (`tf32`) or bf16 autocast (`bf16`).

    Why a choice of its own: the fill's output is stored as int8 codes, which keep 8 bits of each value where
    TF32 products keep 10, so the fill may take the tensor cores' faster path while training stays in fp32."""
    if torch.device(device).type != "cuda" or choice == "run":
        return nullcontext()
    if choice == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return _tf32_products()


def chunks_by_memory(lengths: list[int], hidden: int, budget_mb: float, micro_batch: int) -> list[list[int]]:
    """Split length-sorted sample indices into chunks whose hidden states (fp32) fit `budget_mb`.

    Samples are sorted by length first, so each micro-batch pads little; a chunk is a run of whole
    micro-batches, at least one.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    budget = budget_mb * 2**20
    out, chunk, used = [], [], 0.0
    for start in range(0, len(order), micro_batch):
        mb = order[start:start + micro_batch]
        cost = len(mb) * max(lengths[i] for i in mb) * hidden * 4
        if chunk and used + cost > budget:
            out.append(chunk)
            chunk, used = [], 0.0
        chunk += mb
        used += cost
    if chunk:
        out.append(chunk)
    return out

"""The activation cache packed on the training device, for PAC's cached epochs.

Why: a cached step reads one entry per sample from the cache (a dict lookup, a CRC-32 over its bytes,
a token hash of the batch), concatenates them on the host and copies them to the device. On a GPU the
side network's step takes about a millisecond, so that per-sample host work is most of a cached epoch.
When the whole cache fits the device (a budget: `share` of its free memory), it is packed once, right
after the fill, into a few contiguous tensors there: the stored rows (int8/fp16/bf16/fp32 codes as the
codec stores them, every sample's rows one after another), their int8 scales, and each sample's first
row and row count. A batch is then one gather by sample index plus one decode, with no per-sample Python.

Integrity is unchanged: every entry is read through `ActivationCache.lookup` when it is packed, so its
token hash (against the training sample's tokens now) and its CRC-32 are checked there, with the cache's
own policies and errors (a stale or corrupt cache fails at pack time, exactly as on its first read). The
view serves only the training samples it was packed from (by sample id), in training only; anything
else goes through the cache as before.
"""

from __future__ import annotations

import numpy as np
import torch

from edgeft.methods.pac import codec
from edgeft.methods.pac.cache import ActivationCache

PACK_CHUNK = 256  # entries read and copied to the device per step of packing


class DeviceCacheView:
    def __init__(self, index: dict[str, int], data: torch.Tensor, scale: torch.Tensor | None,
                 first: torch.Tensor, rows: torch.Tensor, per_token: bool):
        self.index = index  # sample id -> its number in the view
        self.data, self.scale = data, scale  # (total rows, n_taps, H) as stored; (total rows, n_taps) fp32 or None
        self.first, self.rows = first, rows  # (samples,) long, on the device
        self.per_token = per_token  # entries hold every real token (positions=all), else one row each

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.data, self.scale, self.first, self.rows)
                   if t is not None)

    def __len__(self) -> int:
        return len(self.index)

    @staticmethod
    def bytes_needed(cache: ActivationCache, sample_ids: list[str]) -> int:
        """Device bytes the view of these (held) samples would take, from the cache's index alone."""
        total = 0
        for sid in sample_ids:
            meta = cache.store.meta(sid)
            if meta is not None:
                total += meta.nbytes + 16
        return total

    @classmethod
    def pack(cls, cache: ActivationCache, sample_ids: list[str], hashes: list[str], n_taps: int, hidden: int,
             per_token: bool, device: torch.device) -> "DeviceCacheView | None":
        """Read every sample's entry through the cache's checks and pack them on `device`; None when the cache
        does not hold them all (a budget, a recompute policy): the cached epochs then read the cache as before."""
        dtype = cache.key.dtype
        metas = [cache.store.meta(s) for s in sample_ids]
        if not sample_ids or any(m is None for m in metas):
            return None
        row_bytes = n_taps * hidden * codec.ITEMSIZE[dtype]
        total = sum(m.rows for m in metas)
        # flat byte buffers on the device, filled chunk by chunk through one pinned host buffer each (CUDA) or
        # directly (CPU): the payloads are concatenated straight into them, no temporary arrays
        data = torch.empty(total * row_bytes, dtype=torch.uint8, device=device)
        scale = torch.empty(total * n_taps * 4, dtype=torch.uint8, device=device) if dtype == "int8" else None
        chunk_rows = max(sum(m.rows for m in metas[k:k + PACK_CHUNK]) for k in range(0, len(metas), PACK_CHUNK))
        staged = device.type != "cpu"
        pin = device.type == "cuda"
        stage_d = torch.empty(chunk_rows * row_bytes, dtype=torch.uint8, pin_memory=pin) if staged else None
        stage_s = torch.empty(chunk_rows * n_taps * 4, dtype=torch.uint8, pin_memory=pin) \
            if staged and scale is not None else None
        first, rows, index, at = [], [], {}, 0
        for k in range(0, len(sample_ids), PACK_CHUNK):
            ids, toks = sample_ids[k:k + PACK_CHUNK], hashes[k:k + PACK_CHUNK]
            found = cache.lookup(ids, toks)  # token hash + CRC-32 checked here, with the cache's policies
            if any(f is None for f in found):
                return None  # a stale/corrupt entry under rebuild/recompute: it must be recomputed first
            r = [f[1] for f in found]
            n = sum(r)
            nd = [x * row_bytes for x in r]
            _concat_into([f[0][:b] for f, b in zip(found, nd)], data, at * row_bytes, n * row_bytes, stage_d)
            if scale is not None:
                _concat_into([f[0][b:] for f, b in zip(found, nd)], scale, at * n_taps * 4, n * n_taps * 4, stage_s)
            for sid, m in zip(ids, r):
                index[sid] = len(first)
                first.append(at)
                rows.append(m)
                at += m
        data = data.view(codec.TORCH_DTYPES[dtype]).view(total, n_taps, hidden)
        scale = None if scale is None else scale.view(torch.float32).view(total, n_taps)
        as_long = dict(dtype=torch.long, device=device)
        return cls(index, data, scale, torch.tensor(first, **as_long), torch.tensor(rows, **as_long), per_token)

    def indices(self, sample_ids) -> torch.Tensor | None:
        """The batch's numbers in the view (a device tensor), or None if any sample is not in it. Numbers given
        as a tensor are taken as they are (a whole-step graph's static input: CachedStep.train_step)."""
        if torch.is_tensor(sample_ids):
            return sample_ids
        try:
            got = [self.index[str(s)] for s in sample_ids]
        except KeyError:
            return None
        got = torch.tensor(got, dtype=torch.long)
        if self.first.is_cuda:  # pinned, so the copy is queued instead of waiting for the GPU to drain
            got = got.pin_memory()
        return got.to(self.first.device, non_blocking=True)

    def taps(self, idx: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, P, n_taps, H) float32 side-network input of the samples `idx`, as the cache path builds it:
        each sample's rows at its real positions (left or right padding alike), zeros elsewhere."""
        if not self.per_token:
            at = self.first[idx]
            return codec.decode(self.data[at], None if self.scale is None else self.scale[at]).unsqueeze(1)
        real = attention_mask.bool()
        step = (attention_mask.long().cumsum(1) - 1).clamp_(min=0)  # which of its rows a position holds
        at = self.first[idx].unsqueeze(1) + torch.minimum(step, self.rows[idx].unsqueeze(1) - 1)
        flat = codec.decode(self.data[at], None if self.scale is None else self.scale[at])
        return torch.where(real[:, :, None, None], flat, flat.new_zeros(()))


def _concat_into(parts: list[np.ndarray], dest: torch.Tensor, offset: int, nbytes: int,
                 stage: torch.Tensor | None) -> None:
    """Byte arrays, concatenated into dest[offset:offset + nbytes] (a flat uint8 tensor), through `stage`
    (a host buffer) when dest is on an accelerator."""
    if stage is None:
        np.concatenate(parts, out=dest[offset:offset + nbytes].numpy())
        return
    np.concatenate(parts, out=stage[:nbytes].numpy())
    dest[offset:offset + nbytes].copy_(stage[:nbytes])  # synchronous: the stage is refilled next

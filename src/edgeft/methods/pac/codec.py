"""How one sample's cached activations become bytes and back: dtype, 8-bit quantisation, checksums.

A cache entry is the rows (tokens or pooled positions) x taps x hidden activations of one sample.
Stored as fp32, fp16 or bf16, or as int8 with one fp32 scale per (row, tap) vector ("per-token"
absmax quantisation, as in LLM.int8()/ZeroQuant's token-wise scheme). The bytes carry a CRC-32 so
a flipped or truncated entry is caught before it reaches the side network.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch

from edgeft.errors import CacheError
from edgeft.cores import usable_cores

CacheDtype = Literal["fp32", "fp16", "bf16", "int8"]

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8}
# numpy has no bfloat16: bf16 bytes travel as uint16 and are re-viewed in torch.
NUMPY_VIEWS = {"fp32": np.float32, "fp16": np.float16, "bf16": np.uint16, "int8": np.int8}
ITEMSIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
FP16_MAX = 65504.0


def entry_nbytes(rows: int, taps: int, hidden: int, dtype: CacheDtype) -> int:
    """Bytes of one entry: the activations, plus one fp32 scale per (row, tap) for int8."""
    n = rows * taps * hidden * ITEMSIZE[dtype]
    return n + (rows * taps * 4 if dtype == "int8" else 0)


def encode(x: torch.Tensor, dtype: CacheDtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rows, taps, hidden) float -> (stored tensor, int8 scales or None), on x's device."""
    if dtype == "int8":
        amax = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12)
        scale = amax / 127.0
        q = torch.round(x.float() / scale).clamp_(-127, 127).to(torch.int8)
        return q, scale.squeeze(-1)
    if dtype == "fp16":
        peak = float(x.abs().max()) if x.numel() else 0.0
        if peak > FP16_MAX or not np.isfinite(peak):
            raise CacheError(f"activations reach {peak:.3g}, beyond float16's range (65504): caching them as fp16 "
                             "would store inf. Use cache_dtype=bf16 or int8 (or fp32).")
    return x.to(TORCH_DTYPES[dtype]), None


def decode(data: torch.Tensor, scale: torch.Tensor | None, out: torch.dtype = torch.float32) -> torch.Tensor:
    if scale is not None:
        return data.to(out) * scale.to(out).unsqueeze(-1)
    return data.to(out)


def to_payload(data: torch.Tensor, scale: torch.Tensor | None) -> np.ndarray:
    """One CPU uint8 buffer: the stored tensor's bytes, then the scales' bytes."""
    parts = [data.detach().contiguous().cpu().view(torch.uint8).reshape(-1)]
    if scale is not None:
        parts.append(scale.detach().float().contiguous().cpu().view(torch.uint8).reshape(-1))
    return torch.cat(parts).numpy() if len(parts) > 1 else parts[0].numpy()


def from_payloads(payloads: list[np.ndarray], rows: list[int], taps: int, hidden: int,
                  dtype: CacheDtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate entries (sum(rows), taps, hidden) as stored, plus their scales (int8)."""
    nd = [r * taps * hidden * ITEMSIZE[dtype] for r in rows]
    data = np.concatenate([p[:k] for p, k in zip(payloads, nd)]).view(NUMPY_VIEWS[dtype])
    tensor = torch.from_numpy(data).reshape(sum(rows), taps, hidden)
    if dtype == "bf16":
        tensor = tensor.view(torch.bfloat16)
    scale = None
    if dtype == "int8":
        s = np.concatenate([p[k:] for p, k in zip(payloads, nd)]).view(np.float32)
        scale = torch.from_numpy(s).reshape(sum(rows), taps)
    return tensor, scale


def checksum(payload: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(payload)).cast("B"))


PARALLEL_MIN_BYTES = 1 << 20  # below this, one thread is faster than handing the work out
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (threads, the pool), made on first need


def checksum_threads() -> int:
    """Threads for checksums: EDGEFT_CHECKSUM_THREADS if set, else the cores this process may use, at most 8."""
    asked = os.environ.get("EDGEFT_CHECKSUM_THREADS")
    if asked:
        if not asked.isdigit() or int(asked) < 1:
            raise CacheError(f"EDGEFT_CHECKSUM_THREADS={asked!r}: give a whole number of threads, 1 or more.")
        return int(asked)
    return max(1, min(8, usable_cores()))


def checksums(payloads: list[np.ndarray], threads: int | None = None) -> list[int]:
    """CRC-32 of each payload, in order. Why threads: one core runs zlib's CRC-32 at 2-4 GB/s, so checking a
    GPU fill's few hundred MB of taps costs a visible share of it, twice (when written, when packed); zlib
    releases the GIL over buffers past a few KB, so the entries of a batch are checked side by side.
    `threads`: how many (default `checksum_threads()`; 1: in this thread)."""
    global _pool
    threads = threads or checksum_threads()
    if threads < 2 or len(payloads) < 2 or sum(p.nbytes for p in payloads) < PARALLEL_MIN_BYTES:
        return [checksum(p) for p in payloads]
    if _pool is None or _pool[0] != threads:
        if _pool is not None:
            _pool[1].shutdown(wait=False)
        _pool = (threads, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="edgeft-crc"))
    per = -(-len(payloads) // threads)  # one contiguous share per thread: a future per entry costs more than it saves
    shares = _pool[1].map(lambda k: [checksum(p) for p in payloads[k:k + per]], range(0, len(payloads), per))
    return [crc for share in shares for crc in share]


def token_hash(input_ids: np.ndarray, token_type_ids: np.ndarray | None = None) -> str:
    """Which tokens a sample was (its real, unpadded tokens): a cached sample id must still mean them."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.ascontiguousarray(input_ids, dtype=np.int64).tobytes())
    if token_type_ids is not None:
        h.update(b"|types|")
        h.update(np.ascontiguousarray(token_type_ids, dtype=np.int64).tobytes())
    return h.hexdigest()

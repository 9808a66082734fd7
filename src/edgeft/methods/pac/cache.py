"""The activation cache: a frozen backbone's tapped activations per training sample, kept after epoch 1.

Why it is safe: the backbone is frozen and runs in eval mode (dropout off), so the activations of a
sample are a pure function of (backbone weights, tokens, tap set, positions kept). The cache key holds
everything but the tokens; each entry also stores a hash of its sample's real tokens (which also
captures the tokenizer's output and the max_length truncation) and a CRC-32 of its bytes. A lookup
serves an entry only when key, token hash and checksum all match; anything else is a miss, or a
clear CacheError, as the policy says. It never serves activations computed for something else.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edgeft.errors import CacheError
from edgeft.methods.pac.codec import CacheDtype, checksums
from edgeft.methods.pac.stores import DiskStore, EntryMeta, EntryUnreadable, MemoryStore

OnBudget = Literal["error", "recompute"]
OnStale = Literal["error", "rebuild"]
OnCorrupt = Literal["error", "recompute"]


@dataclass(frozen=True)
class CacheKey:
    """Everything an entry's activations depend on, apart from the sample's own tokens."""

    backbone: str  # Backbone.identity (hash of the weight source + name)
    tokenizer: str  # tokenizer_fingerprint()
    weights: str  # weights_fingerprint(): every weight the activations depend on, hashed in full
    taps: tuple[int, ...]  # block indices whose outputs are stored
    max_length: int | None
    positions: str  # which positions are kept: last | first | mean | all
    hidden: int
    dtype: CacheDtype
    encoding: str = "joint"  # siamese: each segment of a pair encoded on its own (PacOptions.pair_encoding)

    def fields(self) -> dict:
        d = asdict(self)
        d["taps"] = list(self.taps)
        if d["encoding"] == "joint":
            del d["encoding"]  # the keys (and disk-cache folders) of every cache made before the field existed
        return d

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.fields(), sort_keys=True).encode()).hexdigest()[:20]


def read_modules(view, taps: tuple[int, ...]) -> list[tuple[str, object]]:
    """The backbone modules a cache entry's activations depend on: the embedding, the rotary tables
    (Llama) and blocks 0..last tap. Not the final norm or any (randomly initialised) task head."""
    mods = [("embed", view.embedding)]
    rotary = getattr(view.core, "rotary_emb", None)
    if rotary is not None:
        mods.append(("rotary", rotary))
    mods += [(f"blocks.{i}", view.blocks[i]) for i in range(max(taps) + 1)]
    return mods


def weights_fingerprint(view, taps: tuple[int, ...]) -> str:
    """A full SHA-256 of every byte of the frozen weights and buffers the tapped activations depend
    on (`read_modules`), with their names, shapes and dtypes.

    Backbone.identity names the weight source; this also notices weights replaced or changed in
    place under the same name (one changed value is enough), which must not be served old activations.
    Tensors are hashed on parallel threads (hashlib releases the GIL): ~1-2 s for SmolLM2-135M.
    """
    import torch

    named, seen = [], set()
    for prefix, module in read_modules(view, taps):
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                named.append((f"{prefix}.{name}:{tuple(t.shape)}:{t.dtype}", t))

    def digest(t) -> bytes:
        flat = t.detach().reshape(-1).contiguous().cpu()
        return hashlib.sha256(memoryview(flat.view(torch.uint8).numpy())).digest()

    with torch.no_grad(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(digest, [t for _, t in named]))
    h = hashlib.sha256()
    for (label, _), d in zip(named, digests):
        h.update(label.encode() + d)
    return h.hexdigest()[:32]


def tokenizer_fingerprint(tokenizer) -> str:
    """Class + vocabulary + special tokens: two tokenizers that differ here split text differently."""
    vocab = sorted(tokenizer.get_vocab().items())
    specials = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    body = json.dumps([type(tokenizer).__name__, vocab, specials], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0
    stale: int = 0  # entries whose sample id now means other tokens
    corrupt: int = 0  # entries failing their checksum or cut short
    over_budget: int = 0  # samples not stored because the budget was full (recomputed each epoch)
    served_on_device: int = 0  # samples read from the cache's copy packed on the device (PacModel.device_view)


@dataclass
class ActivationCache:
    key: CacheKey
    storage: Literal["memory", "disk"] = "memory"
    directory: Path | None = None
    budget_mb: float | None = None
    on_budget: OnBudget = "error"
    on_stale: OnStale = "error"
    on_corrupt: OnCorrupt = "error"
    verify: bool = True
    shard_mb: float = 256.0
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self):
        if self.storage == "disk":
            if self.directory is None:
                raise CacheError("a disk activation cache needs a directory (cache_dir).")
            self.store = DiskStore(Path(self.directory), self.key.fingerprint, self.key.fields(), self.on_stale,
                                   self.shard_mb)
        elif self.storage == "memory":
            self.store = MemoryStore()
        else:
            raise CacheError(f"unknown cache storage '{self.storage}' (memory or disk).")
        self.budget_bytes = None if self.budget_mb is None else int(self.budget_mb * 2**20)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def nbytes(self) -> int:
        return self.store.nbytes

    def _where(self) -> str:
        return str(self.directory) if self.storage == "disk" else "in-memory activation cache"

    # -- reading ---------------------------------------------------------------------------------------
    def holds(self, sample_id: str, token_hash: str) -> bool:
        """Whether an entry for these tokens is indexed (cheap: its bytes are checked when it is read)."""
        meta = self.store.meta(sample_id)
        return meta is not None and meta.token == token_hash

    def lookup(self, sample_ids: list[str], token_hashes: list[str]) -> list[tuple[np.ndarray, int] | None]:
        """(payload, rows) per sample, or None where the sample must be computed by the backbone.

        The entries' bytes are read and checksummed together (over threads, `codec.checksums`), then judged
        in order, so the policies, counts and the first error raised are those of one entry after another."""
        found = []  # per sample: (meta or None, payload or None, why it could not be read or None)
        for sid, tok in zip(sample_ids, token_hashes):
            meta = self.store.meta(sid)
            if meta is None or meta.token != tok:
                found.append((meta, None, None))
                continue
            try:
                found.append((meta, self.store.read(sid), None))
            except EntryUnreadable as err:
                found.append((meta, None, str(err)))
        sized = [i for i, (m, p, _) in enumerate(found) if p is not None and len(p) == m.nbytes]
        crcs = dict(zip(sized, checksums([found[i][1] for i in sized]))) if self.verify else {}
        out = []
        for i, (sid, tok, (meta, payload, unreadable)) in enumerate(zip(sample_ids, token_hashes, found)):
            if meta is None:
                self.stats.misses += 1
                out.append(None)
                continue
            if meta.token != tok:
                self.stats.stale += 1
                if self.on_stale != "rebuild":
                    raise CacheError(
                        f"{self._where()}: sample '{sid}' was cached for other tokens than it has now (the data, "
                        "prompt template, tokenizer or max_length changed). Its activations would be wrong. "
                        "Delete the cache, or set on_stale=rebuild to recompute such samples.")
                self.stats.misses += 1
                out.append(None)
                continue
            if not self._intact(sid, meta, payload, unreadable, crcs.get(i)):
                self.stats.misses += 1
                out.append(None)
                continue
            self.stats.hits += 1
            out.append((payload, meta.rows))
        return out

    def _intact(self, sid: str, meta: EntryMeta, payload: np.ndarray | None, unreadable: str | None,
                crc: int | None) -> bool:
        """Whether an entry's bytes are whole and match their checksum (`crc`: theirs, None if not computed);
        a damaged entry raises, or is recomputed under on_corrupt=recompute."""
        problem = unreadable
        if payload is not None and len(payload) != meta.nbytes:
            problem = f"{len(payload)} bytes where the index says {meta.nbytes}"
        elif payload is not None and self.verify and crc != meta.crc:
            problem = "its bytes fail their CRC-32 checksum"
        if problem is None:
            return True
        self.stats.corrupt += 1
        if self.on_corrupt != "recompute":
            raise CacheError(f"{self._where()}: the entry of sample '{sid}' is corrupt ({problem}). Delete the cache "
                             "to rebuild it, or set on_corrupt=recompute to recompute damaged entries.")
        return False

    # -- writing ---------------------------------------------------------------------------------------
    def put(self, sample_ids: list[str], token_hashes: list[str], payloads: list[np.ndarray],
            rows: list[int]) -> int:
        """Store entries; returns how many were stored (fewer only under on_budget=recompute)."""
        stored = 0
        crcs = checksums(payloads)  # side by side (codec.checksums); an entry over the budget wastes its own
        for sid, tok, payload, r, crc in zip(sample_ids, token_hashes, payloads, rows, crcs):
            old = self.store.meta(sid)
            after = self.store.nbytes - (old.nbytes if old else 0) + payload.nbytes
            if self.budget_bytes is not None and after > self.budget_bytes:
                if self.on_budget == "recompute":
                    self.stats.over_budget += 1
                    continue
                per = payload.nbytes / 2**20
                raise CacheError(
                    f"{self._where()}: storing sample '{sid}' would take the activation cache past its budget of "
                    f"{self.budget_mb:g} MB (it holds {len(self.store)} samples, {self.store.nbytes / 2**20:.1f} MB; "
                    f"this sample needs {per:.3f} MB). Raise cache_budget_mb, use cache_dtype=int8 or fp16, tap "
                    "fewer blocks (taps=every:K), or set on_budget=recompute to run the backbone for the rest.")
            self.store.put(sid, EntryMeta(rows=r, token=tok, crc=crc, nbytes=payload.nbytes), payload)
            self.stats.writes += 1
            stored += 1
        return stored

    def describe(self) -> dict:
        return {"storage": self.storage, "dtype": self.key.dtype, "entries": len(self.store),
                "megabytes": self.store.nbytes / 2**20, "budget_mb": self.budget_mb, "fingerprint": self.key.fingerprint,
                "directory": str(self.directory) if self.directory else None, **asdict(self.stats)}

    def progress_note(self) -> str:
        """For a progress line: lookups served / computed so far, and entries stored (and, on a GPU, how many
        samples the device copy served: the cached epochs read it instead of the cache)."""
        st = self.stats
        on_device = f", {st.served_on_device} from the device copy" if st.served_on_device else ""
        return f"cache {st.hits} hit / {st.misses} miss, {st.writes} stored{on_device}"

    def close(self) -> None:
        self.store.close()

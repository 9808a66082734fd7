"""PAC ("Pluto and Charon"): parallel adapters beside a frozen backbone, fed by an activation cache.

side_network.py  the parallel adapters (the only trained part, with an optional task head)
taps.py          which blocks are tapped and which token positions the side network needs
codec.py         cache entries as bytes: fp32/fp16/bf16/int8 (per-token scale), checksums, token hashes
stores.py        in-memory or on-disk (memory-mapped shards) entry stores
cache.py         the activation cache: key, staleness/corruption checks, size budget, statistics
model.py         PacModel: the HF call convention the trainer and evaluator use; generation
method.py        the registered `pac` Method and its options
"""

from edgeft.methods.pac.cache import ActivationCache, CacheKey
from edgeft.methods.pac.model import PacModel
from edgeft.methods.pac.side_network import ParallelAdapters

__all__ = ["ActivationCache", "CacheKey", "PacModel", "ParallelAdapters"]

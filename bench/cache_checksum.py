"""What the activation cache's CRC-32 costs, on one thread and side by side (issue 18's PAC fill and pack).

A GPU fill of 4,000 SST-2 sentences on SmolLM2-135M (batch 64, int8 taps) writes 468.6 MB of entries, which are
checksummed when written and again when packed onto the device. This times those two passes through the cache's
own calls (`ActivationCache.put` in batches of the fill, `ActivationCache.lookup` in the pack's chunks) with the
checksums on 1 thread and on more (EDGEFT_CHECKSUM_THREADS), plus bare `codec.checksums`, over entries of the
same sizes filled with random bytes. One JSON under bench/results/pac/.

    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/cache_checksum.py            # this machine's cores
    python bench/cache_checksum.py --threads 1 2 4 8 --out bench/results/pac/cache_checksum_gpu_host.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from edgeft.cores import usable_cores  # noqa: E402
from edgeft.methods.pac import codec  # noqa: E402
from edgeft.methods.pac.cache import ActivationCache, CacheKey  # noqa: E402

FILL_BATCH = 64  # entries per put, as the fill writes them at batch 64
PACK_CHUNK = 256  # entries per lookup, as DeviceCacheView.pack reads them


def entries(n: int, nbytes: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, nbytes, dtype=np.uint8) for _ in range(n)]


def time_cache(payloads: list[np.ndarray], threads: int) -> dict:
    """put in fill batches, then lookup in pack chunks, through an in-memory ActivationCache."""
    os.environ["EDGEFT_CHECKSUM_THREADS"] = str(threads)
    key = CacheKey(backbone="bench", tokenizer="t", weights="w", taps=(0,), max_length=64, positions="all",
                   hidden=1, dtype="int8")
    cache = ActivationCache(key)
    ids = [f"s{i}" for i in range(len(payloads))]
    t0 = time.perf_counter()
    for k in range(0, len(ids), FILL_BATCH):
        batch = ids[k:k + FILL_BATCH]
        cache.put(batch, batch, payloads[k:k + FILL_BATCH], [1] * len(batch))
    t1 = time.perf_counter()
    for k in range(0, len(ids), PACK_CHUNK):
        got = cache.lookup(ids[k:k + PACK_CHUNK], ids[k:k + PACK_CHUNK])
        assert all(g is not None for g in got)
    t2 = time.perf_counter()
    return {"put_s": t1 - t0, "lookup_s": t2 - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=4000)
    ap.add_argument("--megabytes", type=float, default=468.6, help="all entries together")
    ap.add_argument("--threads", type=int, nargs="+", help="default: 1 and this machine's checksum_threads()")
    ap.add_argument("--repeat", type=int, default=3, help="best of")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "pac" / "cache_checksum_cpu.json"))
    args = ap.parse_args()
    default_threads = codec.checksum_threads()
    threads = args.threads or sorted({1, default_threads})
    payloads = entries(args.entries, int(args.megabytes * 2**20 / args.entries))
    total = sum(p.nbytes for p in payloads)
    rows = []
    for n in threads:
        bare = min(_timed(lambda: codec.checksums(payloads, threads=n)) for _ in range(args.repeat))
        cache = [time_cache(payloads, n) for _ in range(args.repeat)]
        row = {"threads": n, "checksums_s": bare, "gb_per_s": total / bare / 1e9,
               "put_s": min(c["put_s"] for c in cache), "lookup_s": min(c["lookup_s"] for c in cache)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"entries": len(payloads), "megabytes": total / 2**20, "fill_batch": FILL_BATCH, "pack_chunk": PACK_CHUNK,
           "default_threads": default_threads, "rows": rows, "machine": f"{platform.node()} {platform.processor()} "
           f"{usable_cores()} usable cores", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": " ".join(sys.argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

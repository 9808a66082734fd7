"""The activation cache on its own: codecs, stores, staleness, corruption, budget."""

import json

import numpy as np
import pytest
import torch

from edgeft.errors import CacheError
from edgeft.methods.pac import codec
from edgeft.methods.pac.cache import ActivationCache, CacheKey

TAPS, HIDDEN = 3, 16


def key(**changes) -> CacheKey:
    base = dict(backbone="abc:model", tokenizer="tok1", weights="w1", taps=(0, 1, 2), max_length=64, positions="last",
                hidden=HIDDEN, dtype="fp16")
    return CacheKey(**{**base, **changes})


def entry(rows=1, dtype="fp16", seed=0):
    x = torch.randn(rows, TAPS, HIDDEN, generator=torch.Generator().manual_seed(seed)) * 3
    data, scale = codec.encode(x, dtype)
    return x, codec.to_payload(data, scale)


def read_back(payload, rows, dtype):
    data, scale = codec.from_payloads([payload], [rows], TAPS, HIDDEN, dtype)
    return codec.decode(data, scale)


@pytest.mark.parametrize("dtype,tol", [("fp32", 0.0), ("fp16", 2e-3), ("bf16", 1e-2), ("int8", 1.5e-2)])
def test_codec_round_trip_within_the_dtype_precision(dtype, tol):
    x, payload = entry(rows=5, dtype=dtype)
    assert payload.nbytes == codec.entry_nbytes(5, TAPS, HIDDEN, dtype)
    y = read_back(payload, 5, dtype)
    rel = (y - x).abs().max() / x.abs().max()
    assert rel <= tol + 1e-7


def test_int8_has_one_scale_per_token_and_tap():
    x = torch.randn(4, TAPS, HIDDEN)
    x[2, 1] *= 1000  # one loud token must not flatten the others
    q, scale = codec.encode(x, "int8")
    assert q.dtype == torch.int8 and scale.shape == (4, TAPS)
    y = codec.decode(q, scale)
    quiet = (y[0, 0] - x[0, 0]).abs().max() / x[0, 0].abs().max()
    assert quiet < 1e-2


def test_fp16_overflow_is_refused_not_stored_as_inf():
    with pytest.raises(CacheError, match="beyond float16's range"):
        codec.encode(torch.full((1, TAPS, HIDDEN), 1e6), "fp16")


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_put_then_lookup_serves_the_same_bytes(storage, tmp_path):
    cache = ActivationCache(key(), storage=storage, directory=tmp_path / "c" if storage == "disk" else None)
    x, payload = entry()
    assert cache.lookup(["s1"], ["h1"]) == [None]
    cache.put(["s1"], ["h1"], [payload], [1])
    (got, rows), = cache.lookup(["s1"], ["h1"])
    assert rows == 1 and np.array_equal(np.asarray(got), payload)
    assert torch.allclose(read_back(got, 1, "fp16"), x, atol=1e-2)
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (1, 1, 1)


def test_disk_cache_survives_reopening_and_appends_across_shards(tmp_path):
    c = ActivationCache(key(), storage="disk", directory=tmp_path, shard_mb=0.0005)  # ~500 bytes per shard
    payloads = {f"s{i}": entry(seed=i)[1] for i in range(6)}
    c.put(list(payloads), [f"h{i}" for i in range(6)], list(payloads.values()), [1] * 6)
    c.close()
    assert len(list(tmp_path.glob("shard-*.bin"))) > 1
    again = ActivationCache(key(), storage="disk", directory=tmp_path)
    assert len(again) == 6
    found = again.lookup(list(payloads), [f"h{i}" for i in range(6)])
    assert all(np.array_equal(np.asarray(f[0]), p) for f, p in zip(found, payloads.values()))


LOCKER = """
import sys, time
from edgeft.methods.pac.cache import ActivationCache, CacheKey
key = CacheKey(backbone="abc:model", tokenizer="tok1", weights="w1", taps=(0, 1, 2), max_length=64, positions="last",
               hidden=16, dtype="fp16")
c = ActivationCache(key, storage="disk", directory=sys.argv[1])
print("open", flush=True)
sys.stdin.readline()  # hold the cache until told to close
c.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def test_a_disk_cache_in_use_by_another_process_is_refused_until_it_closes(tmp_path):
    import subprocess
    import sys

    other = subprocess.Popen([sys.executable, "-c", LOCKER, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "open"
        with pytest.raises(CacheError, match="another process is using this activation cache.*own cache_dir"):
            ActivationCache(key(), storage="disk", directory=tmp_path)
        same = ActivationCache(key(), storage="disk", directory=tmp_path / "elsewhere")  # its own folder: fine
        same.close()
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "closed"
        mine = ActivationCache(key(), storage="disk", directory=tmp_path)  # free again
        again = ActivationCache(key(), storage="disk", directory=tmp_path)  # this process may reopen its own
        again.close()
        mine.close()
    finally:
        other.stdin.write("\n")
        other.stdin.flush()
        other.wait(timeout=30)


@pytest.mark.parametrize("code", ["EROFS", "EACCES"])
def test_a_read_only_disk_cache_is_read_without_a_claim(tmp_path, monkeypatch, code):
    import errno

    import filelock

    c = ActivationCache(key(), storage="disk", directory=tmp_path)
    payloads = {f"s{i}": entry(seed=i)[1] for i in range(3)}
    c.put(list(payloads), [f"h{i}" for i in range(3)], list(payloads.values()), [1] * 3)
    c.close()

    def read_only(self, *a, **k):
        raise OSError(getattr(errno, code), "cannot write here", str(tmp_path / ".lock"))

    monkeypatch.setattr(filelock.FileLock, "acquire", read_only)
    again = ActivationCache(key(), storage="disk", directory=tmp_path)
    found = again.lookup(list(payloads), [f"h{i}" for i in range(3)])
    assert all(np.array_equal(np.asarray(f[0]), p) for f, p in zip(found, payloads.values()))
    again.close()


def test_a_sample_id_with_other_tokens_is_stale(tmp_path):
    cache = ActivationCache(key())
    cache.put(["s1"], ["tokens-then"], [entry()[1]], [1])
    with pytest.raises(CacheError, match="sample 's1' was cached for other tokens"):
        cache.lookup(["s1"], ["tokens-now"])
    rebuilding = ActivationCache(key(), on_stale="rebuild")
    rebuilding.put(["s1"], ["tokens-then"], [entry()[1]], [1])
    assert rebuilding.lookup(["s1"], ["tokens-now"]) == [None] and rebuilding.stats.stale == 1


@pytest.mark.parametrize("field,value", [("backbone", "other:model"), ("tokenizer", "tok2"), ("weights", "w2"),
                                         ("taps", (0, 2)),
                                         ("max_length", 128), ("dtype", "int8")])
def test_a_disk_cache_built_for_other_settings_is_refused(tmp_path, field, value):
    ActivationCache(key(), storage="disk", directory=tmp_path).put(["s1"], ["h"], [entry()[1]], [1])
    with pytest.raises(CacheError, match=f"stale activation cache.*{field}: cached"):
        ActivationCache(key(**{field: value}), storage="disk", directory=tmp_path)
    rebuilt = ActivationCache(key(**{field: value}), storage="disk", directory=tmp_path, on_stale="rebuild")
    assert len(rebuilt) == 0
    assert json.loads((tmp_path / "manifest.json").read_text())["key"][field] == (list(value) if field == "taps" else value)


def test_a_flipped_byte_on_disk_is_caught_by_the_checksum(tmp_path):
    c = ActivationCache(key(), storage="disk", directory=tmp_path)
    c.put(["s1", "s2"], ["h1", "h2"], [entry(seed=1)[1], entry(seed=2)[1]], [1, 1])
    c.close()
    shard = tmp_path / "shard-00000.bin"
    raw = bytearray(shard.read_bytes())
    raw[5] ^= 0x01  # inside the first entry
    shard.write_bytes(bytes(raw))
    reopened = ActivationCache(key(), storage="disk", directory=tmp_path)
    with pytest.raises(CacheError, match="entry of sample 's1' is corrupt.*CRC-32"):
        reopened.lookup(["s1"], ["h1"])
    lenient = ActivationCache(key(), storage="disk", directory=tmp_path, on_corrupt="recompute")
    assert lenient.lookup(["s1", "s2"], ["h1", "h2"])[0] is None
    assert lenient.stats.corrupt == 1 and lenient.stats.hits == 1


def test_a_truncated_shard_is_corrupt_not_silently_short(tmp_path):
    c = ActivationCache(key(), storage="disk", directory=tmp_path)
    c.put(["s1"], ["h1"], [entry()[1]], [1])
    c.close()
    shard = tmp_path / "shard-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CacheError, match="missing or shorter than its index says"):
        ActivationCache(key(), storage="disk", directory=tmp_path).lookup(["s1"], ["h1"])


def test_memory_cache_checksum_catches_a_flipped_byte():
    c = ActivationCache(key())
    c.put(["s1"], ["h1"], [entry()[1]], [1])
    c.store.corrupt_for_test("s1", byte=3)
    with pytest.raises(CacheError, match="corrupt"):
        c.lookup(["s1"], ["h1"])


def big_entries(n=12, rows=400, seed=0):
    """Entries large enough (12 x ~38 KB) that codec.checksums hands them to threads."""
    return [entry(rows=rows, seed=seed + i)[1] for i in range(n)]


def test_threaded_checksums_are_each_entrys_own_in_order(monkeypatch):
    monkeypatch.setattr(codec, "checksum_threads", lambda: 4)
    monkeypatch.setattr(codec, "PARALLEL_MIN_BYTES", 1)
    payloads = big_entries()
    assert codec.checksums(payloads) == [codec.checksum(p) for p in payloads]
    assert codec._pool is not None and codec._pool[0] == 4  # the threads really ran them


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_threaded_lookup_judges_entries_in_order(storage, tmp_path, monkeypatch):
    """Checksummed side by side, judged one after another: the first damaged entry is the one named, even with a
    stale sample after it; under recompute only the damaged entries are misses."""
    monkeypatch.setattr(codec, "checksum_threads", lambda: 4)
    monkeypatch.setattr(codec, "PARALLEL_MIN_BYTES", 1)
    ids, toks = [f"s{i}" for i in range(12)], [f"h{i}" for i in range(12)]
    payloads = big_entries()
    where = dict(storage=storage, directory=tmp_path / "c" if storage == "disk" else None)
    c = ActivationCache(key(), **where)
    c.put(ids, toks, payloads, [400] * 12)
    got = c.lookup(ids, toks)
    assert [bytes(g[0]) for g in got] == [bytes(p) for p in payloads] and c.stats.hits == 12
    if storage == "disk":
        c.close()
        shard = tmp_path / "c" / "shard-00000.bin"
        raw = bytearray(shard.read_bytes())
        for i in (4, 9):
            raw[sum(p.nbytes for p in payloads[:i]) + 7] ^= 0x01
        shard.write_bytes(bytes(raw))
        c = ActivationCache(key(), **where)
    else:
        c.store.corrupt_for_test("s4", byte=7)
        c.store.corrupt_for_test("s9", byte=7)
    stale = toks[:10] + ["other", toks[11]]  # s10 now means other tokens
    with pytest.raises(CacheError, match="entry of sample 's4' is corrupt.*CRC-32"):
        c.lookup(ids, stale)
    lenient = ActivationCache(key(), on_corrupt="recompute", on_stale="rebuild", **where) if storage == "disk" else c
    if storage == "memory":
        lenient.on_corrupt, lenient.on_stale = "recompute", "rebuild"
    before = (lenient.stats.hits, lenient.stats.corrupt, lenient.stats.stale)
    got = lenient.lookup(ids, stale)
    assert [i for i, g in enumerate(got) if g is None] == [4, 9, 10]
    after = (lenient.stats.hits, lenient.stats.corrupt, lenient.stats.stale)
    assert tuple(a - b for a, b in zip(after, before)) == (9, 2, 1)


def test_index_problems(tmp_path):
    c = ActivationCache(key(), storage="disk", directory=tmp_path)
    c.put(["s1", "s2"], ["h1", "h2"], [entry(seed=1)[1], entry(seed=2)[1]], [1, 1])
    c.close()
    index = tmp_path / "index.jsonl"
    lines = index.read_text().splitlines()
    index.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # a torn last write
    torn = ActivationCache(key(), storage="disk", directory=tmp_path)
    assert len(torn) == 1 and torn.lookup(["s2"], ["h2"]) == [None]
    index.write_text("{not json\n" + lines[1] + "\n")
    with pytest.raises(CacheError, match=r"index.jsonl:1: malformed index line"):
        ActivationCache(key(), storage="disk", directory=tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(CacheError, match="unreadable cache manifest"):
        ActivationCache(key(), storage="disk", directory=tmp_path)


def test_shards_without_a_manifest_are_not_trusted(tmp_path):
    (tmp_path / "shard-00000.bin").write_bytes(b"\0" * 10)
    with pytest.raises(CacheError, match="no manifest.json"):
        ActivationCache(key(), storage="disk", directory=tmp_path)


def test_budget_error_names_the_fixes_and_recompute_skips():
    one = codec.entry_nbytes(1, TAPS, HIDDEN, "fp16")
    budget_mb = 2.5 * one / 2**20
    c = ActivationCache(key(), budget_mb=budget_mb)
    c.put(["a", "b"], ["h", "h"], [entry()[1]] * 2, [1, 1])
    with pytest.raises(CacheError, match="past its budget.*cache_dtype=int8.*on_budget=recompute"):
        c.put(["c"], ["h"], [entry()[1]], [1])
    lenient = ActivationCache(key(), budget_mb=budget_mb, on_budget="recompute")
    assert lenient.put(["a", "b", "c"], ["h"] * 3, [entry()[1]] * 3, [1] * 3) == 2
    assert lenient.stats.over_budget == 1 and lenient.lookup(["c"], ["h"]) == [None]


def test_key_fingerprint_changes_with_every_field():
    prints = {key().fingerprint}
    for field, value in [("backbone", "x"), ("tokenizer", "y"), ("weights", "z"), ("taps", (1, 2)), ("max_length", 32),
                         ("positions", "all"), ("hidden", 8), ("dtype", "bf16")]:
        prints.add(key(**{field: value}).fingerprint)
    assert len(prints) == 9


def test_checksum_threads_follow_the_environment(monkeypatch):
    monkeypatch.setenv("EDGEFT_CHECKSUM_THREADS", "3")
    assert codec.checksum_threads() == 3
    monkeypatch.setenv("EDGEFT_CHECKSUM_THREADS", "two")
    with pytest.raises(CacheError, match="EDGEFT_CHECKSUM_THREADS='two'"):
        codec.checksum_threads()

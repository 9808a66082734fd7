"""Where cache entries live: a dict in process memory, or append-only shard files on disk.

The disk layout is deliberately plain so it can be checked by hand:
    manifest.json   format version, key fingerprint and the key's fields (backbone, tokenizer, taps, ...)
    index.jsonl     one line per entry: id, shard, offset, nbytes, rows, token hash, CRC-32
    shard-00000.bin raw entry bytes, appended; read back through numpy memory maps
Entries are written payload first, index line second, so a crash never leaves an index line that
points at bytes that were not written (a torn last index line is ignored and that sample recomputed).
Hand-written rather than a database because the access pattern is one append per sample and random
reads by id; numpy.memmap gives zero-copy reads and the format stays inspectable.
"""

from __future__ import annotations

import errno
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeft.errors import CacheError

FORMAT = 1
MANIFEST, INDEX, LOCK = "manifest.json", "index.jsonl", ".lock"


@dataclass
class EntryMeta:
    rows: int
    token: str  # token hash of the sample's real tokens
    crc: int
    nbytes: int
    shard: int = -1
    offset: int = -1


class EntryUnreadable(Exception):
    """A stored entry's bytes are missing or cut short (the cache turns this into its corruption policy)."""


class _Entries:
    """What both stores answer from their index of entry metadata (`_meta`: sample id -> EntryMeta)."""

    _meta: dict[str, EntryMeta]

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, sid: str) -> bool:
        return sid in self._meta

    def meta(self, sid: str) -> EntryMeta | None:
        return self._meta.get(sid)


class MemoryStore(_Entries):
    """Entries as numpy buffers in this process (lost when it exits)."""

    kind = "memory"

    def __init__(self):
        self._meta: dict[str, EntryMeta] = {}
        self._data: dict[str, np.ndarray] = {}
        self.nbytes = 0

    def read(self, sid: str) -> np.ndarray:
        return self._data[sid]

    def put(self, sid: str, meta: EntryMeta, payload: np.ndarray) -> None:
        old = self._meta.get(sid)
        if old is not None:
            self.nbytes -= old.nbytes
        self._meta[sid], self._data[sid] = meta, payload
        self.nbytes += meta.nbytes

    def corrupt_for_test(self, sid: str, byte: int = 0) -> None:
        """Flip one byte of an entry in place (tests use it to prove checksums catch it)."""
        self._data[sid] = self._data[sid].copy()
        self._data[sid][byte] ^= 0xFF

    def close(self) -> None:
        pass


def _hold(directory: Path):
    """This process's claim on a disk cache folder, held until the store closes (or the process ends). Two
    processes appending to one folder's shards and index would interleave their writes; the second is refused
    with what to do instead. Re-entrant within a process (a sweep reopens the folder it filled)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(directory / LOCK), is_singleton=True, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:  # (a TimeoutError, so an OSError: caught first)
        raise CacheError(f"{directory}: another process is using this activation cache ({directory / LOCK} is "
                         "held). Two runs writing one cache would corrupt it: wait for the other run to end, or "
                         "give this run its own cache_dir.") from None
    except OSError as err:
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return None  # a read-only folder (a cache shipped on read-only media): no process can write into it
        raise
    return lock


class DiskStore(_Entries):
    """Append-only shards + a JSON-lines index in one folder, read through memory maps."""

    kind = "disk"

    def __init__(self, directory: Path, fingerprint: str, key_fields: dict, on_stale: str = "error",
                 shard_mb: float = 256.0):
        self.dir = Path(directory)
        self.fingerprint, self.key_fields = fingerprint, key_fields
        self.shard_bytes = int(shard_mb * 2**20)
        self._meta: dict[str, EntryMeta] = {}
        self._maps: dict[int, np.memmap] = {}
        self._writer = None
        self.nbytes = 0
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file where the folder would be, or a place this user cannot write: was a traceback
            raise CacheError(f"{self.dir}: cannot be the activation cache's folder ({err.strerror or err}); point "
                             "cache_dir at a folder you can write (or a new one), or use cache=memory") from None
        self._lock = _hold(self.dir)
        try:
            self._open(on_stale)
        except BaseException:
            self.close()  # a refused folder (stale, corrupt) is not left claimed
            raise
        self._shard = max([m.shard for m in self._meta.values()], default=0)

    # -- opening ---------------------------------------------------------------------------------------
    def _open(self, on_stale: str) -> None:
        manifest = self.dir / MANIFEST
        if manifest.exists():
            self._open_existing(manifest, on_stale)
        else:
            if any(self.dir.glob("shard-*.bin")) or (self.dir / INDEX).exists():
                raise CacheError(f"{self.dir}: holds cache shards but no {MANIFEST}; it cannot be trusted. "
                                 "Delete the folder (or point cache_dir elsewhere).")
            self._write_manifest()

    def _write_manifest(self) -> None:
        body = {"format": FORMAT, "fingerprint": self.fingerprint, "key": self.key_fields}
        tmp = self.dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(body, indent=2))
        tmp.replace(self.dir / MANIFEST)

    def _open_existing(self, manifest: Path, on_stale: str) -> None:
        try:
            body = json.loads(manifest.read_text())
            found_fp, found_key, fmt = body["fingerprint"], body.get("key", {}), body["format"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CacheError(f"{manifest}: unreadable cache manifest ({err}); the cache is corrupt. "
                             "Delete the folder to rebuild it.") from err
        if fmt != FORMAT or found_fp != self.fingerprint:
            changed = [f"{k}: cached {found_key.get(k)!r} != now {v!r}" for k, v in self.key_fields.items()
                       if found_key.get(k) != v] or [f"format {fmt} != {FORMAT}"]
            if on_stale != "rebuild":
                raise CacheError(
                    f"{self.dir}: stale activation cache, built for other settings ({'; '.join(changed)}). "
                    "Its activations would be wrong for this run. Delete the folder, use another cache_dir, "
                    "or set on_stale=rebuild to replace it.")
            self._wipe()
            self._write_manifest()
            return
        self._read_index()

    def _wipe(self) -> None:
        for p in list(self.dir.glob("shard-*.bin")) + [self.dir / INDEX, self.dir / MANIFEST]:
            if p.exists():
                p.unlink()

    def _read_index(self) -> None:
        path = self.dir / INDEX
        if not path.exists():
            return
        lines = path.read_text().split("\n")
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                sid = rec.pop("id")
                meta = EntryMeta(**rec)
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                if lineno == len(lines):  # a torn last line: the write was interrupted; that sample is recomputed
                    break
                raise CacheError(f"{path}:{lineno}: malformed index line ({err}); the cache is corrupt. "
                                 "Delete the folder to rebuild it.") from err
            old = self._meta.get(sid)
            if old is not None:
                self.nbytes -= old.nbytes
            self._meta[sid] = meta
            self.nbytes += meta.nbytes

    def _shard_path(self, shard: int) -> Path:
        return self.dir / f"shard-{shard:05d}.bin"

    def _map(self, shard: int, need: int) -> np.memmap:
        mm = self._maps.get(shard)
        if mm is None or len(mm) < need:  # the shard grew since it was mapped
            if self._writer is not None:
                self._writer.flush()
            path = self._shard_path(shard)
            if not path.exists() or path.stat().st_size < need:
                raise EntryUnreadable(f"{path} is missing or shorter than its index says")
            mm = np.memmap(path, dtype=np.uint8, mode="r")
            self._maps[shard] = mm
        return mm

    def read(self, sid: str) -> np.ndarray:
        m = self._meta[sid]
        mm = self._map(m.shard, m.offset + m.nbytes)
        return mm[m.offset:m.offset + m.nbytes]

    def put(self, sid: str, meta: EntryMeta, payload: np.ndarray) -> None:
        path = self._shard_path(self._shard)
        size = path.stat().st_size if path.exists() else 0
        if size and size + meta.nbytes > self.shard_bytes:
            self._close_writer()
            self._shard += 1
            path, size = self._shard_path(self._shard), 0
        if self._writer is None or self._writer.name != str(path):
            self._close_writer()
            self._writer = open(path, "ab")
        self._writer.write(memoryview(np.ascontiguousarray(payload)).cast("B"))
        self._writer.flush()
        meta.shard, meta.offset = self._shard, size
        with open(self.dir / INDEX, "a") as f:
            f.write(json.dumps({"id": sid, **asdict(meta)}) + "\n")
        old = self._meta.get(sid)
        if old is not None:
            self.nbytes -= old.nbytes
        self._meta[sid] = meta
        self.nbytes += meta.nbytes

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self._close_writer()
        self._maps.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @staticmethod
    def remove(directory: Path) -> None:
        """Delete a cache folder (only if it looks like one)."""
        d = Path(directory)
        if (d / MANIFEST).exists():
            shutil.rmtree(d)

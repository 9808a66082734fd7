"""A run directory: config.yaml, metrics.json, events.jsonl, checkpoints, adapter, plots.

One place decides whether an output folder may be written (`claim`): a folder holding anything is
refused unless the run resumes it or overwrites it, so two runs never mix their config, metrics,
checkpoints, adapters or events. `--overwrite` removes only the files edgeft writes (OWNED). A claimed folder
is also locked until its run ends (`OutputLock`): a second run into it, started meanwhile from another process
(`--overwrite` or not), is refused instead of clearing or mixing into the running one's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from edgeft.errors import ConfigError
from edgeft.paths import edgeft_home

# What edgeft writes into a run directory (finetune, launch, federate): all `--overwrite` removes.
OWNED = ("config.yaml", "metrics.json", "events.jsonl", "*.png", "adapter", "adapter.tmp", "checkpoint", "logs",
         "ranks", "heartbeats", "spec.json", "spec.attempt*.json", "plan.attempt*.json")

# What `edgeft compress` writes into its output (model) folder.
MODEL_OWNED = ("*.safetensors", "config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
               "chat_template.*", "vocab.*", "merges.txt", "edgeft_compress.json", "compress_report.*", "side_module")


class OutputLock:
    """An exclusive lock on an output folder for one run, held by this process (a kernel `flock`, so it goes with
    the process however that ends: a crashed run's folder can be resumed at once). The lock file lives in
    $EDGEFT_HOME/run-locks (the system's temporary folder where that cannot be written), named by the folder's
    resolved path, so the folder itself is not touched before the run's inputs are valid; runs under two different
    $EDGEFT_HOME values do not see each other's locks. Re-entrant within a process (one process may claim a folder
    again, e.g. to resume it in a later run), and released when every claim of it is."""

    _held: dict[str, list] = {}  # lock file -> [open file, claims]

    def __init__(self, folder: Path):
        self.key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:24] + ".lock"
        self.folder = folder
        self.held = False

    def _open(self):
        """The lock file, opened without truncating it (it names the holder), in the first folder that works."""
        import tempfile

        for place in (edgeft_home() / "run-locks", Path(tempfile.gettempdir()) / f"edgeft-run-locks-{os.getuid()}"):
            try:
                place.mkdir(parents=True, exist_ok=True)
                return open(place / self.key, "a+")
            except OSError:
                continue
        raise ConfigError(f"{self.folder}: cannot create a lock file for this run in $EDGEFT_HOME/run-locks nor in "
                          "the temporary folder; set EDGEFT_HOME to a writable folder.")

    def acquire(self) -> "OutputLock":
        import fcntl

        name = self.key
        if name not in self._held:
            handle = self._open()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise ConfigError(f"{self.folder}: another edgeft run is writing into this output folder ({holder}). "
                                  "Wait for it to end, stop it, or pick another --out.") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
            self._held[name] = [handle, 0]
        self._held[name][1] += 1
        self.held = True
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        entry = self._held[self.key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self.key]
            entry[0].close()  # closing the file drops the flock


def claim(path: Path | str, *, resume: bool = False, overwrite: bool = False, owned: tuple[str, ...] = OWNED,
          resume_flag: str | None = "--resume", out_flag: str = "--out") -> "RunDir":
    """Check, before any slow work, that `path` may be written, and lock it for this run (`RunDir.release` when
    the run ends); nothing is written into it or removed yet.

    An empty or missing folder is fine; a non-empty one needs `resume` (carry on in it) or `overwrite`
    (clear edgeft's files from it when the run starts: `RunDir.begin`)."""
    p = Path(path)
    if resume and overwrite:
        raise ConfigError(f"{p}: --resume and --overwrite contradict each other; pick one.")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: the output path is a file, not a folder; pick another --out.")
    lock = OutputLock(p).acquire()
    present = sorted(x.name for x in p.iterdir()) if p.is_dir() else []
    if present and not (resume or overwrite):
        lock.release()
        how = f"{resume_flag} to continue that run, " if resume_flag else ""
        shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
        raise ConfigError(f"{p}: the output folder is not empty ({shown}). Use {how}--overwrite to replace "
                          f"edgeft's files in it, or another {out_flag}.")
    return RunDir(p, create=False, owned=owned, overwrite=overwrite and bool(present), lock=lock)


class RunDir:
    def __init__(self, path: Path | str, create: bool = True, owned: tuple[str, ...] = OWNED,
                 overwrite: bool = False, lock: OutputLock | None = None):
        self.path = Path(path)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        self.owned, self.overwrite = owned, overwrite
        self.begun = create  # whether this run has written into the folder (begin, or made by RunDir())
        self.lock = lock

    def release(self) -> None:
        """The run has ended: another run may claim the folder now."""
        if self.lock is not None:
            self.lock.release()

    def begin(self, config: dict) -> None:
        """The inputs are valid: clear the old run's files (under --overwrite) and write config.yaml."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.overwrite:
            self.clear()
            self.overwrite = False
        self.write_config(config)
        self.begun = True

    def clear(self) -> list[str]:
        """Remove the entries edgeft writes (self.owned); anything else in the folder stays."""
        gone = []
        for pattern in self.owned:
            for entry in sorted(self.path.glob(pattern)):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                gone.append(entry.name)
        return gone

    def write_config(self, config: dict) -> None:
        (self.path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def event(self, kind: str, **fields) -> None:
        """Append one JSON line; every event has a time and a kind."""
        record = {"time": time.time(), "event": kind, **fields}
        with open(self.path / "events.jsonl", "a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def events(self) -> list[dict]:
        p = self.path / "events.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def write_metrics(self, metrics: dict) -> None:
        (self.path / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))

    def read_metrics(self) -> dict:
        return json.loads((self.path / "metrics.json").read_text())

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

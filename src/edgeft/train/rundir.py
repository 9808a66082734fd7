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
OWNED = ("config.yaml", "metrics.json", "events.jsonl", "*.png", "adapter", "adapter.partial", "adapter.replaced",
         "adapter.tmp", "checkpoint", "logs",
         "ranks", "heartbeats", "spec.json", "spec.attempt*.json", "plan.attempt*.json")

# What `edgeft compress` writes into its output (model) folder.
MODEL_OWNED = ("*.safetensors", "config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
               "chat_template.*", "vocab.*", "merges.txt", "edgeft_compress.json", "compress_report.*", "side_module")


class OutputLock:
    """An exclusive lock on an output folder for one run, held by this process: a `filelock` lock, as the PAC disk
    cache's (`methods/pac/stores.py`), so it goes with the process however that ends (a crashed run's folder can be
    resumed at once) and is re-entrant within a process (one process may claim a folder again, e.g. to resume it in
    a later run; released when every claim of it is). The lock file lives in $EDGEFT_HOME/run-locks (the system's
    temporary folder where that cannot be written), named by the folder's resolved path, so the folder itself is not
    touched before the run's inputs are valid; runs under two different $EDGEFT_HOME values do not see each other's
    locks. A `.holder` file beside it names the run holding it, for the refusal (filelock empties the lock file)."""

    def __init__(self, folder: Path):
        self.key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:24]
        self.folder = folder
        self.lock = None  # the FileLock, while this claim holds it

    @property
    def held(self) -> bool:
        return self.lock is not None

    def acquire(self) -> "OutputLock":
        import tempfile

        from filelock import FileLock, Timeout

        for place in (edgeft_home() / "run-locks", Path(tempfile.gettempdir()) / f"edgeft-run-locks-{os.getuid()}"):
            holder = place / f"{self.key}.holder"
            try:
                place.mkdir(parents=True, exist_ok=True)
                lock = FileLock(str(place / f"{self.key}.lock"), is_singleton=True, thread_local=False)
                lock.acquire(timeout=0)
            except Timeout:  # (a TimeoutError, so an OSError: caught first)
                who = holder.read_text().strip() if holder.is_file() else "another process"
                raise ConfigError(f"{self.folder}: another edgeft run is writing into this output folder ({who}). "
                                  "Wait for it to end, stop it, or pick another --out.") from None
            except OSError:  # this place cannot be written: the next one
                continue
            holder.write_text(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            self.lock = lock
            return self
        raise ConfigError(f"{self.folder}: cannot create a lock file for this run in $EDGEFT_HOME/run-locks nor in "
                          "the temporary folder; set EDGEFT_HOME to a writable folder.")

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def claim(path: Path | str, *, resume: bool = False, overwrite: bool = False, owned: tuple[str, ...] = OWNED,
          resume_flag: str | None = "--resume", out_flag: str = "--out") -> "RunDir":
    """Check, before any slow work, that `path` may be written, and lock it for this run (`with claim(...) as run:`
    releases it when the run ends); nothing is written into it or removed yet.

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


COMMAND_FLAGS = ("overwrite", "resume")  # what a command does to its folder: never written into config.yaml
TRAINABLES_KEYS = ("model", "method", "method_options", "head")  # what decides the checkpoint's tensors


def _resolved(key: str, config: dict):
    """A setting as it acts: method options with their defaults filled in, so `--option r=8` resumes a run started
    without it (r=8 is LoRA's default; they were compared as typed and the resume refused), and without the ones
    that say only how the run goes about its work (MethodOptions.RUN_ONLY: PAC's cache folder, its checks)."""
    if key != "method_options":
        return config.get(key)
    from edgeft.methods import get_method

    try:
        options = get_method(config.get("method"), config.get(key) or {}).options
    except ConfigError:  # a method or option this version does not know: compare as written
        return config.get(key)
    return {k: v for k, v in options.model_dump().items() if k not in type(options).RUN_ONLY}


def check_resume_matches(out: Path | str, now: dict) -> None:
    """`--resume` goes on with the tensors the run's checkpoint holds: a run in `out` started with another model,
    method, method options, head or task is refused, naming what changed, before its config.yaml is rewritten (a
    resumed run with LoRA r=4 over r=8's checkpoint failed deep in torch, and had already rewritten the config)."""
    saved = Path(out) / "config.yaml"
    if not saved.is_file():
        return
    try:
        before = yaml.safe_load(saved.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{saved}: not readable YAML ({str(err).splitlines()[0]}); resume needs the run's own "
                          "config.yaml, or use --overwrite or another --out") from err
    other_method = before.get("method") != now.get("method")  # its options are then another method's: not compared
    changed = [f"{key}: {before.get(key)!r} then, {now[key]!r} now" for key in TRAINABLES_KEYS
               if key in before and key in now and not (key == "method_options" and other_method)
               and _resolved(key, before) != _resolved(key, now)]
    task_then, task_now = (before.get("task") or {}).get("name"), (now.get("task") or {}).get("name")
    if task_then not in (None, task_now):
        changed.append(f"task: {task_then!r} then, {task_now!r} now")
    if changed:
        raise ConfigError(f"--resume: the run in {out} was started with other trainables ({'; '.join(changed)}); "
                          "resume with its settings (its config.yaml), or use --overwrite or another --out")


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

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def begin(self, config: dict) -> None:
        """The inputs are valid: clear the old run's files (under --overwrite) and write config.yaml. The run's
        settings only: `overwrite` and `resume` say what one command did to the folder, and a config.yaml that kept
        `overwrite: true` made `--config <run>/config.yaml --out <another run>` replace that run unasked."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.overwrite:
            self.clear()
            self.overwrite = False
        self.write_config({k: v for k, v in config.items() if k not in COMMAND_FLAGS})
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
        self._check_still_there()
        with open(self.path / "events.jsonl", "a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def _check_still_there(self) -> None:
        """A run folder removed while the run went on (rm -rf, a cleaner) ended it in a bare FileNotFoundError."""
        if not self.path.is_dir():
            raise ConfigError(f"{self.path}: the run folder was removed while the run went on, with its events, "
                              "checkpoints and results so far; start the run again (into a folder nothing cleans).")

    def events(self) -> list[dict]:
        p = self.path / "events.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def write_metrics(self, metrics: dict) -> None:
        self._check_still_there()
        (self.path / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))

    def read_metrics(self) -> dict:
        return json.loads((self.path / "metrics.json").read_text())

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

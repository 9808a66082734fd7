"""A run directory: config.yaml, metrics.json, events.jsonl, checkpoints, adapter, plots.

One place decides whether an output folder may be written (`claim`): a folder holding anything is
refused unless the run resumes it or overwrites it, so two runs never mix their config, metrics,
checkpoints, adapters or events. `--overwrite` removes only the files edgeft writes (OWNED).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from edgeft.errors import ConfigError

# What edgeft writes into a run directory (finetune, launch, federate): all `--overwrite` removes.
OWNED = ("config.yaml", "metrics.json", "events.jsonl", "*.png", "adapter", "adapter.tmp", "checkpoint", "logs",
         "ranks", "heartbeats", "spec.json", "spec.attempt*.json", "plan.attempt*.json")

# What `edgeft compress` writes into its output (model) folder.
MODEL_OWNED = ("*.safetensors", "config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
               "chat_template.*", "vocab.*", "merges.txt", "edgeft_compress.json", "compress_report.*", "side_module")


def claim(path: Path | str, *, resume: bool = False, overwrite: bool = False, owned: tuple[str, ...] = OWNED,
          resume_flag: str | None = "--resume", out_flag: str = "--out") -> "RunDir":
    """Check, before any slow work, that `path` may be written; nothing is written or removed yet.

    An empty or missing folder is fine; a non-empty one needs `resume` (carry on in it) or `overwrite`
    (clear edgeft's files from it when the run starts: `RunDir.begin`)."""
    p = Path(path)
    if resume and overwrite:
        raise ConfigError(f"{p}: --resume and --overwrite contradict each other; pick one.")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: the output path is a file, not a folder; pick another --out.")
    present = sorted(x.name for x in p.iterdir()) if p.is_dir() else []
    if present and not (resume or overwrite):
        how = f"{resume_flag} to continue that run, " if resume_flag else ""
        shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
        raise ConfigError(f"{p}: the output folder is not empty ({shown}). Use {how}--overwrite to replace "
                          f"edgeft's files in it, or another {out_flag}.")
    return RunDir(p, create=False, owned=owned, overwrite=overwrite and bool(present))


class RunDir:
    def __init__(self, path: Path | str, create: bool = True, owned: tuple[str, ...] = OWNED,
                 overwrite: bool = False):
        self.path = Path(path)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        self.owned, self.overwrite = owned, overwrite
        self.begun = create  # whether this run has written into the folder (begin, or made by RunDir())

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

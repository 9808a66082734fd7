"""A run directory: config.yaml, metrics.json, events.jsonl, checkpoints, adapter, plots."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml


class RunDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

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

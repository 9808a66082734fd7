"""Helpers shared by command modules: YAML loading, key=value options, progress bars, result tables."""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from edgeft.errors import ConfigError

console = Console()


def load_yaml(path: Path) -> dict:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: config file not found.")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}).") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level.")
    return data


def parse_options(pairs: list[str] | None) -> dict:
    """`--option r=16 --option alpha=32` -> {"r": 16, "alpha": 32} (values parsed as YAML scalars)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--option '{pair}': expected KEY=VALUE.")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def progress_bar(description: str):
    """A rich progress bar; returns (progress context, factory(total) -> advance(loss))."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)

    def factory(total: int):
        task_id = progress.add_task(description, total=total, info="")

        def advance(loss=None, note: str = ""):
            info = " · ".join(x for x in (f"loss {loss:.4f}" if loss is not None else "", note) if x)
            progress.update(task_id, advance=1, info=info)

        return advance

    return progress, factory

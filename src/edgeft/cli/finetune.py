"""`edgeft finetune` and `edgeft eval`: one device, any method, any task."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from edgeft.cli.common import console, load_yaml, parse_options, progress_bar, shared_options

# Your own data: the same options for finetune and eval, declared once.
DATA_OPTIONS = {
    "data_file": (Optional[str], typer.Option(None, help="your own data (jsonl/csv/tsv)")),
    "dev_file": (Optional[str], typer.Option(
        None, help="your own dev data (without it finetune splits off dev_fraction; eval scores all of --data-file)")),
    "task_kind": (Optional[str], typer.Option(None, help="classification|regression|generation (own data)")),
    "text_column": (Optional[str], typer.Option(None, help="text column (classification/regression; default text)")),
    "text2_column": (Optional[str], typer.Option(None, help="second text column of a pair task")),
    "label_column": (Optional[str], typer.Option(None, help="label column (default label)")),
    "instruction_column": (Optional[str], typer.Option(None, help="instruction column (generation; default instruction)")),
    "input_column": (Optional[str], typer.Option(None, help="optional input column (generation; default input)")),
    "response_column": (Optional[str], typer.Option(None, help="response column (generation; default response)")),
}


def data_task_keys(options: dict) -> dict:
    """DATA_OPTIONS values as TaskConfig keys (unset ones left out)."""
    return {("kind" if k == "task_kind" else k): v for k, v in options.items() if v is not None}


def _set(d: dict, key: str, value) -> None:
    if value is not None:
        d[key] = value


def register(app: typer.Typer) -> None:
    @app.command()
    @shared_options(DATA_OPTIONS, into="data_options")
    def finetune(
        model: Optional[str] = typer.Option(None, help="alias (smollm2-135m, minilm-l6), local folder or hub id"),
        task: Optional[str] = typer.Option(None, help="sst2|cola|mrpc|rte|stsb|wnli|dolly|gsm8k|wikitext2|shakespeare or a .jsonl/.csv/.tsv file"),
        method: Optional[str] = typer.Option(None, help="full|lora|prompt|bitfit|... (see `edgeft methods`)"),
        epochs: Optional[int] = None,
        train_samples: Optional[int] = typer.Option(None, help="use N training examples (seeded sample)"),
        dev_samples: Optional[int] = None,
        batch_size: Optional[int] = None,
        grad_accum: Optional[int] = None,
        lr: Optional[float] = None,
        max_length: Optional[int] = None,
        seed: Optional[int] = None,
        head: Optional[str] = typer.Option(None, help="auto|lm|classifier"),
        option: Optional[list[str]] = typer.Option(None, help="method option KEY=VALUE (repeatable), e.g. r=16"),
        device: Optional[str] = None,
        out: Optional[str] = typer.Option(None, help="run directory"),
        config: Optional[Path] = typer.Option(None, help="YAML file with the same keys as FinetuneConfig"),
        resume: bool = typer.Option(False, help="continue from the run directory's checkpoint"),
        overwrite: bool = typer.Option(False, help="replace an earlier run's files in --out"),
        data_options: dict = None,
    ):
        """Fine-tune a backbone on a task with one method, on this machine."""
        from edgeft.train.recipe import config_from_dict, nest_flat_keys, run_finetune

        data = nest_flat_keys(load_yaml(config), str(config)) if config else {}
        t = dict(data.get("task") or {}) if isinstance(data.get("task"), dict) else (
            {"name": data["task"]} if "task" in data else {})
        tr = dict(data.get("train") or {})
        for k, v in dict(name=task, **data_task_keys(data_options), train_samples=train_samples,
                         dev_samples=dev_samples, max_length=max_length, seed=seed).items():
            _set(t, k, v)
        if "name" not in t and t.get("data_file"):
            t["name"] = t["data_file"]
        for k, v in dict(epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, lr=lr, seed=seed,
                         device=device).items():
            _set(tr, k, v)
        data = {**data, "task": t, "train": tr}
        _set(data, "model", model)
        _set(data, "method", method)
        _set(data, "head", head)
        _set(data, "out", out)
        if option:
            data["method_options"] = {**data.get("method_options", {}), **parse_options(option)}
        data["resume"] = resume or data.get("resume", False)
        data["overwrite"] = overwrite or data.get("overwrite", False)
        if "name" not in data["task"]:
            from edgeft.errors import ConfigError

            raise ConfigError("no task given: use --task NAME, --data-file FILE, or 'task:' in the config file.")
        cfg = config_from_dict(data, str(config) if config else "command line")
        progress, factory = progress_bar(f"{cfg.method} on {cfg.task.name}")
        with progress:
            metrics = run_finetune(cfg, progress_factory=factory,
                                   say=lambda m: progress.console.print(f"[yellow]warning:[/] {m}"))
        show_metrics(metrics, cfg.out)

    @app.command(name="eval")
    @shared_options(DATA_OPTIONS, into="data_options")
    def eval_cmd(
        model: str = typer.Option(..., help="alias, local folder or hub id"),
        task: Optional[str] = typer.Option(None, help="task name, or use --data-file for your own file"),
        adapter: Optional[Path] = typer.Option(None, help="an adapter folder written by edgeft finetune"),
        dev_samples: Optional[int] = None,
        max_length: int = 128,
        batch_size: int = 32,
        head: str = "auto",
        seed: int = 0,
        max_new_tokens: int = 64,
        device: str = "auto",
        data_options: dict = None,
    ):
        """Evaluate a backbone (optionally with an adapter) on a task's dev split, or on all of your own file."""
        from edgeft.data import TaskConfig, load_task
        from edgeft.data.features import Featurizer, objective_for
        from edgeft.errors import ConfigError
        from edgeft.train.evaluate import evaluate
        from edgeft.train.loop import resolve_device
        from edgeft.train.recipe import load_for_eval

        keys = data_task_keys(data_options)
        if task and Path(task).suffix and "data_file" not in keys:  # `--task my.jsonl` is your own file too
            keys["data_file"] = task
        if "data_file" in keys:  # your own file: score every row (of --dev-file when given)
            keys.setdefault("dev_file", keys["data_file"])
        name = task or keys.get("data_file")
        if name is None:
            raise ConfigError("no task given: use --task NAME or --data-file FILE.")
        the_task = load_task(TaskConfig(name=name, **keys, dev_samples=dev_samples, max_length=max_length, seed=seed))
        backbone, net = load_for_eval(model, the_task, head, adapter)
        featurizer = Featurizer(the_task, backbone.tokenizer, objective_for(the_task, backbone.head), max_length)
        dev = featurizer.encode(the_task.dev)
        dev_device = resolve_device(device)
        metrics = evaluate(net.to(dev_device), the_task, featurizer, dev, batch_size, dev_device, max_new_tokens)
        console.print(f"{model} on {the_task.name} dev ({len(dev)} examples)", soft_wrap=True)
        table = Table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                table.add_row(k, f"{v:.4f}")
        console.print(table)
        if metrics.get("samples"):
            samples = Table(title="sample generations", show_lines=True)
            samples.add_column("prediction")
            samples.add_column("reference")
            for row in metrics["samples"][:3]:
                samples.add_row(row["prediction"], row["reference"])
            console.print(samples)


def show_metrics(metrics: dict, out: str) -> None:
    table = Table(title=f"{metrics['method']} · {metrics['model']} · {metrics['task']}")
    table.add_column("")
    table.add_column("value", justify="right")
    before = metrics.get("dev_metric_before")
    name = metrics["metric_name"]
    if before is not None:
        table.add_row(f"dev {name} before", f"{before:.4f}")
    if metrics.get("dev_metric") is not None:
        table.add_row(f"dev {name} after", f"{metrics['dev_metric']:.4f}")
    table.add_row("train time (s)", f"{metrics['train_time_s']:.1f}")
    table.add_row("epoch times (s)", ", ".join(f"{t:.1f}" for t in metrics["epoch_times_s"]))
    table.add_row(f"peak memory (MB, {metrics['memory_kind']})", f"{metrics['peak_memory_mb']:.0f}")
    table.add_row("trainable / total params", f"{metrics['trainable_params']:,} / {metrics['total_params']:,}")
    console.print(table)
    console.print(f"run directory: {out}")

"""`edgeft finetune` and `edgeft eval`: one device, any method, any task."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.markup import escape

from edgeft.cli.common import DATA_OPTIONS, console, data_task_keys, progress_bar, shared_options
from edgeft.config import parse_options

def register(app: typer.Typer) -> None:
    @app.command()
    @shared_options(DATA_OPTIONS, into="data_options")
    def finetune(
        model: Optional[str] = typer.Option(None, help="alias (smollm2-135m, minilm-l6), local folder or hub id"),
        task: Optional[str] = typer.Option(None, help="sst2|cola|mrpc|rte|stsb|wnli|dolly|gsm8k|wikitext2|shakespeare or a .jsonl/.csv/.tsv file"),
        method: Optional[str] = typer.Option(None, help="full|lora|prompt|bitfit|... (see `edgeft methods`)"),
        epochs: Optional[int] = typer.Option(None, help="default: the method's own for the backbone (PAC: 10 on a causal LM), else 1"),
        train_samples: Optional[int] = typer.Option(None, help="use N training examples (seeded sample)"),
        dev_samples: Optional[int] = None,
        batch_size: Optional[int] = None,
        grad_accum: Optional[int] = None,
        lr: Optional[float] = None,
        max_length: Optional[int] = typer.Option(None, help="tokens a row is cut to (default: the task's: 384 for "
                                                 "GSM8K, 128 for others)"),
        max_new_tokens: Optional[int] = typer.Option(None, help="tokens generated to score each dev answer of a "
                                                     "generation task (default: the task's: 256 for GSM8K, 64 for "
                                                     "others)"),
        seed: Optional[int] = None,
        head: Optional[str] = typer.Option(None, help="auto|lm|classifier"),
        option: Optional[list[str]] = typer.Option(None, help="method option KEY=VALUE (repeatable), e.g. r=16"),
        device: Optional[str] = None,
        precision: Optional[str] = typer.Option(None, help="fp32 | tf32 (CUDA) | bf16 | fp16 | auto (default; fp32 for now, docs/benchmarks_pac.md#performance says why)"),
        compile: Optional[str] = typer.Option(None, "--compile", help="off (default) | default | reduce-overhead: "
                                              "torch.compile the training step (not PAC; edgeft.train.compiled)"),
        deterministic: bool = typer.Option(False, "--deterministic", help="torch's deterministic kernels (no float "
                                           "atomics whose order the GPU decides); slower where a kernel must change"),
        grad_checkpoint: bool = typer.Option(False, "--grad-checkpoint", help="recompute each block's activations "
                                             "in the backward: far less memory, about one more forward (full, lora, "
                                             "prompt, bitfit)"),
        out: Optional[str] = typer.Option(None, help="run directory"),
        config: Optional[Path] = typer.Option(None, help="YAML file with the same keys as FinetuneConfig"),
        resume: bool = typer.Option(False, help="continue from the run directory's checkpoint"),
        overwrite: bool = typer.Option(False, help="replace an earlier run's files in --out"),
        data_options: dict = None,
    ):
        """Fine-tune a backbone on a task with one method, on this machine."""
        from edgeft.train.recipe import FinetuneConfig, run_finetune

        task_keys = {"name": task, **data_task_keys(data_options), "train_samples": train_samples,
                     "dev_samples": dev_samples, "max_length": max_length, "seed": seed}
        train_keys = {"epochs": epochs, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr, "seed": seed,
                      "device": device, "precision": precision, "compile": compile, "max_new_tokens": max_new_tokens,
                      "deterministic": deterministic or None, "grad_checkpoint": grad_checkpoint or None}
        cfg = FinetuneConfig.load(config, {
            "model": model, "method": method, "head": head, "out": out,
            "method_options": parse_options(option) or None, "resume": resume or None,
            "overwrite": overwrite or None, **{f"task.{k}": v for k, v in task_keys.items()},
            **{f"train.{k}": v for k, v in train_keys.items()}})
        from edgeft.processes import Interrupted

        progress, factory = progress_bar(f"{cfg.method} on {cfg.task.name}")
        with progress:
            try:
                metrics = run_finetune(cfg, progress_factory=factory,
                                       say=lambda m: progress.console.print(f"[yellow]warning:[/] {escape(m)}"))
            except Interrupted as stop:
                progress.console.print(f"[yellow]{stop}[/]: {escape(stopped_where(Path(cfg.out)))}")
                raise typer.Exit(stop.exit_code) from None
        show_metrics(metrics, cfg.out)

    @app.command(name="eval")
    @shared_options(DATA_OPTIONS, into="data_options")
    def eval_cmd(
        model: str = typer.Option(..., help="alias, local folder or hub id"),
        task: Optional[str] = typer.Option(None, help="task name, or use --data-file for your own file"),
        adapter: Optional[Path] = typer.Option(None, help="an adapter folder written by edgeft finetune"),
        dev_samples: Optional[int] = None,
        max_length: Optional[int] = typer.Option(None, help="tokens a row is cut to (default: the adapter's own, "
                                                 "else the task's: 384 for GSM8K, 128 for others)"),
        batch_size: int = 32,
        head: str = "auto",
        seed: int = 0,
        max_new_tokens: Optional[int] = typer.Option(None, help="tokens generated to score each dev answer "
                                                     "(default: the task's: 256 for GSM8K, 64 for others)"),
        device: str = "auto",
        data_options: dict = None,
    ):
        """Evaluate a backbone (optionally with an adapter) on a task's dev split, or on all of your own file."""
        from edgeft.errors import ConfigError
        from edgeft.train.recipe import eval_task_config, run_eval
        from edgeft.train.setup import check_head

        check_head(head)  # before any work, and with --adapter too (where it must name the adapter's own head)
        for option, value, least in (("--batch-size", batch_size, 1), ("--max-new-tokens", max_new_tokens, 1),
                                     ("--dev-samples", dev_samples, 1), ("--max-length", max_length, 8)):
            if value is not None and value < least:
                raise ConfigError(f"{option} {value}: must be at least {least}.")
        if adapter is not None:
            check_not_stopped(adapter)
        if adapter is not None and head != "auto":
            check_adapter_head(adapter, head)
        task_cfg = eval_task_config(task, data_task_keys(data_options), dev_samples, max_length, seed, adapter)
        name, examples, metrics = run_eval(model, task_cfg, adapter, head, batch_size, device, max_new_tokens)
        console.print(escape(f"{model} on {name} dev ({examples} examples)"), soft_wrap=True)
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


def check_not_stopped(adapter: Path) -> None:
    """--adapter of a run that was stopped before its end, which writes the adapter: the error said to re-run the
    fine-tune, where --resume goes on from its checkpoint."""
    import json

    from edgeft.errors import ConfigError

    for run in (adapter, adapter.parent):
        try:
            metrics = json.loads((run / "metrics.json").read_text())
            status = metrics.get("status")
        except (OSError, ValueError, AttributeError):
            continue
        if status not in ("interrupted", "failed") or (run / "adapter" / "edgeft_adapter.json").is_file():
            continue
        if "last_checkpoint" in metrics:  # a launch's (run_summary): stopped or failed, with its own checkpoints
            held = metrics["last_checkpoint"]
            step = f"its last complete checkpoint is step {held['global_step']}" if held else "it has no checkpoint"
            raise ConfigError(f"--adapter {adapter}: the launch in {run} stopped ({status}) before its last "
                              f"epoch, which writes the adapter; {step}: run the same `edgeft launch` with --resume to go on")
        raise ConfigError(f"--adapter {adapter}: the fine-tune in {run} was stopped before its end, which writes "
                          f"the adapter; it stopped {stopped_where(run)}")


def check_adapter_head(adapter: Path, head: str) -> None:
    """An adapter is scored with the head it was trained with: a --head that names another one was silently
    ignored, so the user read the adapter's head's scores as those of the head asked for."""
    from edgeft.errors import ConfigError
    from edgeft.methods.base import read_adapter_note

    trained = read_adapter_note(adapter)["head"]
    if {"lm": "causal_lm", "classifier": "sequence_classification"}[head] != trained:
        raise ConfigError(f"--head {head}: {adapter} was trained with a {trained} head, and an adapter is scored "
                          f"with its own head. Drop --head, or fine-tune with --head {head} for such an adapter.")


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
    console.print(escape(f"run directory: {out}"))


def stopped_where(out: Path) -> str:
    """Where a stopped run stands, from the metrics.json it wrote: the step, and how to go on from it."""
    import json

    try:
        m = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        m = {}
    if m.get("status") != "interrupted":  # none written by this run (an earlier run's metrics.json may be there)
        return f"before training began; {out} is as it was"
    if not m.get("checkpoint"):
        return f"before the first checkpoint; nothing in {out} to resume"
    at = "" if m.get("global_step") is None else f"at step {m['global_step']} of {m['total_steps']}; "
    held = "" if m.get("checkpoint_step") is None else f" (step {m['checkpoint_step']})"
    return (f"{at}{out} keeps the checkpoint{held}, events.jsonl and metrics.json: run the same command with "
            "--resume to go on from there")

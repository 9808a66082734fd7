"""`edgeft launch`: fine-tune one model across a cluster of (emulated or real) devices."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.markup import escape

from edgeft.cli.common import DATA_OPTIONS, console, data_task_keys, shared_options
from edgeft.config import parse_options


def register(app: typer.Typer) -> None:
    @app.command()
    @shared_options(DATA_OPTIONS, into="data_options")
    def launch(
        cluster: Optional[Path] = typer.Option(None, help="cluster YAML (examples/clusters/)"),
        model: Optional[str] = typer.Option(None, help="alias (smollm2-135m, minilm-l6), local folder or hub id"),
        task: Optional[str] = typer.Option(None, help="task name (sst2, ...) or data file"),
        method: Optional[str] = typer.Option(None, help="pac | lora | full | bitfit"),
        head: Optional[str] = typer.Option(None, help="auto|lm|classifier (classification on a causal LM: lm reads "
                                                      "label words, classifier trains a head)"),
        strategy: Optional[str] = typer.Option(None, help="hybrid | deft | split"),
        plan: Optional[Path] = typer.Option(None, help="use this plan JSON instead of planning"),
        epochs: Optional[int] = None,
        batch_size: Optional[int] = None,
        micro_batches: Optional[int] = typer.Option(None, help="hybrid: micro-batches per step"),
        max_steps_per_epoch: Optional[int] = None,
        train_samples: Optional[int] = None,
        dev_samples: Optional[int] = None,
        max_length: Optional[int] = None,
        lr: Optional[float] = None,
        seed: Optional[int] = None,
        precision: Optional[str] = typer.Option(None, help="fp32 | tf32 (CUDA) | bf16 | fp16 | auto (default; fp32 for now, docs/benchmarks_pac.md#performance says why)"),
        grad_sync: Optional[str] = typer.Option(None, help="fp32 | bf16 (default): dtype of the gradients the "
                                                           "devices all-reduce (hybrid, split)"),
        cut: Optional[int] = typer.Option(None, help="split: blocks on the device (default: planned)"),
        devices: Optional[str] = typer.Option(None, help="comma-separated device names to use"),
        option: Optional[list[str]] = typer.Option(None, help="method option KEY=VALUE (repeatable)"),
        link_mode: Optional[str] = typer.Option(None, help="auto | tc | shaper | none"),
        no_compute_emulation: bool = typer.Option(False, "--no-compute-emulation",
                                                  help="run at host speed (no device slowdown)"),
        time_scale: Optional[str] = typer.Option(None, help="time dilation: a number, or 'auto' (the least that "
                                                            "lets this host emulate the whole cluster; docs/runtime.md)"),
        kill_device: Optional[str] = typer.Option(None, help="fault injection NAME:STEP (kill that device)"),
        out: Optional[str] = typer.Option(None, help="run directory"),
        resume: bool = typer.Option(False, help="continue the run in --out from its last complete checkpoint"),
        overwrite: bool = typer.Option(False, help="replace an earlier run's files in --out"),
        config: Optional[Path] = typer.Option(None, help="YAML with the keys of LaunchConfig"),
        data_options: dict = None,
    ):
        """Plan, start one process per device (+ the edge server), train, recover, report."""
        from edgeft.errors import ConfigError
        from edgeft.processes import Interrupted
        from edgeft.runtime.run import LaunchConfig, launch as do_launch

        kill_at = None
        if kill_device:
            if ":" not in kill_device:
                raise ConfigError(f"--kill-device '{kill_device}': expected NAME:STEP")
            name, step = kill_device.rsplit(":", 1)
            if not step.strip().isdigit():
                raise ConfigError(f"--kill-device '{kill_device}': STEP must be a whole number from 0, e.g. {name}:5")
            kill_at = [name, int(step)]
        task_keys = {"name": task, **data_task_keys(data_options), "train_samples": train_samples,
                     "dev_samples": dev_samples, "max_length": max_length, "seed": seed}
        train_keys = {"epochs": epochs, "batch_size": batch_size, "micro_batches": micro_batches, "lr": lr,
                      "seed": seed, "max_steps_per_epoch": max_steps_per_epoch, "precision": precision,
                      "grad_sync": grad_sync}
        cfg = LaunchConfig.load(config, {
            "cluster": str(cluster) if cluster else None, "model": model, "head": head, "method": method,
            "strategy": strategy,
            "plan": str(plan) if plan else None, "out": out, "link_mode": link_mode, "cut": cut,
            "resume": resume or None, "overwrite": overwrite or None,
            "devices": [d.strip() for d in devices.split(",") if d.strip()] if devices else None,
            "method_options": parse_options(option) or None, "emulate_compute": False if no_compute_emulation else None,
            "time_scale": None if time_scale is None else time_scale if time_scale == "auto" else _number(
                "--time-scale", time_scale),
            "kill_device_at_step": kill_at, **{f"task.{k}": v for k, v in task_keys.items()},
            **{f"train.{k}": v for k, v in train_keys.items()}})
        from edgeft.cli.common import progress_bar

        progress, factory = progress_bar(f"{cfg.strategy} · {cfg.method} · {cfg.task['name']}")
        state = {"advance": None, "done": 0, "total": None}

        def tick(beats):
            if state["advance"] is None or not beats:
                return
            step = max(b.get("units", b.get("step", 0)) for b in beats.values())
            hits = [b for b in beats.values() if "cache_hits" in b]  # PAC ranks: activation cache lookups
            note = (f"cache {sum(b['cache_hits'] for b in hits)} hit / {sum(b['cache_misses'] for b in hits)} miss"
                    if hits else "")
            while state["done"] < step:
                state["advance"](None, note)
                state["done"] += 1

        with progress:
            def on_tick(beats):
                """Advance the bar to the furthest step any worker has reported."""
                if not beats:
                    return
                if state["advance"] is None:
                    state["advance"] = factory(state["total"])
                tick(beats)

            try:
                metrics = do_launch(cfg, say=lambda m: progress.console.print(escape(m)), progress=on_tick,
                                    on_start=lambda total: state.update(total=total))
            except Interrupted as stop:  # workers and namespaces are gone already; say where things stand
                progress.console.print(f"[yellow]{stop}[/]: workers stopped; {escape(str(cfg.out))} keeps "
                                       "events.jsonl, "
                                       "metrics.json and the last complete checkpoint (continue with --resume)")
                raise typer.Exit(stop.exit_code) from None
            while state["advance"] and state["total"] and state["done"] < state["total"]:  # the last beat may go unpolled
                state["advance"]()
                state["done"] += 1
        show(metrics, cfg.out)


def show(m: dict, out: str) -> None:
    from edgeft.planner.render import block_range

    plan = Table(title=f"plan · {m['strategy']} · {m['method']} · {m['model']} on {m['task']}")
    plan.add_column("device")
    plan.add_column("role / blocks")
    plan.add_column("slowdown", justify="right")
    plan.add_column("peak MB / budget", justify="right")
    plan.add_column("sent MiB", justify="right")
    plan.add_column("received MiB", justify="right")
    for d in m["per_device"]:
        budget = f"{d['memory_budget_mb']:.0f}" if d["memory_budget_mb"] else "-"
        plan.add_row(d["name"], f"{d['role']} {block_range(d['blocks'])}", f"{d['slowdown']:.1f}x",
                     f"{d['peak_memory_mb']:.0f} / {budget}", f"{d['bytes_sent'] / 2**20:.2f}",
                     f"{d['bytes_received'] / 2**20:.2f}")
    console.print(plan)
    ep = Table(title="time per epoch: measured vs planner prediction")
    for c in ("epoch", "attempt", "predicted s", "measured s", "error", "samples/s"):
        ep.add_column(c, justify="right")
    if m.get("fill"):
        f = m["fill"]
        ep.add_row("cache fill", "-", f"<= {f['predicted_max_s']:.1f}" if f.get("predicted_max_s") else "-",
                   f"{f['measured_s']:.1f}", "-", "-")
    for e in m["epochs"]:  # every attempt's, those before a lost device or a stop (then --resume) too
        ep.add_row(f"{e['epoch']}{' (resumed)' if e['partial'] else ''}", str(e["attempt"]),
                   f"{e['predicted_s']:.1f}" if e["predicted_s"] else "-", f"{e['measured_s']:.1f}",
                   f"{e['error']:+.0%}" if e["error"] is not None else "-",
                   f"{e['samples_per_s']:.2f}" if e["samples_per_s"] else "-")
    console.print(ep)
    for lost in m["lost_devices"]:
        console.print(f"[yellow]lost {escape(lost['device'])} in attempt {lost['attempt']}: {escape(lost['reason'])}; "
                      "re-planned and resumed from the last checkpoint[/]")
    before = m.get("dev_metric_before")
    if before and m["dev_metric"]:
        console.print("dev metrics before training: " + _metric_line(before))
        console.print("dev metrics after training:  " + _metric_line(m["dev_metric"]))
    elif m["dev_metric"]:
        console.print("dev metrics: " + _metric_line(m["dev_metric"]))
    console.print(f"run directory: {escape(str(out))} (adapter/, metrics.json, events.jsonl, runtime.png, logs/, "
                  "ranks/)")


def _metric_line(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def _number(option: str, text: str) -> float:
    from edgeft.errors import ConfigError

    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{option} '{text}': expected a number or 'auto'") from None

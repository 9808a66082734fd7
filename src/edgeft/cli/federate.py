"""`edgeft federate`: federated fine-tuning on Flower (simulation here; apps and TLS certificates for a
real SuperLink + SuperNodes deployment)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.markup import escape

from edgeft.cli.common import DATA_OPTIONS, console, data_task_keys, shared_options
from edgeft.config import parse_options
from edgeft.errors import ConfigError


def _config(config: Optional[Path], overrides: dict, options: Optional[list[str]]):
    from edgeft.federated.config import FederatedConfig

    return FederatedConfig.load(config, {**overrides, "method_options": parse_options(options) or None})


def register(app: typer.Typer) -> None:
    fed = typer.Typer(help="Federated fine-tuning on Flower: FedIT, FedKSeed(-Pro), FwdLLM forward gradients.",
                      invoke_without_command=True, no_args_is_help=False)

    @fed.callback()
    @shared_options(DATA_OPTIONS, into="data_options")
    def federate(
        ctx: typer.Context,
        algorithm: Optional[str] = typer.Option(None, help="fedit | fedkseed | fedkseed-pro | fwdgrad"),
        model: Optional[str] = typer.Option(None, help="alias (smollm2-135m, minilm-l6), folder or hub id"),
        task: Optional[str] = typer.Option(None, help="dolly, sst2, rte, ... or a data file"),
        head: Optional[str] = typer.Option(None, help="auto|lm|classifier (classification on a causal LM: lm reads "
                                                      "label words, classifier trains a head)"),
        clients: Optional[int] = typer.Option(None, help="number of clients (simulated SuperNodes)"),
        clients_per_round: Optional[int] = None,
        min_clients: Optional[int] = typer.Option(None, help="connected clients a round needs, else the run stops "
                                                  "early (default: half of clients-per-round, rounded up)"),
        rounds: Optional[int] = None,
        partition: Optional[str] = typer.Option(None, help="iid | dirichlet | task"),
        alpha: Optional[float] = typer.Option(None, help="Dirichlet concentration"),
        holdout_category: Optional[str] = typer.Option(None, help="category no client gets (FedKSeed's setting)"),
        local_steps: Optional[int] = None,
        batch_size: Optional[int] = None,
        lr: Optional[float] = None,
        round_lr: Optional[str] = typer.Option(None, help="constant | cosine: FedKSeed's step size over the rounds"),
        eps: Optional[float] = typer.Option(None, help="MeZO perturbation scale (FedKSeed)"),
        num_seeds: Optional[int] = typer.Option(None, help="K candidate seeds (FedKSeed)"),
        zo_base: Optional[str] = typer.Option(None, help="what FedKSeed/fwdgrad tune: lora, bitfit, full"),
        zo_params: Optional[list[str]] = typer.Option(None, help="perturb only zo-base parameters whose name contains "
                                                       "this (repeatable), e.g. norm with --zo-base full"),
        perturbations: Optional[int] = typer.Option(None, help="forward gradients per client request (fwdgrad)"),
        var_threshold: Optional[float] = typer.Option(None, help="fwdgrad: ask for more perturbations while the "
                                                      "estimate's noise share (~0: halves agree, ~1: pure noise; "
                                                      "default 0.5) is above this"),
        train_samples: Optional[int] = None,
        eval_samples: Optional[int] = typer.Option(None, help="held-out rows the server evaluates"),
        max_length: Optional[int] = None,
        max_new_tokens: Optional[int] = None,
        eval_every: Optional[int] = None,
        secagg: Optional[bool] = typer.Option(None, "--secagg/--no-secagg", help="Flower SecAgg+ (fedit)"),
        grad_checkpoint: Optional[bool] = typer.Option(None, "--grad-checkpoint", help="fedit: clients recompute "
                                                       "each block's activations in the backward (less memory)"),
        dp: Optional[str] = typer.Option(None, help="none | central (client clipping, server noise) | local (fedit)"),
        dp_clip: Optional[float] = None,
        dp_noise: Optional[float] = None,
        dp_epsilon: Optional[float] = None,
        dropout: Optional[float] = typer.Option(None, help="emulate clients failing mid-round with this probability"),
        round_timeout: Optional[float] = None,
        seed: Optional[int] = None,
        threads: Optional[int] = typer.Option(None, help="torch threads per client process"),
        precision: Optional[str] = typer.Option(None, help="fp32 | tf32 (CUDA) | bf16 | fp16 | auto (default: fp32)"),
        client_cpus: Optional[int] = typer.Option(None, help="CPUs per simulated client (default: all; one at a time)"),
        option: Optional[list[str]] = typer.Option(None, help="LoRA/base method option KEY=VALUE (repeatable)"),
        config: Optional[Path] = typer.Option(None, help="YAML file with FederatedConfig keys"),
        out: Optional[str] = typer.Option(None, help="run directory"),
        overwrite: bool = typer.Option(False, help="replace an earlier run's files in --out"),
        verbose: bool = typer.Option(False, help="show Flower's own log"),
        data_options: dict = None,
    ):
        """Run a federated fine-tuning with Flower's simulation engine on this machine."""
        own = data_task_keys(data_options)  # your own file: --data-file is the task, the rest how to read it
        data_file = own.pop("data_file", None)
        if data_file is not None and task is not None and task != data_file:
            # one of them would be dropped without a word: --task sst2 --data-file F ran on F alone
            raise ConfigError(f"command line: --task {task} and --data-file {data_file} both name the run's data; "
                              "give one (--data-file FILE for a file of your own, --task NAME for a bundled task)")
        task = data_file or task
        ctx.obj = {"config": config, "option": option, "overrides": dict(
            algorithm=algorithm, model=model, task=task, head=head, task_options=own or None, clients=clients,
            clients_per_round=clients_per_round,
            min_clients=min_clients,
            rounds=rounds, partition=partition, alpha=alpha, holdout_category=holdout_category,
            local_steps=local_steps, batch_size=batch_size, lr=lr, round_lr=round_lr, eps=eps, num_seeds=num_seeds,
            zo_base=zo_base,
            zo_params=zo_params or None,
            perturbations=perturbations, var_threshold=var_threshold, train_samples=train_samples,
            eval_samples=eval_samples, max_length=max_length, max_new_tokens=max_new_tokens, eval_every=eval_every,
            secagg=secagg, grad_checkpoint=grad_checkpoint, dp=dp, dp_clip=dp_clip, dp_noise=dp_noise,
            dp_epsilon=dp_epsilon, dropout=dropout,
            round_timeout=round_timeout, seed=seed, threads=threads, precision=precision, out=out)}
        if ctx.invoked_subcommand is not None:
            return
        cfg = _config(config, ctx.obj["overrides"], option)
        from edgeft.federated.simulation import RUN_FILES, check_inputs
        from edgeft.train.rundir import claim

        # never mix two runs' files
        with claim(cfg.out, overwrite=overwrite, resume_flag=None, owned=RUN_FILES) as run:
            # before the progress bar and Ray, and before --overwrite clears the earlier run's files (a run that
            # cannot start leaves them as they were)
            check_inputs(cfg)
            if run.overwrite:
                run.clear()
            _simulate(cfg, client_cpus, verbose)

    @fed.command("app")
    def app_cmd(ctx: typer.Context,
                dest: Path = typer.Argument(..., help="folder to write the Flower App (pyproject.toml) into")):
        """Write a Flower App for `flwr run` against a real SuperLink (options as for `edgeft federate`)."""
        from edgeft.federated.deploy import write_app

        obj = ctx.obj or {}
        cfg = _config(obj.get("config"), obj.get("overrides", {}), obj.get("option"))
        path = write_app(dest, cfg)
        console.print(escape(f"Flower App written to {path}. Run it with: flwr run {dest} <superlink-connection>"))

    @fed.command("certs")
    def certs_cmd(dest: Path = typer.Argument(..., help="folder for ca.crt, server.pem, server.key"),
                  host: list[str] = typer.Option(["127.0.0.1", "localhost"], help="names/IPs the SuperLink answers on"),
                  days: int = 30,
                  overwrite: bool = typer.Option(False, help="replace the CA and certificates already in DEST"),
                  nodes: int = typer.Option(0, help="also write N SuperNode authentication key pairs "
                                                    "(node-I.key/.pub for partition-id I) and supernodes.csv")):
        """Create a private CA and a SuperLink server certificate for TLS (see docs/federated.md)."""
        from edgeft.federated.deploy import write_credentials

        paths = write_credentials(dest, host, days, nodes, overwrite)
        for name, p in paths.items():
            console.print(escape(f"{name}: {p}"))

    @fed.command("supernode", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def supernode_cmd(ctx: typer.Context):
        """Run flower-supernode with these arguments (see flower-supernode --help) once a TLS handshake shows
        that its --insecure / --root-certificates fit the SuperLink (Flower would retry a mismatch forever)."""
        from edgeft.federated.deploy import run_supernode

        run_supernode(ctx.args)

    app.add_typer(fed, name="federate")


def _simulate(cfg, client_cpus, verbose) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgeft.federated.simulation import run_federated
    from edgeft.processes import Interrupted

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
    with progress:
        bar = progress.add_task(f"{cfg.algorithm} rounds", total=cfg.rounds, info="")

        def on_round(rnd, row):
            metrics = row.get("metrics") or {}
            info = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" not in k and k != "eval-s")
            if rnd > 0:
                progress.update(bar, advance=1, info=info)
            else:
                progress.update(bar, info=f"before: {info}")

        def clients(done, total, failed):  # within a round: each client's reply as it comes
            progress.update(bar, info=f"round {int(progress.tasks[0].completed) + 1}: {done}/{total} clients replied"
                                      + (f" ({failed} failed)" if failed else ""))

        on_round.clients = clients
        try:
            summary = run_federated(cfg, progress=on_round, client_cpus=client_cpus, verbose=verbose)
        except (KeyboardInterrupt, Interrupted) as stop:
            progress.stop()
            name = getattr(stop, "name", "SIGINT")
            console.print(f"[yellow]stopped by {name}[/]{_kept(cfg, int(progress.tasks[0].completed))}")
            raise typer.Exit(getattr(stop, "exit_code", 130)) from None
    show(summary, cfg.out)


def _kept(cfg, done: int) -> str:
    """What a stopped run left: a stop before the first round (Ray's start, the clients' set-up) wrote no model and
    no metrics, though the message said they were in --out (a folder that might not even exist)."""
    out = Path(cfg.out)
    if (out / "metrics.json").is_file():
        return (f" after {done} of {cfg.rounds} rounds; the model of the rounds done and their metrics are in "
                f"{escape(str(out))} (adapter/, metrics.json, events.jsonl)")
    left = f" ({escape(str(out))} holds its config.yaml and events.jsonl)" if (out / "config.yaml").is_file() else ""
    return f" before its first round: no model or metrics were written{left}"


def show(summary: dict, out: str) -> None:
    name = summary["metric_name"]
    table = Table(title=f"{summary['algorithm']} · {summary['model']} · {summary['task']}")
    table.add_column("")
    table.add_column("value", justify="right")
    for label, key in ((f"held-out {name} before", "metric_before"), (f"held-out {name} after", "metric_after")):
        if summary.get(key) is not None:
            table.add_row(label, f"{summary[key]:.4f}")
    table.add_row("upload per client per round (bytes, max)", f"{summary['bytes_up_per_client_round']['max']:,}")
    table.add_row("download per client per round (bytes, max)", f"{summary['bytes_down_per_client_round']['max']:,}")
    table.add_row("client compute per round (s, mean)", f"{summary['client_compute_s_mean']:.1f}")
    table.add_row("client peak memory (MB, max)", f"{summary['client_peak_memory_mb_max']:.0f}")
    table.add_row("dropped client-rounds", str(summary["dropped_clients"]))
    if "replay_bit_exact" in summary:
        table.add_row("replayed model = server model (bit for bit)", str(summary["replay_bit_exact"]))
    table.add_row("wall time (s)", f"{summary['total_wall_s']:.0f}")
    console.print(table)
    console.print(f"run directory: {escape(str(out))}  (metrics.json, events.jsonl, federated.png, adapter/)")

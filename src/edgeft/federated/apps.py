"""The Flower ServerApp and ClientApp of edgeft, for the simulation engine and for real deployments.

`build_server_app(cfg)` / `build_client_app(cfg)` bind a configuration (simulation); the module-level
`server_app` and `client_app` read theirs from Flower's run_config (deployment: the Flower App's
pyproject.toml points at `edgeft.federated.apps:server_app` and `edgeft.federated.apps:client_app`).

Privacy comes from Flower's own mods, chosen per run: SecAgg+ (`secaggplus_mod`), central DP with
client-side clipping (`fixedclipping_mod`) and local DP (`LocalDpMod`).
"""

from __future__ import annotations

import json
import time
from typing import Callable, Optional

from flwr.app import Context, Message, MessageType, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

from edgeft.federated.accounting import AccountingGrid, Interrupted, Ledger
from edgeft.federated.config import FederatedConfig
from edgeft.federated.round_summary import plot, summarize
from edgeft.federated.session import EmulatedDropout, data_for, local_examples, node_partition, setup_for
from edgeft.federated.server import FederationError, RoundLog, discover
from edgeft.methods.base import save_adapter
from edgeft.train.rundir import RunDir

def _config(fixed: Optional[FederatedConfig], context: Context) -> FederatedConfig:
    return fixed if fixed is not None else FederatedConfig.from_run_config(context.run_config)


# -- server ----------------------------------------------------------------------------------------


def run_server(cfg: FederatedConfig, grid: Grid, context: Context, progress: Optional[Callable] = None,
               on_timeout: Optional[Callable] = None) -> dict:
    """The whole federated run seen from the server; writes the run directory and returns its summary.
    on_timeout: see AccountingGrid (the simulation frees the clients a round's deadline left behind)."""
    run = RunDir(cfg.out)
    run.write_config(cfg.model_dump())
    ledger = Ledger(run)
    agrid = AccountingGrid(grid, ledger, on_reply=getattr(progress, "clients", None), on_timeout=on_timeout)
    t0 = time.perf_counter()
    run.event("start", algorithm=cfg.algorithm, model=cfg.model, task=cfg.task, clients=cfg.clients,
              clients_per_round=cfg.clients_per_round, rounds=cfg.rounds)
    setup = setup_for(cfg, "server")
    setup.reset_to_w0()  # a process may serve several runs (tests, notebooks): each starts from w0
    nodes = discover(agrid, cfg, ledger)
    log = RoundLog(cfg, run, progress)
    try:
        extra = cfg.entry.server()(agrid, cfg, ledger, setup, nodes, log, context)
    except (FederationError, Interrupted) as err:  # no client completed a round, or Ctrl-C: keep the rounds done
        log.stop(ledger.round, err)
        extra = {}
    save_adapter(run.adapter_dir, setup.method, setup.model, setup.backbone, setup.task,
                 {"max_length": cfg.max_length, "federated": cfg.algorithm})
    summary = summarize(cfg, ledger, log.rows, setup.task.metric_name, extra)
    summary["total_wall_s"] = time.perf_counter() - t0
    summary["partition_sizes"] = [len(p) for p in setup.parts]
    summary["stopped"] = log.stopped
    (run.path / "ledger.json").write_text(json.dumps(ledger.as_records(), indent=1))
    run.write_metrics(summary)
    plot(summary, run.path / "federated.png")
    run.event("done", metric_before=summary["metric_before"], metric_after=summary["metric_after"])
    if log.stopped:
        raise FederationError(f"stopped before round {log.stopped['round']} of {cfg.rounds}: {log.stopped['reason']}. "
                              f"The {log.stopped['rounds_done']} round(s) done are in {run.path}")
    return summary


def build_server_app(fixed: Optional[FederatedConfig] = None, progress: Optional[Callable] = None,
                     on_end: Optional[Callable[[], None]] = None, on_timeout: Optional[Callable] = None) -> ServerApp:
    """on_end(): called when the server's work is over, however it ended (the simulation frees stuck clients)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_server(_config(fixed, context), grid, context, progress, on_timeout)
        finally:
            if on_end is not None:
                on_end()

    return app


# -- client ----------------------------------------------------------------------------------------


def privacy_mod(fixed: Optional[FederatedConfig]):
    """Route TRAIN messages through the Flower privacy mods this run asks for (none by default)."""

    def mod(msg: Message, context: Context, call_next):
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        cfg = _config(fixed, context)
        chain = call_next
        if cfg.dp == "central":
            from flwr.clientapp.mod import fixedclipping_mod

            chain = _bind(fixedclipping_mod, chain)
        elif cfg.dp == "local":
            if cfg.secagg:  # SecAgg+ speaks Flower's legacy FitIns/FitRes: the legacy form of the same mod
                from flwr.client.mod import LocalDpMod
            else:
                from flwr.clientapp.mod import LocalDpMod
            chain = _bind(LocalDpMod(cfg.dp_clip, cfg.dp_clip, cfg.dp_epsilon, cfg.dp_delta), chain)
        if cfg.secagg:
            from flwr.client.mod import secaggplus_mod

            chain = _bind(secaggplus_mod, chain)
        return chain(msg, context)

    return mod


def _bind(mod, call_next):
    return lambda msg, context: mod(msg, context, call_next)


def error_reply(msg: Message, reason: str) -> Message:
    """A client's answer that it did not do the work, without raising (Flower logs a traceback for that)."""
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


def dropout_mod(msg: Message, context: Context, call_next) -> Message:
    """An emulated dropout (--dropout) is a planned event: one error reply the server logs in a line; a real
    client error still raises, and Flower shows its traceback."""
    try:
        return call_next(msg, context)
    except EmulatedDropout as lost:
        return error_reply(msg, str(lost))


def build_client_app(fixed: Optional[FederatedConfig] = None, board=None) -> ClientApp:
    """board: the simulation's `simulation.Board` (skips messages whose round is over, notes those started)."""
    mods = [dropout_mod, privacy_mod(fixed)]
    if board is not None:
        mods.insert(0, board.mod)
    app = ClientApp(mods=mods)

    @app.query()
    def hello(msg: Message, context: Context) -> Message:
        cfg = _config(fixed, context)
        pid = node_partition(context)
        task, parts = data_for(cfg)
        own = context.node_config.get("data-file")
        size = len(local_examples(str(own), task)) if own else (len(parts[pid]) if 0 <= pid < len(parts) else 0)
        return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid, "num-examples": size})}),
                       reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = _config(fixed, context)
        pid = node_partition(context)
        setup = setup_for(cfg, "client")
        if context.node_config.get("data-file"):
            setup.use_local_file(pid, str(context.node_config["data-file"]))
        return cfg.entry.client()(setup, cfg, pid, msg)

    return app


# Deployment entry points (see docs/federated.md): configuration from the run_config.
server_app = build_server_app()
client_app = build_client_app()

"""Server-side pieces every algorithm shares: finding the clients, sampling them, evaluating the global model.

The ServerApp first asks every connected SuperNode which data partition it holds (a `query` message);
after that each round samples partitions with a seeded generator, so a run is repeatable although
Flower gives nodes random ids.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from edgeft.errors import EdgeftError
from edgeft.federated.accounting import AccountingGrid, Ledger, error_summary
from edgeft.federated.config import FederatedConfig
from edgeft.federated.runtime import Setup, seeded_rng
from edgeft.train.evaluate import evaluate


class FederationError(EdgeftError):
    """The federation cannot go on (no clients, or every client of a round failed)."""


def discover(grid: AccountingGrid, cfg: FederatedConfig, ledger: Ledger, wait_s: float = 300.0) -> dict[int, int]:
    """partition-id -> node id of every client that answers; waits for `cfg.clients` nodes to connect."""
    deadline = time.monotonic() + wait_s
    while len(list(grid.get_node_ids())) < cfg.clients and time.monotonic() < deadline:
        time.sleep(0.5)
    nodes = sorted(int(n) for n in grid.get_node_ids())
    if len(nodes) < cfg.clients_per_round:
        raise FederationError(f"only {len(nodes)} SuperNode(s) connected after {wait_s:.0f} s; "
                              f"{cfg.clients_per_round} are needed per round")
    ledger.phase = "setup"
    msgs = [Message(RecordDict({"config": ConfigRecord({"ask": "partition"})}), dst_node_id=n,
                    message_type=MessageType.QUERY) for n in nodes]
    replies = grid.send_and_receive(msgs, timeout=cfg.round_timeout)
    by_pid: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for m in replies:
        if m.has_error():
            continue
        metrics = m.content.metric_records["metrics"]
        pid, node = int(metrics["partition-id"]), grid.node_of(m)
        if pid in by_pid:
            raise FederationError(f"two SuperNodes ({by_pid[pid]} and {node}) hold partition-id {pid}; give each "
                                  "its own --node-config 'partition-id=N'")
        by_pid[pid] = node
        sizes[pid] = int(metrics["num-examples"])
        ledger.partition_of[node] = pid
    if len(by_pid) < cfg.clients_per_round:
        raise FederationError(f"only {len(by_pid)} client(s) answered; {cfg.clients_per_round} are needed per round")
    if ledger.run:
        ledger.run.event("clients", partitions=sorted(by_pid), sizes=sizes, missing=sorted(set(range(cfg.clients)) -
                                                                                           set(by_pid)))
    return by_pid


def sample(grid: AccountingGrid, cfg: FederatedConfig, nodes: dict[int, int], rnd: int) -> list[int]:
    """Node ids of this round's clients: a seeded draw among partitions whose node is still connected."""
    alive = set(int(n) for n in grid.get_node_ids())
    pids = sorted(pid for pid, node in nodes.items() if node in alive)
    if len(pids) < cfg.clients_per_round:
        raise FederationError(f"round {rnd}: {len(pids)} client(s) still connected, {cfg.clients_per_round} needed")
    chosen = seeded_rng(cfg.seed, rnd, 11).choice(pids, size=cfg.clients_per_round, replace=False)
    return [nodes[int(p)] for p in sorted(chosen)]


def successful(replies, rnd: int) -> list[Message]:
    """Replies with content; if a round has none, stop with the clients' own error."""
    replies = list(replies)
    ok = [m for m in replies if not m.has_error()]
    if not ok:
        reasons = sorted({error_summary(m.error.reason) for m in replies if m.has_error()})
        raise FederationError(f"round {rnd}: no client completed its work"
                              + (f"; client error: {reasons[0]}" if reasons else " (no replies in time)"))
    return ok


def global_eval(setup: Setup, cfg: FederatedConfig) -> dict:
    """The task's metrics for the server's current model on the held-out rows (per category when known)."""
    feats = setup.dev_features()
    task, model = setup.task, setup.model
    name = task.metric_name
    categories = [ex.get("category") for ex in task.dev]
    if task.kind != "generation" or None in categories:
        out = evaluate(model, task, setup.featurizer, feats, cfg.eval_batch_size, "cpu", cfg.max_new_tokens)
        return {k: v for k, v in out.items() if isinstance(v, (int, float))}
    out, total = {}, 0.0
    for cat in sorted(set(categories)):
        sub = [f for f, c in zip(feats, categories) if c == cat]
        res = evaluate(model, task, setup.featurizer, sub, cfg.eval_batch_size, "cpu", cfg.max_new_tokens)
        out[f"{name}/{cat}"] = res[name]
        total += res[name] * len(sub)
    out[name] = total / len(feats)
    return out


class RoundLog:
    """Per-round record the report is built from; also drives the optional progress callback."""

    def __init__(self, cfg: FederatedConfig, run, progress: Optional[Callable] = None):
        self.cfg, self.run, self.progress = cfg, run, progress
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()

    def evaluate(self, setup: Setup, rnd: int, force: bool = False) -> Optional[dict]:
        if not self.cfg.evaluate or not (force or rnd == 0 or rnd % self.cfg.eval_every == 0 or rnd == self.cfg.rounds):
            return None
        t0 = time.perf_counter()
        metrics = global_eval(setup, self.cfg)
        metrics["eval-s"] = time.perf_counter() - t0
        if self.run:
            self.run.event("eval", round=rnd, metrics=metrics)
        return metrics

    def end_round(self, rnd: int, seconds: float, metrics: Optional[dict], **extra) -> None:
        row = {"round": rnd, "seconds": seconds, "metrics": metrics or {}, **extra}
        self.rows.append(row)
        if self.run:
            self.run.event("round_end", **row)
        if self.progress:
            self.progress(rnd, row)

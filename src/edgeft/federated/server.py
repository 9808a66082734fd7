"""Server-side pieces every algorithm shares: finding the clients, sampling them, evaluating the global model.

SuperNodes come and go (a device loses power, restarts and registers again, under a new node id unless
node authentication fixes it). A `Roster` therefore asks every node it has not seen yet which data
partition it holds (a `query` message) before each round; a node may claim a partition whose previous
holder is no longer connected. Each round then samples, with a seeded generator, among the partitions
whose node is connected, so a run is repeatable although Flower gives nodes random ids; with fewer than
`min_clients` connected the run stops early and keeps the rounds done.
"""

from __future__ import annotations

import time
from logging import WARN
from typing import Callable, Optional

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import log

from edgeft.errors import EdgeftError
from edgeft.federated.accounting import AccountingGrid, Ledger, error_summary
from edgeft.federated.config import FederatedConfig
from edgeft.federated.session import Setup, seeded_rng
from edgeft.train.evaluate import evaluate


class FederationError(EdgeftError):
    """The federation cannot go on (no clients, or every client of a round failed)."""


class TooFewClients(FederationError):
    """Fewer than min_clients SuperNodes are connected: the run stops after the rounds done."""


SETUP_TIMEOUT_S = 120.0  # the first partition query's wait: client processes start and load the model then


class Roster:
    """partition-id -> node id of the connected clients, refreshed before every round."""

    def __init__(self, grid: AccountingGrid, cfg: FederatedConfig, ledger: Ledger):
        self.grid, self.cfg, self.ledger = grid, cfg, ledger
        self.holder: dict[int, int] = {}   # partition -> node that holds it now
        self.claims: dict[int, tuple[int, int]] = {}  # node -> (partition it reported, its training rows)
        self.sizes: dict[int, int] = {}    # partition -> training rows of its holder
        self.refused: set[int] = set()     # nodes already refused (one event each)

    def _refuse(self, rnd: int, node: int, pid: int, reason: str) -> None:
        if node not in self.refused:
            log(WARN, "SuperNode %s refused: %s", node, reason)
            if self.ledger.run:
                self.ledger.run.event("client_refused", round=rnd, node=node, partition=pid, reason=reason)
        self.refused.add(node)

    def _ask(self, nodes: list[int], rnd: int) -> None:
        """Query nodes for their partition; booked as set-up traffic (round 0), whatever the round. The first query
        also starts each client's process (its model and data load): it gets at least SETUP_TIMEOUT_S, as a short
        --round-timeout (2 s) stopped the run before its first round ('only 0 client(s) answered')."""
        saved = self.ledger.round, self.ledger.phase
        self.ledger.round, self.ledger.phase = 0, "setup"
        try:
            msgs = [Message(RecordDict({"config": ConfigRecord({"ask": "partition"})}), dst_node_id=n,
                            message_type=MessageType.QUERY) for n in nodes]
            timeout = self.cfg.round_timeout if rnd > 0 else max(self.cfg.round_timeout, SETUP_TIMEOUT_S)
            replies = self.grid.send_and_receive(msgs, timeout=timeout)
        finally:
            self.ledger.round, self.ledger.phase = saved
        for m in replies:
            if not m.has_error():
                metrics = m.content.metric_records["metrics"]
                self.claims[self.grid.node_of(m)] = (int(metrics["partition-id"]), int(metrics["num-examples"]))

    def refresh(self, rnd: int) -> list[int]:
        """Ask newly connected nodes, let them claim free partitions; the partitions connected now."""
        alive = set(int(n) for n in self.grid.get_node_ids())
        new = sorted(alive - set(self.claims))
        if new:
            self._ask(new, rnd)
        for node in sorted(alive & set(self.claims)):
            pid, size = self.claims[node]
            held_by = self.holder.get(pid)
            if held_by == node:
                continue
            if not 0 <= pid < self.cfg.clients:
                self._refuse(rnd, node, pid, f"partition-id {pid} is outside 0..{self.cfg.clients - 1} (clients="
                                             f"{self.cfg.clients}); start it with --node-config 'partition-id=N'")
            elif held_by is not None and held_by in alive:
                self._refuse(rnd, node, pid, f"duplicate partition-id {pid}: SuperNode {held_by} holds it and is "
                                             "connected; give each SuperNode its own --node-config 'partition-id=N'")
            else:
                self.holder[pid], self.sizes[pid] = node, size
                self.ledger.partition_of[node] = pid
                self.refused.discard(node)
                if held_by is not None or rnd > 0:
                    if self.ledger.run:
                        self.ledger.run.event("client_joined", round=rnd, node=node, partition=pid,
                                              previous_node=held_by)
        return sorted(pid for pid, node in self.holder.items() if node in alive)

    def node(self, pid: int) -> int:
        return self.holder[pid]


def discover(grid: AccountingGrid, cfg: FederatedConfig, ledger: Ledger, wait_s: float = 300.0) -> Roster:
    """The first roster: waits (up to min(wait_s, round_timeout)) for `cfg.clients` nodes to connect."""
    wait_s = min(wait_s, cfg.round_timeout)
    deadline = time.monotonic() + wait_s
    while len(list(grid.get_node_ids())) < cfg.clients and time.monotonic() < deadline:
        time.sleep(0.5)
    roster = Roster(grid, cfg, ledger)
    pids = roster.refresh(0)
    if len(pids) < cfg.required_clients:
        raise FederationError(f"only {len(pids)} client(s) answered after {wait_s:.0f} s; a round needs "
                              f"min_clients={cfg.required_clients} (clients_per_round={cfg.clients_per_round})")
    if ledger.run:
        ledger.run.event("clients", partitions=pids, sizes={p: roster.sizes[p] for p in pids},
                         missing=sorted(set(range(cfg.clients)) - set(pids)))
    return roster


def sample(grid: AccountingGrid, cfg: FederatedConfig, roster: Roster, rnd: int) -> list[int]:
    """Node ids of this round's clients: a seeded draw among the partitions connected now.

    Draws clients_per_round of them, or all when fewer are connected; below min_clients: TooFewClients."""
    pids = roster.refresh(rnd)
    if len(pids) < cfg.required_clients:
        raise TooFewClients(f"round {rnd}: {len(pids)} client(s) connected (partitions {pids}), min_clients="
                            f"{cfg.required_clients} needed")
    return [roster.node(p) for p in draw_clients(cfg, rnd, pids)]


def draw_clients(cfg: FederatedConfig, rnd: int, pids, size: Optional[int] = None) -> list[int]:
    """Round `rnd`'s partitions, sorted: a seeded draw without replacement of `size` (default: clients_per_round,
    or all when fewer) among `pids`. The one rule of every server loop and of the in-process simulations."""
    pids = list(pids)
    size = min(cfg.clients_per_round, len(pids)) if size is None else size
    return sorted(int(p) for p in seeded_rng(cfg.seed, rnd, 11).choice(pids, size=size, replace=False))


def successful(replies, rnd: int, ledger: Optional[Ledger] = None) -> list[Message]:
    """Replies with content; if a round has none, stop saying what became of each client (its error reply, or no
    reply within round_timeout) so that a dead device and a slow one can be told apart."""
    replies = list(replies)
    ok = [m for m in replies if not m.has_error()]
    if not ok:
        drops = [r for r in ledger.round_rows(rnd) if r.status == "dropped"] if ledger is not None else []
        if drops:
            why = "; ".join(f"partition {r.partition} (node {r.node}): {r.reason}" for r in drops)
        else:
            reasons = sorted({error_summary(m.error.reason) for m in replies if m.has_error()})
            why = f"client error: {reasons[0]}" if reasons else "no replies in time"
        raise FederationError(f"round {rnd}: no client completed its work; {why}")
    return ok


def global_eval(setup: Setup, cfg: FederatedConfig) -> dict:
    """The task's metrics for the server's current model on the held-out rows (per category when known)."""
    feats = setup.dev_features()
    task, model = setup.task, setup.model
    device = next(model.parameters()).device  # the CPU in every Flower run; a GPU in bench/fed_kseed_sweep.py
    name = task.metric_name
    categories = [ex.get("category") for ex in task.dev]
    if task.kind != "generation" or None in categories:
        out = evaluate(model, task, setup.featurizer, feats, cfg.eval_batch_size, device, cfg.max_new_tokens)
        return {k: v for k, v in out.items() if isinstance(v, (int, float))}
    out, total = {}, 0.0
    for cat in sorted(set(categories)):
        sub = [f for f, c in zip(feats, categories) if c == cat]
        res = evaluate(model, task, setup.featurizer, sub, cfg.eval_batch_size, device, cfg.max_new_tokens)
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
        self.stopped: Optional[dict] = None  # set when the run ends before cfg.rounds

    def stop(self, rnd: int, err: Exception) -> None:
        """Record that round `rnd` could not run (the rounds before it are kept)."""
        done = max((r["round"] for r in self.rows), default=0)
        self.stopped = {"round": rnd, "rounds_done": done, "reason": str(err)}
        log(WARN, "stopping early: %s", err)
        if self.run:
            self.run.event("stopped", **self.stopped)

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

"""Forward-gradient federated tuning (FwdLLM, Xu et al., USENIX ATC'24), with variance-controlled rounds.

Each sampled client receives the global trainable parameters (LoRA/BitFit, as FwdLLM tunes PEFT
modules) and the previous global update, computes `perturbations` forward gradients on one local batch
(directions picked by cosine similarity to that update; all of them through one vmapped torch.func.jvp,
`methods.fwdgrad.batched_forward_gradient`) and uploads their sum. A request for more perturbations
draws a new batch. The server pools
the sums and checks their spread as FwdLLM does, on one tensor, by comparing the mean of the first half
of the per-perturbation terms with the mean of the second half. FwdLLM's code (forward_training/utils/
fwdgrad_utils.py, calculate_var) takes the absolute mean of (first - second)^2 / 2, whose size follows the
gradient's scale (with SmolLM2's loss it is ~1 at any affordable count, against FwdLLM's 0.1-0.2); here it
is the noise share of the pooled mean (`relative_spread`: ~0 when the halves agree, ~1 when they are
uncorrelated). Above `var_threshold` the server asks the same clients for more perturbations at the same
parameters (up to `max_extra_requests` times) before stepping: theta -= lr * mean forward gradient.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from edgeft.federated.accounting import AccountingGrid, Ledger
from edgeft.federated.config import FederatedConfig
from edgeft.federated.session import Setup, Work, maybe_drop
from edgeft.federated.server import Roster, RoundLog, TooFewClients, sample, successful
from edgeft.methods.fwdgrad import batched_forward_gradient, relative_spread


def check_index(setup: Setup) -> int:
    """The tensor whose spread decides (FwdLLM fixes one layer): the last trainable tensor."""
    return len(setup.params) - 1


# -- client ----------------------------------------------------------------------------------------


def handle_train(setup: Setup, cfg: FederatedConfig, pid: int, msg: Message) -> Message:
    conf = msg.content["config"]
    rnd, attempt, num = int(conf["server-round"]), int(conf["attempt"]), int(conf["perturbations"])
    with Work(setup.device) as work:
        setup.load_arrays(msg.content["arrays"])
        previous = msg.content["previous"]
        reference = None
        if int(conf["has-previous"]):
            reference = [torch.from_numpy(previous[n].numpy()) for n in setup.names]
        batch = setup.batches(pid, rnd, 1, int(conf["batch-size"]), salt=attempt)[0]
        gen = torch.Generator().manual_seed(int(cfg.seed * 1_000_003 + rnd * 1009 + pid * 31 + attempt) & 0x7FFFFFFF)
        maybe_drop(cfg, rnd, pid)
        setup.model.eval()
        est = batched_forward_gradient(setup.model, list(zip(setup.names, setup.params)), setup.loss_fn, batch, num,
                                       gen, reference, int(conf["candidates"]), check_index=check_index(setup))
    half = len(est.check) // 2
    arrays = {n: Array(g.cpu().numpy()) for n, g in zip(setup.names, est.grad)}
    check = {"first": Array(torch.stack(est.check[:half]).sum(0).cpu().numpy()),
             "second": Array(torch.stack(est.check[half:]).sum(0).cpu().numpy())}
    metrics = {"num-examples": len(setup.client_features(pid)), "partition-id": pid, "count": est.count,
               "first-count": half, "train-loss": float(np.mean(est.losses)), **work.metrics()}
    content = RecordDict({"grad": ArrayRecord(arrays), "check": ArrayRecord(check), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


# -- server ----------------------------------------------------------------------------------------


class Pooled:
    """Sums of forward gradients (and of the check tensor's two halves) over clients and requests."""

    def __init__(self, setup: Setup):
        self.grad = [np.zeros(p.shape, dtype=np.float64) for p in setup.params]
        self.count = 0
        self.halves = [0.0, 0.0]
        self.half_counts = [0, 0]

    def add(self, setup: Setup, reply: Message) -> None:
        for i, n in enumerate(setup.names):
            self.grad[i] += reply.content["grad"][n].numpy()
        metrics = reply.content["metrics"]
        self.count += int(metrics["count"])
        first = int(metrics["first-count"])
        self.halves[0] = self.halves[0] + reply.content["check"]["first"].numpy().astype(np.float64)
        self.halves[1] = self.halves[1] + reply.content["check"]["second"].numpy().astype(np.float64)
        self.half_counts[0] += first
        self.half_counts[1] += int(metrics["count"]) - first

    def variance(self) -> float:
        """FwdLLM's halves check on the pooled halves, as the noise share of the pooled mean (scale-free)."""
        if min(self.half_counts) == 0:
            return float("inf")
        a, b = (torch.from_numpy(np.asarray(h / n)) for h, n in zip(self.halves, self.half_counts))
        return relative_spread(a, b, *self.half_counts)

    def mean(self) -> list[np.ndarray]:
        return [g / self.count for g in self.grad]


def run_server(grid: AccountingGrid, cfg: FederatedConfig, ledger: Ledger, setup: Setup, nodes: Roster,
               log: RoundLog, context=None) -> dict:
    previous = [np.zeros(p.shape, dtype=np.float32) for p in setup.params]
    has_previous = 0
    log.end_round(0, 0.0, log.evaluate(setup, 0))
    var_log = []
    for rnd in range(1, cfg.rounds + 1):
        t0 = time.perf_counter()
        ledger.round, ledger.phase = rnd, "train"
        try:
            targets = sample(grid, cfg, nodes, rnd)
        except TooFewClients as err:
            log.stop(rnd, err)
            break
        pooled = Pooled(setup)
        attempt = 0
        while True:
            conf = ConfigRecord({"server-round": rnd, "attempt": attempt, "perturbations": cfg.perturbations,
                                 "candidates": cfg.candidates, "batch-size": cfg.batch_size,
                                 "has-previous": has_previous})
            content = RecordDict({"arrays": setup.arrays(), "config": conf,
                                  "previous": ArrayRecord({n: Array(v) for n, v in zip(setup.names, previous)})})
            msgs = [Message(content, dst_node_id=n, message_type=MessageType.TRAIN, group_id=f"{rnd}.{attempt}")
                    for n in targets]
            replies = successful(grid.send_and_receive(msgs, timeout=cfg.round_timeout), rnd, grid.ledger)
            for m in replies:
                pooled.add(setup, m)
            var = pooled.variance()
            more = var > cfg.var_threshold and attempt < cfg.max_extra_requests
            var_log.append({"round": rnd, "attempt": attempt, "variance": var, "perturbations": pooled.count,
                            "more": more})
            if log.run:
                log.run.event("variance_check", round=rnd, attempt=attempt, variance=var,
                              threshold=cfg.var_threshold, perturbations=pooled.count, ask_more=more)
            if not more:
                break
            attempt += 1
            ledger.phase = "train-more"
            targets = [grid.node_of(m) for m in replies]
        step = pooled.mean()
        with torch.no_grad():
            for p, g in zip(setup.params, step):
                p.add_(torch.from_numpy(g).to(p.device, p.dtype), alpha=-cfg.learning_rate)
        previous = [g.astype(np.float32) for g in step]
        has_previous = 1
        metrics = log.evaluate(setup, rnd)
        log.end_round(rnd, time.perf_counter() - t0, metrics, extra_requests=attempt, variance=var,
                      perturbations=pooled.count)
    return {"variance_checks": var_log}

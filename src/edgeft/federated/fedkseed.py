"""FedKSeed and FedKSeed-Pro (Qin et al., ICML 2024): federated zeroth-order tuning with K shared seeds.

Server and clients derive the same K candidate seeds from one master seed. Each local step picks a
seed, estimates the scalar projected gradient along z(seed) with MeZO and updates in place; a client
uploads only the (seed index, accumulated scalar) pairs it touched. The server adds them, weighted by
the clients' data sizes, into a cumulative pool of K scalars; the global model is w0 with
`theta -= lr * pool[j] * z(seeds[j])` applied for every nonzero j in index order. Server and clients run
that same replay on the same float32 values, so both hold the same model bit for bit (clients report a
fingerprint of theirs, checked every round). Exactness needs a constant lr within a round and no weight
decay, which the configuration enforces. A step size that decays over rounds (`round_lr=cosine`) keeps it:
round r's clients step at lr_r, and the server adds their scalars to the pool scaled by lr_r / lr, so the
replay at the one base lr moves the model by exactly sum_r lr_r * g * z.

Pro: seeds are sampled with p = softmax(minmax(mean |clip(history)|)), the history being the scalars
clients reported for each seed (initial value 0), as in FedKSeed's MeZOBiasOptimizer; the server sends p.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from edgeft.federated.accounting import AccountingGrid, Ledger
from edgeft.federated.config import FederatedConfig
from edgeft.federated.session import Setup, Work, maybe_drop, seeded_rng
from edgeft.federated.server import Roster, RoundLog, TooFewClients, draw_clients, sample, successful
from edgeft.methods.mezo import apply_seed_update, projected_gradient


def candidate_seeds(master: int, k: int) -> np.ndarray:
    """The K seeds every party derives from the run's seed (no list on the wire)."""
    return np.random.default_rng([int(master) & 0xFFFFFFFF, 0x5EED]).integers(1, 2**31 - 1, size=k, dtype=np.int64)


def replay(setup: Setup, seeds: np.ndarray, index: np.ndarray, values: np.ndarray, lr: float) -> None:
    """Rebuild the global model: w0, then the pool's nonzero (seed, scalar) pairs in index order."""
    setup.reset_to_w0()
    for j, g in zip(index.tolist(), values.tolist()):
        apply_seed_update(setup.params, int(seeds[j]), lr * float(g))


def replay_pool(setup: Setup, seeds: np.ndarray, pool: np.ndarray, lr: float) -> None:
    """Rebuild the global model of a cumulative seed pool (its nonzero entries, as they go on the wire)."""
    index, values = nonzero_pool(pool)
    replay(setup, seeds, index.astype(np.int64), values, lr)


def pro_probabilities(history: list[list[float]], clip: float) -> np.ndarray:
    """FedKSeed-Pro: softmax of the min-max normalised mean |clipped scalar| of each seed."""
    mean_abs = np.array([np.mean(np.abs(np.clip(h, -clip, clip))) for h in history])
    span = mean_abs.max() + 1e-10 - mean_abs.min()
    x = (mean_abs - mean_abs.min()) / span
    e = np.exp(x - x.max())
    return e / e.sum()


def nonzero_pool(pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 indices, float32 values) of the pool entries that move the model."""
    values = pool.astype(np.float32)
    index = np.flatnonzero(values)
    return index.astype(np.uint16), values[index]


# -- client ----------------------------------------------------------------------------------------


def local_steps(setup: Setup, seeds: np.ndarray, batches: list, rng: np.random.Generator, lr: float, eps: float,
                probs: np.ndarray | None = None, max_loss_diff: float | None = None,
                on_half=None) -> tuple[dict[int, float], list[float], int]:
    """One client's MeZO steps from the model in `setup`: ({seed index: summed scalar}, losses, skipped).

    Each step draws a seed index (uniformly, or with FedKSeed-Pro's probabilities), estimates the scalar
    along z(seed) and applies lr * g * z at once, as FedKSeed's clients do. A step whose |L+ - L-|
    exceeds `max_loss_diff` (FedKSeed's scalar clipping) or whose estimate is not finite is skipped: it
    moves nothing and is not uploaded."""
    k = len(seeds)
    local: dict[int, float] = defaultdict(float)
    losses, skipped = [], 0
    model = setup.model
    model.eval()
    for step, batch in enumerate(batches):
        if on_half is not None and step == len(batches) // 2:
            on_half()
        j = int(rng.choice(k, p=probs)) if probs is not None else int(rng.integers(k))
        g, plus, minus = projected_gradient(setup.params, int(seeds[j]), eps, lambda: setup.loss_fn(model, batch))
        if not np.isfinite(g) or (max_loss_diff is not None and abs(plus - minus) > max_loss_diff):
            skipped += 1
            continue
        apply_seed_update(setup.params, int(seeds[j]), lr * g)
        local[j] += g
        losses.append(plus)
    return dict(local), losses, skipped




def handle_train(setup: Setup, cfg: FederatedConfig, pid: int, msg: Message) -> Message:
    conf = msg.content["config"]
    rnd, k = int(conf["server-round"]), int(conf["num-seeds"])
    lr, eps = float(conf["lr"]), float(conf["eps"])
    replay_lr = float(conf["replay-lr"]) if "replay-lr" in conf else lr  # the pool's base lr (round_lr)
    seeds = candidate_seeds(int(conf["master-seed"]), k)
    pool = msg.content["pool"]
    probs = None
    if "probabilities" in pool:
        probs = pool["probabilities"].numpy().astype(np.float64)
        probs /= probs.sum()
    with Work(setup.device) as work:
        t0 = time.perf_counter()
        replay(setup, seeds, pool["index"].numpy().astype(np.int64), pool["value"].numpy(), replay_lr)
        replay_s = time.perf_counter() - t0
        digest = setup.digest()  # the server compares it with its own model's
        rng = seeded_rng(cfg.seed, rnd, pid, 5)
        batches = setup.batches(pid, rnd, int(conf["local-steps"]), int(conf["batch-size"]))
        local, losses, skipped = local_steps(setup, seeds, batches, rng, lr, eps, probs, cfg.max_loss_diff,
                                             on_half=lambda: maybe_drop(cfg, rnd, pid))
    index = np.array(sorted(local), dtype=np.uint16)
    grads = np.array([local[j] for j in sorted(local)], dtype=np.float32)
    metrics = {"num-examples": len(setup.client_features(pid)), "partition-id": pid, "replay-digest": digest,
               "replay-s": replay_s, "train-loss": float(np.mean(losses)) if losses else 0.0, "skipped": skipped,
               **work.metrics()}
    content = RecordDict({"pairs": ArrayRecord({"index": Array(index), "grad": Array(grads)}),
                          "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


# -- server ----------------------------------------------------------------------------------------


def add_to_pool(pool: np.ndarray, uploads: list[tuple[float, np.ndarray, np.ndarray]],
                history: list[list[float]] | None = None, scale: float = 1.0) -> int:
    """Adds the clients' (num_examples, seed indices, scalars) to the cumulative pool, weighted by data size
    (the weights sum to 1, so the global model moves by the clients' average update); returns the pairs
    received. `scale` is the round's lr over the pool's base lr (round_lr); with `history` (FedKSeed-Pro)
    every reported scalar, unscaled, is appended to its seed's history."""
    sizes = np.array([u[0] for u in uploads], dtype=np.float64)
    weights = scale * sizes / sizes.sum()
    touched = 0
    for w, (_, index, grads) in zip(weights, uploads):
        idx, g = np.asarray(index).astype(np.int64), np.asarray(grads).astype(np.float64)
        np.add.at(pool, idx, w * g)
        touched += len(idx)
        if history is not None:
            for j, gj in zip(idx.tolist(), g.tolist()):
                history[j].append(gj)
    return touched


def simulate(setup: Setup, cfg: FederatedConfig, on_round=None) -> np.ndarray:
    """FedKSeed(-Pro) in one process, without Flower: the same client sampling rule, client steps
    (`local_steps`), pool (`add_to_pool`) and replay as the apps, with every client connected. For
    sweeps and tests of how the global model moves (bench/fed_kseed_sweep.py); bytes, processes and
    failures are the Flower runs' business. Calls on_round(rnd, skipped) with the round's global model
    in `setup`; returns the cumulative pool."""
    lr, pro = cfg.learning_rate, cfg.algorithm == "fedkseed-pro"
    seeds = candidate_seeds(cfg.seed, cfg.num_seeds)
    pool = np.zeros(cfg.num_seeds, dtype=np.float64)
    history: list[list[float]] = [[0.0] for _ in range(cfg.num_seeds)]
    for rnd in range(1, cfg.rounds + 1):
        chosen = draw_clients(cfg, rnd, range(cfg.clients))
        probs = None
        if pro:  # as it travels: float32, renormalised by the client
            probs = pro_probabilities(history, cfg.pro_clip).astype(np.float32).astype(np.float64)
            probs /= probs.sum()
        uploads, skipped, round_lr = [], 0, cfg.round_learning_rate(rnd)
        for pid in chosen:
            replay_pool(setup, seeds, pool, lr)
            batches = setup.batches(pid, rnd, cfg.local_steps, cfg.batch_size)
            local, _, skip = local_steps(setup, seeds, batches, seeded_rng(cfg.seed, rnd, pid, 5), round_lr, cfg.eps,
                                         probs, cfg.max_loss_diff)
            skipped += skip
            order = sorted(local)
            uploads.append((float(len(setup.client_features(pid))), np.array(order, dtype=np.uint16),
                            np.array([local[j] for j in order], dtype=np.float32)))
        add_to_pool(pool, uploads, history if pro else None, round_lr / lr)
        replay_pool(setup, seeds, pool, lr)
        if on_round is not None:
            on_round(rnd, skipped)
    return pool


class RoundPicker:
    """Model selection on the server's validation rows (cfg.val_samples; none: the last round is returned).

    After every round the global model's loss on rows no client holds is measured; the run returns the
    round with the lowest, round 0 (the untuned model) included. For FedKSeed a round's model is its
    cumulative seed pool, so keeping the best pool (K floats) is enough: every client can rebuild that
    model by replaying it, exactly as any other round's."""

    def __init__(self, setup: Setup, cfg: FederatedConfig, log: RoundLog):
        self.setup, self.cfg, self.log = setup, cfg, log
        self.losses: list[tuple[int, float]] = []
        self.best: tuple[int, float, np.ndarray] | None = None
        self.metrics: dict | None = None  # the returned round's held-out metrics, when it is not the last

    def consider(self, rnd: int, pool: np.ndarray) -> float | None:
        if not self.cfg.val_samples:
            return None
        loss = self.setup.val_loss(self.cfg.eval_batch_size)
        self.losses.append((rnd, loss))
        if self.best is None or loss < self.best[1]:
            self.best = (rnd, loss, pool.copy())
        if self.log.run:
            self.log.run.event("validation", round=rnd, loss=loss, best_round=self.best[0])
        return loss

    def restore(self, rebuild) -> dict | None:
        """Puts the best round's model back (when it is not the last) and evaluates it; None if nothing changed."""
        if self.best is None or self.best[0] == self.losses[-1][0]:
            return None
        rebuild(self.best[2])
        self.metrics = self.log.evaluate(self.setup, self.best[0], force=True)
        if self.log.run:
            self.log.run.event("selected", round=self.best[0], val_loss=self.best[1], metrics=self.metrics)
        return {"round": self.best[0], "pool": self.best[2]}

    def summary(self) -> dict:
        if self.best is None:
            return {}
        return {"val_loss_by_round": [{"round": r, "loss": v} for r, v in self.losses],
                "selected_round": self.best[0], "selected_metrics": self.metrics}

def run_server(grid: AccountingGrid, cfg: FederatedConfig, ledger: Ledger, setup: Setup, nodes: Roster,
               log: RoundLog, context=None) -> dict:
    k, lr, pro = cfg.num_seeds, cfg.learning_rate, cfg.algorithm == "fedkseed-pro"
    seeds = candidate_seeds(cfg.seed, k)
    pool = np.zeros(k, dtype=np.float64)
    history: list[list[float]] = [[0.0] for _ in range(k)]
    setup.reset_to_w0()
    digest = setup.digest()
    log.end_round(0, 0.0, log.evaluate(setup, 0))
    checks = []
    pick = RoundPicker(setup, cfg, log)
    pick.consider(0, pool)
    for rnd in range(1, cfg.rounds + 1):
        t0 = time.perf_counter()
        ledger.round, ledger.phase = rnd, "train"
        index, values = nonzero_pool(pool)
        arrays = {"index": Array(index), "value": Array(values)}
        if pro:
            arrays["probabilities"] = Array(pro_probabilities(history, cfg.pro_clip).astype(np.float32))
        round_lr = cfg.round_learning_rate(rnd)
        conf = ConfigRecord({"server-round": rnd, "num-seeds": k, "master-seed": cfg.seed, "lr": round_lr,
                             "replay-lr": lr, "eps": cfg.eps, "local-steps": cfg.local_steps,
                             "batch-size": cfg.batch_size})
        content = RecordDict({"pool": ArrayRecord(arrays), "config": conf})
        try:
            targets = sample(grid, cfg, nodes, rnd)
        except TooFewClients as err:
            log.stop(rnd, err)
            break
        msgs = [Message(content, dst_node_id=n, message_type=MessageType.TRAIN, group_id=str(rnd)) for n in targets]
        replies = successful(grid.send_and_receive(msgs, timeout=cfg.round_timeout), rnd, grid.ledger)

        matched = [int(m.content["metrics"]["replay-digest"]) == digest for m in replies]
        checks.append({"round": rnd, "clients": len(matched), "bit_exact": all(matched)})
        if log.run:
            log.run.event("replay_check", round=rnd, server_digest=digest, matched=sum(matched), clients=len(matched))
        touched = add_to_pool(pool, [(float(m.content["metrics"]["num-examples"]),
                                      m.content["pairs"]["index"].numpy(), m.content["pairs"]["grad"].numpy())
                                     for m in replies], history if pro else None, round_lr / lr)
        replay_pool(setup, seeds, pool, lr)
        digest = setup.digest()
        val = pick.consider(rnd, pool)
        metrics = log.evaluate(setup, rnd)
        log.end_round(rnd, time.perf_counter() - t0, metrics, lr=round_lr, seeds_in_pool=len(nonzero_pool(pool)[0]),
                      pairs_received=touched, **({"val_loss": val} if val is not None else {}))
    chosen = pick.restore(lambda p: replay_pool(setup, seeds, p, lr))
    if chosen:
        pool, digest = chosen["pool"], setup.digest()
    if log.run:
        np.savez(log.run.path / "seed_pool.npz", seeds=seeds, pool=pool, lr=lr)
    return {**pick.summary(), "replay_checks": checks, "replay_bit_exact": all(c["bit_exact"] for c in checks),
            "seeds_in_pool": len(nonzero_pool(pool)[0]), "final_digest": digest}

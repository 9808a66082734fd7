"""What a hybrid plan costs: stages, 1F1B simulation, row shares, all-reduce, and StagePricer, which
prices one stage for the DP (hybrid_dp), the local search and the brute force (hybrid_search) alike, so
all three rank plans by the same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeft.errors import PlanError
from edgeft.planner.cluster import ClusterSpec
from edgeft.planner.costmodel import CostTable, ring_allreduce_s


@dataclass
class Stage:
    layers: tuple[int, int]
    devices: list[int]
    shares: list[float]  # fraction of each micro-batch per device
    fwd_s: float  # per micro-batch
    bwd_s: float
    comm_s: float  # sending the boundary activation (and its gradient) to the next stage
    allreduce_s: float  # once per iteration, for the trainable parameters of this stage
    memory: list[float]  # bytes per device


@dataclass
class HybridPlan:
    stages: list[Stage]
    micro_batches: int
    iteration_s: float
    epoch_s: float
    order: list[int]
    timeline: list[dict] = field(default_factory=list)
    cached_epoch_s: float | None = None  # PAC: later epochs on cached activations
    cached_shares: list[float] | None = None
    spec: tuple = ()  # ((end layer, devices), ...) per stage: what StagePricer.evaluate timed


def rank_key(plan: HybridPlan) -> tuple:
    """Order of plans: simulated time (to 10 significant digits, so float noise does not decide a tie),
    then fewer micro-batches, then fewer stages."""
    return float(f"{plan.iteration_s:.10g}"), plan.micro_batches, len(plan.stages)


def simulate_1f1b(fwd: list[float], bwd: list[float], comm: list[float], M: int) -> tuple[float, list[dict]]:
    """Event-level 1F1B schedule: each stage does S-s warm-up forwards, then alternates one forward
    and one backward; a stage starts an op when its input arrived and the stage is free."""
    S = len(fwd)
    f_end = np.zeros((S, M))
    b_end = np.zeros((S, M))
    free = np.zeros(S)
    events: list[dict] = []
    order = []
    for s in range(S):
        warm = min(S - s, M)
        seq = [("F", m) for m in range(warm)]
        nf, nb = warm, 0
        while nb < M:
            seq.append(("B", nb))
            nb += 1
            if nf < M:
                seq.append(("F", nf))
                nf += 1
        order.append(seq)
    pos = [0] * S
    done = 0
    total = sum(len(o) for o in order)
    while done < total:
        progressed = False
        for s in range(S):
            while pos[s] < len(order[s]):
                kind, m = order[s][pos[s]]
                if kind == "F":
                    if s > 0 and f_end[s - 1, m] == 0:
                        break
                    ready = f_end[s - 1, m] + comm[s - 1] if s > 0 else 0.0
                    start = max(free[s], ready)
                    end = start + fwd[s]
                    f_end[s, m] = end
                else:
                    if s < S - 1 and b_end[s + 1, m] == 0:
                        break
                    if f_end[s, m] == 0:
                        break
                    ready = b_end[s + 1, m] + comm[s] if s < S - 1 else f_end[s, m]
                    start = max(free[s], ready)
                    end = start + bwd[s]
                    b_end[s, m] = end
                free[s] = end
                events.append({"stage": s, "micro_batch": m, "op": kind, "start": start, "end": end})
                pos[s] += 1
                done += 1
                progressed = True
        if not progressed:
            raise PlanError("1F1B schedule deadlocked (internal error)")
    return float(free.max()), events


def whole_rows(n: int, shares) -> np.ndarray:
    """Rows per device when n rows are split by shares into whole rows (largest remainder, ties to the
    first); the runtime splits a micro-batch among a stage's devices with it (strategies.hybrid.share_rows)."""
    raw = n * np.asarray(shares, float) / np.sum(shares)
    rows = np.floor(raw)
    rows[np.argsort(-(raw - rows), kind="stable")[: int(round(n - rows.sum()))]] += 1
    return rows


def busiest_rows(B: int, M: int, shares, rates) -> float:
    """Mean over a step's M micro-batches (sizes as the runtime cuts the batch) of the slowest member's
    rows / FLOP rate: a stage's time per micro-batch is the per-sample work times this. With few rows
    per device it is more than the ideal B/M/sum(rates): 2 rows over 4 devices leave two idle."""
    sizes = [B // M + (1 if i < B % M else 0) for i in range(M)]
    return float(np.mean([np.max(whole_rows(m, shares) / rates) for m in sizes]))


def ring_allreduce_among(cluster: ClusterSpec, nbytes: float, used: list[int] | None = None) -> float:
    """Ring all-reduce of nbytes among the devices `used` (all by default) over the star, as the
    runtime's links do it (emulation.LinkModel): through the slowest link, each hop paying both ends'
    latency."""
    devs = cluster.devices if used is None else [cluster.devices[k] for k in used]
    if len(devs) < 2:
        return 0.0
    lat = 2 * max(d.link.latency_ms for d in devs) / 1000
    return ring_allreduce_s(nbytes, len(devs), min(cluster.full_band_rate(d) for d in devs), lat)


def allreduce_all_trainables(cluster: ClusterSpec, table: CostTable, used: list[int]) -> float:
    """The runtime's per-step all-reduce of all trainables (the measured count when calibrated)."""
    return ring_allreduce_among(cluster, table.all_trainable() * table.workload.grad_sync_bytes, used)


class StagePricer:
    """Time and memory of one stage (layers [j0, j1) on a group of devices), shared by the DP, the local
    search and the brute force, so that all three rank plans by the same numbers."""

    def __init__(self, cluster: ClusterSpec, table: CostTable, samples: int):
        self.cluster, self.table = cluster, table
        devs = cluster.devices
        self.K, self.L, self.B = len(devs), table.num_layers, table.workload.batch
        self.iters = int(np.ceil(samples / self.B))
        # a frozen backbone sends its boundary forward only; one that trains sends a gradient back too
        self.boundary_trips = 2 if table.workload.trains_backbone else 1
        self.rate = np.array([d.compute.rate() for d in devs])
        self.link = np.array([cluster.full_band_rate(d) for d in devs])
        self.latency = np.array([d.link.latency_ms / 1000 for d in devs])  # one way, seconds
        self.cap = np.array([d.memory_gb * 2**30 for d in devs])
        B = self.B
        self.cum_f = np.concatenate([[0.0], np.cumsum(table.fwd / B)])  # per-sample work per layer
        self.cum_b = np.concatenate([[0.0], np.cumsum(table.bwd_train / B)])
        self.cum_p = np.concatenate([[0.0], np.cumsum(table.params)])
        self.cum_t = np.concatenate([[0.0], np.cumsum(table.trainable)])
        self.cum_a = np.concatenate([[0.0], np.cumsum(table.act_saved / B)])
        self._slowest: dict = {}
        self._memo: dict = {}

    def stage(self, j0: int, j1: int, group: tuple[int, ...], remaining: int, M: int, next_bw: float,
              next_lat: float = 0.0) -> Stage | None:
        """The stage with `remaining` stages from it to the end (1F1B keeps that many micro-batches in
        flight), sending its boundary at min(its own links, next_bw), each send paying its own and the next
        stage's latency (next_lat); None if a member's memory overflows."""
        key = (j0, j1, group, min(remaining, M), M, next_bw, next_lat)
        if key not in self._memo:
            self._memo[key] = self._price(j0, j1, group, remaining, M, next_bw, next_lat)
        return self._memo[key]

    def _price(self, j0, j1, group, remaining, M, next_bw, next_lat) -> Stage | None:
        f, b, comm, ar, mem, share = self.price_ends(j0, np.array([j1]), group, remaining, M, next_bw, next_lat)
        if np.any(mem[:, 0] > self.cap[list(group)]):
            return None
        return Stage((j0, j1), list(group), list(share), float(f[0]), float(b[0]), float(comm[0]), float(ar[0]),
                     list(mem[:, 0]))

    def price_ends(self, j0: int, j1: np.ndarray, group: tuple[int, ...], remaining: int, M: int, next_bw: float,
                   next_lat: float = 0.0):
        """Stages of layers [j0, j1) for every end in the array j1 at once (the DP's inner loop): per end the
        forward, backward, send and all-reduce seconds, and each member's bytes (members x ends)."""
        t, L, B = self.table, self.L, self.B
        dt = t.workload.dtype_bytes
        g = list(group)
        rate = self.rate[g]
        share = rate / rate.sum()
        if (group, M) not in self._slowest:
            self._slowest[(group, M)] = busiest_rows(B, M, share, rate)
        slow = self._slowest[(group, M)]
        last = j1 == L
        extra_f = (t.embed_fwd / B if j0 == 0 else 0.0) + t.head_fwd / B * last
        f = (self.cum_f[j1] - self.cum_f[j0] + extra_f) * slow
        b = (self.cum_b[j1] - self.cum_b[j0] + t.head_bwd / B * last) * slow
        weights = (self.cum_p[j1] - self.cum_p[j0]) * dt + (t.embed_params * dt if j0 == 0 else 0) + \
            t.head_params * dt * last
        n_train = self.cum_t[j1] - self.cum_t[j0]
        inflight = min(remaining, M)  # 1F1B: stage s of S holds S - s micro-batches
        act = (self.cum_a[j1] - self.cum_a[j0] + t.head_saved / B * last) * (B / M) * inflight
        # each member keeps the activations of its share
        mem = (weights + t.trainable_state_bytes(n_train))[None, :] + share[:, None] * act[None, :]
        slowest_link = self.link[g].min()
        bw = min(slowest_link, next_bw)
        per_byte = 8 * self.boundary_trips / bw if bw > 0 else np.inf  # no uplink: no later stage
        # every send pays the sender's and the receiver's one-way latency, as the runtime's links do (LinkModel)
        lat = self.latency[g].max()
        comm = np.where(last, 0.0, (t.boundary_bytes / B) * (B / M) * per_byte
                        + self.boundary_trips * (lat + next_lat))
        gb = t.workload.grad_sync_bytes
        ar = np.array([ring_allreduce_s(x * gb, len(g), slowest_link, 2 * lat) for x in n_train]) if len(g) > 1 \
            else np.zeros(len(j1))
        return f, b, comm, ar, mem, share

    def evaluate(self, spec: tuple, M: int) -> "HybridPlan | None":
        """The plan `spec` = ((j1, group), ...) (stage s runs layers [previous j1, j1) on `group`) at M
        micro-batches, timed by the 1F1B simulation plus the all-reduce of every trainable over the used
        devices and the fixed step work; None if a stage does not fit memory."""
        stages, j0, S = [], 0, len(spec)
        for s, (j1, group) in enumerate(spec):
            nxt = self.link[list(spec[s + 1][1])].min() if s + 1 < S else np.inf
            nxt_lat = self.latency[list(spec[s + 1][1])].max() if s + 1 < S else 0.0
            st = self.stage(j0, j1, group, S - s, M, nxt, nxt_lat)
            if st is None:
                return None
            stages.append(st)
            j0 = j1
        it_s, events = simulate_1f1b([st.fwd_s for st in stages], [st.bwd_s for st in stages],
                                     [st.comm_s for st in stages], M)
        # after the pipeline, one all-reduce of every trainable over every device of the plan (the
        # runtime keeps identical copies)
        used = [d for _, group in spec for d in group]
        it_s += allreduce_all_trainables(self.cluster, self.table, sorted(used)) + self.table.step_fixed_s
        order = used + [k for k in range(self.K) if k not in used]
        return HybridPlan(stages, M, it_s, it_s * self.iters, order, events, spec=tuple(spec))

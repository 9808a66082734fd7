"""Hybrid pipeline + data-parallel placement (PAC / Asteroid) by dynamic programming.

Devices (in a chosen order) are cut into consecutive groups, layers into consecutive stages; group
s serves stage s in data parallel, its micro-batch split in proportion to the members' speeds.
dp[s][j][i] = least bottleneck stage time with the first j layers on the first i devices in s
stages; the 1F1B iteration time is then simulated for each (stages, micro-batches) candidate under
each device's memory (1F1B keeps up to S - s micro-batches in flight at stage s). PAC's cached
epochs are planned as a second phase: adapters only, data parallel over the run's devices. A step
also pays `table.step_fixed_s` (measured host work outside the FLOPs: collate, optimizer update).
"""

from __future__ import annotations

import math
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
    return ring_allreduce_among(cluster, table.all_trainable() * table.workload.dtype_bytes, used)


def _order_candidates(cluster: ClusterSpec) -> dict[str, list[int]]:
    rate = np.array([d.compute.rate() for d in cluster.devices])
    mem = np.array([d.memory_gb for d in cluster.devices])
    return {
        "memory-desc": list(np.lexsort((-rate, -mem))),
        "speed-desc": list(np.argsort(-rate, kind="stable")),
        "speed-asc": list(np.argsort(rate, kind="stable")),
    }


def plan_hybrid(
    cluster: ClusterSpec, table: CostTable, samples: int = 1000, max_stages: int | None = None,
    micro_batch_options: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
) -> HybridPlan:
    """Best (order, stages, groups, micro-batches) for one epoch over `samples` examples."""
    devs = cluster.devices
    K, L = len(devs), table.num_layers
    B = table.workload.batch
    pac = table.workload.method == "pac"
    dt = table.workload.dtype_bytes
    rate_all = np.array([d.compute.rate() for d in devs])
    link_all = np.array([cluster.full_band_rate(d) for d in devs])
    cap_all = np.array([d.memory_gb * 2**30 for d in devs])
    max_S = min(max_stages or K, K, L)
    # per-layer training work per sample; embed on the first stage, head on the last
    fwd_l = table.fwd / B
    bwd_l = table.bwd_train / B
    best: HybridPlan | None = None
    iters = int(np.ceil(samples / B))
    cum_f = np.concatenate([[0.0], np.cumsum(fwd_l)])
    cum_b = np.concatenate([[0.0], np.cumsum(bwd_l)])
    cum_p = np.concatenate([[0.0], np.cumsum(table.params)])
    cum_t = np.concatenate([[0.0], np.cumsum(table.trainable)])
    cum_a = np.concatenate([[0.0], np.cumsum(table.act_saved / B)])
    reasons: list[str] = []
    for order in _order_candidates(cluster).values():
        rate, link, cap = rate_all[order], link_all[order], cap_all[order]
        cum_r = np.concatenate([[0.0], np.cumsum(rate)])
        for M in micro_batch_options:
            if M > B:
                continue
            mb = B / M
            slowest: dict = {}

            def cost(j0, j1, i0, i1, remaining):
                """Stage of layers [j0, j1) on ordered devices [i0, i1), with `remaining` stages from it to the end."""
                grp = slice(i0, i1)
                r = cum_r[i1] - cum_r[i0]
                share = rate[grp] / r
                extra_f = (table.embed_fwd / B if j0 == 0 else 0.0) + (table.head_fwd / B if j1 == L else 0.0)
                extra_b = table.head_bwd / B if j1 == L else 0.0
                if (i0, i1) not in slowest:
                    slowest[(i0, i1)] = busiest_rows(B, M, share, rate[grp])
                f = (cum_f[j1] - cum_f[j0] + extra_f) * slowest[(i0, i1)]
                b = (cum_b[j1] - cum_b[j0] + extra_b) * slowest[(i0, i1)]
                weights = (cum_p[j1] - cum_p[j0]) * dt + (table.embed_params * dt if j0 == 0 else 0) + (
                    table.head_params * dt if j1 == L else 0)
                state = table.trainable_state_bytes(cum_t[j1] - cum_t[j0])
                inflight = min(remaining, M)  # 1F1B: stage s of S holds S - s micro-batches
                act = (cum_a[j1] - cum_a[j0] + (table.head_saved / B if j1 == L else 0)) * mb * inflight
                mem = weights + state + act * share  # each member keeps activations of its share
                if np.any(mem > cap[grp]):
                    return None
                comm = 0.0
                if j1 < L:
                    bw = min(link[grp].min(), link[i1:].min() if i1 < K else np.inf)
                    comm = (table.boundary_bytes / B) * mb * 8 * (1 if pac else 2) / bw
                n = i1 - i0
                ar = ring_allreduce_s((cum_t[j1] - cum_t[j0]) * dt, n, link[grp].min())
                return f, b, comm, ar, list(mem), list(share)

            # dp from the output side: best[r][j][i] = least bottleneck when layers [j, L) run on
            # r stages over ordered devices from i on (later devices may stay idle)
            INF = np.inf
            dp = np.full((max_S + 1, L + 1, K + 1), INF)
            arg: dict = {}
            dp[0, L, :] = 0.0
            for r in range(1, max_S + 1):
                for j0 in range(L - r, -1, -1):
                    for i0 in range(K - r, -1, -1):
                        bestv, besta = INF, None
                        for j1 in range(j0 + 1, L - (r - 1) + 1):
                            for i1 in range(i0 + 1, K - (r - 1) + 1):
                                nxt = dp[r - 1, j1, i1]
                                if nxt == INF:
                                    continue
                                info = cost(j0, j1, i0, i1, r)
                                if info is None:
                                    continue
                                v = max(nxt, info[0] + info[1] + info[2] + info[3] / M)
                                if v < bestv:
                                    bestv, besta = v, (j1, i1, info)
                        dp[r, j0, i0] = bestv
                        arg[(r, j0, i0)] = besta
            for S in range(1, max_S + 1):
                if dp[S, 0, 0] == INF:
                    reasons.append(f"{S} stages, {M} micro-batches: no grouping fits memory")
                    continue
                stages, j, i = [], 0, 0
                for r in range(S, 0, -1):
                    j1, i1, (f, b, comm, ar, mem, share) = arg[(r, j, i)]
                    stages.append(Stage((j, j1), [int(order[x]) for x in range(i, i1)], share, f, b, comm, ar, mem))
                    j, i = j1, i1
                it_s, events = simulate_1f1b([st.fwd_s for st in stages], [st.bwd_s for st in stages],
                                             [st.comm_s for st in stages], M)
                # after the pipeline, one all-reduce of every trainable over every device of the plan (the
                # runtime keeps identical copies; a stage-local all-reduce is what the DP above ranks by)
                used = sorted({d for st in stages for d in st.devices})
                it_s += allreduce_all_trainables(cluster, table, used) + table.step_fixed_s
                plan = HybridPlan(stages, M, it_s, it_s * iters, [int(x) for x in order], events)
                if best is None or plan.epoch_s < best.epoch_s * (1 - 1e-9):  # a tie keeps fewer micro-batches
                    best = plan
    if best is None:
        need = table.weight_bytes / 2**30
        raise PlanError(
            f"no pipeline placement fits the devices' memory (whole model weights {need:.2f} GiB; largest device "
            f"{cap_all.max() / 2**30:.2f} GiB). Tried: {reasons[:3]}. Lower the batch, use lora/pac, or add devices"
        )
    if pac:  # cached epochs: adapters only (fwd+bwd = 1.5x their backward), data parallel
        # per sample; a measured cached step (lookup, decode, adapters: calibration) replaces the count
        ad_work = table.cached_step_flops or table.bwd_train.sum() * 1.5 / B
        # Every device of the run all-reduces all trainables each step (the runtime keeps their copies
        # identical), also one that holds no cached samples; the cache goes to them by speed.
        use = np.array(sorted({d for st in best.stages for d in st.devices}))
        r = rate_all[use].sum()
        ar = allreduce_all_trainables(cluster, table, list(use))
        shares = np.zeros(K)
        shares[use] = rate_all[use] / r
        if table.cached_rows_flops:  # measured at each row count: each device's rows at its share, the slowest
            step = max(table.cached_flops(math.ceil(B * shares[k] - 1e-9)) / rate_all[k] for k in use)
        else:
            call = table.cached_call_flops / rate_all[use].min()  # every device's step pays its call cost once
            step = call + ad_work * B / r
        best.cached_epoch_s = float((step + ar + table.step_fixed_s) * iters)
        best.cached_shares = shares.tolist()
    return best

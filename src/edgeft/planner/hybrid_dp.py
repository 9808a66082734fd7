"""Hybrid pipeline + data-parallel placement (PAC / Asteroid) by dynamic programming and local search.

Devices (in a chosen order) are cut into consecutive groups, layers into consecutive stages; group
s serves stage s in data parallel, its micro-batch split in proportion to the members' speeds.
dp[s][j][i] = least bottleneck stage time with the first j layers on the first i devices in s
stages; the 1F1B iteration time is then simulated for each (stages, micro-batches) candidate under
each device's memory (1F1B keeps up to S - s micro-batches in flight at stage s), and a local search
(hybrid_search.refine) lowers that simulated time, which is what the plan reports. PAC's cached
epochs are planned as a second phase: adapters only, data parallel over the run's devices. A step
also pays `table.step_fixed_s` (measured host work outside the FLOPs: collate, optimizer update).
"""

from __future__ import annotations

import math
import numpy as np

from edgeft.errors import PlanError
from edgeft.planner.cluster import ClusterSpec
from edgeft.planner.costmodel import CostTable
from edgeft.planner.hybrid_pricing import HybridPlan, StagePricer, allreduce_all_trainables, rank_key


def _order_candidates(cluster: ClusterSpec) -> list[list[int]]:
    """Device orders the DP cuts into consecutive groups: by memory, by speed (both ways), by link (both
    ways); orders that differ only by swapping identical devices are kept once. The local search
    (hybrid_search.refine) then moves single devices between stages, which no fixed order reaches."""
    rate = np.array([d.compute.rate() for d in cluster.devices])
    mem = np.array([d.memory_gb for d in cluster.devices])
    link = np.array([cluster.full_band_rate(d) for d in cluster.devices])
    orders = [np.lexsort((-rate, -mem)), np.argsort(-rate, kind="stable"), np.argsort(rate, kind="stable"),
              np.lexsort((-rate, -link)), np.lexsort((-rate, link))]
    sig = list(zip(rate, mem, link))
    out, seen = [], set()
    for o in orders:
        key = tuple(sig[k] for k in o)
        if key not in seen:
            seen.add(key)
            out.append([int(k) for k in o])
    return out


def _dp_specs(pricer: StagePricer, order: list[int], M: int, max_S: int) -> tuple[list[tuple], list[str]]:
    """The least-bottleneck partition for each stage count S (dp from the output side: dp[r][j][i] = least
    bottleneck when layers [j, L) run on r stages over ordered devices from i on; later devices may stay
    idle). A stage's send is priced at the slowest link and the largest latency among the later devices of the
    order."""
    K, L = pricer.K, pricer.L
    link, lat = pricer.link[order], pricer.latency[order]
    INF = np.inf
    dp = np.full((max_S + 1, L + 1, K + 1), INF)
    arg: dict = {}
    dp[0, L, :] = 0.0
    for r in range(1, max_S + 1):
        for j0 in range(L - r, -1, -1):
            ends = np.arange(j0 + 1, L - (r - 1) + 1)
            for i0 in range(K - r, -1, -1):
                bestv, besta = INF, None
                for i1 in range(i0 + 1, K - (r - 1) + 1):
                    nxt = dp[r - 1, ends, i1]
                    if np.all(nxt == INF):
                        continue
                    grp = tuple(order[i0:i1])
                    f, b, comm, ar, mem, _ = pricer.price_ends(j0, ends, grp, r, M, link[i1:].min() if i1 < K else INF,
                                                               lat[i1:].max() if i1 < K else 0.0)
                    fits = np.all(mem <= pricer.cap[list(grp)][:, None], axis=0)
                    v = np.where(fits, np.maximum(nxt, f + b + comm + ar / M), INF)
                    x = int(np.argmin(v))  # the first (fewest layers) on a tie, as the loop over ends did
                    if v[x] < bestv:
                        bestv, besta = float(v[x]), (int(ends[x]), i1)
                dp[r, j0, i0] = bestv
                arg[(r, j0, i0)] = besta
    specs, reasons = [], []
    for S in range(1, max_S + 1):
        if dp[S, 0, 0] == INF:
            reasons.append(f"{S} stages, {M} micro-batches: no grouping fits memory")
            continue
        spec, j, i = [], 0, 0
        for r in range(S, 0, -1):
            j1, i1 = arg[(r, j, i)]
            spec.append((j1, tuple(order[i:i1])))
            j, i = j1, i1
        specs.append(tuple(spec))
    return specs, reasons


def plan_hybrid(
    cluster: ClusterSpec, table: CostTable, samples: int = 1000, max_stages: int | None = None,
    micro_batch_options: tuple[int, ...] = (1, 2, 4, 8, 16, 32), refine: bool = True,
) -> HybridPlan:
    """Best (stages, groups, micro-batches) for one epoch over `samples` examples: the DP's partition for
    every device order, stage count and micro-batch count, each timed by the 1F1B simulation; then
    (`refine`) a local search on that simulated time from the best of them (hybrid_search.refine),
    since the DP ranks by the bottleneck stage, not by the iteration time it reports."""
    from edgeft.planner.hybrid_search import refine as local_search

    K, B = len(cluster.devices), table.workload.batch
    cached = table.workload.caches_backbone
    pricer = StagePricer(cluster, table, samples)
    max_S = min(max_stages or K, K, table.num_layers)
    options = tuple(M for M in micro_batch_options if M <= B)
    seeds: list[HybridPlan] = []
    reasons: list[str] = []
    seen: set = set()
    for order in _order_candidates(cluster):
        for M in options:
            specs, why = _dp_specs(pricer, order, M, max_S)
            reasons += why
            for spec in specs:
                if (spec, M) in seen:
                    continue
                seen.add((spec, M))
                plan = pricer.evaluate(spec, M)
                if plan is not None:
                    seeds.append(plan)
    if not seeds:
        need = table.weight_bytes / 2**30
        raise PlanError(
            f"no pipeline placement fits the devices' memory (whole model weights {need:.2f} GiB; largest device "
            f"{pricer.cap.max() / 2**30:.2f} GiB). Tried: {reasons[:3]}. Lower the batch, use lora/pac, or add devices"
        )
    seeds.sort(key=rank_key)
    best = local_search(pricer, seeds, options, max_S) if refine else seeds[0]
    rate_all, iters = pricer.rate, pricer.iters
    if cached:  # cached epochs: adapters only (fwd+bwd = 1.5x their backward), data parallel
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

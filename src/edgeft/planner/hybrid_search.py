"""Search on the simulated iteration time for the hybrid planner: a local search from the DP's plans,
and brute force over every plan (small clusters only; the tests' reference).

The DP (hybrid._dp_specs) minimises the bottleneck stage over a fixed device order, but a plan's time
is the 1F1B simulation with its fill and drain plus the all-reduce: on small clusters another
partition, or a device order the DP did not try, is up to 12.6% (21.6%) faster (issue 18). The local
search makes one move at a time (two where one no longer helps) and keeps a change only when the
simulated time falls.
"""

from __future__ import annotations

import itertools

from edgeft.errors import PlanError
from edgeft.planner.hybrid_pricing import HybridPlan, StagePricer, rank_key

Spec = tuple  # ((end layer, devices tuple), ...) per stage


def _canon(spec) -> Spec:
    return tuple((int(j1), tuple(sorted(g))) for j1, g in spec)


def neighbours(spec: Spec, K: int, L: int, max_S: int):
    """Plans one step from `spec`: a cut moved by one layer, a device moved to another stage (or out, or
    in from the idle ones), two devices of different stages swapped, two adjacent stages merged, a stage
    split in two at every layer cut (one member, or an idle device, as its own stage before or after the rest)."""
    S = len(spec)
    ends = [j for j, _ in spec]
    groups = [list(g) for _, g in spec]
    starts = [0] + ends[:-1]
    idle = [k for k in range(K) if all(k not in g for g in groups)]

    def make(e, gs):
        if any(len(g) == 0 for g in gs):
            return None
        return _canon(zip(e, gs))

    for s in range(S - 1):  # cut between stage s and s+1
        for d in (-1, 1):
            e = ends.copy()
            e[s] += d
            if starts[s] < e[s] < ends[s + 1]:
                yield make(e, groups)
    for s, g in enumerate(groups):
        for k in g:
            rest = [x for x in g if x != k]
            if rest:
                yield make(ends, groups[:s] + [rest] + groups[s + 1:])  # out (idle)
                for t in range(S):
                    if t != s:
                        gs = [list(x) for x in groups]
                        gs[s], gs[t] = rest, gs[t] + [k]
                        yield make(ends, gs)
            for t in range(s + 1, S):
                for k2 in groups[t]:
                    gs = [list(x) for x in groups]
                    gs[s] = [x if x != k else k2 for x in gs[s]]
                    gs[t] = [x if x != k2 else k for x in gs[t]]
                    yield make(ends, gs)
            for k2 in idle:
                gs = [list(x) for x in groups]
                gs[s] = [x if x != k else k2 for x in gs[s]]
                yield make(ends, gs)
    for k in idle:
        for t in range(S):
            gs = [list(x) for x in groups]
            gs[t] = gs[t] + [k]
            yield make(ends, gs)
    for s in range(S - 1):
        yield make(ends[:s] + ends[s + 1:], groups[:s] + [groups[s] + groups[s + 1]] + groups[s + 2:])
    if S < max_S:
        for s, g in enumerate(groups):
            for cut in range(starts[s] + 1, ends[s]):
                e = ends[:s] + [cut] + ends[s:]
                pairs = [([k], [x for x in g if x != k]) for k in g if len(g) > 1] + [([k], g) for k in idle]
                for one, rest in pairs:
                    for pair in ([one, rest], [rest, one]):
                        yield make(e, groups[:s] + pair + groups[s + 1:])


def refine(pricer: StagePricer, seeds: list[HybridPlan], options: tuple[int, ...], max_S: int,
           budget: int = 5000) -> HybridPlan:
    """Steepest descent on the simulated iteration time over `neighbours` (each at every micro-batch count
    while that is cheap) from the seeds in turn (sorted, fastest first); where a descent stops, two moves
    at once are tried, so a pair of steps that each alone would not help (e.g. a device swap and a cut
    moved) is found too. New plans are timed until `budget` simulations are spent; the first seed's
    descent always finishes. The fastest plan reached."""
    cache: dict = {}

    def timed(spec, M):
        if (spec, M) not in cache:
            cache[(spec, M)] = pricer.evaluate(spec, M)
        return cache[(spec, M)]

    def near(spec):
        return {n for n in neighbours(spec, pricer.K, pricer.L, max_S) if n}

    def fastest(specs, counts, spent):
        out = None
        for n in specs:
            for M in counts:
                if len(cache) >= spent and (n, M) not in cache:
                    return out
                c = timed(n, M)
                if c is not None and (out is None or rank_key(c) < rank_key(out)):
                    out = c
        return out

    def two_moves(spec):
        seen = {spec}
        for n in near(spec):
            for n2 in near(n):
                if n2 not in seen:
                    seen.add(n2)
                    yield n2

    best = seeds[0]
    for i, seed in enumerate(seeds):
        if i and len(cache) >= budget:
            break
        cur = timed(_canon(seed.spec), seed.micro_batches)
        while True:
            one = near(cur.spec) | {cur.spec}
            counts = options if len(one) * len(options) <= 600 else (cur.micro_batches,)  # large: current count
            nxt = fastest(one, counts, budget if i else float("inf"))
            if (nxt is None or not nxt.iteration_s < cur.iteration_s * (1 - 1e-12)) and len(cache) < budget:
                nxt = fastest(two_moves(cur.spec), counts, budget)
            if nxt is None or not nxt.iteration_s < cur.iteration_s * (1 - 1e-12):
                break
            cur = nxt
        if rank_key(cur) < rank_key(best):
            best = cur
    return best


def all_specs(K: int, L: int, max_S: int):
    """Every plan: a subset of the devices cut into S ordered non-empty groups, layers into S ranges."""
    for S in range(1, min(max_S, K, L) + 1):
        for cuts in itertools.combinations(range(1, L), S - 1):
            ends = list(cuts) + [L]
            # label each device with a stage (or -1: idle); every stage needs a member
            for labels in itertools.product(range(-1, S), repeat=K):
                groups = [tuple(k for k in range(K) if labels[k] == s) for s in range(S)]
                if all(groups):
                    yield tuple(zip(ends, groups))


def brute_force(pricer: StagePricer, options: tuple[int, ...], max_S: int | None = None) -> HybridPlan:
    """The fastest simulated plan over every spec and micro-batch count (small clusters only)."""
    best = None
    for spec in all_specs(pricer.K, pricer.L, max_S or pricer.K):
        for M in (M for M in options if M <= pricer.B):  # as plan_hybrid: no micro-batch below one sample
            plan = pricer.evaluate(spec, M)
            if plan is not None and (best is None or plan.iteration_s < best.iteration_s):
                best = plan
    if best is None:
        raise PlanError("no hybrid plan fits the devices' memory")
    return best

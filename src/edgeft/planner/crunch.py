"""CRUNCH (Cutting-RecoUNting-CHecking): exact minimum-makespan block-device matching.

Because a block deeper from the output costs a device more time and memory, each device's feasible
blocks under a latency threshold form a prefix {1..d_k} of depths. Then a matching of all blocks
exists iff, for every depth j, at least L - j + 1 devices reach depth j (Hall's condition for nested
sets). Searching the threshold over the sorted latencies gives the exact optimum in O(KL log KL).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from edgeft.errors import PlanError

BIG = 1e30


@dataclass
class Matching:
    """assign[j] = device index that trains the block at depth j+1 (0 = the block next to the output)."""

    makespan: float
    assign: np.ndarray

    def devices(self) -> set[int]:
        return set(int(k) for k in self.assign)


def _masked(lat: np.ndarray, feasible: np.ndarray | None) -> np.ndarray:
    lat = np.asarray(lat, dtype=float)
    if feasible is not None:
        lat = np.where(feasible, lat, np.inf)
    return lat


def is_depth_monotone(lat: np.ndarray) -> bool:
    """True when every device's latency (inf = infeasible) is nondecreasing with depth."""
    with np.errstate(invalid="ignore"):
        diff = np.diff(lat, axis=1)
    ok = (diff >= 0) | np.isnan(diff) & np.isinf(lat[:, 1:])
    return bool(np.all(ok))


def _hall_ok(lat: np.ndarray, tau: float) -> bool:
    K, L = lat.shape
    d = (lat <= tau).sum(axis=1)  # cut: each device keeps the prefix of depths under tau
    counts = np.bincount(d, minlength=L + 1)  # recount devices by reach
    reach_ge = np.cumsum(counts[::-1])[::-1][1:]  # reach_ge[j-1] = #{k: d_k >= j}
    need = np.arange(L, 0, -1)  # depth j needs L - j + 1 devices reaching it
    return bool(np.all(reach_ge >= need))  # check


def crunch(lat: np.ndarray, feasible: np.ndarray | None = None) -> Matching:
    """Minimum makespan matching of L blocks (columns, by depth) to K >= L devices (rows).

    lat[k, j]: latency of device k when it trains the block at depth j+1. Infeasible pairs (memory)
    are False in `feasible` or inf in `lat`. Falls back to a generic bottleneck matching when a row
    is not monotone in depth (then the prefix structure CRUNCH relies on does not hold).
    """
    lat = _masked(lat, feasible)
    K, L = lat.shape
    if L > K:
        raise PlanError(f"{L} blocks but only {K} devices: group layers into at most {K} blocks")
    if not is_depth_monotone(lat):
        return bottleneck_matching(lat)
    vals = np.unique(lat[np.isfinite(lat)])
    if vals.size == 0 or not _hall_ok(lat, vals[-1]):
        raise PlanError(_why_infeasible(lat))
    lo, hi = 0, vals.size - 1  # threshold search: smallest candidate that passes the check
    while lo < hi:
        mid = (lo + hi) // 2
        if _hall_ok(lat, vals[mid]):
            hi = mid
        else:
            lo = mid + 1
    tau = vals[lo]
    d = (lat <= tau).sum(axis=1)
    order = np.argsort(-d, kind="stable")  # the deepest block to the device that reaches deepest
    assign = np.empty(L, dtype=int)
    for i in range(L):
        assign[L - 1 - i] = order[i]
    return Matching(float(tau), assign)


def _why_infeasible(lat: np.ndarray) -> str:
    K, L = lat.shape
    reach = np.isfinite(lat)
    for j in range(L - 1, -1, -1):
        if not reach[:, j].any():
            return f"no device can train the block at depth {j + 1} (memory): use smaller blocks, a smaller batch, or a device with more memory"
    counts = [int(reach[:, j].sum()) for j in range(L)]
    return f"blocks cannot all be matched to distinct devices (devices able to reach each depth: {counts}); add devices or use fewer blocks"


def bottleneck_matching(lat: np.ndarray) -> Matching:
    """Generic minimum-makespan matching: threshold search with a maximum bipartite matching."""
    K, L = lat.shape
    vals = np.unique(lat[np.isfinite(lat)])

    def match(tau: float):
        graph = csr_matrix((lat <= tau).T.astype(np.int8))  # rows = blocks
        m = maximum_bipartite_matching(graph, perm_type="column")
        return m if np.all(m >= 0) else None

    if vals.size == 0 or match(vals[-1]) is None:
        raise PlanError(_why_infeasible(lat))
    lo, hi = 0, vals.size - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if match(vals[mid]) is not None:
            hi = mid
        else:
            lo = mid + 1
    return Matching(float(vals[lo]), match(vals[lo]).astype(int))


def refine_min_sum(lat: np.ndarray, makespan: float, weights: np.ndarray | None = None, feasible=None) -> Matching:
    """Among matchings within `makespan`, the one with the least (weighted) total latency (Hungarian)."""
    lat = _masked(lat, feasible)
    cost = lat if weights is None else lat * np.asarray(weights, dtype=float)[:, None]
    cost = np.where(lat <= makespan * (1 + 1e-12), cost, BIG)
    rows, cols = linear_sum_assignment(cost)
    assign = np.empty(lat.shape[1], dtype=int)
    assign[cols] = rows
    return Matching(float(lat[assign, np.arange(lat.shape[1])].max()), assign)


def brute_force(lat: np.ndarray, feasible: np.ndarray | None = None) -> Matching:
    """Enumerates every injective matching; for checking the fast solvers on small instances."""
    lat = _masked(lat, feasible)
    K, L = lat.shape
    perms = np.array(list(itertools.permutations(range(K), L)), dtype=int)
    spans = lat[perms, np.arange(L)].max(axis=1)
    best = int(np.argmin(spans))
    if not np.isfinite(spans[best]):
        raise PlanError(_why_infeasible(lat))
    return Matching(float(spans[best]), perms[best])

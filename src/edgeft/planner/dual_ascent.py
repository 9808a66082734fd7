"""Joint bandwidth-and-block allocation for DEFT, and its baselines.

min T  s.t.  x_kj (a_kj + S_j / (rho_k r_k)) <= T,  sum_k rho_k <= 1,  x a matching,
where S_j = the block's upload + the server's broadcast (DeftInstance.link_bits: both cross the
device's link at rho_k r_k in the runtime).
`dual_ascent` relaxes the per-device latency constraints with multipliers lambda (on the simplex,
since T is free); the Lagrangian then splits into a block subproblem (a weighted assignment solved
by Hungarian among the pairs CRUNCH keeps under its threshold) and a bandwidth subproblem with the
closed form rho_k ~ sqrt(lambda_k S_k / r_k), which gives more band to slow links. Primal plans are
recovered by giving each candidate matching its exact optimal bandwidth.

`exact_joint` is our own observation: for a fixed T the least total band a matching needs is a
linear assignment over need_kj(T) = S_j / (r_k (T - a_kj)), and that need falls with T, so a
bisection on T with Hungarian is exact for this model. It serves as the optimum for the gap report.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import brentq, linear_sum_assignment

from edgeft.errors import ConfigError, PlanError
from edgeft.planner.crunch import BIG, crunch, refine_min_sum
from edgeft.planner.deft_problem import DeftInstance, DeftSolution

RECOVERIES = ("band-need",)  # dual_ascent's primal recovery; 'crunch' alone was dropped (see dual_ascent)


def exact_bandwidth(a: np.ndarray, bits: np.ndarray, rate: np.ndarray) -> tuple[float, np.ndarray]:
    """Least makespan and shares for fixed work: a_k + bits_k/(rho_k rate_k) <= T, sum rho = 1."""
    a, bits, rate = (np.asarray(v, float) for v in (a, bits, rate))
    send = bits > 0
    if not send.any():
        share = np.full(a.size, 1.0 / a.size)
        return float(a.max()), share
    t_lo = float(a[send].max())
    t_floor = float(a.max())

    def excess(T: float) -> float:
        return float(np.sum(bits[send] / (rate[send] * (T - a[send])))) - 1.0

    hi = (t_lo + float(np.sum(bits[send] / rate[send]))) * (1 + 1e-9) + 1e-300
    lo = t_lo + 1e-12 * max(1.0, t_lo)
    if excess(lo) <= 0:
        T = lo
    else:
        T = brentq(excess, lo, hi, xtol=1e-14 * max(1.0, hi), rtol=1e-13, maxiter=200)
    T = max(T, t_floor)
    share = np.zeros(a.size)
    share[send] = bits[send] / (rate[send] * (T - a[send]))
    share = share / max(share.sum(), 1.0)
    return float(T), share


def evaluate(inst: DeftInstance, assign: np.ndarray, name: str = "plan", share: np.ndarray | None = None) -> DeftSolution:
    """Makespan of a matching; with share=None, the exact optimal bandwidth for it."""
    assign = np.asarray(assign, int)
    cols = np.arange(inst.L)
    a = inst.busy_s[assign, cols]
    if not np.all(inst.feasible[assign, cols]):
        return DeftSolution(name, float("inf"), assign, np.zeros(inst.K))
    if share is None:
        T, sh = exact_bandwidth(a, inst.link_bits, inst.rate[assign])
        full = np.zeros(inst.K)
        full[assign] = sh
        return DeftSolution(name, T, assign, full)
    lat = inst.latency(share)[assign, cols]
    return DeftSolution(name, float(lat.max()), assign, np.asarray(share, float))


def _project_simplex(v: np.ndarray) -> np.ndarray:
    u = np.sort(v)[::-1]
    css = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, v.size + 1) > (css - 1))[0][-1]
    theta = (css[rho] - 1) / (rho + 1.0)
    return np.maximum(v - theta, 0.0)


def dual_ascent(
    inst: DeftInstance, iters: int = 60, step: float = 0.5, tol: float = 1e-9, recovery: str = "band-need"
) -> DeftSolution:
    """Dual ascent on the latency multipliers (see module doc); returns the best primal plan seen.

    Primal plans come from alternating CRUNCH and exact bandwidth, then `band_need_descent` from the
    best plan each iteration (recovery='band-need', the only one). The recovery by CRUNCH alone
    (recovery='crunch', the paper's as we read it) was dropped: it stopped up to 25.5% above the optimum
    on 300 random instances (31% in issue 18's check; docs/planner.md).
    """
    if recovery not in RECOVERIES:
        raise ConfigError(f"dual_ascent: recovery={recovery!r} is not one of {RECOVERIES}; 'crunch' was dropped "
                          "(up to 25.5% above the optimum, docs/planner.md): use the default 'band-need'")
    inst.check_feasible()
    K, L = inst.K, inst.L
    share = np.full(K, 1.0 / min(K, L))
    lam = np.full(K, 1.0 / K)
    best: DeftSolution | None = None
    history: list[float] = []
    seen: set[tuple] = set()

    def consider(assign: np.ndarray) -> DeftSolution:
        nonlocal best
        key = tuple(int(x) for x in assign)
        sol = evaluate(inst, assign, "dual-ascent")
        if key not in seen:
            seen.add(key)
        if best is None or sol.makespan < best.makespan:
            best = sol
        return sol

    for it in range(iters):
        lat = inst.latency(np.maximum(share, 1e-12))
        m = crunch(lat)  # CRUNCH: the best matching for the current bandwidth, and its threshold
        consider(m.assign)
        # block subproblem: lambda-weighted assignment among the pairs CRUNCH keeps
        x = refine_min_sum(lat, m.makespan, weights=np.maximum(lam, 1e-9)).assign
        sol_x = consider(x)
        # bandwidth subproblem, closed form over the involved devices (z_k = 1)
        z = np.zeros(K, bool)
        z[x] = True
        s_k = np.zeros(K)
        s_k[x] = inst.link_bits
        w = np.sqrt(np.maximum(lam, 1e-12) * s_k / inst.rate) * z
        share_dual = w / w.sum() if w.sum() > 0 else z / z.sum()
        # primal recovery: alternate CRUNCH and exact bandwidth from the exact shares of x
        share_p = sol_x.share
        for _ in range(5):
            m2 = crunch(inst.latency(np.maximum(share_p, 1e-12)))
            s2 = consider(m2.assign)
            if np.allclose(s2.share, share_p):
                break
            share_p = s2.share
        best = band_need_descent(inst, best)
        history.append(best.makespan)
        # dual step: projected subgradient on lambda (latency over the makespan it induces)
        t_k = np.zeros(K)
        lat_dual = inst.latency(np.maximum(share_dual, 1e-12))
        t_k[x] = lat_dual[x, np.arange(L)]
        g = (t_k - t_k.max() * z) / max(t_k.max(), 1e-30)
        lam = _project_simplex(lam + step / np.sqrt(it + 1) * (g + z * 1.0 / L))
        share = 0.5 * share_dual + 0.5 * best.share  # damped: keep the best primal's band in view
        if it > 5 and abs(history[-6] - history[-1]) <= tol * history[-1]:
            break
    assert best is not None
    best.iterations = len(history)
    best.history = history
    return best


def min_band(inst: DeftInstance, T: float) -> tuple[float, np.ndarray]:
    """Least total band share any matching needs to finish within T (Hungarian on the need)."""
    a = np.where(inst.feasible, inst.busy_s, np.inf)
    S = inst.link_bits[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        need = S / (inst.rate[:, None] * (T - a))
    ok = (a < T) | ((S == 0) & (a <= T))
    need = np.where(S == 0, 0.0, need)
    cost = np.where(ok, need, BIG)
    rows, cols = linear_sum_assignment(cost)
    assign = np.empty(inst.L, int)
    assign[cols] = rows
    return float(cost[rows, cols].sum()), assign


def band_need_descent(inst: DeftInstance, sol: DeftSolution, max_steps: int = 50) -> DeftSolution:
    """From a plan of makespan T, the min-band matching at T finishes sooner whenever it leaves band
    unused; repeating this to a fixed point reaches the smallest T whose min band is 1."""
    for _ in range(max_steps):
        band, assign = min_band(inst, sol.makespan)
        if band >= 1.0 - 1e-12:
            break
        cand = evaluate(inst, assign, sol.name)
        if not cand.makespan < sol.makespan * (1 - 1e-13):
            break
        sol = cand
    return sol


def exact_joint(inst: DeftInstance, rel_tol: float = 1e-10) -> DeftSolution:
    """Optimal makespan by bisection on T with a min-band assignment (exact for this model)."""
    inst.check_feasible()
    a = np.where(inst.feasible, inst.busy_s, np.inf)
    S = inst.link_bits

    lo = crunch(a).makespan  # no band needed below the compute-only optimum
    start = evaluate(inst, crunch(inst.latency(np.full(inst.K, 1.0 / inst.L))).assign)
    hi = start.makespan
    best_assign = start.assign
    if S.sum() == 0:
        return evaluate(inst, crunch(a).assign, "exact")
    for _ in range(200):
        if hi - lo <= rel_tol * hi:
            break
        mid = 0.5 * (lo + hi)
        band, assign = min_band(inst, mid)
        if band <= 1.0:
            hi, best_assign = mid, assign
        else:
            lo = mid
    sol = evaluate(inst, best_assign, "exact")
    return sol


def brute_force_joint(inst: DeftInstance) -> DeftSolution:
    """Every matching with its exact bandwidth (small instances only)."""
    best = None
    for perm in itertools.permutations(range(inst.K), inst.L):
        sol = evaluate(inst, np.array(perm), "brute-force")
        if best is None or sol.makespan < best.makespan:
            best = sol
    if best is None or not np.isfinite(best.makespan):
        raise PlanError("no feasible matching exists")
    return best


# ---- baselines ---------------------------------------------------------------------------------

def equal_share(inst: DeftInstance, assign: np.ndarray) -> np.ndarray:
    share = np.zeros(inst.K)
    share[np.asarray(assign)] = 1.0 / inst.L
    return share


def baseline_random(inst: DeftInstance, seed: int = 0, tries: int = 200) -> DeftSolution:
    """A random memory-feasible matching with equal bandwidth."""
    rng = np.random.default_rng(seed)
    feas = inst.feasible
    for _ in range(tries):
        assign = rng.permutation(inst.K)[: inst.L]
        if np.all(feas[assign, np.arange(inst.L)]):
            return evaluate(inst, assign, "random", equal_share(inst, assign))
    # memory-aware random order: deepest blocks first, among devices that fit
    assign = np.empty(inst.L, int)
    free = set(range(inst.K))
    for j in range(inst.L - 1, -1, -1):
        cand = [k for k in free if feas[k, j]]
        if not cand:
            raise PlanError("random baseline found no feasible matching")
        k = int(rng.choice(cand))
        assign[j] = k
        free.discard(k)
    return evaluate(inst, assign, "random", equal_share(inst, assign))


def baseline_greedy(inst: DeftInstance) -> DeftSolution:
    """Deepest (costliest) block first, each to the free device that finishes it soonest; equal band."""
    lat = inst.latency(np.full(inst.K, 1.0 / inst.L))
    assign = np.empty(inst.L, int)
    free = np.ones(inst.K, bool)
    for j in range(inst.L - 1, -1, -1):
        cand = np.where(free, lat[:, j], np.inf)
        k = int(np.argmin(cand))
        if not np.isfinite(cand[k]):
            raise PlanError("greedy baseline found no free device for a block")
        assign[j] = k
        free[k] = False
    return evaluate(inst, assign, "greedy", equal_share(inst, assign))


def baseline_equal_bandwidth(inst: DeftInstance) -> DeftSolution:
    """CRUNCH's optimal matching when every involved device gets 1/L of the band."""
    share = np.full(inst.K, 1.0 / inst.L)
    m = crunch(inst.latency(share))
    return evaluate(inst, m.assign, "equal-bandwidth", equal_share(inst, m.assign))


def baseline_offloading(inst: DeftInstance, server_rate_flops: float, data_bits: np.ndarray) -> DeftSolution:
    """Computation offloading only: L devices upload their batch, the server trains all L blocks itself.

    The L devices are the ones with the shortest uploads; the band is split optimally among them.
    Makespan = upload makespan + the server's sequential computation of the same L block updates.
    """
    if inst.work_flops is None:
        raise PlanError("offloading baseline needs the instance's work in FLOPs")
    data_bits = np.broadcast_to(np.asarray(data_bits, float), (inst.K,))
    order = np.argsort(data_bits / inst.rate)[: inst.L]
    T_up, sh = exact_bandwidth(np.zeros(inst.L), data_bits[order], inst.rate[order])
    share = np.zeros(inst.K)
    share[order] = sh
    T = T_up + float(inst.work_flops.sum()) / server_rate_flops
    return DeftSolution("offloading", T, order, share)

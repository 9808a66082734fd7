"""Split solver numerics: the convex solves must succeed where the server's energy-optimal clock is
~1e-3 GHz (kappa_s ~ 1e-18), far below an equal share of its clock, and with many users per server.

Before the variables were scaled to their natural units, CLARABEL stalled on these instances: the
30-user fixed-split baselines of the users sweep kept their equal-share start (objectives ~1e12), and
on the 100-user convergence instance the first FP stage never ran.
"""

import numpy as np
import pytest

from edgeft.planner.split_model import feasible, objective, random_instance
from edgeft.planner.split_solver import (
    BASELINES, SolveStats, _fixed_alpha, best_integer_alpha, greedy_association, initial_point, solve_given_association,
)


def test_fixed_split_baselines_solve_at_30_users():
    # the users-sweep instance at 30 users (bench/planner_figures.py): edge-only 4.5e12 and
    # resources-only 2.3e12 before; the same instance's other baselines are ~1.2-1.8e7
    inst = random_instance(np.random.default_rng(130), 30, 10)
    for name in ("edge-only", "resources-only", "local-only"):
        res = BASELINES[name](inst)
        assert res.solves >= 1 and res.solver_failures == 0, name
        assert res.objective < 1e8, (name, res.objective)


def test_fixed_split_solve_reaches_the_closed_form_clocks():
    # with alpha fixed, each user's clock minimises alpha*(a1/f + a2 f^2): cbrt(a1/(2 a2)) clipped to
    # its range; each edge clock likewise cbrt(b1/(2 b2)) wherever its server's clock is not exhausted
    inst = random_instance(np.random.default_rng(130), 30, 10)
    server = greedy_association(inst)
    res = _fixed_alpha(inst, server, 1.0, "edge-only")
    pt = res.point
    a1, a2 = inst.user_coef()
    b1, b2 = inst.edge_coef(server)
    f_star = np.clip(np.cbrt(a1 / (2 * a2)), inst.f_lo, inst.f_hi)
    np.testing.assert_allclose(pt.f, f_star, rtol=1e-3)
    slack = np.array([pt.fe[server == m].sum() < inst.F[m] * (1 - 1e-3) for m in server])
    assert slack.any()
    np.testing.assert_allclose(pt.fe[slack], np.cbrt(b1 / (2 * b2))[slack], rtol=1e-3)


def test_first_fp_stage_runs_and_converges_at_100_users():
    # the convergence instance (100 users, 10 servers): the first FP step used to fail, leaving an
    # empty FP history and the plan to the fixed-alpha descent
    inst = random_instance(np.random.default_rng(100), 100, 10)
    server = greedy_association(inst)
    start = best_integer_alpha(inst, initial_point(inst, server))
    hist: list[float] = []
    stats = SolveStats()
    pt = solve_given_association(inst, server, history=hist, stats=stats)
    assert stats.failures == 0 and stats.solves >= len(hist)
    assert len(hist) >= 2
    assert hist[0] < objective(inst, start)
    assert all(b <= a for a, b in zip(hist, hist[1:]))
    assert (hist[-2] - hist[-1]) <= 1e-4 * hist[-1]  # FP stopped because it converged, not on a failure
    assert feasible(inst, pt) and np.all(pt.alpha == np.round(pt.alpha))


@pytest.mark.parametrize("seed,N,M", [(613128, 31, 1), (748899, 16, 1), (58568, 88, 1), (277347, 57, 10)])
def test_crowded_servers_solve_without_failures(seed, N, M):
    # instances where an intermediate version of the fix (scaled variables, alpha still a variable
    # pinned by two inequalities, or CLARABEL's default step) still stalled
    inst = random_instance(np.random.default_rng(seed), N, M)
    server = greedy_association(inst)
    for a in (1.0, 16.0, inst.s.layers - 1.0):
        res = _fixed_alpha(inst, server, a, "fixed")
        assert res.solver_failures == 0, a
        assert res.objective <= objective(inst, initial_point(inst, server, a)), a
    if N <= 40:
        stats = SolveStats()
        solve_given_association(inst, server, stats=stats)
        assert stats.failures == 0

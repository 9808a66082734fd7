"""The split solver's association against brute force over every association (tiny instances)."""

import itertools

import numpy as np
from hypothesis import given, settings, strategies as st

from edgeft.planner.split_model import SplitSettings, objective, random_instance
from edgeft.planner.split_solver import SolveStats, local_search, solve_given_association, solve_split


def _brute(inst):
    return min((objective(inst, solve_given_association(inst, np.array(a))), a)
               for a in itertools.product(range(inst.M), repeat=inst.N))


@settings(max_examples=2, deadline=None, derandomize=True)
@given(st.integers(0, 10_000))
def test_split_within_half_a_percent_of_brute_force(seed):
    inst = random_instance(np.random.default_rng(seed), 3, 2)
    assert solve_split(inst).objective <= _brute(inst)[0] * 1.005


def test_local_search_leaves_a_bad_association():
    """From the worst association, the moves and swaps reach the best one (CCCP alone may stop early)."""
    inst = random_instance(np.random.default_rng(3), 3, 2)
    vals = {a: objective(inst, solve_given_association(inst, np.array(a)))
            for a in itertools.product(range(2), repeat=3)}
    worst = max(vals, key=vals.get)
    start = solve_given_association(inst, np.array(worst))
    pt, val = local_search(inst, start, vals[worst], {worst}, 12, SolveStats(), [])
    assert val <= min(vals.values()) * 1.005


def test_local_search_closes_the_gap_where_cccp_stops():
    """4 users, 2 servers (light delay weight, heavy energy weight, 2 km area): CCCP from both starts
    ends at [1 0 0 0], 0.195% above the best association [0 0 0 0]; one move reaches it."""
    rng = np.random.default_rng(47)
    rng.choice([0.1, 1, 10], 3), rng.choice([100, 500, 2000]), rng.integers(2, 4)  # the scan that found it drew these
    inst = random_instance(rng, 4, 2, SplitSettings(w_t=0.1, w_e=10.0, w_s=1.0), area_m=2000.0)
    best = _brute(inst)[0]
    res = solve_split(inst)
    assert res.objective <= best * (1 + 1e-4)
    assert solve_split(inst, local_solves=0).objective > best * (1 + 1e-3)  # what CCCP alone reaches

"""The split solver's association against brute force over every association (tiny instances)."""

import itertools

import numpy as np
from hypothesis import given, settings, strategies as st

from edgeft.planner.split_model import objective, random_instance
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

"""CRUNCH equals brute force; the generic fallback and infeasibility paths."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgeft.errors import PlanError
from edgeft.planner.crunch import bottleneck_matching, brute_force, crunch, is_depth_monotone


def random_depth_instance(rng, K, L):
    """Depth-monotone latency (compute grows with depth, per-device upload) and memory limits."""
    c = np.cumsum(rng.uniform(0.1, 2.0, L))
    speed = rng.uniform(0.2, 5.0, K)
    upload = rng.uniform(0.0, 3.0, K)[:, None] * rng.uniform(0.5, 1.5, L)[None, :].cumsum(axis=1) / L
    lat = c[None, :] / speed[:, None] + upload
    lat = np.round(lat, int(rng.integers(1, 4)))  # rounding makes ties, the hard case for thresholds
    mem_need = np.cumsum(rng.uniform(0.5, 2.0, L))
    cap = rng.uniform(0.4, 1.3, K) * mem_need[-1]
    return lat, mem_need[None, :] <= cap[:, None]


def test_crunch_equals_brute_force_on_550_instances():
    rng = np.random.default_rng(2026)
    checked = infeasible = 0
    while checked < 550 and checked + infeasible < 2000:
        K = int(rng.integers(1, 7))
        L = int(rng.integers(1, K + 1))
        lat, feas = random_depth_instance(rng, K, L)
        try:
            expected = brute_force(lat, feas)
        except PlanError:
            infeasible += 1
            with pytest.raises(PlanError):
                crunch(lat, feas)
            continue
        got = crunch(lat, feas)
        assert got.makespan == pytest.approx(expected.makespan, rel=0, abs=1e-12)
        assigned = np.where(feas, lat, np.inf)[got.assign, np.arange(L)]
        assert len(set(got.assign.tolist())) == L  # a matching
        assert assigned.max() == pytest.approx(got.makespan)
        checked += 1
    assert checked >= 500 and infeasible > 0, (checked, infeasible)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_crunch_property(K, seed):
    rng = np.random.default_rng(seed)
    L = int(rng.integers(1, K + 1))
    lat, feas = random_depth_instance(rng, K, L)
    try:
        expected = brute_force(lat, feas).makespan
    except PlanError:
        return
    assert crunch(lat, feas).makespan == pytest.approx(expected, abs=1e-12)


def test_non_monotone_rows_fall_back_to_generic_matching():
    rng = np.random.default_rng(3)
    assert not is_depth_monotone(np.array([[2.0, 1.0]]))
    for _ in range(50):
        lat = rng.uniform(0, 10, (5, 3))  # arbitrary, usually not monotone in depth
        assert crunch(lat).makespan == pytest.approx(brute_force(lat).makespan)
        assert bottleneck_matching(lat).makespan == pytest.approx(brute_force(lat).makespan)


def test_block_that_fits_no_device_is_a_clear_error():
    lat = np.ones((3, 2))
    feas = np.array([[True, False]] * 3)
    with pytest.raises(PlanError, match="depth 2"):
        crunch(lat, feas)


def test_more_blocks_than_devices_is_a_clear_error():
    with pytest.raises(PlanError, match="only 2 devices"):
        crunch(np.ones((2, 3)))

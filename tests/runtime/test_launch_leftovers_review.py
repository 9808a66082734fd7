"""Leftovers of the last launch review, each a fault a user could meet: see the docstrings."""

from __future__ import annotations


def test_a_fill_first_plan_without_cached_epoch_figures_prints_no_empty_figure():
    """Without a per-epoch figure on the cache (no measured cached step), the plan printed
    'cache fill ... at most 3.2 s, then  s per epoch on the cache'."""
    from types import SimpleNamespace

    from edgeft.runtime.run import LaunchConfig, describe_plan

    plan = SimpleNamespace(layout={"stages": [{"ranks": [0], "shares": [1.0], "blocks": [0, 6]}]},
                           predicted={"epoch_s": 3.2}, ranks=[{"name": "p1", "kind": "device"}])
    text = describe_plan(plan, LaunchConfig(cluster="c.yaml", task={"name": "sst2"}, train={"epochs": 2}), True)
    assert "predicted: cache fill (forward-only pipeline) at most 3.2 s" in text
    assert "then" not in text and " s per epoch" not in text
    plan.predicted["later_epochs_s"] = [1.25, 1.5]
    text = describe_plan(plan, LaunchConfig(cluster="c.yaml", task={"name": "sst2"}, train={"epochs": 2}), True)
    assert "at most 3.2 s, then 1.2, 1.5 s per epoch on the cache" in text

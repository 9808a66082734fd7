"""The runtime half of each strategy: one module per strategy defines its `Strategy` subclass (loop.py),
which the one registry (edgeft.planner.strategies) names."""


def get(name: str):
    """The runtime Strategy class of a registered strategy (ConfigError for an unknown name)."""
    import importlib

    from edgeft.errors import ConfigError
    from edgeft.planner.strategies import get as entry

    module, cls = entry(name, ConfigError).runtime.split(":")
    return getattr(importlib.import_module(module), cls)


def make_plan(strategy: str, cluster, table, samples: int, steps: int, micro_batches: int | None = None,
              cut: int | None = None):
    """The launcher's RuntimePlan of a registered strategy (its Strategy.make_plan)."""
    return get(strategy).make_plan(cluster, table, samples, steps, micro_batches, cut)


def repredict(plan, cluster, table, steps: int) -> dict | None:
    """Predicted times of the plan's placement (cut, blocks and shares) on another cluster, e.g. the
    emulated one; None where the strategy needs none (its Strategy.repredict says)."""
    return get(plan.strategy).repredict(plan, cluster, table, steps)

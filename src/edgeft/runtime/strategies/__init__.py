"""The runtime half of each strategy: one module per strategy defines its `Strategy` subclass (loop.py),
which the one registry (edgeft.planner.strategies) names."""


def get(name: str):
    """The runtime Strategy class of a registered strategy (ConfigError for an unknown name)."""
    import importlib

    from edgeft.errors import ConfigError
    from edgeft.planner.strategies import get as entry

    module, cls = entry(name, ConfigError).runtime.split(":")
    return getattr(importlib.import_module(module), cls)

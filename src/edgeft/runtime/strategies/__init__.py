"""One module per strategy; each defines a `Strategy` subclass (loop.py) named after it."""

STRATEGIES = ("hybrid", "deft", "split")


def get(name: str):
    import importlib

    from edgeft.errors import ConfigError

    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}': choose one of {', '.join(STRATEGIES)}")
    return getattr(importlib.import_module(f"edgeft.runtime.strategies.{name}"), name.capitalize())

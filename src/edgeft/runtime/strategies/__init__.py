"""One module per strategy; each exposes `run(ctx) -> dict` (this rank's measured result)."""

STRATEGIES = ("hybrid", "deft", "split")


def get(name: str):
    import importlib

    from edgeft.errors import ConfigError

    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}': choose one of {', '.join(STRATEGIES)}")
    return importlib.import_module(f"edgeft.runtime.strategies.{name}")

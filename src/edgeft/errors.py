"""One family of errors, each naming what is wrong and what to do about it.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class EdgeftError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, impossible request)."""


class ConfigError(EdgeftError):
    """A configuration key, value or combination is invalid."""


class DataError(EdgeftError):
    """A data file is missing or a row in it is malformed (the message names file and line)."""


class ModelError(EdgeftError):
    """A model cannot be found, fetched or loaded."""


class CacheError(EdgeftError):
    """A cache (activations, model files) is stale, corrupt or over its budget."""


class PlanError(EdgeftError):
    """A cluster or plan is invalid or infeasible."""

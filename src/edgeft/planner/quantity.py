"""Physical quantities for the cluster spec: finite numbers of the right type, in a physical range.

A solver fed NaN, infinity, 1e-300 or `true` returns NaN plans, zero times or tracebacks, so every
number of a cluster file is checked here, where its field path is still known. The ranges are
generous (they are listed in docs/planner.md, "Cluster file"); outside them no real device exists.
"""

from __future__ import annotations

import math
from typing import Annotated, Union

from pydantic import BeforeValidator


def as_number(value: object, *, integer: bool = False) -> float:
    """The value as a finite float (or whole number); text like '1e10' counts, since YAML 1.1 reads it as text."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, not the text {value!r}") from None
    elif isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise ValueError("the number is too large to be a float") from None
    else:
        raise ValueError(f"expected a number, not {type(value).__name__} {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, not {number}")
    if integer and not number.is_integer():
        raise ValueError(f"expected a whole number, not {number:g}")
    return number


def _in_range(number: float, lo: float, hi: float, unit: str, zero: bool) -> float:
    if lo <= number <= hi or (zero and number == 0):
        return number
    allowed = f"{lo:g}..{hi:g} {unit}" + (", or 0" if zero else "")
    if number <= 0 < lo:
        raise ValueError(f"{number:g} {unit}: must be greater than 0 (the physical range is {allowed})")
    raise ValueError(f"{number:g} {unit} is outside the physical range {allowed}")


def quantity(lo: float, hi: float, unit: str, *, zero: bool = False, integer: bool = False):
    """A pydantic type: a finite number of `unit` in [lo, hi] (or exactly 0 when zero=True)."""

    def check(value):
        number = _in_range(as_number(value, integer=integer), lo, hi, unit, zero)
        return int(number) if integer else number

    return Annotated[int if integer else float, BeforeValidator(check)]


def quantity_range(lo: float, hi: float, unit: str, *, zero_min: bool = False):
    """A pydantic type: one number, or a [min, max] pair with min <= max, each in [lo, hi]
    (the min may be 0 when zero_min=True): a setting the solver may choose within."""

    def check(value):
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"expected a number or a [min, max] pair, not a list of {len(value)}")
            low = _in_range(as_number(value[0]), lo, hi, unit, zero_min)
            high = _in_range(as_number(value[1]), lo, hi, unit, False)
            if low > high:
                raise ValueError(f"[min, max] = [{low:g}, {high:g}] has min > max")
            return (low, high)
        return _in_range(as_number(value), lo, hi, unit, False)

    return Annotated[Union[float, tuple[float, float]], BeforeValidator(check)]

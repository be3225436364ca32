"""Argument checks shared by the solver modules (similarity, matching) and the models.

Each returns the value in canonical form or raises a ``ValueError`` that names the argument
and says what was expected. No framework imports.
"""

import math

import numpy as np


def positive_number(value, name):
    """``value`` as a float, which must be finite and > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def integer_in_range(value, name, low, high=None):
    """``value`` as an int (bools rejected), with ``low <= value`` (and ``<= high`` if given)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def number_in_range(value, name, low, high=None):
    """``value`` as a finite float (bools rejected) with ``low <= value`` (and ``<= high``)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < low or (high is not None and number > high):
        allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return number

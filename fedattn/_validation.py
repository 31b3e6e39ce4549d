"""Validation at fedattn's boundary, written once: each check names the argument and what it accepts."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

from .errors import InvalidConfigError

__all__ = ["positive_int", "non_negative_int", "positive_float", "non_negative_float", "probability", "one_of"]

T = TypeVar("T")


def positive_int(name: str, value: Any, *, error: type[Exception] = InvalidConfigError) -> int:
    """``value`` if it is an int >= 1 (bools refused), else ``error`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"{name} must be a positive integer, got {value!r}")
    return value


def non_negative_int(name: str, value: Any, *, error: type[Exception] = InvalidConfigError) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(f"{name} must be a non-negative integer, got {value!r}")
    return value


def positive_float(name: str, value: Any, *, error: type[Exception] = InvalidConfigError) -> float:
    """``value`` as a float if it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise error(f"{name} must be a positive number, got {value!r}")
    return float(value)


def non_negative_float(name: str, value: Any, *, error: type[Exception] = InvalidConfigError) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise error(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def probability(name: str, value: Any, *, error: type[Exception] = InvalidConfigError, closed: bool = False) -> float:
    """A number in [0, 1) (or [0, 1] with ``closed``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value and (
        value <= 1 if closed else value < 1)
    if not ok:
        raise error(f"{name} is a probability in [0, 1{']' if closed else ')'}, got {value!r}")
    return float(value)


def one_of(name: str, value: T, options: Iterable[T], *, error: type[Exception] = InvalidConfigError) -> T:
    options = tuple(options)
    if value not in options:
        raise error(f"{name} {value!r} is not valid; choose one of: {', '.join(map(str, options))}")
    return value

"""Validation at attacks' boundary, written once (scikit-learn's style: the message names the argument)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["count", "real"]


def count(x: Any, name: str, *, low: int = 0, high: int | None = None, error: type[Exception] = ValueError) -> int:
    """``x`` as an int in ``[low, high]`` (bools refused), else ``error`` naming ``name``."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < low or (high is not None and x > high):
        raise error(f"{name} must be an integer in [{low}, {high if high is not None else 'inf'}], got {x!r}")
    return int(x)


def real(x: Any, name: str, *, low: float = 0.0, high: float = math.inf, closed: bool = False,
         error: type[Exception] = ValueError) -> float:
    """``x`` as a finite float in ``(low, high)`` (``[low, high)`` if ``closed``)."""
    ok = isinstance(x, (int, float, np.number)) and not isinstance(x, bool) and math.isfinite(x)
    if not ok or not (low <= x if closed else low < x) or not x < high:
        raise error(f"{name} must lie in {'[' if closed else '('}{low:g}, {high:g}), got {x!r}")
    return float(x)

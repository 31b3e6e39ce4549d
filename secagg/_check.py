"""Validation at secagg's boundary, written once: each check names the argument it refuses."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["integer"]


def integer(name: str, value: Any, *, minimum: int = 0, error: type[Exception] = ValueError) -> int:
    """``value`` as an int >= ``minimum`` (numpy integers accepted, bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        raise error(f"{name} must be {kind}, got {value!r}")
    return int(value)

"""Validation at secagg's boundary, written once: each check names the argument it refuses."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["integer", "validate_client_id"]


def integer(name: str, value: Any, *, minimum: int = 0, error: type[Exception] = ValueError) -> int:
    """``value`` as an int >= ``minimum`` (numpy integers accepted, bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        raise error(f"{name} must be {kind}, got {value!r}")
    return int(value)


_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,128}$")


def validate_client_id(client_id: Any) -> str:
    """A client id: 1-128 characters of letters, digits and ``_.:@/+-`` (safe in files, logs, JSON)."""
    if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
        raise ValueError("a client id is 1-128 characters of letters, digits and _.:@/+-")
    return client_id

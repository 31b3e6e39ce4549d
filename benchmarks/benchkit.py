"""State the benchmark suites share: the figures each cell recorded, and the measured rounds."""

from __future__ import annotations

from typing import Any

#: (method, params, clients) -> figures recorded by the tests of that cell
CELLS: dict[tuple[str, int, int], dict[str, Any]] = {}
#: one row per measured round (see test_round_bench.py)
ROUNDS: list[dict[str, Any]] = []

FIELDS = ("client_s", "server_s", "key_holder_s", "bytes_per_client", "bytes_x_float32", "max_error")


def record(method: str, params: int, clients: int, **figures: Any) -> None:
    CELLS.setdefault((method, params, clients), {}).update(figures)

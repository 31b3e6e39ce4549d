"""Shared state of the benchmark suites, and a same-run summary printed through ``secfl bench``'s report code."""

from __future__ import annotations

from typing import Any

from fedattn import bench
from fedattn import bench_report as report

#: (method, params, clients) -> figures recorded by the tests of that cell
CELLS: dict[tuple[str, int, int], dict[str, Any]] = {}
#: one row per measured round (see test_round_bench.py)
ROUNDS: list[dict[str, Any]] = []

_FIELDS = ("client_s", "server_s", "key_holder_s", "bytes_per_client", "bytes_x_float32", "max_error")


def record(method: str, params: int, clients: int, **figures: Any) -> None:
    CELLS.setdefault((method, params, clients), {}).update(figures)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    if ROUNDS:
        tr.section("one federated round, encrypted vs plaintext (same run)")
        tr.write_line(report.rounds_text({"rounds": ROUNDS}))
    cells = [{"method": m, "params": p, "clients": c, **dict.fromkeys(_FIELDS), **fig} for (m, p, c), fig in CELLS.items()]
    for params, clients in sorted({(c["params"], c["clients"]) for c in cells}):
        at = [c for c in cells if (c["params"], c["clients"]) == (params, clients)]
        if not all(c["client_s"] and c["server_s"] and c["bytes_per_client"] for c in at):
            continue  # a role of this cell did not run (-k, skip): no comparison to print
        tr.section(f"secagg vs baselines, {params:,} parameters, {clients} clients (same run)")
        tr.write_line(report.targets_text({"cells": at, "skipped": [],
                                           "targets": bench.targets(at, params=params, clients=clients)}))

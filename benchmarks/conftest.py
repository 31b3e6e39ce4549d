"""A same-run summary of the benchmark suites, printed through ``secfl bench``'s report code."""

from __future__ import annotations

from benchkit import CELLS, FIELDS, ROUNDS

from secfl.bench import cells as bench
from secfl.bench import report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    if ROUNDS:
        tr.section("one federated round, encrypted vs plaintext (same run)")
        tr.write_line(report.rounds_text({"rounds": ROUNDS}))
    cells = [{"method": m, "params": p, "clients": c, **dict.fromkeys(FIELDS), **fig} for (m, p, c), fig in CELLS.items()]
    for params, clients in sorted({(c["params"], c["clients"]) for c in cells}):
        at = [c for c in cells if (c["params"], c["clients"]) == (params, clients)]
        if not all(c["client_s"] and c["server_s"] and c["bytes_per_client"] for c in at):
            continue  # a role of this cell did not run (-k, skip): no comparison to print
        tr.section(f"secagg vs baselines, {params:,} parameters, {clients} clients (same run)")
        tr.write_line(report.targets_text({"cells": at, "skipped": [],
                                           "targets": bench.targets(at, params=params, clients=clients)}))

"""The server on several threads: the same cell's server step with 1, 2, ... fold threads.

secagg's server checks and adds each upload a range of ciphertexts per thread (hashing and numpy
release the GIL; :func:`secagg.parallel.map_ranges`). This measures what that buys: for each
method, the clients encrypt once, then the server step runs with each thread count in turn,
repetitions interleaved (the order rotated from one repetition to the next) so that load drifting
on a shared machine reaches every count alike; figures are medians of wall and CPU seconds. A
speedup is wall seconds on one thread over wall seconds on ``n``: it can exceed neither ``n`` nor
the number of cores the machine really gives (``machine.usable_cores`` in ``bench.json``; two
virtual cores may share one physical core).

Example:
    >>> out = measure_server_threads(["secagg-compact"], params=20_000, clients=2, threads=(1, 2), repeats=1)
    >>> sorted(out[0]["by_threads"]), out[0]["speedup"]["1"]
    (['1', '2'], 1.0)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from .baselines import SecAgg
from .cells import Cell, _positive_int, one_core
from .method import Timer

__all__ = ["measure_server_threads", "THREADS_TARGET"]

#: the server on 2 threads against 1, at the targets' cell
THREADS_TARGET = 1.6


def measure_server_threads(methods: Sequence[str], *, params: int, clients: int, threads: Sequence[int] = (1, 2),
                           repeats: int = 5, budget: int = 10_000_000, seed: int = 0) -> list[dict[str, Any]]:
    """Per secagg method: the server step's median wall and CPU seconds at each thread count."""
    repeats = _positive_int("repeats", repeats)
    counts = sorted({_positive_int("threads", t) for t in threads} | {1})
    results = []
    for name in methods:
        with one_core():  # the clients as in every other cell; only the server's threads vary below
            cell = Cell(name, params=params, clients=clients, budget=budget, seed=seed)
            payloads, _ = cell.run_clients()
        method = cell.method
        if not isinstance(method, SecAgg):
            raise ValueError(f"methods: {name!r} has no fold threads to vary; choose secagg presets")
        runs: dict[int, list[tuple[float, float]]] = {n: [] for n in counts}
        for rep in range(repeats):
            for n in counts[rep % len(counts):] + counts[:rep % len(counts)]:
                method.server_workers = n
                wall, cpu = time.perf_counter(), time.process_time()
                method.server(payloads, Timer())
                runs[n].append((time.perf_counter() - wall, time.process_time() - cpu))
        method.server_workers = None
        by = {str(n): {"server_s": statistics.median(w for w, _ in r), "server_cpu_s": statistics.median(c for _, c in r)}
              for n, r in runs.items()}
        results.append({"method": name, "params": params, "clients": clients, "repeats": repeats, "by_threads": by,
                        "speedup": {k: by["1"]["server_s"] / v["server_s"] for k, v in by.items()}})
    return results

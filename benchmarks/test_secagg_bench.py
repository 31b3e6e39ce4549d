"""Every step of one aggregation, by method x update size x clients, next to the baselines, in one run.

Run:  python -m pytest benchmarks/test_secagg_bench.py --benchmark-columns=min,median,max,rounds
      python -m pytest benchmarks/test_secagg_bench.py -m slow       # the large cells only (10M values, 50 clients)
      python -m pytest benchmarks/test_secagg_bench.py -m ""         # everything

Methods (see :mod:`secfl.bench.baselines`, the same code ``secfl bench`` measures): plaintext numpy,
``secagg`` with the ``compact`` and ``strict`` presets, NVIDIA FLARE's TenSEAL usage (N=8192,
[60, 40, 40], 2^40, Galois keys, one ``CKKSVector`` per layer, serialised without the context) and
Flower's SecAgg+ masking (skipped where ``flwr`` is missing: ``pip install -e ".[flower]"``).

One test per role: the client (steps ``encrypt``, ``serialise``), the server (``deserialise``,
``aggregate`` of every client) and the key holder (``decrypt``, ``release``). pytest-benchmark times
the role; ``extra_info`` holds each step's mean seconds, the payload bytes, the peak RSS increase of
the first round (in this process: SEAL pools freed memory, so cells after the first under-report;
``secfl bench`` measures each cell in a fresh process) and, for the final step, the max abs error
against the float64 sum. The terminal summary prints the same-run ratios to FLARE and the targets.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchkit import record

from secfl.bench import cells as bench
from secfl.bench.baselines import METHODS, ROLE_PHASES, Timer

ROUNDS = 3
CLIENTS = 10
GRID = [(p, CLIENTS) for p in (10_000, 100_000, 1_000_000, 10_000_000)] + [(1_000_000, 2), (1_000_000, 50)]
#: cells above this many values in all (10M values at 10 clients, 50 clients at 1M) run with -m slow
SLOW_ABOVE = 10_000_000

_cells: dict[tuple[str, int, int], dict] = {}


def _cell(method: str, params: int, clients: int) -> dict:
    """Set up once per (method, size, clients): the cell, its payloads and its aggregate."""
    key = (method, params, clients)
    if key not in _cells:
        if method == "flower-secagg+":
            pytest.importorskip("flwr", reason="Flower SecAgg+ baseline: pip install -e '.[flower]'")
        cell = bench.Cell(method, params=params, clients=clients)
        payloads, _ = cell.run_clients()
        _cells.clear()  # one cell in memory at a time
        _cells[key] = {"cell": cell, "payloads": payloads, "aggregate": cell.method.server(payloads, Timer())}
    return _cells[key]


def _grid():
    for params, clients in GRID:
        marks = [pytest.mark.slow] if params * clients > SLOW_ABOVE else []
        for method in METHODS:
            yield pytest.param(method, params, clients, id=f"{method}-{params}-{clients}", marks=marks)


@pytest.mark.parametrize("role", ["client", "server", "key_holder"])
@pytest.mark.parametrize(("method", "params", "clients"), list(_grid()))
def test_role(benchmark, method, params, clients, role):
    state = _cell(method, params, clients)
    cell = state["cell"]
    m = cell.method
    if role == "key_holder" and not m.has_key_holder:
        pytest.skip(f"{method} has no key holder: the server's aggregate is the result")
    fn = {"client": lambda t: m.client(cell.updates[0], 0, t),
          "server": lambda t: m.server(state["payloads"], t),
          "key_holder": lambda t: m.key_holder(state["aggregate"], t)}[role]
    runs: list[bench.Run] = []
    benchmark.pedantic(lambda: runs.append(bench.run_role(fn)), rounds=ROUNDS, iterations=1)
    steps = {p: float(np.mean([r.steps.get(p, 0.0) for r in runs])) for p in ROLE_PHASES[role]}
    info = {"steps_mean_s": steps, "peak_rss_first_round": runs[0].peak_rss}
    figures = {f"{role}_s": min(r.seconds for r in runs)}
    if role == "client":
        nbytes = sum(len(b) for b in runs[0].output)
        info.update(bytes=nbytes, bytes_x_float32=nbytes / (4 * params))
        figures.update(bytes_per_client=nbytes, bytes_x_float32=nbytes / (4 * params))
    final = role == "key_holder" or (role == "server" and not m.has_key_holder)
    if final:
        out = runs[-1].output[0] if role == "key_holder" else runs[-1].output
        error = bench.max_error(out, cell.reference())
        info["max_abs_error"] = figures["max_error"] = error
    benchmark.extra_info.update(info)
    record(method, params, clients, **figures)
    if final:
        assert error < 1e-3 * clients, f"{method}: the aggregate is off by {error:.3g}"

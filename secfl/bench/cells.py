"""What encryption costs: seconds, bytes, peak memory and error, next to the alternatives, in one run.

The measuring library behind ``secfl bench`` and the pytest-benchmark suites in ``benchmarks/``.
A *cell* is one method at one update size and one number of clients; :func:`measure_cell` runs
its three roles (client, server, key holder; see :mod:`secfl.bench.baselines`) and returns a
plain dict; :func:`measure_interleaved` runs several methods of one cell side by side; how each
cost grows is fitted by :func:`fit_slope` (the grid itself is :mod:`secfl.bench.grid`).

Peak memory is the increase of the process's peak resident set (``VmHWM``, which counts SEAL's
native allocations that ``tracemalloc`` misses) over its size before the step, reset through
``/proc/self/clear_refs``; ``None`` where ``/proc`` is absent. SEAL keeps freed memory in its
pool, so only a process's first server step is exact; the key holder's figure, taken after the
server in the same process, is a lower bound.

Example:
    >>> cell = measure_cell("secagg-compact", params=20_000, clients=2, repeats=1)
    >>> cell["bytes_x_float32"] < 4, cell["max_error"] < 1e-3
    (True, True)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .baselines import ROLE_PHASES, Method, Payload, Timer, make_method

__all__ = ["Cell", "Run", "run_role", "max_error", "measure_cell", "measure_interleaved", "fit_slope", "scaling",
           "targets", "figure", "layer_shapes", "peak_rss"]
log = logging.getLogger(__name__)

SCHEMA = "secfl.bench/1"
REFERENCE = "flare-tenseal"


# ---- memory ------------------------------------------------------------------------------------
def _status_kib(name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            match = re.search(rf"^{name}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def peak_rss(fn: Callable[[], Any]) -> tuple[Any, float, int | None]:
    """Run ``fn``; return its result, its seconds and the peak RSS increase in bytes (None: unknown)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        before = _status_kib("VmRSS")
    except OSError:
        before = None
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    after = _status_kib("VmHWM") if before is not None else None
    return out, seconds, None if after is None or before is None else max(0, after - before) * 1024


# ---- one cell ----------------------------------------------------------------------------------
def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def layer_shapes(params: int) -> dict[str, tuple[int, ...]]:
    """An MLP-like split of ``params`` values into arrays (one big matrix, a bias, a smaller matrix).

    >>> shapes = layer_shapes(1_000_000); sum(math.prod(s) for s in shapes.values())
    1000000
    """
    params = _positive_int("params", params)
    if params < 64:
        return {"fc.weight": (params,)}
    rows = max(1, math.isqrt(params) // 2)
    cols = max(1, (params * 4 // 5) // rows)
    rest = params - rows * cols - rows
    return {"fc1.weight": (rows, cols), "fc1.bias": (rows,), "fc2.weight": (rest,)}


def _updates(shapes: dict[str, tuple[int, ...]], n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` float32 updates at magnitudes from 1e-4 to 1e-1, clipped to [-1, 1] (as real updates are)."""
    rng = np.random.default_rng(seed)
    mags = np.geomspace(1e-4, 1e-1, n) if n > 1 else [1e-2]
    return [{k: (rng.standard_normal(s, dtype=np.float32) * np.float32(m)).clip(-1, 1) for k, s in shapes.items()}
            for m in mags]


def _stats(samples: Sequence[float | None]) -> tuple[float | None, float | None]:
    values = [v for v in samples if v is not None]
    return (float(np.min(values)), float(np.median(values))) if values else (None, None)


def max_error(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    """Largest absolute difference between ``out`` and the float64 reference, over all arrays."""
    return max(float(np.max(np.abs(np.asarray(out[n], np.float64).reshape(ref[n].shape) - ref[n]))) for n in ref)


@dataclass
class Run:
    """One timed run of a role: its output, wall time, peak RSS increase, per-step times, CPU time."""

    output: Any
    seconds: float
    peak_rss: int | None
    steps: dict[str, float]
    cpu_seconds: float | None = None


def run_role(fn: Callable[[Timer], Any]) -> Run:
    timer = Timer()
    cpu = time.process_time()
    out, seconds, mem = peak_rss(lambda: fn(timer))
    return Run(out, seconds, mem, dict(timer.seconds), time.process_time() - cpu)


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Every method on one core: secagg's encryption without worker processes, torch on one thread
    (FLARE's TenSEAL context is made with one thread by its method)."""
    import secagg

    threads = torch_threads()
    set_torch_threads(1)
    try:
        with secagg.worker_limit(1):
            yield
    finally:
        set_torch_threads(threads)


def torch_threads() -> int | None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    return int(torch.get_num_threads())


def set_torch_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


class Cell:
    """One method set up for one update size and number of clients, ready to run its roles.

    Args:
        method: a name in :data:`METHODS`.
        params: values per client update.
        clients: clients in the aggregation (every one encrypts; see ``budget``).
        budget: values that may be drawn distinctly: beyond it, plaintexts repeat across clients
            (each client still encrypts or masks its own), and a method whose payload names no
            client (FLARE) replays earlier payloads, which costs its server the same.
    """

    def __init__(self, method: str, *, params: int, clients: int, budget: int = 10_000_000, seed: int = 0,
                 method_options: dict | None = None) -> None:
        self.params, self.clients = _positive_int("params", params), _positive_int("clients", clients)
        budget = _positive_int("budget", budget)
        if clients < 2:
            raise ValueError(f"clients must be at least 2 (an aggregate of one client hides nothing), got {clients}")
        self.name = method
        self.method: Method = make_method(method, **(method_options or {}))
        self.shapes = layer_shapes(params)
        self.method.setup(shapes=self.shapes, clients=clients)
        self.distinct = min(clients, max(2, budget // params))
        self.updates = _updates(self.shapes, self.distinct, seed)

    def run_clients(self) -> tuple[list[Payload], list[Run]]:
        """Every client's payload, and the timed runs (a replaying method runs the distinct ones only)."""
        payloads: list[Payload] = []
        runs: list[Run] = []
        for k in range(self.clients):
            if self.method.reuse_payloads and k >= self.distinct:
                payloads.append(payloads[k % self.distinct])
                continue
            run = run_role(lambda t: self.method.client(self.updates[k % self.distinct], k, t))  # noqa: B023
            payloads.append(run.output)
            runs.append(run)
        return payloads, runs

    def reference(self) -> dict[str, np.ndarray]:
        """The float64 sum of what the clients sent."""
        counts = np.bincount(np.arange(self.clients) % self.distinct, minlength=self.distinct)
        return {n: sum(c * u[n].astype(np.float64) for c, u in zip(counts, self.updates)) for n in self.shapes}


def _summary(prefix: str, runs: Sequence[Run], phases: Sequence[str]) -> dict[str, Any]:
    """Medians over the runs (wall and CPU seconds, and each step's wall seconds); the best too."""
    best, median = _stats([r.seconds for r in runs])
    _, cpu = _stats([r.cpu_seconds for r in runs])
    return {f"{prefix}_s": median, f"{prefix}_s_best": best, f"{prefix}_cpu_s": cpu,
            "phases": {p: _stats([r.steps.get(p) for r in runs])[1] for p in phases}}  # None: no such step


def measure_interleaved(methods: Sequence[str], *, params: int, clients: int, repeats: int = 5,
                        budget: int = 10_000_000, seed: int = 0) -> list[dict[str, Any]]:
    """The methods of one cell in this process, on one core, repetitions interleaved: each repetition
    runs every method's clients, server and key holder in turn (the order rotated from one
    repetition to the next), so that load drifting on a shared machine reaches all methods alike.
    Every method gets the same number of repetitions; figures are medians. Peak memory is not
    measured here (see :func:`measure_cell` in a fresh process)."""
    repeats = _positive_int("repeats", repeats)
    with one_core():
        cells = {m: Cell(m, params=params, clients=clients, budget=budget, seed=seed) for m in methods}
        runs: dict[str, dict[str, list[Run]]] = {m: {"client": [], "server": [], "key_holder": []} for m in methods}
        outputs: dict[str, Any] = {}
        order = list(methods)
        for rep in range(repeats if params * clients <= budget else 1):
            for name in order[rep % len(order):] + order[:rep % len(order)]:
                cell, m = cells[name], cells[name].method
                payloads, client_runs = cell.run_clients()
                runs[name]["client"] += client_runs
                nbytes = sum(len(b) for b in payloads[0])
                server = run_role(lambda t: m.server(payloads, t))  # noqa: B023
                runs[name]["server"].append(server)
                aggregate, server.output = server.output, None
                payloads.clear()
                kh = run_role(lambda t: m.key_holder(aggregate, t))  # noqa: B023
                runs[name]["key_holder"].append(kh)
                outputs[name] = (kh.output, nbytes)
                kh.output = None
    results = []
    for name in methods:
        cell, m = cells[name], cells[name].method
        (out, raw), nbytes = outputs[name]
        ref = cell.reference()
        parts = [_summary(role, runs[name][role], ROLE_PHASES[role]) for role in ("client", "server", "key_holder")]
        result = {"method": name, "label": m.label, "params": params, "clients": clients,
                  "repeats": len(runs[name]["server"]), "client_runs": len(runs[name]["client"]),
                  "distinct_updates": cell.distinct, "payload_reuse": bool(m.reuse_payloads and clients > cell.distinct),
                  **{k: v for part in parts for k, v in part.items() if k != "phases"},
                  "phases": {p: v for part in parts for p, v in part["phases"].items()},
                  "bytes_per_client": nbytes, "bytes_x_float32": nbytes / (4 * params),
                  "max_error": max_error(out, ref), "max_error_raw": None if raw is None else max_error(raw, ref),
                  "cores": 1, "notes": m.notes(params)}
        if not m.has_key_holder:
            result["key_holder_s"] = result["key_holder_cpu_s"] = result["key_holder_s_best"] = None
        results.append(result)
    return results


def measure_cell(method: str, *, params: int, clients: int, repeats: int = 3, budget: int = 10_000_000,
                 seed: int = 0, fresh_process: bool = False, method_options: dict | None = None) -> dict[str, Any]:
    """Measure one :class:`Cell`; returns a JSON-serialisable dict.

    ``repeats`` times the server and key-holder steps (once where ``params * clients`` exceeds
    ``budget``); the client step is timed once per client that runs it. ``fresh_process`` says
    that this process measured nothing before (memory figures are then exact, see above).
    """
    repeats = _positive_int("repeats", repeats)
    cell = Cell(method, params=params, clients=clients, budget=budget, seed=seed, method_options=method_options)
    m, reps = cell.method, repeats if params * clients <= budget else 1
    payloads, client_runs = cell.run_clients()
    nbytes = sum(len(b) for b in payloads[0])
    server_runs = [run_role(lambda t: m.server(payloads, t)) for _ in range(reps)]
    aggregate = server_runs[-1].output
    for r in server_runs:
        r.output = None  # the key holder step starts without earlier aggregates in memory
    payloads.clear()  # nor the clients' payloads
    agg_bytes = _size(aggregate)
    kh_runs = [run_role(lambda t: m.key_holder(aggregate, t)) for _ in range(reps)]
    out, raw = kh_runs[-1].output
    ref = cell.reference()
    parts = [_summary("client", client_runs, ROLE_PHASES["client"]), _summary("server", server_runs, ROLE_PHASES["server"]),
             _summary("key_holder", kh_runs, ROLE_PHASES["key_holder"])]
    result = {
        "method": method, "label": m.label, "params": params, "clients": clients, "repeats": reps,
        "client_runs": len(client_runs), "distinct_updates": cell.distinct,
        "payload_reuse": bool(m.reuse_payloads and clients > cell.distinct),
        **{k: v for part in parts for k, v in part.items() if k != "phases"},
        "phases": {p: v for part in parts for p, v in part["phases"].items()},
        "bytes_per_client": nbytes, "bytes_x_float32": nbytes / (4 * params), "aggregate_bytes": agg_bytes,
        "peak_rss": {"client": client_runs[0].peak_rss, "server": server_runs[0].peak_rss,
                     "key_holder": kh_runs[0].peak_rss if m.has_key_holder else None},
        "fresh_process": fresh_process,
        "max_error": max_error(out, ref), "max_error_raw": None if raw is None else max_error(raw, ref),
        "notes": m.notes(params),
    }
    if not m.has_key_holder:
        result["key_holder_s"] = result["key_holder_s_median"] = None
    log.info("%s %s params x %d clients: client %.3f s, server %.3f s", method, params, clients,
             result["client_s"], result["server_s"])
    return result


def _size(aggregate: Any) -> int | None:
    """Bytes of a server's aggregate: bytes, a list of them, or a file it streamed them to."""
    if isinstance(aggregate, list):
        return sum(len(b) for b in aggregate)
    if isinstance(aggregate, bytes):
        return len(aggregate)
    if hasattr(aggregate, "fileno"):
        return os.fstat(aggregate.fileno()).st_size
    return None


def _cell_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure_cell` in a fresh interpreter: exact peak memory, no pooled state between cells."""
    proc = subprocess.run([sys.executable, "-m", "secfl.bench.cells", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"measuring {spec} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- scaling -----------------------------------------------------------------------------------
def fit_slope(x: Sequence[float], y: Sequence[float | None]) -> dict[str, float] | None:
    """Least-squares line through (log x, log y): cost ~ x^slope. None with < 2 usable points.

    >>> round(fit_slope([1e4, 1e5, 1e6], [0.01, 0.1, 1.0])["slope"], 6)
    1.0
    """
    pts = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and a > 0 and b > 0]
    if len(pts) < 2 or len({a for a, _ in pts}) < 2:
        return None
    lx, ly = np.log(np.array(pts, dtype=np.float64)).T
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    ss = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss if ss > 0 else 1.0
    return {"slope": float(slope), "coefficient": float(np.exp(intercept)), "r2": r2, "points": len(pts),
            "from": float(np.exp(lx.min())), "to": float(np.exp(lx.max()))}


SCALED = ("client_s", "server_s", "key_holder_s", "bytes_per_client", "server_peak_rss")


def figure(cell: dict[str, Any], metric: str) -> float | None:
    """A cell's ``metric``: one of its fields, or ``server_peak_rss``."""
    return cell["peak_rss"]["server"] if metric == "server_peak_rss" else cell.get(metric)


def scaling(cells: Sequence[dict[str, Any]], *, ref_clients: int, ref_params: int,
            wide_params: int | None = None) -> dict[str, Any]:
    """Per method: log-log slopes of each cost vs parameters (at ``ref_clients``), vs clients (at
    ``ref_params``) and, where the grid has them, vs clients at ``wide_params`` (many small updates)."""
    out: dict[str, Any] = {}
    for method in dict.fromkeys(c["method"] for c in cells):
        mine = [c for c in cells if c["method"] == method]
        by_p = sorted((c for c in mine if c["clients"] == ref_clients), key=lambda c: c["params"])
        by_c = sorted((c for c in mine if c["params"] == ref_params), key=lambda c: c["clients"])
        top = by_p[-2:]  # the local slope where users extrapolate from, above fixed costs
        out[method] = {
            "vs_params": {m: fit_slope([c["params"] for c in by_p], [figure(c, m) for c in by_p]) for m in SCALED},
            "vs_params_top": {m: fit_slope([c["params"] for c in top], [figure(c, m) for c in top]) for m in SCALED},
            "vs_clients": {m: fit_slope([c["clients"] for c in by_c], [figure(c, m) for c in by_c]) for m in SCALED},
        }
        wide = sorted((c for c in mine if c["params"] == wide_params), key=lambda c: c["clients"])
        if wide_params is not None and wide_params != ref_params and len(wide) >= 2:
            out[method]["vs_clients_wide"] = {m: fit_slope([c["clients"] for c in wide], [figure(c, m) for c in wide])
                                              for m in SCALED}
    return out


#: bytes per float32 each preset aims at, and times against FLARE as provisioned (one core each)
BYTES_TARGET = {"secagg-compact": 1.5, "secagg-strict": 2.5, "secagg-compact-lean": 1.5, "secagg-strict-lean": 2.5,
                "secagg-compact-sized": 1.5, "secagg-strict-sized": 2.5}
TIME_TARGET, ALL_TARGET = 0.25, 0.4


def targets(cells: Sequence[dict[str, Any]], *, params: int = 1_000_000, clients: int = 10) -> dict[str, Any]:
    """The issue's targets for each secagg preset, against FLARE and Flower measured in the same run."""
    at = {c["method"]: c for c in cells if c["params"] == params and c["clients"] == clients}
    flare, flower = at.get(REFERENCE), at.get("flower-secagg+")
    out: dict[str, Any] = {"params": params, "clients": clients, "methods": {}}
    for name, c in at.items():
        if not name.startswith("secagg-"):
            continue
        bound = BYTES_TARGET.get(name)
        row: dict[str, Any] = {"label": c["label"], "bytes_x_float32": c["bytes_x_float32"], "bytes_target": bound,
                               "bytes_ok": None if bound is None else c["bytes_x_float32"] <= bound}
        for ref_name, ref in (("flare", flare), ("flower", flower)):
            if ref is None:
                continue
            row[f"client_vs_{ref_name}"] = c["client_s"] / ref["client_s"]
            row[f"server_vs_{ref_name}"] = c["server_s"] / ref["server_s"]
            row[f"bytes_vs_{ref_name}"] = c["bytes_per_client"] / ref["bytes_per_client"]
        if flare is not None:
            row["client_ok"] = row["client_vs_flare"] <= TIME_TARGET
            row["server_ok"] = row["server_vs_flare"] <= TIME_TARGET
            total = c["client_s"] + c["server_s"] + (c["key_holder_s"] or 0.0)
            row["all_vs_flare"] = total / (flare["client_s"] + flare["server_s"] + (flare["key_holder_s"] or 0.0))
            row["all_ok"] = row["all_vs_flare"] <= ALL_TARGET
        out["methods"][name] = row
    return out


if __name__ == "__main__":  # one cell in a fresh process: python -m secfl.bench.cells '{"method": ...}'
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with one_core():
        print(json.dumps(measure_cell(**json.loads(sys.argv[1]), fresh_process=True)))

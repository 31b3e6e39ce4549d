"""The grid ``secfl bench`` measures, and the run that measures it.

:func:`run_bench` measures a :class:`BenchConfig`'s grid of cells, the methods of each cell side by
side (:func:`secfl.bench.cells.measure_interleaved`) and again each alone in a fresh process so that
peak memory is not hidden by memory that SEAL pooled for an earlier cell; fits how each cost grows
(:func:`secfl.bench.cells.fit_slope`); times the secagg servers on several threads
(:mod:`secfl.bench.threads`); and adds one federated round per protocol
(:func:`secfl.bench.rounds.measure_round`). :data:`QUICK` and :data:`FULL` are the command's grids.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .baselines import LEAN, METHODS, make_method, method_unavailable
from .cells import SCHEMA, _cell_subprocess, _positive_int, measure_cell, measure_interleaved, scaling, targets
from .rounds import RoundSpec, measure_round
from .threads import measure_server_threads

__all__ = ["BenchConfig", "RoundSpec", "QUICK", "FULL", "config_for", "machine_info", "run_bench"]
log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BenchConfig:
    """A grid: ``sizes`` at ``ref_clients`` clients, plus ``clients`` at ``ref_params`` values, plus
    ``wide_clients`` at ``wide_params`` values (many clients with small updates; none if empty)."""

    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000, 10_000_000)
    clients: tuple[int, ...] = (2, 10, 50)
    wide_params: int = 100_000
    wide_clients: tuple[int, ...] = ()
    #: thread counts for the secagg servers at the targets' cell (none if empty; see :mod:`.threads`)
    server_threads: tuple[int, ...] = ()
    ref_clients: int = 10
    ref_params: int = 1_000_000
    methods: tuple[str, ...] = METHODS
    #: methods measured at the targets' cell only, beside the others (the presets for small
    #: federations: their modulus holds sums of at most 22 members, or of the cell's clients)
    target_methods: tuple[str, ...] = ()
    repeats: int = 3
    budget: int = 10_000_000
    rounds: tuple[RoundSpec, ...] = field(default_factory=tuple)
    round_repeats: int = 3
    fresh_processes: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        for name in ("sizes", "clients"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
            for v in getattr(self, name):
                _positive_int(name, v)
        if min(self.clients) < 2 or self.ref_clients < 2:
            raise ValueError(f"clients must be at least 2 (an aggregate of one client hides nothing), got {self.clients}")
        for t in self.server_threads:
            _positive_int("server_threads", t)
        if any(c < 2 for c in self.wide_clients):
            raise ValueError(f"wide_clients must be at least 2, got {self.wide_clients}")
        for name in ("ref_clients", "ref_params", "wide_params", "repeats", "budget", "round_repeats"):
            _positive_int(name, getattr(self, name))
        for m in self.methods + self.target_methods:
            make_method(m)  # ValueError naming the argument for an unknown method

    def cells(self) -> list[tuple[int, int]]:
        grid = [(p, self.ref_clients) for p in self.sizes] + [(self.ref_params, c) for c in self.clients]
        return sorted(set(grid + [(self.wide_params, c) for c in self.wide_clients]))

    def target_cell(self) -> tuple[int, int]:
        """Where the targets are read: the largest size up to 1M at ``ref_clients`` clients."""
        at = max((p for p, c in self.cells() if c == self.ref_clients and p <= 1_000_000), default=self.ref_params)
        return at, self.ref_clients


QUICK = BenchConfig(sizes=(10_000, 100_000, 1_000_000), clients=(2, 10), ref_params=100_000, repeats=1,
                    budget=2_000_000, rounds=(RoundSpec("mlp", "client-scored", "strict"),), round_repeats=1)
FULL = BenchConfig(repeats=5, round_repeats=5, wide_clients=(10, 100), server_threads=(1, 2), target_methods=LEAN, rounds=tuple(RoundSpec(m, "client-scored", p) for m in ("mlp", "cnn") for p in ("strict", "compact"))
                   + (RoundSpec("mlp", "server-scored", "deep"),))


def config_for(*, quick: bool, command: str, sizes: Sequence[int] | None = None, clients: Sequence[int] | None = None,
               methods: Sequence[str] | None = None, rounds: bool = True) -> BenchConfig:
    """:data:`QUICK` or :data:`FULL`, with the command line's overrides (a tiny grid for tests)."""
    from dataclasses import replace

    base = QUICK if quick else FULL
    changes: dict[str, Any] = {"command": command}
    if sizes:
        changes.update(sizes=tuple(sizes), ref_params=max(sizes))
    if clients:
        changes.update(clients=tuple(clients), ref_clients=max(clients))
    if sizes or clients:  # a grid of one's own: no many-clients series or thread counts beside it
        changes.update(wide_clients=(), server_threads=())
    if methods:  # the methods named, each in every cell
        changes.update(methods=tuple(methods), target_methods=())
    if not rounds:
        changes["rounds"] = ()
    return replace(base, **changes)


def machine_info() -> dict[str, Any]:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or None)
    mem = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_bytes": int(mem.group(1)) * 1024 if mem else None, "platform": platform.platform(),
            "python": platform.python_version(),
            "packages": {p: version(p) for p in ("secfl", "numpy", "tenseal", "torch", "flwr", "matplotlib")}}


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def run_bench(config: BenchConfig, *, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure ``config``'s grid and rounds; returns what ``bench.json`` holds."""
    say = progress or (lambda _msg: None)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    skipped = [{"method": m, "reason": r} for m in config.methods if (r := method_unavailable(m))]
    for s in skipped:
        log.warning("%s %s", s["method"], s["reason"])
    methods = [m for m in config.methods if m not in {s["method"] for s in skipped}]
    cells = []
    for params, clients in config.cells():
        here = methods + (list(config.target_methods) if (params, clients) == config.target_cell() else [])
        say(f"{params:,} parameters x {clients} clients: {', '.join(here)}, repetitions interleaved")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        timed = measure_interleaved(here, params=params, clients=clients, repeats=config.repeats,
                                    budget=config.budget)
        for cell in timed:  # peak memory: each method once more, alone in a fresh process
            spec: dict[str, Any] = {"method": cell["method"], "params": params, "clients": clients, "repeats": 1,
                                    "budget": config.budget}
            say(f"{cell['method']}: peak memory, {params:,} parameters x {clients} clients")
            memory = _cell_subprocess(spec) if config.fresh_processes else measure_cell(**spec)
            cells.append(cell | {"peak_rss": memory["peak_rss"], "aggregate_bytes": memory["aggregate_bytes"],
                                 "fresh_process": memory["fresh_process"], "load_average_1m": load})
    at = config.target_cell()[0]
    threaded = [m for m in methods if m in ("secagg-strict", "secagg-compact")] if config.server_threads else []
    if threaded:
        say(f"the server on {', '.join(map(str, config.server_threads))} threads: {', '.join(threaded)}")
        threads = measure_server_threads(threaded, params=at, clients=config.ref_clients,
                                         threads=config.server_threads, repeats=config.repeats, budget=config.budget)
    else:
        threads = []
    rounds = []
    for round_spec in config.rounds:
        say(f"one round: {round_spec.model}, {round_spec.protocol}/{round_spec.preset}")
        rounds.append(measure_round(round_spec, repeats=config.round_repeats))
    return {
        "schema": SCHEMA, "command": config.command, "started": started, "seconds": time.perf_counter() - t0,
        "machine": machine_info(),
        "config": {k: v for k, v in asdict(config).items() if k != "rounds"} | {"rounds": [asdict(r) for r in config.rounds]},
        "memory_note": ("peak_rss: growth of the process's peak resident set (VmHWM, native allocations included) "
                        "during the role's first run, in bytes; exact for client and server in a fresh process "
                        "(fresh_process), a lower bound for the key holder, whose step reuses memory SEAL pooled "
                        "during the server step"),
        "skipped": skipped, "cells": cells, "server_threads": threads, "rounds": rounds,
        "targets": targets(cells, params=at, clients=config.ref_clients),
        "scaling": scaling(cells, ref_clients=config.ref_clients, ref_params=config.ref_params,
                           wide_params=config.wide_params if config.wide_clients else None),
    }

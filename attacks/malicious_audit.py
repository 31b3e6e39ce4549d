"""The malicious-server audit: every attack of :mod:`attacks.malicious` against CKKS with each
defence the clients control, over several seeds (``secfl audit --threat malicious``).

A **row** is an attack in a regime; a **column** is the protection and the defences switched on
(:mod:`fedattn.defences`). Each cell runs one round of a real simulation (real ciphertexts, real
key holders, the clients' real checks) in which the server is the attacker, then either scores
what the server read out of the released aggregate - the share of the round's images recovered at
30 dB or more, mean and 95 % interval over the seeds - or records the refusal that stopped it and
who refused (the clients, before training; a key holder, before decrypting).

Regimes: the **paper's regime** (as Robbing the Fed measures it: each client takes one local SGD
step on 32 images, the imprint block has twice as many bins as the round has images) is labelled as
such; the **real run's settings** are the ordinary audit's (each client's whole shard, batches of
32, one local epoch, learning rate 0.1), attacked in the first round.

Example:
    >>> cfg = ThreatConfig(seeds=1, rows=("zero-c",), columns=("unbound",))
    >>> report = run_threat_audit(cfg)
    >>> report.cells[0].refused, report.cells[0].refused_by
    ('ReleaseRefusedError', 'key holder')
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from fedattn.data import Dataset, load_dataset, partition
from fedattn.errors import AllClientsDroppedError, InvalidConfigError, ModelInconsistencyError
from fedattn.models import make_model
from fedattn.privacy import DPConfig
from fedattn.simulation import Client, SimulationConfig, run_simulation

from ._validation import count
from .audit_seed import interval
from .malicious import ImprintAdversary, ReleaseAdversary, TrapAdversary, recovered_share

__all__ = ["ThreatConfig", "ThreatReport", "Cell", "run_threat_audit", "ROWS", "COLUMNS"]
log = logging.getLogger(__name__)

#: row -> what it is (shown in the report)
ROWS = {
    "imprint-paper": "Imprint block in front of the model, paper's regime (twice as many bins as images, one "
                     "local step on 32 images per client)",
    "imprint": "Imprint block in front of the model, the real run's settings",
    "trap": "Trap weights in the agreed MLP's first layer, the real run's settings",
    "inconsistency": "Model inconsistency: trap weights for one client, a first layer that never fires for the "
                     "others (share of that client's images), the real run's settings",
    "per-client": "Per-client imprint blocks (LOKI-style: every client a different model), paper's regime",
    "zero-c": "Release request for (0, c): the key holder's secret times c",
    "relabel": "One upload relabelled as the sum of every member's",
}
#: column -> (label, simulation settings)
COLUMNS: dict[str, tuple[str, dict[str, Any]]] = {
    "unbound": ("ckks, model not bound (as SecAgg)", {"defences": ()}),
    "commitments": ("ckks + signed commitments", {"defences": ("commitments",)}),
    "pinned": ("+ pinned architecture (secfl's default)", {"defences": ("commitments", "architecture")}),
    "provenance": ("+ model provenance", {"defences": ("commitments", "architecture", "provenance")}),
    "dp": ("ckks + client-level DP (commitments only)", {"defences": ("commitments",), "aggregation": "fedavg",
                                                         "rule_options": {"equal_weights": True}}),
}
PAPER_ROWS = ("imprint-paper", "per-client")


@dataclass(frozen=True, kw_only=True)
class ThreatConfig:
    """What the malicious-server audit runs (validated)."""

    dataset: str = "digits"
    clients: int = 10
    seeds: int = 3
    seed: int = 0
    paper_images: int = 32
    rows: tuple[str, ...] = tuple(ROWS)
    columns: tuple[str, ...] = tuple(COLUMNS)
    dp_noise_multiplier: float = 0.5
    dp_clip_norm: float = 1.0

    def __post_init__(self) -> None:
        count(self.clients, "clients", low=2, error=InvalidConfigError)
        count(self.seeds, "seeds", low=1, error=InvalidConfigError)
        count(self.paper_images, "paper_images", low=1, error=InvalidConfigError)
        for name, allowed in (("rows", ROWS), ("columns", COLUMNS)):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            unknown = [v for v in values if v not in allowed]
            if unknown or not values:
                raise InvalidConfigError(f"{name} must be some of {', '.join(allowed)}; got {', '.join(unknown) or 'none'}")
        if load_dataset(self.dataset, seed=self.seed).groups is not None:
            raise InvalidConfigError(f"the malicious-server attacks are built for images and tables; {self.dataset!r} "
                                     "is text")


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One attack against one protection: the share recovered per seed, or the refusal."""

    row: str
    column: str
    shares: tuple[float, ...] = ()
    refused: str | None = None  # the error's class name
    refused_by: str | None = None  # "clients" or "key holder"
    images: int = 0  # the round's images the share counts (first seed)

    @property
    def summary(self) -> dict[str, Any] | None:
        return interval(list(self.shares)) if self.shares else None


@dataclass(frozen=True, kw_only=True)
class ThreatReport:
    config: dict[str, Any]
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]
    seconds: float
    example: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # originals and best recoveries

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "seeds": list(self.seeds), "seconds": self.seconds,
                "rows": ROWS, "columns": {k: label for k, (label, _) in COLUMNS.items()},
                "cells": [{**asdict(c), "summary": c.summary} for c in self.cells]}


def _clients(cfg: ThreatConfig, sim: SimulationConfig, data: Dataset, *, paper: bool) -> list[Client]:
    shards = partition(data.y_train, cfg.clients, scheme=sim.partition, alpha=sim.alpha, seed=sim.seed,
                       groups=data.groups)
    factory = _factory(data, sim.seed)
    return [Client(f"client-{i}", data.x_train[idx[:cfg.paper_images] if paper else idx],
                   data.y_train[idx[:cfg.paper_images] if paper else idx], model_factory=factory, config=sim)
            for i, idx in enumerate(shards)]


def _factory(data: Dataset, seed: int) -> Callable[[], torch.nn.Module]:
    return lambda: make_model("mlp", input_shape=data.input_shape, n_classes=data.n_classes, seed=seed)


def _adversary(row: str, clients: list[Client], data: Dataset, seed: int) -> Any:
    n = sum(c.num_samples for c in clients)
    ids = [c.client_id for c in clients]
    if row in ("imprint-paper", "imprint", "per-client"):
        return ImprintAdversary(public=data.x_test, width=2 * n, factory=_factory(data, seed), clients=ids,
                                per_client=row == "per-client", gain=1.0 if row == "imprint" else 100.0, seed=seed)
    if row == "trap":
        return TrapAdversary(public=data.x_test, fires=1.0 / n, seed=seed)
    if row == "inconsistency":  # the server guesses a client's share of the data: n / clients
        return TrapAdversary(public=data.x_test, fires=len(clients) / n, target=ids[0], seed=seed)
    return ReleaseAdversary("zero" if row == "zero-c" else "relabel")


def _one(cfg: ThreatConfig, row: str, column: str, seed: int, data: Dataset) -> tuple[float | None, str | None,
                                                                                       str | None, int, Any]:
    """One cell, one seed: (share, refusal, who refused, images, (originals, candidates))."""
    paper = row in PAPER_ROWS
    settings = dict(COLUMNS[column][1])
    if column == "dp":
        settings["dp"] = DPConfig(mode="client", noise_multiplier=cfg.dp_noise_multiplier, clip_norm=cfg.dp_clip_norm,
                                  accountant="rdp")
    sim = SimulationConfig(dataset=cfg.dataset, clients=cfg.clients, rounds=1, seed=seed, protection="ckks",
                           batch_size=cfg.paper_images if paper else 32, epsilon_every_round=False, **settings)
    clients = _clients(cfg, sim, data, paper=paper)
    adversary = _adversary(row, clients, data, seed)
    target = [clients[0]] if row == "inconsistency" else clients
    originals = np.concatenate([c.x for c in target])
    try:
        view = run_simulation(sim, dataset=data, clients=clients, adversary=adversary).views[0]
    except ModelInconsistencyError:
        return None, "ModelInconsistencyError", "key holder", len(originals), None
    except AllClientsDroppedError as exc:
        reason = Counter(exc.reasons.values()).most_common(1)[0][0] if exc.reasons else "AllClientsDroppedError"
        return None, reason, "clients", len(originals), None
    if view.aggregate is None:
        return None, (view.aborted or "aborted").split(":")[0], "key holder", len(originals), None
    if isinstance(adversary, ReleaseAdversary):  # released: the forgery went through (must never happen)
        return 1.0, None, None, len(originals), None
    candidates = adversary.candidates(view.aggregate)
    share, _ = recovered_share(candidates, originals)
    return share, None, None, len(originals), (originals, candidates)


def run_threat_audit(cfg: ThreatConfig, *, progress: Callable[[str], None] | None = None) -> ThreatReport:
    """Every (row, column) over the seeds; see the module docstring."""
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    quiet = logging.getLogger("fedattn")  # every refusal is expected here, and recorded in the cell
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return _run(cfg, say, t0)
    finally:
        quiet.setLevel(level)


def _run(cfg: ThreatConfig, say: Callable[[str], None], t0: float) -> ThreatReport:
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    seeds = tuple(range(cfg.seed, cfg.seed + cfg.seeds))
    cells: list[Cell] = []
    example: dict[str, np.ndarray] = {}
    for row in cfg.rows:
        for column in cfg.columns:
            say(f"malicious server: {row} against {column}")
            shares, refusals, images = [], set(), 0
            for seed in seeds:
                share, refused, by, n, pair = _one(cfg, row, column, seed, data)
                images = images or n
                if refused is not None:
                    refusals.add((refused, by))
                else:
                    shares.append(float(share or 0.0))
                if pair is not None and row == "imprint-paper" and not example:
                    example = _best_pairs(*pair)
            if refusals and shares:  # a defence that holds on some seeds only: reported as not holding
                log.warning("%s against %s: refused on %d of %d seeds", row, column, len(seeds) - len(shares),
                            len(seeds))
            refused, by = sorted(refusals)[0] if refusals and not shares else (None, None)
            cells.append(Cell(row=row, column=column, shares=tuple(shares), refused=refused, refused_by=by,
                              images=images))
    return ThreatReport(config={**asdict(cfg), "rows": list(cfg.rows), "columns": list(cfg.columns)},
                        cells=tuple(cells), seeds=seeds, seconds=time.perf_counter() - t0, example=example)


def _best_pairs(originals: np.ndarray, candidates: np.ndarray, k: int = 8) -> dict[str, np.ndarray]:
    """``k`` originals and each one's best candidate, scale fitted (for the report's figure)."""
    o = originals.reshape(len(originals), -1).astype(np.float64)
    c = candidates.reshape(len(candidates), -1).astype(np.float64)
    c = c[np.all(np.isfinite(c), axis=1) & ((c * c).sum(1) > 0)]
    dot = o @ c.T
    best = np.argmax(np.where(dot > 0, dot ** 2 / (c * c).sum(1)[None, :], -1.0), axis=1)
    scale = np.maximum(dot[np.arange(len(o)), best], 0) / (c[best] * c[best]).sum(1)
    fitted = c[best] * scale[:, None]
    return {"originals": originals[:k], "recovered": fitted[:k].reshape(originals[:k].shape)}


def cell_text(cell: Cell) -> str:
    """A cell as the report prints it."""
    if cell.refused:
        return f"refused by the {cell.refused_by}: {cell.refused}"
    s = cell.summary
    assert s is not None
    if s["low"] is None:
        return f"{s['mean'] * 100:.1f}% (one seed)"
    return f"{s['mean'] * 100:.1f}% [{max(s['low'], 0) * 100:.1f}, {min(s['high'], 1) * 100:.1f}]"


def matrix(report: ThreatReport) -> list[dict[str, str]]:
    """The matrix as rows of text: attack, then one entry per column."""
    by = {(c.row, c.column): c for c in report.cells}
    rows = []
    for row in report.config["rows"]:
        line = {"attack": ROWS[row]}
        for column in report.config["columns"]:
            line[COLUMNS[column][0]] = cell_text(by[(row, column)])
        rows.append(line)
    return rows


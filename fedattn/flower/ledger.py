"""A node's record of what it signed and released, kept so that the check and the record are one step.

A key holder's guarantees rest on two records: the commitment of the model it was given in each
round it signed (it checks the contributors' receipts against it), and the rounds it released (it
releases each once). Both are keyed by (Flower run id, round).

Flower's ``context.state`` cannot hold them safely on a SuperNode: state is kept per *run series*
(a new run may continue an old series), lives in memory (a restarted SuperNode forgets it), and
each ClientApp task reads a snapshot and writes it back at its end, so two tasks running at once
both pass a check. :class:`FileLedger` keeps them in a SQLite file that only this node uses;
a check and its record are one ``BEGIN IMMEDIATE`` transaction, atomic across processes.

Where the file lives: the node config's ``secfl-ledger`` (or ``SECFL_LEDGER``), a file or a
folder; else next to the node's signing identity (``client-<i>.id`` -> ``client-<i>.ledger``).
A node with neither (an unsigned deployment) keeps its released rounds in ``context.state``
(:class:`StateLedger`), which is sound only while the SuperNode runs one task at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from flwr.app import ConfigRecord, Context

import secagg

from .errors import LedgerError

__all__ = ["LEDGER_CONFIG", "LEDGER_ENV", "LedgerError", "FileLedger", "StateLedger", "open_ledger"]

LEDGER_CONFIG = "secfl-ledger"
LEDGER_ENV = "SECFL_LEDGER"
_STATE = "secfl-ledger"


def FileLedger(path: str | os.PathLike[str]) -> secagg.FileLedger:  # noqa: N802 - a factory named as the class
    """:class:`secagg.FileLedger` with the hint a SuperNode's operator needs when the file cannot be used."""
    return secagg.FileLedger(path, hint=f"give the node a writable path with --node-config '{LEDGER_CONFIG}=\"/path/to/dir\"' "
                                        f"({LEDGER_ENV} in simulations)")


class StateLedger:
    """The records in Flower's ``context.state``: for nodes without a ledger file (unsigned uploads)."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def _rows(self, table: str) -> list[list]:
        record = self.context.state.config_records.get(_STATE)
        return [] if record is None or table not in record else [str(s).split(":", 2) for s in record[table]]  # type: ignore[union-attr]

    def _save(self, table: str, rows: list[list]) -> None:
        record = self.context.state.config_records.get(_STATE) or ConfigRecord()
        record[table] = [":".join(str(x) for x in row) for row in rows]
        self.context.state[_STATE] = record

    def claim_round(self, run: str, rnd: int, commitment: str) -> None:
        rows = self._rows("signed")
        done = [int(r) for u, r, _ in rows if u == str(run)]
        if done and rnd <= max(done):
            raise secagg.ReplayError(f"this party already signed an update for round {max(done)} of run {run!r}; a "
                                     f"request for round {rnd} is refused (one signed update per round, rounds only grow)")
        self._save("signed", [*rows, [run, rnd, commitment]])

    def commitment(self, run: str, rnd: int) -> str | None:
        return next((c for u, r, c in self._rows("signed") if u == str(run) and int(r) == rnd), None)

    def claim_release(self, run: str, rnd: int) -> None:
        rows = self._rows("released")
        if any(u == str(run) and int(r) == rnd for u, r in rows):
            raise secagg.ReleaseRefusedError(f"round {rnd} of run {run!r} was already released by this party; a second "
                                             "release of another subset would reveal the difference")
        self._save("released", [*rows, [run, rnd]])


def open_ledger(context: Context, *, client_id: str, identity_file: Path | None,
                locate: Callable[[Context], object] | None = None) -> secagg.FileLedger | StateLedger:
    """The node's ledger: ``locate(context)`` (default: node config ``secfl-ledger``, else
    ``SECFL_LEDGER``), else next to the identity file, else ``context.state``. A folder holds one
    file per client id, so simulated nodes that share a folder keep separate ledgers."""
    where = locate(context) if locate is not None else None
    where = where or context.node_config.get(LEDGER_CONFIG) or os.environ.get(LEDGER_ENV)
    if not where and identity_file is not None:
        where = identity_file.with_suffix(".ledger")
    if not where:
        return StateLedger(context)
    path = Path(str(where))
    if path.is_dir():
        path = path / f"{client_id}.ledger"
    return FileLedger(path)

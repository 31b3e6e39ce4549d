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
import sqlite3
from collections.abc import Callable
from pathlib import Path

from flwr.app import ConfigRecord, Context

from ..errors import ReplayError
from .errors import LedgerError, ReleaseRefusedError

__all__ = ["LEDGER_CONFIG", "LEDGER_ENV", "LedgerError", "FileLedger", "StateLedger", "open_ledger"]

LEDGER_CONFIG = "secfl-ledger"
LEDGER_ENV = "SECFL_LEDGER"
_STATE = "secfl-ledger"

# Flower's run ids are unsigned 64-bit integers, beyond SQLite's INTEGER: runs are stored as text
_SCHEMA = """
CREATE TABLE IF NOT EXISTS signed (run TEXT, round INTEGER, commitment TEXT NOT NULL, PRIMARY KEY (run, round));
CREATE TABLE IF NOT EXISTS released (run TEXT, round INTEGER, PRIMARY KEY (run, round));
"""


def _signed_error(run: int, rnd: int, last: int) -> ReplayError:
    return ReplayError(f"this node already signed an update for round {last} of run {run}; a train message for round "
                       f"{rnd} is refused (one signed update per round, rounds only grow)")


def _released_error(rnd: int) -> ReleaseRefusedError:
    return ReleaseRefusedError(f"round {rnd} of this run was already released by this node; a second release of "
                               "another subset would reveal the difference")


class FileLedger:
    """The records in a SQLite file (created with mode 0600); safe across concurrent ClientApp processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            db = self._connect()
            try:
                db.executescript(_SCHEMA)
            finally:
                db.close()
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot use the node's ledger {self.path} ({exc}); give the node a writable path with "
                              f"--node-config '{LEDGER_CONFIG}=\"/path/to/dir\"' ({LEDGER_ENV} in simulations)") from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60, isolation_level=None)

    def _transaction(self, check, record) -> None:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # the write lock first: no other process checks in between
            try:
                check(db)
                record(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def claim_round(self, run: int, rnd: int, commitment: str) -> None:
        def check(db: sqlite3.Connection) -> None:
            (last,) = db.execute("SELECT MAX(round) FROM signed WHERE run = ?", (str(run),)).fetchone()
            if last is not None and rnd <= last:
                raise _signed_error(run, rnd, last)

        self._transaction(check, lambda db: db.execute("INSERT INTO signed VALUES (?, ?, ?)", (str(run), rnd, commitment)))

    def commitment(self, run: int, rnd: int) -> str | None:
        db = self._connect()
        try:
            row = db.execute("SELECT commitment FROM signed WHERE run = ? AND round = ?", (str(run), rnd)).fetchone()
        finally:
            db.close()
        return None if row is None else str(row[0])

    def claim_release(self, run: int, rnd: int) -> None:
        def check(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM released WHERE run = ? AND round = ?", (str(run), rnd)).fetchone():
                raise _released_error(rnd)

        self._transaction(check, lambda db: db.execute("INSERT INTO released VALUES (?, ?)", (str(run), rnd)))


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

    def claim_round(self, run: int, rnd: int, commitment: str) -> None:
        rows = self._rows("signed")
        done = [int(r) for u, r, _ in rows if int(u) == run]
        if done and rnd <= max(done):
            raise _signed_error(run, rnd, max(done))
        self._save("signed", [*rows, [run, rnd, commitment]])

    def commitment(self, run: int, rnd: int) -> str | None:
        return next((c for u, r, c in self._rows("signed") if int(u) == run and int(r) == rnd), None)

    def claim_release(self, run: int, rnd: int) -> None:
        rows = self._rows("released")
        if any(int(u) == run and int(r) == rnd for u, r in rows):
            raise _released_error(rnd)
        self._save("released", [*rows, [run, rnd]])


def open_ledger(context: Context, *, client_id: str, identity_file: Path | None,
                locate: Callable[[Context], object] | None = None) -> FileLedger | StateLedger:
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

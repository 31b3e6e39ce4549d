"""A party's durable record of what it signed and released, so that a check and its record are one step.

A client's guarantees rest on a few records, keyed by (run id, round):

* **signed** - the commitment of the model and configuration it was given in each round it
  uploaded for (:meth:`Ledger.claim_round`). It uploads once per round, rounds only grow, and as a
  key holder it compares every contributor's receipt with its own commitment.
* **released** - the rounds it released as a key holder (:meth:`Ledger.claim_release`): each once,
  since a second release of another subset would reveal the difference.

:class:`FileLedger` keeps them in a SQLite file that only this party uses (mode 0600); a check and
its record are one ``BEGIN IMMEDIATE`` transaction, atomic across processes. :class:`MemoryLedger`
keeps them in memory, for one-process simulations. Both raise the same errors.

Example:
    >>> ledger = MemoryLedger()
    >>> ledger.claim_round("run-1", 3, "c0ffee")
    >>> ledger.commitment("run-1", 3)
    'c0ffee'
    >>> ledger.claim_release("run-1", 3)
    >>> ledger.claim_release("run-1", 3)
    Traceback (most recent call last):
    ...
    secagg.errors.ReleaseRefusedError: round 3 of run 'run-1' was already released by this party; a second release of another subset would reveal the difference
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .errors import LedgerError, ReleaseRefusedError, ReplayError

__all__ = ["Ledger", "FileLedger", "MemoryLedger"]

# Flower's run ids are unsigned 64-bit integers, beyond SQLite's INTEGER: runs are stored as text
_SCHEMA = """
CREATE TABLE IF NOT EXISTS signed (run TEXT, round INTEGER, commitment TEXT NOT NULL, PRIMARY KEY (run, round));
CREATE TABLE IF NOT EXISTS released (run TEXT, round INTEGER, PRIMARY KEY (run, round));
"""


class Ledger(Protocol):
    """What a party records; every claim raises instead of recording twice."""

    def claim_round(self, run: str, rnd: int, commitment: str) -> None:
        """Record the commitment of round ``rnd``; refuse this round or an earlier one a second time."""

    def commitment(self, run: str, rnd: int) -> str | None:
        """The commitment recorded for ``rnd`` of ``run``, or None."""

    def claim_release(self, run: str, rnd: int) -> None:
        """Record that ``rnd`` of ``run`` was released; refuse a second release."""


def _signed_error(run: str, rnd: int, last: int) -> ReplayError:
    return ReplayError(f"this party already signed an update for round {last} of run {run!r}; a request for round "
                       f"{rnd} is refused (one signed update per round, rounds only grow)")


def _released_error(run: str, rnd: int) -> ReleaseRefusedError:
    return ReleaseRefusedError(f"round {rnd} of run {run!r} was already released by this party; a second release of "
                               "another subset would reveal the difference")


class MemoryLedger:
    """The records in memory: for one-process simulations (a restart forgets them)."""

    def __init__(self) -> None:
        self._signed: dict[tuple[str, int], str] = {}
        self._released: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def claim_round(self, run: str, rnd: int, commitment: str) -> None:
        with self._lock:
            done = [r for (u, r) in self._signed if u == str(run)]
            if done and rnd <= max(done):
                raise _signed_error(str(run), rnd, max(done))
            self._signed[(str(run), rnd)] = commitment

    def commitment(self, run: str, rnd: int) -> str | None:
        return self._signed.get((str(run), rnd))

    def claim_release(self, run: str, rnd: int) -> None:
        with self._lock:
            if (str(run), rnd) in self._released:
                raise _released_error(str(run), rnd)
            self._released.add((str(run), rnd))


class FileLedger:
    """The records in a SQLite file (created with mode 0600); safe across concurrent processes.

    Raises:
        LedgerError: the file cannot be created, opened or written; ``hint`` says how to point the
            party at a writable place.
    """

    def __init__(self, path: str | os.PathLike[str], *, hint: str = "give the party a writable ledger path") -> None:
        self.path = Path(path)
        try:
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            db = self._connect()
            try:
                db.executescript(_SCHEMA)
            finally:
                db.close()
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot use the ledger {self.path} ({exc}); {hint}") from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60, isolation_level=None)

    def _transaction(self, check: Callable[[sqlite3.Connection], None],
                     record: Callable[[sqlite3.Connection], object]) -> None:
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

    def claim_round(self, run: str, rnd: int, commitment: str) -> None:
        def check(db: sqlite3.Connection) -> None:
            (last,) = db.execute("SELECT MAX(round) FROM signed WHERE run = ?", (str(run),)).fetchone()
            if last is not None and rnd <= last:
                raise _signed_error(str(run), rnd, int(last))

        self._transaction(check, lambda db: db.execute("INSERT INTO signed VALUES (?, ?, ?)", (str(run), rnd, commitment)))

    def commitment(self, run: str, rnd: int) -> str | None:
        db = self._connect()
        try:
            row = db.execute("SELECT commitment FROM signed WHERE run = ? AND round = ?", (str(run), rnd)).fetchone()
        finally:
            db.close()
        return None if row is None else str(row[0])

    def claim_release(self, run: str, rnd: int) -> None:
        def check(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM released WHERE run = ? AND round = ?", (str(run), rnd)).fetchone():
                raise _released_error(str(run), rnd)

        self._transaction(check, lambda db: db.execute("INSERT INTO released VALUES (?, ?)", (str(run), rnd)))

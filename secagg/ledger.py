"""A party's durable record of what it signed and released, so that a check and its record are one step.

A client's guarantees rest on a few records, keyed by (run id, round):

* **signed** - the commitment of the model and configuration it was given in each round it
  uploaded for (:meth:`Ledger.claim_round`, before it encrypts), and the digest of the upload it
  signed (:meth:`Ledger.record_upload`). It uploads once per round (a second encryption under a
  second half derived for the same round would reveal the difference of two updates), rounds only
  grow, and as a key holder it compares every contributor's receipt with its own commitment.
* **sets** - the one contributor set it signed per round (:meth:`Ledger.claim_set`, before it
  signs): two sets of one round could be released by two key holders and differenced.
* **released** - the rounds it released as a key holder (:meth:`Ledger.claim_release`, before it
  decrypts): each once.
* **partials** - the rounds it gave a partial decryption for as a member of a threshold committee
  (:meth:`Ledger.claim_partial`, before it computes one): each once, whatever quorum it is told.

The bytes of the latest upload are kept too (:meth:`Ledger.upload_bytes`), so that a retry of a
round resends them instead of encrypting a second time.

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
from typing import Any, Protocol

from .errors import LedgerError, ReleaseRefusedError, ReplayError

__all__ = ["Ledger", "FileLedger", "MemoryLedger"]

# Flower's run ids are unsigned 64-bit integers, beyond SQLite's INTEGER: runs are stored as text.
# Tables of format 2 (an older ledger's tables are left alone and unused).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (run TEXT, round INTEGER, commitment TEXT NOT NULL, upload TEXT,
                                   PRIMARY KEY (run, round));
CREATE TABLE IF NOT EXISTS sets (run TEXT, round INTEGER, digest TEXT NOT NULL, PRIMARY KEY (run, round));
CREATE TABLE IF NOT EXISTS releases (run TEXT, round INTEGER, PRIMARY KEY (run, round));
CREATE TABLE IF NOT EXISTS partials (run TEXT, round INTEGER, PRIMARY KEY (run, round));
CREATE TABLE IF NOT EXISTS latest_upload (run TEXT, round INTEGER, data BLOB NOT NULL, PRIMARY KEY (run, round));
"""


class Ledger(Protocol):
    """What a party records; every claim raises instead of recording twice."""

    def claim_round(self, run: str, rnd: int, commitment: str) -> None:
        """Record the commitment of round ``rnd``; refuse this round or an earlier one a second time."""

    def commitment(self, run: str, rnd: int) -> str | None:
        """The commitment recorded for ``rnd`` of ``run``, or None."""

    def last_round(self, run: str) -> int | None:
        """The latest round of ``run`` claimed for an upload, or None."""

    def record_upload(self, run: str, rnd: int, digest: str, data: bytes | None = None) -> None:
        """Record the digest (and the bytes, replacing older rounds' bytes) of the upload signed for a
        claimed round."""

    def upload_bytes(self, run: str, rnd: int) -> bytes | None:
        """The bytes of the upload signed for ``rnd`` of ``run``, if it is the latest one recorded."""

    def claim_partial(self, run: str, rnd: int) -> None:
        """Record a partial decryption for ``rnd`` of ``run``; refuse a second one."""

    def upload_digest(self, run: str, rnd: int) -> str | None:
        """The digest of the upload signed for ``rnd`` of ``run``, or None."""

    def claim_set(self, run: str, rnd: int, digest: str) -> None:
        """Record the one contributor set signed for ``rnd``; the same set again is fine, another one is refused."""

    def claim_release(self, run: str, rnd: int) -> None:
        """Record that ``rnd`` of ``run`` was released; refuse a second release."""


def _signed_error(run: str, rnd: int, last: int) -> ReplayError:
    return ReplayError(f"this party already signed an update for round {last} of run {run!r}; a request for round "
                       f"{rnd} is refused (one signed update per round, rounds only grow)")


def _set_error(rnd: int) -> ReleaseRefusedError:
    return ReleaseRefusedError(f"this party already signed another contributor set for round {rnd}; it signs one set "
                               "per round, so that no two releases of a round can be differenced")


def _partial_error(run: str, rnd: int) -> ReleaseRefusedError:
    return ReleaseRefusedError(f"this committee member already gave a partial decryption for round {rnd} of run "
                               f"{run!r}; it gives one per round, whatever quorum it is told")


def _released_error(run: str, rnd: int) -> ReleaseRefusedError:
    return ReleaseRefusedError(f"round {rnd} of run {run!r} was already released by this party; a second release of "
                               "another subset would reveal the difference")


class MemoryLedger:
    """The records in memory: for one-process simulations (a restart forgets them)."""

    def __init__(self) -> None:
        self._signed: dict[tuple[str, int], str] = {}
        self._uploads: dict[tuple[str, int], str] = {}
        self._sets: dict[tuple[str, int], str] = {}
        self._released: set[tuple[str, int]] = set()
        self._partials: set[tuple[str, int]] = set()
        self._latest: dict[tuple[str, int], bytes] = {}
        self._lock = threading.Lock()

    def claim_round(self, run: str, rnd: int, commitment: str) -> None:
        with self._lock:
            done = [r for (u, r) in self._signed if u == str(run)]
            if done and rnd <= max(done):
                raise _signed_error(str(run), rnd, max(done))
            self._signed[(str(run), rnd)] = commitment

    def commitment(self, run: str, rnd: int) -> str | None:
        return self._signed.get((str(run), rnd))

    def last_round(self, run: str) -> int | None:
        return max((r for (u, r) in self._signed if u == str(run)), default=None)

    def record_upload(self, run: str, rnd: int, digest: str, data: bytes | None = None) -> None:
        self._uploads[(str(run), rnd)] = digest
        if data is not None:
            self._latest = {(str(run), rnd): bytes(data)}

    def upload_bytes(self, run: str, rnd: int) -> bytes | None:
        return self._latest.get((str(run), rnd))

    def claim_partial(self, run: str, rnd: int) -> None:
        with self._lock:
            if (str(run), rnd) in self._partials:
                raise _partial_error(str(run), rnd)
            self._partials.add((str(run), rnd))

    def upload_digest(self, run: str, rnd: int) -> str | None:
        return self._uploads.get((str(run), rnd))

    def claim_set(self, run: str, rnd: int, digest: str) -> None:
        with self._lock:
            if self._sets.setdefault((str(run), rnd), digest) != digest:
                raise _set_error(rnd)

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
            (last,) = db.execute("SELECT MAX(round) FROM uploads WHERE run = ?", (str(run),)).fetchone()
            if last is not None and rnd <= last:
                raise _signed_error(str(run), rnd, int(last))

        self._transaction(check, lambda db: db.execute("INSERT INTO uploads VALUES (?, ?, ?, NULL)",
                                                       (str(run), rnd, commitment)))

    def commitment(self, run: str, rnd: int) -> str | None:
        value = self._one("SELECT commitment FROM uploads WHERE run = ? AND round = ?", (str(run), rnd))
        return None if value is None else str(value)

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        db = self._connect()
        try:
            row = db.execute(sql, args).fetchone()
        finally:
            db.close()
        return None if row is None else row[0]

    def last_round(self, run: str) -> int | None:
        value = self._one("SELECT MAX(round) FROM uploads WHERE run = ?", (str(run),))
        return None if value is None else int(value)

    def record_upload(self, run: str, rnd: int, digest: str, data: bytes | None = None) -> None:
        def record(db: sqlite3.Connection) -> None:
            db.execute("UPDATE uploads SET upload = ? WHERE run = ? AND round = ?", (digest, str(run), rnd))
            if data is not None:
                db.execute("DELETE FROM latest_upload")
                db.execute("INSERT INTO latest_upload VALUES (?, ?, ?)", (str(run), rnd, bytes(data)))

        self._transaction(lambda db: None, record)

    def upload_bytes(self, run: str, rnd: int) -> bytes | None:
        value = self._one("SELECT data FROM latest_upload WHERE run = ? AND round = ?", (str(run), rnd))
        return None if value is None else bytes(value)

    def claim_partial(self, run: str, rnd: int) -> None:
        def check(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM partials WHERE run = ? AND round = ?", (str(run), rnd)).fetchone():
                raise _partial_error(str(run), rnd)

        self._transaction(check, lambda db: db.execute("INSERT INTO partials VALUES (?, ?)", (str(run), rnd)))

    def upload_digest(self, run: str, rnd: int) -> str | None:
        value = self._one("SELECT upload FROM uploads WHERE run = ? AND round = ?", (str(run), rnd))
        return None if value is None else str(value)

    def claim_set(self, run: str, rnd: int, digest: str) -> None:
        def check(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT digest FROM sets WHERE run = ? AND round = ?", (str(run), rnd)).fetchone()
            if row is not None and row[0] != digest:
                raise _set_error(rnd)

        self._transaction(check, lambda db: db.execute("INSERT OR IGNORE INTO sets VALUES (?, ?, ?)",
                                                       (str(run), rnd, digest)))

    def claim_release(self, run: str, rnd: int) -> None:
        def check(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM releases WHERE run = ? AND round = ?", (str(run), rnd)).fetchone():
                raise _released_error(str(run), rnd)

        self._transaction(check, lambda db: db.execute("INSERT INTO releases VALUES (?, ?)", (str(run), rnd)))

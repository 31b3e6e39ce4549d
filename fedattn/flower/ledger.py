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
Flower's ``context.state`` is never used for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context

import secagg

from .errors import LedgerError

__all__ = ["LEDGER_CONFIG", "LEDGER_ENV", "LedgerError", "FileLedger", "open_ledger"]

LEDGER_CONFIG = "secfl-ledger"
LEDGER_ENV = "SECFL_LEDGER"
_STATE = "secfl-ledger"


def FileLedger(path: str | os.PathLike[str]) -> secagg.FileLedger:  # noqa: N802 - a factory named as the class
    """:class:`secagg.FileLedger` with the hint a SuperNode's operator needs when the file cannot be used."""
    return secagg.FileLedger(path, hint=f"give the node a writable path with --node-config '{LEDGER_CONFIG}=\"/path/to/dir\"' "
                                        f"({LEDGER_ENV} in simulations)")


def open_ledger(context: Context, *, client_id: str, identity_file: Path | None,
                locate: Callable[[Context], object] | None = None) -> secagg.FileLedger:
    """The node's ledger: ``locate(context)`` (default: node config ``secfl-ledger``, else
    ``SECFL_LEDGER``), else next to the identity file. A folder holds one file per client id, so
    simulated nodes that share a folder keep separate ledgers.

    Raises:
        LedgerError: no place for the ledger is configured, or the file cannot be used.
    """
    where = locate(context) if locate is not None else None
    where = where or context.node_config.get(LEDGER_CONFIG) or os.environ.get(LEDGER_ENV)
    if not where and identity_file is not None:
        where = identity_file.with_suffix(".ledger")
    if not where:
        raise LedgerError(f"node {context.node_id} has no ledger: give it a signing identity file or "
                          f"--node-config '{LEDGER_CONFIG}=\"/path/to/dir\"' ({LEDGER_ENV} in simulations)")
    path = Path(str(where))
    if path.is_dir():
        path = path / f"{client_id}.ledger"
    return FileLedger(path)

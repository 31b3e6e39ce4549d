"""One round, written once: from the clients' uploads to the aggregate the server applies.

:func:`run_round` is what the one-process simulation (:mod:`fedattn.simulation`) and the Flower
strategy (:mod:`fedattn.flower`) both call; they differ only in how they reach the clients and the
key holders. A round's outcome, and what the server saw of it, are plain frozen data:

* :class:`Rejection` - an upload the server dropped, with the typed error that says why;
* :class:`RoundOutcome` - contributors, rejections, the aggregate (released by a key holder under
  encryption), or why the round was aborted;
* :class:`RoundView` - the server's whole view of a round (model and configuration sent, uploads
  received, rejections, contributors, what it applied, timings): what attacks take as input, as
  breaching's attacks take a server payload.

Example (plaintext, so no key holder is involved):

    >>> import numpy as np
    >>> from fedattn.protocols import PlainProtocol
    >>> from fedattn.rules import FedAvg
    >>> server = ServerRole(PlainProtocol(FedAvg()))
    >>> clients = [ClientRole(PlainProtocol(FedAvg()), client_id=f"c{k}") for k in range(2)]
    >>> msgs = [c.message({"w": np.full(2, float(k))}, num_samples=1, reference=None, run="r", round=0)
    ...         for k, c in enumerate(clients)]
    >>> out = run_round(msgs, server=server, release=None, round=0, reference=None)
    >>> out.contributors, out.aggregate["w"].tolist()
    (('c0', 'c1'), [0.5, 0.5])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import secagg

from .errors import DecryptionAbortedError

__all__ = ["ClientMessage", "Rejection", "Served", "RoundOutcome", "RoundView", "UploadSeen", "ClientRole", "ServerRole",
           "Releaser", "run_round"]

Arrays = Mapping[str, np.ndarray]


@dataclass
class ClientMessage:
    """What one client uploads: the bytes on the wire, plus bookkeeping that never leaves the client."""

    client_id: str
    payload: bytes
    num_samples: int
    seconds_encrypt: float = 0.0
    plaintext: dict[str, np.ndarray] | None = field(default=None, repr=False)  # the plain protocol's update


@dataclass(frozen=True, kw_only=True)
class Rejection:
    """An upload the server dropped: who sent it (as far as it could tell) and the typed error."""

    client_id: str
    error: BaseException

    @property
    def kind(self) -> str:
        return type(self.error).__name__

    def describe(self) -> str:
        return f"{self.kind}: {self.error}"

    def to_dict(self) -> dict[str, str]:
        return {"client": self.client_id, "error": self.kind, "message": str(self.error)}


@dataclass(frozen=True, kw_only=True)
class Served:
    """The server's half of a round, before any key holder: what it combined and what it dropped."""

    round: int
    contributors: tuple[str, ...]
    rejections: tuple[Rejection, ...]
    seconds: float
    aggregate: dict[str, np.ndarray] | None = None  # plaintext protocols: the combined update
    client_updates: Mapping[str, Arrays] | None = None  # plaintext protocols: every update, as the server sees it
    aggregate_wire: bytes | None = None  # encrypted protocols: the aggregate for the key holders
    receipts: tuple[secagg.Receipt, ...] = ()
    senders: Mapping[str, str] = field(default_factory=dict)  # contributor -> the message that carried it


#: Asks key holders in turn to release ``served``; returns (released aggregate, key holder id) or raises
#: :class:`DecryptionAbortedError` when none could.
Releaser = Callable[[Served], tuple[dict[str, np.ndarray], str]]


@dataclass(frozen=True, kw_only=True)
class RoundOutcome:
    """A round's result: the aggregate to apply (``None`` when the round was aborted) and its costs."""

    round: int
    contributors: tuple[str, ...]
    rejections: tuple[Rejection, ...]
    aggregate: dict[str, np.ndarray] | None
    client_updates: Mapping[str, Arrays] | None
    key_holder: str | None
    aborted: str | None
    aggregate_bytes: int
    seconds_aggregate: float
    seconds_decrypt: float
    senders: Mapping[str, str] = field(default_factory=dict)
    receipts: tuple[secagg.Receipt, ...] = ()


@dataclass(frozen=True, kw_only=True)
class UploadSeen:
    """One upload as the server received it: the id it claimed and its size."""

    client_id: str
    bytes: int


@dataclass(frozen=True, kw_only=True)
class RoundView:
    """Everything the server saw and did in one round; plain data for attacks and reports.

    ``client_updates`` is every client's update where the protocol shows it to the server (plain)
    and ``None`` where it is hidden by encryption; ``aggregate`` is what the server applied (the
    released aggregate under encryption), ``None`` when the round was aborted.
    """

    round: int
    model_sent: Arrays
    config_sent: Mapping[str, Any]
    reference: Arrays | None
    sampled: tuple[str, ...]
    dropped: tuple[str, ...]
    uploads: tuple[UploadSeen, ...]
    rejections: tuple[Rejection, ...]
    contributors: tuple[str, ...]
    client_updates: Mapping[str, Arrays] | None
    num_samples: Mapping[str, int] | None
    aggregate: Arrays | None
    model_after: Arrays
    key_holder: str | None
    aborted: str | None
    seconds: Mapping[str, float]

    @property
    def rejected(self) -> dict[str, str]:
        """``client id -> "Error: message"``, for tables and JSON."""
        return {r.client_id: r.describe() for r in self.rejections}


class ClientRole:
    """One client's side of a protocol, configured once: the protocol (its rule inside), the
    client's id and, for encrypted protocols, its :class:`secagg.Uploader` (secret key, identity,
    ledger). Holds nothing of any other party."""

    def __init__(self, protocol: Any, *, client_id: str, uploader: secagg.Uploader | None = None) -> None:
        if protocol.encrypted and uploader is None:
            raise secagg.MissingSecretKeyError(f"the {protocol.name} protocol encrypts: client {client_id!r} needs an "
                                               "Uploader with its secret context")
        if uploader is not None:
            if uploader.client_id != client_id:
                raise secagg.AuthenticationError(f"client {client_id!r} was given the uploader of {uploader.client_id!r}")
            protocol.check_preset(uploader.secret.preset)
        self.protocol = protocol
        self.client_id = client_id
        self.uploader = uploader

    def message(self, update: Arrays, *, num_samples: int, reference: Arrays | None, run: str, round: int,
                commitment: str = "") -> ClientMessage:
        """Turn a local update into what goes on the wire for ``round`` of ``run``."""
        return self.protocol.client_message(update, client_id=self.client_id, uploader=self.uploader,
                                            num_samples=num_samples, reference=reference, run=run, round=round,
                                            commitment=commitment)


class ServerRole:
    """The server's side of a protocol, configured once: the protocol and, for encrypted ones, its
    :class:`secagg.Aggregator` (public context and roster only)."""

    def __init__(self, protocol: Any, *, aggregator: secagg.Aggregator | None = None) -> None:
        if protocol.encrypted and aggregator is None:
            raise secagg.KeyMismatchError(f"the {protocol.name} protocol needs an Aggregator (public context and roster)")
        if aggregator is not None:
            protocol.check_preset(aggregator.public.preset)
        self.protocol = protocol
        self.aggregator = aggregator

    def serve(self, messages: Sequence[ClientMessage], *, round: int, reference: Arrays | None,
              model: Arrays | None = None) -> Served:
        """Validate and combine the uploads of ``round``; ``model`` (the global model sent) fixes the
        layout every upload must have."""
        return self.protocol.serve(messages, aggregator=self.aggregator, round=round, reference=reference, model=model)


def run_round(messages: Sequence[ClientMessage], *, server: ServerRole, release: Releaser | None, round: int,
              reference: Arrays | None, model: Arrays | None = None) -> RoundOutcome:
    """Serve ``messages``, then (encrypted protocols) have a key holder release the aggregate.

    Raises:
        secagg.EmptyAggregationError: no upload is valid (its message lists every reason).
    """
    served = server.serve(messages, round=round, reference=reference, model=model)

    def outcome(aggregate: dict[str, np.ndarray] | None, *, holder: str | None = None, aborted: str | None = None,
                seconds_decrypt: float = 0.0) -> RoundOutcome:
        return RoundOutcome(round=round, contributors=served.contributors if aborted is None else (),
                            rejections=served.rejections, aggregate=aggregate, client_updates=served.client_updates,
                            key_holder=holder, aborted=aborted, aggregate_bytes=len(served.aggregate_wire or b""),
                            seconds_aggregate=served.seconds, seconds_decrypt=seconds_decrypt, senders=served.senders,
                            receipts=served.receipts)

    if not server.protocol.encrypted:
        return outcome(served.aggregate)
    if release is None:
        raise secagg.MissingSecretKeyError("an encrypted round needs a releaser: the server cannot decrypt")
    t0 = time.perf_counter()
    try:
        released, holder = release(served)
    except DecryptionAbortedError as exc:
        return outcome(None, aborted=f"{type(exc).__name__}: {exc}", seconds_decrypt=time.perf_counter() - t0)
    return outcome({n: np.asarray(a, np.float64) for n, a in released.items()}, holder=holder,
                   seconds_decrypt=time.perf_counter() - t0)

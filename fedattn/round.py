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

Example (plaintext, so no key holder is involved; :mod:`fedattn` shows an encrypted round):

    >>> import numpy as np
    >>> from fedattn.protocols import PlainProtocol
    >>> from fedattn.rules import FedAvg
    >>> server = ServerRole(PlainProtocol(FedAvg()))
    >>> clients = [ClientRole(PlainProtocol(FedAvg()), client_id=f"c{k}") for k in range(2)]
    >>> msgs = [c.message({"w": np.full(2, float(k))}, num_samples=1, reference=None, run="r", round=0, commitment="")
    ...         for k, c in enumerate(clients)]
    >>> out = run_round(msgs, server=server, clients=None, run="r", round=0, reference=None, model={"w": np.zeros(2)})
    >>> out.contributors, out.aggregate["w"].tolist()
    (('c0', 'c1'), [0.5, 0.5])
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as TypingProtocol

import numpy as np

import secagg

from .errors import ClientUnreachableError, DecryptionAbortedError

__all__ = ["ClientMessage", "Rejection", "Served", "RoundOutcome", "RoundView", "UploadSeen", "ClientRole", "ServerRole",
           "ClientGateway", "run_round"]

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
    state: secagg.RoundAggregate | None = None  # encrypted protocols: the accepted uploads, server side
    senders: Mapping[str, str] = field(default_factory=dict)  # accepted client id -> the message that carried it


class ClientGateway(TypingProtocol):
    """How the server reaches the clients after the uploads: the simulation calls their objects, the
    Flower strategy sends them messages. Each call raises when the client refuses or cannot be
    reached (:class:`ClientUnreachableError`)."""

    def online(self, senders: Mapping[str, str]) -> list[str]:
        """Which of ``senders``' client ids (each mapped to the label of the message its upload came
        in) the server can still reach, in the order to ask them."""

    def sign(self, client_id: str, cset: secagg.ContributorSet) -> str:
        """``client_id``'s signature of the round's contributor set."""

    def release(self, key_holder: str, request: bytes) -> secagg.Release:
        """``key_holder``'s release of the request."""


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
    aggregate_bytes: int  # the release request the server sent (encrypted protocols)
    seconds_aggregate: float
    seconds_decrypt: float
    senders: Mapping[str, str] = field(default_factory=dict)
    receipts: tuple[secagg.Receipt, ...] = ()
    contributor_set: secagg.ContributorSet | None = None
    release: secagg.Release | None = None  # the key holder's signed release (encrypted protocols)


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
                commitment: str) -> ClientMessage:
        """Turn a local update into what goes on the wire for ``round`` of ``run``; ``commitment``
        (:func:`secagg.round_commitment`) names the model and configuration it trained on."""
        return self.protocol.client_message(update, client_id=self.client_id, uploader=self.uploader,
                                            num_samples=num_samples, reference=reference, run=run, round=round,
                                            commitment=commitment)

    def sign(self, cset: secagg.ContributorSet) -> str:
        """Agree to the round's one contributor set (:meth:`secagg.Uploader.sign_set`)."""
        if self.uploader is None:
            raise secagg.MissingSecretKeyError("a plaintext client signs nothing")
        return self.uploader.sign_set(cset)


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

    def serve(self, messages: Sequence[ClientMessage], *, run: str, round: int, reference: Arrays | None,
              model: Arrays, commitment: str | None = None) -> Served:
        """Validate and combine the uploads of ``round``; ``model`` (the global model sent) fixes the
        layout every upload must have, ``commitment`` (what the server sent, as its clients commit to
        it) the commitment every upload must carry."""
        return self.protocol.serve(messages, aggregator=self.aggregator, run=run, round=round, reference=reference,
                                   model=model, commitment=commitment)


def run_round(messages: Sequence[ClientMessage], *, server: ServerRole, clients: ClientGateway | None, run: str,
              round: int, reference: Arrays | None, model: Arrays, commitment: str | None = None) -> RoundOutcome:
    """Serve ``messages``; under encryption, have the contributors sign one set and its key holder
    release it. A set that cannot be completed (a member or the key holder unreachable, a refusal)
    aborts the round: the global model stays as it was.

    Raises:
        secagg.EmptyAggregationError: no upload is valid (its message lists every reason).
        secagg.ModelInconsistencyError: a key holder found that contributors were given different
            models: the server is attacking them, and the run must stop.
    """
    served = server.serve(messages, run=run, round=round, reference=reference, model=model, commitment=commitment)

    def outcome(aggregate: dict[str, np.ndarray] | None, *, holder: str | None = None, aborted: str | None = None,
                seconds_decrypt: float = 0.0, rejections: Sequence[Rejection] = (),
                cset: secagg.ContributorSet | None = None, request_bytes: int = 0,
                release: secagg.Release | None = None) -> RoundOutcome:
        contributors = served.contributors if cset is None else cset.members
        receipts = () if cset is None or served.state is None else tuple(served.state.receipt(m) for m in cset.members)
        return RoundOutcome(round=round, contributors=contributors if aborted is None else (),
                            rejections=(*served.rejections, *rejections), aggregate=aggregate,
                            client_updates=served.client_updates, key_holder=holder, aborted=aborted,
                            aggregate_bytes=request_bytes, seconds_aggregate=served.seconds, seconds_decrypt=seconds_decrypt,
                            senders=served.senders, receipts=receipts, contributor_set=cset, release=release)

    if not server.protocol.encrypted:
        return outcome(served.aggregate)
    if clients is None or served.state is None:
        raise secagg.MissingSecretKeyError("an encrypted round needs its clients: the server cannot decrypt")
    t0 = time.perf_counter()
    state = served.state
    online = clients.online({c: served.senders[c] for c in state.complete_groups()})
    left_out = [c for c in served.contributors if c not in set(state.complete_groups(online))]
    sat_out = [Rejection(client_id=c, error=secagg.EmptyAggregationError(
        "its enrolment group was incomplete this round (a member dropped or was rejected), so the group sat it out"))
        for c in left_out]
    try:
        holders = [c for c in online if c in set(state.complete_groups(online))]
        if not holders:
            raise DecryptionAbortedError(f"round {round}: no enrolment group has every member's upload and every member "
                                         "still online; nothing can be released")
        # a gateway may name others (a threshold committee); the work of releasing rotates among them
        pick = getattr(clients, "key_holders", None)
        candidates = pick(holders) if pick is not None else holders
        holder = candidates[round % len(candidates)]
        cset = state.contributor_set(key_holder=holder, among=online)
        signatures = {m: clients.sign(m, cset) for m in cset.members}
        request = server.protocol.request(state, cset, signatures)
        released = clients.release(holder, request)
    except (DecryptionAbortedError, ClientUnreachableError, secagg.ReleaseRefusedError,
            secagg.EmptyAggregationError) as exc:
        return outcome(None, aborted=f"{type(exc).__name__}: {exc}", seconds_decrypt=time.perf_counter() - t0,
                       rejections=sat_out)
    return outcome({n: np.asarray(a, np.float64) for n, a in released.values.items()}, holder=holder,
                   seconds_decrypt=time.perf_counter() - t0, rejections=sat_out, cset=cset, request_bytes=len(request),
                   release=released)

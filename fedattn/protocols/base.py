"""How updates travel from clients to the server, and what each party sees.

==================  ====================================  =================================  ==========================
protocol            server sees                           a client sees                      an observer of the wire
==================  ====================================  =================================  ==========================
``plain``           every client's update, in the clear   the global model                   every update
``client-scored``   ciphertexts, their count and sizes,   the global model; its own score    ciphertexts and sizes
                    the layout, who contributed; the
                    released aggregate
==================  ====================================  =================================  ==========================

``client-scored`` (default, BRIEF section 3): each client computes its own per-layer weight
``omega = exp((s - hi) / tau)`` from the rule's score clipped to the public range, and sends
``Enc(omega * d)`` and ``Enc(omega)``; the server only adds; the key holders release the numerator
and the denominator (noise-flooded, :mod:`secagg.release`) and divide. Exact softmax, no
multiplicative depth. The server learns no score and no weight. A client could misreport its
score, but only within the public range: its weight is at most ``exp((hi - lo) / tau)`` times
another's. Collusion: the server and any one client (which holds the secret key) can decrypt every
update.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

import secagg
from secagg import signing as auth
from secagg.signing import ClientIdentity, Receipt, Roster

from ..errors import AuthenticationError, DuplicateUploadError, FedAttnError, InvalidConfigError, SignatureError
from ..rules import AggregationRule, FedAvg

__all__ = ["Protocol", "PlainProtocol", "EncryptedProtocol", "ServerResult", "ClientScoredProtocol", "ClientMessage", "RoundAggregate"]
log = logging.getLogger(__name__)


@dataclass
class ClientMessage:
    """What one client uploads: the bytes on the wire plus bookkeeping that never leaves the client."""

    client_id: str
    payload: bytes
    num_samples: int
    seconds_encrypt: float = 0.0
    plaintext: dict[str, np.ndarray] | None = field(default=None, repr=False)  # plain protocol only


@dataclass
class RoundAggregate:
    """The server's result of one round and the costs of producing it."""

    aggregate: dict[str, np.ndarray]
    contributors: tuple[str, ...]
    rejected: dict[str, str]
    seconds_aggregate: float
    seconds_decrypt: float
    server_view: dict[str, object] = field(default_factory=dict, repr=False)


class Protocol(ABC):
    """Client side (:meth:`client_message`), server side (:meth:`aggregate`) of one protocol."""

    name: str = ""

    @abstractmethod
    def client_message(self, update: Mapping[str, np.ndarray], *, rule: AggregationRule, num_samples: int,
                       reference: Mapping[str, np.ndarray] | None, round: int, client_id: str,
                       commitment: str | None = None) -> ClientMessage:
        """Prepare one client's upload; ``commitment`` (:func:`secagg.signing.round_commitment`) names the
        model and configuration the client received, and is signed with the upload where clients sign."""

    @abstractmethod
    def aggregate(self, messages: Sequence[ClientMessage], *, rule: AggregationRule,
                  reference: Mapping[str, np.ndarray] | None, round: int, commitment: str | None = None) -> RoundAggregate:
        """Combine the uploads into ``sum_k alpha_kl d_kl``; drop invalid uploads, say which and why."""


class PlainProtocol(Protocol):
    """No protection: the server receives every update (the baseline that leaks)."""

    name = "plain"

    def client_message(self, update, *, rule, num_samples, reference, round, client_id, commitment=None):
        arrays = {n: np.asarray(a, np.float32) for n, a in update.items()}
        payload = b"".join(a.tobytes() for a in arrays.values())
        return ClientMessage(client_id, payload, num_samples, plaintext=arrays)

    def aggregate(self, messages, *, rule, reference, round, commitment=None):
        t0 = time.perf_counter()
        updates = [m.plaintext for m in messages]
        agg = rule.combine(updates, num_samples=[m.num_samples for m in messages], reference=reference)
        return RoundAggregate(agg, tuple(m.client_id for m in messages), {}, time.perf_counter() - t0, 0.0,
                              server_view={"client_updates": {m.client_id: m.plaintext for m in messages}})


@dataclass
class ServerResult:
    """What the server hands the key holders: the aggregate's bytes and the contributors' receipts."""

    round: int
    wire: bytes
    contributors: tuple[str, ...]
    receipts: tuple[Receipt, ...]
    rejected: dict[str, str]
    seconds: float


class EncryptedProtocol(Protocol):
    """The parts every CKKS protocol shares: authenticated receiving, and releasing the aggregate.

    Subclasses say how the server combines the validated uploads (:meth:`combine`), using the
    public context only. A round is :meth:`serve` (server) then :meth:`release` (one key holder);
    :meth:`aggregate` runs both.

    Args:
        keys: the dealer's key set (clients and key holders use ``keys.secret``; the server side
            touches ``keys.public`` only).
        identities: the clients' signing keys (client side; :func:`secagg.signing.generate_identities`).
        roster: the clients' public verification keys. Given, the server accepts only uploads
            signed by a client on it, once per round, for the current round; and key holders
            release only aggregates whose every contributor signed for one and the same model.
        min_contributors: key holders refuse to release an aggregate of fewer clients (checked on
            signed receipts, so a server cannot fake them).
        max_payload_bytes: uploads larger than this are rejected before parsing.
        release_seed: makes the release flooding reproducible (simulations); ``None``, the
            default, draws it from the OS CSPRNG as a deployment must.
    """

    def __init__(self, keys: secagg.KeySet, *, identities: Mapping[str, ClientIdentity] | None = None,
                 roster: Roster | None = None, min_contributors: int = 1, max_payload_bytes: int | None = None,
                 release_seed: int | None = None) -> None:
        if isinstance(min_contributors, bool) or not isinstance(min_contributors, int) or min_contributors < 1:
            raise InvalidConfigError(f"min_contributors must be a positive integer, got {min_contributors!r}")
        self.keys = keys
        self.identities = identities
        self.roster = roster
        self.min_contributors = min_contributors
        self.max_payload_bytes = max_payload_bytes
        self.release_seed = release_seed

    @abstractmethod
    def combine(self, received: list[secagg.EncryptedUpdate], *, rule: AggregationRule,
                round: int) -> tuple[secagg.EncryptedUpdate, dict[str, str]]:
        """Server side: the ratio-form aggregate of validated uploads, and the uploads it dropped."""

    def _envelope(self, payload: bytes, *, client_id: str, round: int, commitment: str | None) -> bytes:
        if self.identities is None:
            return payload
        identity = self.identities.get(client_id)
        if identity is None:
            raise AuthenticationError(f"client {client_id!r} has no signing identity; the key dealer provisions one "
                                      "per client (`secfl keys generate --clients N`)")
        return auth.seal(payload, identity, round=round, commitment=commitment or "",
                         fingerprint=self.keys.secret.fingerprint)

    def receive(self, messages: Sequence[ClientMessage], *,
                round: int) -> tuple[list[secagg.EncryptedUpdate], dict[str, str], dict[str, Receipt]]:
        """Authenticate and parse every upload; keep the valid ones of the most common model layout.

        Returns the updates (ciphertexts not yet loaded: :meth:`combine` loads one at a time),
        the dropped uploads with the reason, and the receipts of the kept ones. A dropped upload is
        keyed by the client id its (verified) payload names, or by the message's ``client_id``
        where the upload could not be parsed that far.

        Raises:
            secagg.EmptyAggregationError: no upload is valid; its message lists every reason.
        """
        public = self.keys.public
        received: list[secagg.EncryptedUpdate] = []
        rejected: dict[str, str] = {}
        receipts: dict[str, Receipt] = {}
        for m in messages:
            try:
                payload, receipt = m.payload, None
                if self.roster is not None:
                    opened = auth.open_envelope(m.payload, self.roster, expected_round=round,
                                                max_bytes=self.max_payload_bytes)
                    payload, receipt = opened.payload, opened.receipt
                    if receipt.fingerprint != public.fingerprint:
                        raise secagg.KeyMismatchError(f"{receipt.client_id!r} signed for another key set")
                u = secagg.EncryptedUpdate.from_bytes(payload, public, expected_round=round,
                                                      max_bytes=self.max_payload_bytes, load=False)
                if u.kind != "update":
                    raise secagg.PayloadError("a client uploads its own update, not an aggregate")
                if receipt is not None and u.client_id != receipt.client_id:
                    raise SignatureError(f"{receipt.client_id!r} signed an update that names {u.client_id!r}")
                if any(v.client_id == u.client_id for v in received):
                    raise DuplicateUploadError(f"a second upload from {u.client_id!r} this round was dropped; "
                                               "the first one counts")
            except (secagg.SecAggError, FedAttnError, ValueError) as exc:
                key = m.client_id if m.client_id not in rejected else f"{m.client_id} (upload {len(rejected)})"
                rejected[key] = f"{type(exc).__name__}: {exc}"
                log.warning("round %d: dropped an upload from %s: %s", round, m.client_id, exc)
                continue
            received.append(u)
            if receipt is not None:
                receipts[u.client_id] = receipt
        if not received:
            reasons = "; ".join(f"{who}: {why}" for who, why in rejected.items())
            raise secagg.EmptyAggregationError(f"round {round}: no valid upload to aggregate ({len(rejected)} rejected: "
                                               f"{reasons[:2000]})")
        hashes = [u.layout.hash for u in received]
        majority = max(set(hashes), key=hashes.count)
        for u in received:
            if u.layout.hash != majority:
                rejected[u.client_id] = "LayoutMismatchError: model architecture differs from the other clients'"
        return [u for u in received if u.layout.hash == majority], rejected, receipts

    def serve(self, messages: Sequence[ClientMessage], *, rule: AggregationRule, round: int) -> ServerResult:
        """Server side of a round: receive, combine; public context only."""
        t0 = time.perf_counter()
        received, rejected, receipts = self.receive(messages, round=round)
        total, dropped = self.combine(received, rule=rule, round=round)
        rejected.update(dropped)
        wire = total.to_bytes()
        return ServerResult(round, wire, total.contributors, tuple(receipts[c] for c in total.contributors if c in receipts),
                            rejected, time.perf_counter() - t0)

    def release(self, result: ServerResult, *, expected_commitment: str | None = None) -> dict[str, np.ndarray]:
        """Key-holder side: check the contributors' receipts, decrypt and release (noise-flooded).

        Raises:
            ModelInconsistencyError: contributors trained on different models (a malicious server).
            AuthenticationError: receipts that do not match the aggregate, or too few contributors.
        """
        secret = self.keys.secret
        total = secagg.EncryptedUpdate.from_bytes(result.wire, secret, expected_round=result.round)
        if len(total.contributors) < self.min_contributors:
            raise AuthenticationError(f"round {result.round}: {len(total.contributors)} contributor(s); the key holders "
                                      f"release aggregates of at least {self.min_contributors}")
        if self.roster is not None:
            auth.check_receipts(result.receipts, self.roster, round=result.round, contributors=total.contributors,
                                fingerprint=secret.fingerprint, expected_commitment=expected_commitment,
                                min_contributors=self.min_contributors)
        seed = None if self.release_seed is None else int(
            np.random.SeedSequence([self.release_seed, result.round]).generate_state(1)[0])
        return secagg.decrypt_ratio(total, secret, seed=seed)

    def aggregate(self, messages, *, rule, reference, round, commitment=None):
        served = self.serve(messages, rule=rule, round=round)
        t1 = time.perf_counter()
        agg = self.release(served, expected_commitment=commitment)
        return RoundAggregate({n: a.astype(np.float64) for n, a in agg.items()}, served.contributors, served.rejected,
                              served.seconds, time.perf_counter() - t1,
                              server_view={"released_aggregate": agg, "aggregate_bytes": len(served.wire)})


class ClientScoredProtocol(EncryptedProtocol):
    """CKKS, self-normalised attention: the server only adds ciphertexts (see module docstring)."""

    name = "client-scored"

    @staticmethod
    def client_weights(update, *, rule: AggregationRule, num_samples: int, reference) -> dict[str, float]:
        lw = rule.client_log_weights(update, num_samples=num_samples, reference=reference)
        if isinstance(rule, FedAvg) and not rule.equal_weights:
            if rule.max_samples is None:
                raise ValueError("FedAvg under encryption needs a public max_samples bound to normalise n_k")
            lw = lw - math.log(rule.max_samples)
        return {n: float(np.exp(w)) for n, w in zip(update, lw)}

    def client_message(self, update, *, rule, num_samples, reference, round, client_id, commitment=None):
        t0 = time.perf_counter()
        weights = self.client_weights(update, rule=rule, num_samples=num_samples, reference=reference)
        enc = secagg.encrypt_update(update, self.keys.secret, round=round, client_id=client_id, weights=weights)
        payload = self._envelope(enc.to_bytes(), client_id=client_id, round=round, commitment=commitment)
        return ClientMessage(client_id, payload, num_samples, seconds_encrypt=time.perf_counter() - t0)

    def combine(self, received, *, rule, round):
        # folded one upload at a time: the server holds one update's ciphertexts, not all of them
        acc, dropped = secagg.RunningSum(self.keys.public, expected_round=round), {}
        for u in received:
            try:
                acc.add(u)
            except (secagg.SecAggError, ValueError) as exc:
                dropped[u.client_id] = f"{type(exc).__name__}: {exc}"
                log.warning("round %d: dropped the upload of %s: %s", round, u.client_id, exc)
        return acc.result(), dropped

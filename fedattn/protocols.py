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

from .rules import AggregationRule, FedAvg

__all__ = ["Protocol", "PlainProtocol", "EncryptedProtocol", "ClientScoredProtocol", "ClientMessage", "RoundAggregate", "PROTOCOLS",
           "make_protocol"]
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
                       reference: Mapping[str, np.ndarray] | None, round: int, client_id: str) -> ClientMessage:
        """Prepare one client's upload."""

    @abstractmethod
    def aggregate(self, messages: Sequence[ClientMessage], *, rule: AggregationRule,
                  reference: Mapping[str, np.ndarray] | None, round: int) -> RoundAggregate:
        """Combine the uploads into ``sum_k alpha_kl d_kl``; drop invalid uploads, say which and why."""


class PlainProtocol(Protocol):
    """No protection: the server receives every update (the baseline that leaks)."""

    name = "plain"

    def client_message(self, update, *, rule, num_samples, reference, round, client_id):
        arrays = {n: np.asarray(a, np.float32) for n, a in update.items()}
        payload = b"".join(a.tobytes() for a in arrays.values())
        return ClientMessage(client_id, payload, num_samples, plaintext=arrays)

    def aggregate(self, messages, *, rule, reference, round):
        t0 = time.perf_counter()
        updates = [m.plaintext for m in messages]
        agg = rule.combine(updates, num_samples=[m.num_samples for m in messages], reference=reference)
        return RoundAggregate(agg, tuple(m.client_id for m in messages), {}, time.perf_counter() - t0, 0.0,
                              server_view={"client_updates": {m.client_id: m.plaintext for m in messages}})


class EncryptedProtocol(Protocol):
    """The parts every CKKS protocol shares: receiving uploads and releasing the aggregate.

    Subclasses say how the server combines the validated uploads (:meth:`combine`), using the
    public context only. Args: ``keys`` - the dealer's key set (clients and key holders use
    ``keys.secret``; the server side touches ``keys.public`` only); ``max_payload_bytes`` - uploads
    larger than this are rejected before parsing; ``release_seed`` - makes the release flooding
    reproducible (simulations); ``None``, the default, draws it from the OS CSPRNG as a
    deployment must.
    """

    def __init__(self, keys: secagg.KeySet, *, max_payload_bytes: int | None = None,
                 release_seed: int | None = None) -> None:
        self.keys = keys
        self.max_payload_bytes = max_payload_bytes
        self.release_seed = release_seed

    @abstractmethod
    def combine(self, received: list[secagg.EncryptedUpdate], *, rule: AggregationRule, round: int) -> secagg.EncryptedUpdate:
        """Server side: the ratio-form aggregate of validated uploads."""

    def receive(self, messages: Sequence[ClientMessage], *, round: int) -> tuple[list[secagg.EncryptedUpdate], dict[str, str]]:
        """Parse every upload; keep the valid ones of the most common model layout, say why others went."""
        public = self.keys.public
        received, rejected = [], {}
        for m in messages:
            try:
                received.append(secagg.EncryptedUpdate.from_bytes(m.payload, public, expected_round=round,
                                                                  max_bytes=self.max_payload_bytes))
            except (secagg.SecAggError, ValueError) as exc:
                rejected[m.client_id] = f"{type(exc).__name__}: {exc}"
                log.warning("round %d: dropped the upload of %s: %s", round, m.client_id, exc)
        if not received:
            raise secagg.EmptyAggregationError(f"round {round}: no valid upload to aggregate ({len(rejected)} rejected)")
        hashes = [u.layout.hash for u in received]
        majority = max(set(hashes), key=hashes.count)
        for u in received:
            if u.layout.hash != majority:
                rejected[u.client_id] = "LayoutMismatchError: model architecture differs from the other clients'"
        return [u for u in received if u.layout.hash == majority], rejected

    def aggregate(self, messages, *, rule, reference, round):
        t0 = time.perf_counter()
        received, rejected = self.receive(messages, round=round)
        total = self.combine(received, rule=rule, round=round)
        wire = total.to_bytes()
        t1 = time.perf_counter()
        # key holders: parse what the server sent, release numerator and denominator, divide
        secret = self.keys.secret
        seed = None if self.release_seed is None else int(np.random.SeedSequence([self.release_seed, round]).generate_state(1)[0])
        agg = secagg.decrypt_ratio(secagg.EncryptedUpdate.from_bytes(wire, secret, expected_round=round), secret, seed=seed)
        t2 = time.perf_counter()
        return RoundAggregate({n: a.astype(np.float64) for n, a in agg.items()}, total.contributors, rejected,
                              t1 - t0, t2 - t1, server_view={"released_aggregate": agg, "aggregate_bytes": len(wire)})


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

    def client_message(self, update, *, rule, num_samples, reference, round, client_id):
        t0 = time.perf_counter()
        weights = self.client_weights(update, rule=rule, num_samples=num_samples, reference=reference)
        enc = secagg.encrypt_update(update, self.keys.secret, round=round, client_id=client_id, weights=weights)
        return ClientMessage(client_id, enc.to_bytes(), num_samples, seconds_encrypt=time.perf_counter() - t0)

    def combine(self, received, *, rule, round):
        return secagg.aggregate(received, self.keys.public, expected_round=round)


PROTOCOLS = ("plain", "client-scored", "server-scored")


def make_protocol(name: str, *, keys: secagg.KeySet | None = None, preset: str = secagg.DEFAULT_PRESET,
                  release_seed: int | None = None) -> Protocol:
    """Build a protocol by name; encrypted ones use ``keys`` or a fresh key set of ``preset``."""
    from .errors import InvalidConfigError

    if name == "plain":
        return PlainProtocol()
    if name == "client-scored":
        return ClientScoredProtocol(keys or secagg.generate_keys(preset=preset), release_seed=release_seed)
    if name == "server-scored":
        from .server_scored import ServerScoredProtocol

        return ServerScoredProtocol(keys or secagg.generate_keys(preset="deep"), release_seed=release_seed)
    raise InvalidConfigError(f"unknown protocol {name!r}; choose one of {PROTOCOLS}")

"""How updates travel from clients to the server, and what each party sees.

==================  ====================================  =================================  ==========================
protocol            server sees                           a client sees                      an observer of the wire
==================  ====================================  =================================  ==========================
``plain``           every client's update, in the clear   the global model                   every update
``client-scored``   ciphertexts, their count and sizes,   the global model; its own score    ciphertexts and sizes
                    the layout, who contributed; the
                    released aggregate
==================  ====================================  =================================  ==========================

A protocol is configured once with its aggregation rule and says two things: how a client turns
its update into a payload (:meth:`Protocol.client_message`, with the client's
:class:`secagg.Uploader`) and how the server combines the payloads of a round
(:meth:`Protocol.serve`, with the server's :class:`secagg.Aggregator`). Releasing an encrypted
aggregate is the key holders' (:class:`secagg.KeyHolder`), whose policy lives in :mod:`secagg`.

``client-scored`` (default): each client computes its own per-layer weight ``omega = exp((s - hi)
/ tau)`` from the rule's score clipped to the public range, and sends ``Enc(omega * d)`` and
``Enc(omega)``; the server only adds; a key holder releases the numerator and the denominator
(noise-flooded, :mod:`secagg.release`) and divides. Exact softmax, no multiplicative depth. The
server learns no score and no weight. A client could misreport its score, but only within the
public range: its weight is at most ``exp((hi - lo) / tau)`` times another's.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

import secagg

from ..errors import DuplicateUploadError, FedAttnError, InvalidConfigError, ModelMismatchError
from ..round import Arrays, ClientMessage, Rejection, Served
from ..rules import AggregationRule, FedAvg

__all__ = ["Protocol", "PlainProtocol", "EncryptedProtocol", "ClientScoredProtocol"]
log = logging.getLogger(__name__)


class Protocol(ABC):
    """A protocol, configured once with the rule every party of a run agrees on."""

    name: ClassVar[str] = ""
    encrypted: ClassVar[bool] = False

    def __init__(self, rule: AggregationRule) -> None:
        if not isinstance(rule, AggregationRule):
            raise InvalidConfigError(f"a protocol needs an aggregation rule, got {type(rule).__name__}")
        self.rule = rule

    @abstractmethod
    def client_message(self, update: Arrays, *, client_id: str, uploader: secagg.Uploader | None, num_samples: int,
                       reference: Arrays | None, run: str, round: int, commitment: str) -> ClientMessage:
        """One client's upload for ``round``; ``commitment`` names the model and configuration it trained
        on (:func:`secagg.round_commitment`), signed with the upload where clients sign."""

    @abstractmethod
    def serve(self, messages: Sequence[ClientMessage], *, aggregator: secagg.Aggregator | None, run: str, round: int,
              reference: Arrays | None, model: Arrays, commitment: str | None = None) -> Served:
        """Combine the valid uploads into ``sum_k alpha_kl d_kl`` (or its encryption); drop the others, saying
        why. ``model`` is the global model the server sent: every upload must fit it."""


class PlainProtocol(Protocol):
    """No protection: the server receives every update (the baseline that leaks)."""

    name = "plain"

    def client_message(self, update, *, client_id, uploader, num_samples, reference, run, round, commitment):
        arrays = {n: np.asarray(a, np.float32) for n, a in update.items()}
        payload = b"".join(a.tobytes() for a in arrays.values())
        return ClientMessage(client_id, payload, num_samples, plaintext=arrays)

    def serve(self, messages, *, aggregator, run, round, reference, model, commitment=None):
        t0 = time.perf_counter()
        kept, rejections, seen = [], [], set()
        for m in messages:
            try:
                if m.plaintext is None:
                    raise InvalidConfigError("a plain upload carries its update in the clear")
                if m.client_id in seen:
                    raise DuplicateUploadError(f"a second upload from {m.client_id!r} this round was dropped")
                if model is not None and (list(m.plaintext) != list(model) or any(
                        np.shape(m.plaintext[n]) != np.shape(a) for n, a in model.items())):
                    raise ModelMismatchError(f"client {m.client_id!r} sent an update for another architecture")
            except FedAttnError as exc:
                rejections.append(Rejection(client_id=m.client_id, error=exc))
                continue
            seen.add(m.client_id)
            kept.append(m)
        if not kept:
            raise secagg.EmptyAggregationError(_nothing_valid(round, rejections))
        updates = {m.client_id: m.plaintext for m in kept}
        agg = self.rule.combine(list(updates.values()), num_samples=[m.num_samples for m in kept], reference=reference)
        return Served(round=round, contributors=tuple(updates), rejections=tuple(rejections),
                      seconds=time.perf_counter() - t0, aggregate=agg, client_updates=updates)


def _nothing_valid(round: int, rejections: Sequence[Rejection]) -> str:
    reasons = "; ".join(f"{r.client_id}: {r.describe()}" for r in rejections)
    return f"round {round}: no valid upload to aggregate ({len(rejections)} rejected: {reasons[:2000]})"


class EncryptedProtocol(Protocol):
    """What every CKKS protocol shares: authenticated receiving, one upload per client, a request
    for the key holder.

    Subclasses say what a client encrypts (:meth:`client_message`), what the key holder is asked to
    release (:meth:`request`) and how a key holder of this protocol must be configured
    (:meth:`key_holder_options`).
    """

    encrypted = True
    #: the server keeps every upload (a circuit over each client's ciphertexts), not only group sums
    needs_uploads = False

    def check_preset(self, preset: secagg.Preset) -> None:
        """Refuse key material whose preset cannot run this protocol (both roles call it)."""

    def key_holder_options(self) -> dict[str, Any]:
        """Keyword options of :class:`secagg.KeyHolder` this protocol needs."""
        return {}

    def upload_layout(self, model: Arrays) -> secagg.Layout:
        """The layout every upload of a round on ``model`` has (the model's arrays, in order)."""
        return secagg.Layout.of({n: np.zeros(np.shape(a), np.asarray(a).dtype) for n, a in model.items()})

    @abstractmethod
    def request(self, state: secagg.RoundAggregate, cset: secagg.ContributorSet, signatures: dict[str, str]) -> bytes:
        """The release request for ``cset`` (server side, public material only)."""

    def serve(self, messages, *, aggregator, run, round, reference, model, commitment=None):
        """Authenticate every upload against the layout of the model sent (never a vote among
        uploads, so a bad upload cannot make good ones look wrong). A dropped upload is keyed by the
        message's client id."""
        if aggregator is None:
            raise secagg.KeyMismatchError(f"the {self.name} protocol's server needs an Aggregator")
        t0 = time.perf_counter()
        state = aggregator.open_round(run=run, round=round, layout=self.upload_layout(model), commitment=commitment,
                                      keep_uploads=self.needs_uploads)
        rejections, senders = [], {}
        for m in messages:
            try:
                receipt = state.receive(m.payload)
            except (secagg.SecAggError, FedAttnError, ValueError) as exc:
                rejections.append(Rejection(client_id=m.client_id, error=exc))
                log.warning("round %d: dropped an upload from %s: %s", round, m.client_id, exc)
                continue
            senders[receipt.client_id] = m.client_id
        if not state.contributors:
            raise secagg.EmptyAggregationError(_nothing_valid(round, rejections))
        return Served(round=round, contributors=state.contributors, rejections=tuple(rejections),
                      seconds=time.perf_counter() - t0, state=state, senders=senders)


class ClientScoredProtocol(EncryptedProtocol):
    """CKKS, self-normalised attention: the server only adds ciphertexts (see module docstring)."""

    name = "client-scored"

    def __init__(self, rule: AggregationRule) -> None:
        super().__init__(rule)
        if isinstance(rule, FedAvg) and not rule.equal_weights and rule.max_samples is None:
            raise InvalidConfigError("FedAvg under encryption needs a public max_samples bound to normalise n_k "
                                     "(rule option max_samples), or equal weights")

    def upload_layout(self, model: Arrays) -> secagg.Layout:
        names = list(model)
        return secagg.Layout.of({**{n: np.zeros(np.shape(a), np.asarray(a).dtype) for n, a in model.items()},
                                 secagg.WEIGHTS_ENTRY: np.zeros(len(names))})

    def client_weights(self, update: Arrays, *, num_samples: int, reference: Arrays | None) -> dict[str, float]:
        """What one client computes for itself: ``omega_l = exp(log weight)``, at most 1."""
        rule = self.rule
        lw = rule.client_log_weights(update, num_samples=num_samples, reference=reference)
        if isinstance(rule, FedAvg) and not rule.equal_weights:
            assert rule.max_samples is not None  # checked at construction
            lw = lw - math.log(rule.max_samples)
        return {n: min(1.0, float(np.exp(w))) for n, w in zip(update, lw)}

    def client_message(self, update, *, client_id, uploader, num_samples, reference, run, round, commitment):
        if uploader is None:
            raise secagg.MissingSecretKeyError(f"client {client_id!r} encrypts with its Uploader")
        t0 = time.perf_counter()
        weights = self.client_weights(update, num_samples=num_samples, reference=reference)
        payload = uploader.upload(update, run=run, round=round, commitment=commitment, weights=weights)
        return ClientMessage(client_id, payload, num_samples, seconds_encrypt=time.perf_counter() - t0)

    def request(self, state, cset, signatures):
        return state.request(cset, signatures)

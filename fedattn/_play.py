"""One simulated round, played: sampling, local training with the clients' checks of the model
they are sent, :func:`fedattn.round.run_round` through a gateway to the clients' own objects, the
server's step, and the clients' provenance copies advanced by the signed release."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import secagg

from .config import SimulationConfig
from .defences import ServedModel, ServerAdversary, architecture_fingerprint
from .errors import AllClientsDroppedError, ArchitectureMismatchError, ClientUnreachableError, ModelMismatchError
from .parties import Federation, ModelFactory, Party, RoundRecord
from .parties import derive_seed as _seed
from .round import ClientMessage, Rejection, RoundOutcome, RoundView, UploadSeen, run_round

__all__ = ["play_round"]
log = logging.getLogger("fedattn.simulation")


@dataclass
class _LocalRound:
    """The clients' half of a round: what they sent and what happened to the others."""

    sampled: list[Party]
    messages: list[ClientMessage]
    dropped: list[str]
    rejections: list[Rejection]
    commitments: dict[str, str]
    seconds_train: float
    config_sent: dict[str, Any] = field(default_factory=dict)


def _sample(fed: Federation, rnd: int) -> tuple[list[Party], np.random.Generator]:
    """Whole enrolment groups, in random order, until ``clients_per_round`` clients (all by default)."""
    rng = np.random.default_rng(_seed(fed.config.seed, rnd, 1))
    per_round = fed.config.clients_per_round or len(fed.parties)
    chosen: list[int] = []
    for g in rng.permutation(len(fed.groups)).tolist():
        if len(chosen) >= per_round:
            break
        chosen.extend(fed.groups[g])
    return [fed.parties[i] for i in sorted(chosen)], rng


def _train_clients(fed: Federation, rnd: int, adversary: ServerAdversary) -> _LocalRound:
    """Sample, send the model, train locally, upload; scripted dropouts happen here."""
    cfg, server = fed.config, fed.server
    sampled, rng = _sample(fed, rnd)
    scripted = {(d.round, d.client): d.stage for d in cfg.dropouts}
    config_sent = {**server.round_config(rnd), "run": fed.run_id}
    local = _LocalRound(sampled, [], [], [], {}, 0.0, config_sent)
    for party in sampled:
        cid = party.client.client_id
        i = fed.parties.index(party)
        stage = scripted.get((rnd, cid))
        if (cfg.dropout and rng.random() < cfg.dropout) or stage == "before_upload":
            local.dropped.append(cid)
            continue
        t0 = time.perf_counter()
        served = adversary.model_for(cid, rnd, server.state)
        received, factory = (served.state, served.factory) if isinstance(served, ServedModel) else (served, None)
        local.commitments[cid] = _commitment(cfg, rnd, received, config_sent)
        try:
            factory = _check_served(party, received, factory, pinned="architecture" in cfg.defences)
            update = party.client.train(received, seed=_seed(cfg.seed, rnd, i, 2), factory=factory)
        except ModelMismatchError as exc:
            local.rejections.append(Rejection(client_id=cid, error=exc))
            log.warning("round %d: %s", rnd, exc)
            continue
        if fed.client_dp is not None:
            update, _ = fed.client_dp.privatise(update, sampled=len(sampled),
                                                rng=np.random.default_rng(_seed(cfg.seed, rnd, i, 3)))
        local.seconds_train += time.perf_counter() - t0
        try:
            message = party.role.message(update, num_samples=party.client.num_samples,
                                         reference=server.previous_step, run=fed.run_id, round=rnd,
                                         commitment=local.commitments[cid])
        except secagg.ValueOutOfRangeError as exc:  # it cannot encrypt this update: it sits the round out
            local.rejections.append(Rejection(client_id=cid, error=exc))
            log.warning("round %d: client %s: %s", rnd, cid, exc)
            continue
        if stage == "during_upload":
            message.payload = message.payload[:len(message.payload) // 2]
            local.dropped.append(cid)
        elif stage == "after_upload":
            local.dropped.append(cid)
        local.messages.append(message)
    return local


def _commitment(cfg: SimulationConfig, rnd: int, model: Mapping[str, np.ndarray], config_sent: Mapping[str, Any]) -> str:
    """What a client's receipt commits to: the model and the configuration, or (commitments off) the
    configuration only."""
    return secagg.round_commitment(rnd, model if "commitments" in cfg.defences else {}, config_sent)


def _check_served(party: Party, received: Mapping[str, np.ndarray], factory: ModelFactory | None, *,
                  pinned: bool) -> ModelFactory | None:
    """The client's checks of what the server sent; the factory to train with (``None``: its own)."""
    if factory is not None and pinned:
        if architecture_fingerprint(factory()) != party.architecture:
            raise ArchitectureMismatchError(f"client {party.client.client_id!r}: the server sent another architecture "
                                            "than the one pinned at enrolment; refused")
        factory = None  # the same architecture: the client trains its own code
    if party.provenance is not None:
        party.provenance.check(received)
    return factory


class _Gateway:
    """The server's reach to the round's clients: their own objects, with the scripted dropouts."""

    def __init__(self, fed: Federation, rnd: int, local: _LocalRound, adversary: ServerAdversary) -> None:
        self.rnd = rnd
        self.adversary = adversary
        self.uploads = [m.payload for m in local.messages]
        self.parties = {p.client.client_id: p for p in local.sampled}
        self.stage = {d.client: d.stage for d in fed.config.dropouts if d.round == rnd}
        self.gone = set(local.dropped)
        self.members = {p.client.client_id: p.member for p in fed.parties if p.member is not None}
        self.threshold = fed.config.threshold

    def online(self, senders: Mapping[str, str]) -> list[str]:
        return [c for c in senders if c not in self.gone]

    def key_holders(self, contributors: Sequence[str]) -> list[str]:
        """Who may be named to release: the contributors, or with threshold keys the committee."""
        return sorted(self.members) if self.members else list(contributors)

    def sign(self, client_id: str, cset: secagg.ContributorSet) -> str:
        if self.stage.get(client_id) == "during_signing":
            raise ClientUnreachableError(f"round {self.rnd}: {client_id} left before signing the contributor set")
        return self.parties[client_id].role.sign(cset)

    def release(self, key_holder: str, request: bytes) -> secagg.Release:
        request = self.adversary.request(self.rnd, request, self.uploads)
        if self.members:  # threshold keys: a quorum of the members still there
            from .threshold_keys import quorum_release

            available = [m for m in sorted(self.members) if self.stage.get(m) != "during_decryption"]
            return quorum_release(self.members, request, combiner=key_holder, available=available,
                                  threshold=self.threshold)
        if self.stage.get(key_holder) == "during_decryption":
            raise ClientUnreachableError(f"round {self.rnd}: the key holder {key_holder} left during decryption")
        holder = self.parties[key_holder].key_holder
        assert holder is not None
        return holder.release(request)


def play_round(fed: Federation, rnd: int, *, adversary: ServerAdversary,
               previous: RoundRecord | None = None) -> tuple[RoundRecord, RoundView]:
    """One round end to end: local training, :func:`fedattn.round.run_round`, the server step."""
    cfg, server = fed.config, fed.server
    local = _train_clients(fed, rnd, adversary)
    if not local.messages:
        raise AllClientsDroppedError(
            f"round {rnd}: all {len(local.sampled)} sampled clients dropped out or were rejected; nothing to aggregate. "
            "Lower the dropout rate or sample more clients per round",
            reasons={r.client_id: r.kind for r in local.rejections})
    sent, reference = adversary.round_model(rnd, server.state), server.previous_step
    expected = _commitment(cfg, rnd, sent, local.config_sent) if adversary.honest_checks else None
    outcome = run_round(local.messages, server=fed.server_role, clients=_Gateway(fed, rnd, local, adversary),
                        run=fed.run_id, round=rnd, reference=reference, model=sent, commitment=expected)
    if outcome.aborted:
        log.warning("round %d: %s", rnd, outcome.aborted)
    epsilon = previous.epsilon if previous else None
    if outcome.aggregate is not None:
        if fed.client_dp is not None:
            fed.client_dp.account_round(sampled=len(local.sampled), survivors=len(outcome.contributors))
        adversary.apply(server, outcome.aggregate, np.random.default_rng(_seed(cfg.seed, rnd, 4)))
        if cfg.epsilon_every_round or rnd == cfg.rounds - 1:
            epsilon = (fed.sample_dp.epsilon() if fed.sample_dp else fed.client_dp.epsilon() if fed.client_dp else None)
    _advance_provenance(fed, rnd, outcome)
    acc, loss = server.evaluate(fed.data.x_test, fed.data.y_test)
    rejections = (*local.rejections, *outcome.rejections)
    seconds = {"train": local.seconds_train, "encrypt": sum(m.seconds_encrypt for m in local.messages),
               "aggregate": outcome.seconds_aggregate, "decrypt": outcome.seconds_decrypt}
    record = RoundRecord(rnd, acc, loss, epsilon, list(outcome.contributors), local.dropped,
                         {r.client_id: r.describe() for r in rejections}, sum(len(m.payload) for m in local.messages),
                         seconds["train"], seconds["encrypt"], seconds["aggregate"], seconds["decrypt"],
                         aborted=outcome.aborted)
    return record, _view(fed, rnd, local, outcome, sent=sent, reference=reference, seconds=seconds,
                         rejections=rejections)


def _advance_provenance(fed: Federation, rnd: int, outcome: RoundOutcome) -> None:
    """Every client with the provenance defence applies the round's signed release to its own copy."""
    for party in fed.parties:
        if party.provenance is None:
            continue
        try:
            party.provenance.advance(rnd, outcome.release if outcome.aggregate is not None else None)
        except secagg.SecAggError as exc:  # it keeps its copy, and so refuses whatever the server sends next
            log.warning("round %d: client %s could not verify the release: %s", rnd, party.client.client_id, exc)


def _view(fed: Federation, rnd: int, local: _LocalRound, outcome: RoundOutcome, *, sent: Mapping[str, np.ndarray],
          reference: Mapping[str, np.ndarray] | None, seconds: Mapping[str, float],
          rejections: Sequence[Rejection]) -> RoundView:
    plain = not fed.server_role.protocol.encrypted
    return RoundView(
        round=rnd, model_sent=sent, config_sent=fed.server.round_config(rnd), reference=reference,
        sampled=tuple(p.client.client_id for p in local.sampled), dropped=tuple(local.dropped),
        uploads=tuple(UploadSeen(client_id=m.client_id, bytes=len(m.payload)) for m in local.messages),
        rejections=tuple(rejections), contributors=outcome.contributors, client_updates=outcome.client_updates,
        num_samples={m.client_id: m.num_samples for m in local.messages} if plain else None,
        aggregate=outcome.aggregate, model_after=fed.server.state, key_holder=outcome.key_holder,
        aborted=outcome.aborted, seconds=dict(seconds))

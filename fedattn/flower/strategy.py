"""Server side: a Flower FedAvg strategy that aggregates secfl ciphertexts and never decrypts.

One round (``server_round`` r, which is round ``r - 1`` of :func:`fedattn.simulation.run_simulation`):

1. ``configure_train``: Flower's FedAvg sampling; the one ConfigRecord also carries the protocol,
   the rule, the public context's fingerprint (and its bytes while they are small) and, for cosine
   attention, the previous global step as a second ArrayRecord.
2. The clients' ``secagg_mod`` replies with one signed ciphertext upload each.
3. ``aggregate_train`` runs :func:`fedattn.round.run_round`: the uploads are authenticated (bad
   ones are dropped with their reason, the round goes on), whole enrolment groups form the
   round's contributor set, a ``query.secfl_sign_set`` message asks each member to sign it, and a
   ``query.secfl_release`` message sends the signed request to the one key holder it names, which
   rebuilds the second halves from the signed seeds, decrypts, floods and returns the released
   ``sum_k omega_k d_k / sum_k omega_k``. If a member or the key holder fails, the round is aborted.
4. The strategy applies the rule's server step (``w + step * aggregate`` plus the rule's noise), as
   :class:`fedattn.simulation.Server` does, and returns the new plaintext global model.

The strategy holds a :class:`fedattn.round.ServerRole`: the protocol and an
:class:`secagg.Aggregator` with the public context and roster, nothing secret.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

import secagg

from ..errors import InvalidConfigError
from ..protocols import make_protocol
from ..round import ClientMessage, ServerRole, run_round
from ..rules import CosineAttention, make_rule
from . import records as R
from .errors import MissingCiphertextError
from .gateway import FlowerClients
from .keys import load_server_context, load_server_epoch, load_server_roster

__all__ = ["SecAggFedAvg", "RoundLog", "DEFAULT_MAX_CONTEXT_BYTES"]
log = logging.getLogger(__name__)

#: Public contexts up to this size travel in every round's config; larger ones (the deep preset's
#: Galois keys, ~115 MB) are announced by fingerprint only.
DEFAULT_MAX_CONTEXT_BYTES = 4 * 2**20


@dataclass
class RoundLog:
    """What the server saw in one round: exactly the server's view, nothing more."""

    round: int
    contributors: tuple[str, ...] = ()
    nodes: tuple[int, ...] = ()
    rejected: dict[str, str] = field(default_factory=dict)
    key_holder: int | None = None
    released: dict[str, np.ndarray] | None = field(default=None, repr=False)
    metrics: dict[int, dict[str, object]] = field(default_factory=dict)
    aggregate_bytes: int = 0
    receipts: tuple[secagg.Receipt, ...] = ()
    aborted: str | None = None


class SecAggFedAvg(FlowerFedAvg):
    """Flower's FedAvg with secfl's encrypted protocols in place of plaintext averaging.

    Args:
        public_context: the server's ``server.ctx`` (path, bytes or :class:`secagg.PublicContext`);
            a secret context is refused.
        epoch: with threshold keys, in place of ``public_context``: the ceremony's public
            ``epoch.json`` (path or :class:`secagg.epoch.Epoch`). Every client encrypts with its own
            key; a quorum of the committee releases each round (client-scored protocol only).
        roster: the clients' public verification keys and enrolment groups (``roster.json`` of
            ``secfl keys generate --clients N``, or a :class:`secagg.Roster`). Every upload must be
            signed by a client on it, for this run and round, once.
        protocol: ``"client-scored"`` (default) or ``"server-scored"`` (FedAtt with squared-L2
            scores on the ``deep`` preset; its key holders must trust the server).
        rule, rule_options: the aggregation rule (:func:`fedattn.rules.make_rule`), sent to the
            clients so that they compute their weights with it.
        seed: seeds the rule's server noise as the standalone simulation does; ``None`` draws it
            from the OS.
        clipping_norm: when set, sent as ``clipping_norm`` so that Flower's ``fixedclipping_mod``
            (placed after ``secagg_mod``) clips each update before encryption.
        max_payload_bytes: uploads above this are rejected before parsing.
        query_timeout: seconds to wait for a member's signature or the key holder's release.
        **fedavg_options: Flower FedAvg's sampling options (``fraction_train``, ``min_train_nodes``...).
    """

    def __init__(self, *, public_context: object = None, roster: object, epoch: object = None,
                 protocol: str = "client-scored", rule: str = "fedatt",
                 rule_options: dict[str, object] | None = None, seed: int | None = None,
                 clipping_norm: float | None = None, max_payload_bytes: int | None = None, query_timeout: float = 600.0,
                 max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES, **fedavg_options: object) -> None:
        try:
            if epoch is not None and public_context is not None:
                raise InvalidConfigError("give SecAggFedAvg public_context= (a shared key set) or epoch= (threshold "
                                         "keys), not both")
            self.epoch = None if epoch is None else load_server_epoch(epoch)
            self.public_context = self.epoch if self.epoch is not None else load_server_context(public_context)
            loaded = load_server_roster(roster)
        except Exception as exc:
            log.error("%s", exc)  # before round 1, in the server's log
            raise
        if loaded is None:
            raise InvalidConfigError("SecAggFedAvg accepts signed uploads only: pass roster=roster.json (written by "
                                     "`secfl keys generate --clients N`)")
        super().__init__(**fedavg_options)  # type: ignore[arg-type]
        self.rule_name, self.rule_options = rule, dict(rule_options or {})
        self.rule = make_rule(rule, **self.rule_options)
        if protocol == "plain":
            raise InvalidConfigError("SecAggFedAvg runs encrypted protocols; use Flower's FedAvg for plaintext")
        self.protocol = make_protocol(protocol, self.rule)
        if self.epoch is not None and self.protocol.name != "client-scored":
            raise InvalidConfigError(f"threshold keys release client-scored sums only; protocol {protocol!r} needs a "
                                     "single key holder who trusts the server's circuit")
        aggregator = secagg.Aggregator(self.public_context, roster=loaded, max_payload_bytes=max_payload_bytes)
        self.server_role = ServerRole(self.protocol, aggregator=aggregator)  # checks the preset against the protocol
        self.roster = loaded
        if clipping_norm is not None and not (math.isfinite(clipping_norm) and clipping_norm > 0):
            raise InvalidConfigError(f"clipping_norm must be positive, got {clipping_norm}")
        self.clipping_norm = clipping_norm
        self.seed = seed
        self.query_timeout = query_timeout
        if self.public_context.preset.flood_bits < 40:
            # on Flower the server holds both the aggregate's ciphertext and its release (secagg.release)
            log.warning("preset %r floods releases by 2^%d only (a heuristic level); the server sees each aggregate's "
                        "ciphertext and its release, so prefer the 'strict' preset", self.public_context.preset.name,
                        self.public_context.preset.flood_bits)
        # members hold their own epoch.json; a shared key set's public context travels while it is small
        blob = self.public_context.to_bytes() if isinstance(self.public_context, secagg.PublicContext) else b""
        self._context_bytes = blob if len(blob) <= max_context_bytes else b""
        self.nodes: dict[str, int] = {}  # client id -> its node: from signed uploads and signed readiness answers
        self.search_members = False  # threshold keys: a member was missing last round, look among unplaced nodes
        self.history: list[RoundLog] = []
        self._grid: Grid | None = None
        self._global: dict[str, np.ndarray] | None = None
        self._previous_step: dict[str, np.ndarray] | None = None

    def summary(self) -> None:
        super().summary()
        log.info("secfl: protocol %s, rule %s %s, preset %s, key set %s...", self.protocol.name, self.rule_name,
                 self.rule_options, self.public_context.preset.name, self.public_context.fingerprint[:12])

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._grid = grid
        self._global = R.to_numpy(arrays, what="the global model")
        messages = list(super().configure_train(server_round, arrays, self.secfl_config(config), grid))
        if isinstance(self.rule, CosineAttention) and self._previous_step is not None:
            reference = R.to_record(self._previous_step)
            for m in messages:
                m.content[R.REFERENCE_RECORD] = reference
        return messages

    def secfl_config(self, config: ConfigRecord) -> ConfigRecord:
        """Add what the clients' secagg_mod needs to a train ConfigRecord (in place, and return it)."""
        config[R.CONFIG_PROTOCOL] = self.protocol.name
        config[R.CONFIG_RULE] = R.rule_spec(self.rule_name, self.rule_options)
        config[R.CONFIG_FINGERPRINT] = self.public_context.fingerprint
        if self._context_bytes:
            config[R.CONFIG_CONTEXT] = self._context_bytes
        if self.clipping_norm is not None:
            config["clipping_norm"] = float(self.clipping_norm)  # the key Flower's clipping mods read
        return config

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, failed = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        entry = RoundLog(server_round)
        self.history.append(entry)
        for msg in failed:
            entry.rejected[f"node-{msg.metadata.src_node_id}"] = str(msg.error.reason)
            log.warning("round %d: node %d sent no update: %s", server_round, msg.metadata.src_node_id, msg.error.reason)
        messages, by_label = self._messages(valid, entry)
        if not messages or self._global is None:
            log.error("round %d: no client sent a usable encrypted update; the global model stays as it was", server_round)
            return None, None
        try:
            outcome = run_round(messages, server=self.server_role, clients=FlowerClients(self, server_round, by_label),
                                run=str(valid[0].metadata.run_id), round=server_round, reference=self._previous_step,
                                model=self._global)
        except (secagg.SecAggError, InvalidConfigError) as exc:  # nothing valid, or an attack a key holder reported
            log.error("round %d: %s: %s; the global model stays as it was", server_round, type(exc).__name__, exc)
            entry.aborted = f"{type(exc).__name__}: {exc}"
            for m in messages:  # the reasons per upload are in the log and in the message
                entry.rejected.setdefault(m.client_id, entry.aborted)
            return None, None
        entry.rejected.update({r.client_id: r.describe() for r in outcome.rejections})
        entry.nodes = tuple(by_label[outcome.senders[c]].metadata.src_node_id for c in outcome.contributors)
        entry.contributors, entry.receipts, entry.aborted = outcome.contributors, outcome.receipts, outcome.aborted
        entry.aggregate_bytes = outcome.aggregate_bytes
        if outcome.aggregate is None:
            log.error("round %d: %s; the global model stays as it was", server_round, outcome.aborted)
            return None, None
        entry.key_holder = self.nodes.get(outcome.key_holder or "")  # with threshold keys: the combining member
        entry.released = outcome.aggregate
        new = self.rule.apply(self._global, outcome.aggregate, rng=self._rng(server_round))
        self._previous_step = {n: new[n].astype(np.float64) - self._global[n] for n in new}
        contents = [by_label[outcome.senders[c]].content for c in outcome.contributors]
        entry.metrics = {node: {k: v for r in c.metric_records.values() for k, v in r.items()}
                         for node, c in zip(entry.nodes, contents)}
        return R.to_record(new), self._metrics(contents, entry)

    @staticmethod
    def _messages(valid: list[Message], entry: RoundLog) -> tuple[list[ClientMessage], dict[str, Message]]:
        """The replies' ciphertext payloads, labelled by node; a reply without one is rejected."""
        messages, by_label = [], {}
        for msg in valid:
            label = f"node-{msg.metadata.src_node_id}"
            try:
                payload = R.payload_of(msg.content, who=label)
            except MissingCiphertextError as exc:
                entry.rejected[label] = f"{type(exc).__name__}: {exc}"
                log.warning("round %d: %s", entry.round, entry.rejected[label])
                continue
            messages.append(ClientMessage(label, payload, num_samples=1))
            by_label[label] = msg
        return messages, by_label

    def _rng(self, server_round: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        # the standalone simulation's server rng of its round server_round - 1
        return np.random.default_rng(int(np.random.SeedSequence([self.seed, server_round - 1, 4]).generate_state(1)[0]))

    def _metrics(self, contents: list[RecordDict], entry: RoundLog) -> MetricRecord:
        usable = [c for c in contents if len(c.metric_records) == 1
                  and self.weighted_by_key in next(iter(c.metric_records.values()))]
        metrics = MetricRecord()
        if usable and len(usable) == len(contents):
            try:
                metrics = self.train_metrics_aggr_fn(usable, self.weighted_by_key)
            except (TypeError, ValueError, KeyError) as exc:
                log.warning("round %d: client metrics could not be aggregated: %s", entry.round, exc)
        metrics["secfl-contributors"] = len(entry.contributors)
        metrics["secfl-rejected"] = len(entry.rejected)
        return metrics

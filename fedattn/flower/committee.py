"""A committee member's answers on Flower (threshold keys): readiness, its partial, the combination.

The server reaches the committee in three steps per round (:mod:`fedattn.flower.strategy`):

1. ``query.secfl_ready`` to every member it knows a node of, and to the nodes it cannot place
   while members are missing: a member answers with its id and its signature of (epoch, run,
   round, its node id) when it holds a seat in the epoch the server names (its own ``epoch.json``
   decides, not the server); the server checks the signature against the roster.
2. ``query.secfl_partial`` to a quorum of ``t`` ready members, the combiner the contributor set
   names among them: each checks the request exactly as a key holder does and records in its
   ledger that it gave this round's partial **before** computing it
   (:meth:`secagg.threshold.CommitteeMember.partial`), then answers with it sealed to the combiner.
3. ``query.secfl_combine`` to the combiner with the quorum's partials: it checks the request
   again, opens and checks every partial, floods and releases the ratio
   (:meth:`~secagg.threshold.CommitteeMember.combine`).

The server only carries sealed bytes between members. A member that drops between steps 1 and 3
aborts the round: the partials already given are spent (one per member and round).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flwr.app import Context, Message

import secagg

from . import records as R
from .errors import NotSecflMessageError
from .party import Locators, error_reply, load_member

__all__ = ["make_committee_handlers"]
log = logging.getLogger(__name__)

Handler = Callable[[Message, Context], Message]


def _named_epoch(member: Any, named: object) -> None:
    if named != member.epoch.id:
        raise secagg.KeyMismatchError(f"the server names epoch {str(named)[:12]}..., this member sits on the committee "
                                      f"of epoch {member.epoch.id[:12]}...; nothing was computed")


def make_committee_handlers(find: Locators, **member_options: Any) -> dict[str, Handler]:
    """The node's answers to the committee queries, by message type; ``member_options`` go to
    :class:`secagg.threshold.CommitteeMember` (``max_weight``, ``release_seed``)."""

    def ready(msg: Message, context: Context) -> Message:
        try:
            member = load_member(context, find, **member_options)
            config = msg.content.config_records.get(R.RELEASE_CONFIG)
            if config is None or R.CONFIG_ROUND not in config:
                raise NotSecflMessageError("a readiness query carries the epoch and the round")
            _named_epoch(member, config.get(R.CONFIG_FINGERPRINT))
            statement = R.ready_statement(epoch=member.epoch.id, run=str(msg.metadata.run_id),
                                          round=R.config_int(config, R.CONFIG_ROUND), node=int(context.node_id))
        except Exception as exc:  # noqa: BLE001 - refusals are error replies with their reason
            return error_reply(msg, exc, what="is not ready to decrypt")
        return Message(R.ready_reply(member.id, member.identity.key.sign(statement)), reply_to=msg)

    def partial(msg: Message, context: Context) -> Message:
        try:
            member = load_member(context, find, **member_options)
            epoch, quorum = R.quorum_of(msg.content)
            _named_epoch(member, epoch)
            out = member.partial(R.request_of(msg.content), quorum=quorum, run=str(msg.metadata.run_id))
        except Exception as exc:  # noqa: BLE001
            return error_reply(msg, exc, what="refused to give a partial decryption")
        return Message(R.partial_reply(out), reply_to=msg)

    def combine(msg: Message, context: Context) -> Message:
        try:
            member = load_member(context, find, **member_options)
            epoch, quorum = R.quorum_of(msg.content)
            _named_epoch(member, epoch)
            released = member.combine(R.request_of(msg.content), quorum=quorum, partials=R.partials_of(msg.content),
                                      run=str(msg.metadata.run_id))
        except Exception as exc:  # noqa: BLE001
            return error_reply(msg, exc, what="refused to combine the partials")
        log.info("combined %d partials and released the sum of %d clients", len(quorum), len(released.contributors))
        return Message(R.released_reply(released), reply_to=msg)

    return {R.READY_MESSAGE_TYPE: ready, R.PARTIAL_MESSAGE_TYPE: partial, R.COMBINE_MESSAGE_TYPE: combine}

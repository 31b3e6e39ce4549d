"""How the strategy reaches a round's clients after the uploads: one query message per request.

With a shared key set the contributor set's key holder releases alone (``query.secfl_release``).
With threshold keys (:mod:`fedattn.flower.committee`) the committee does: the strategy asks every
member it knows a node of whether it is there (``query.secfl_ready``), names a combiner among the
ready ones, asks a quorum of ``t`` of them, the combiner included, for partials
(``query.secfl_partial``) and hands them to the combiner (``query.secfl_combine``). Fewer than
``t`` ready members abort the round before anything is asked of them; a member lost after the
quorum was asked aborts it too (its partners' partials are spent). Either way nothing is released
and the model stays as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flwr.app import Message, RecordDict

import secagg

from ..errors import ClientUnreachableError, DecryptionAbortedError
from . import records as R

__all__ = ["FlowerClients"]
log = logging.getLogger(__name__)


class FlowerClients:
    """The round's clients as the strategy reaches them (a :class:`fedattn.round.ClientGateway`)."""

    def __init__(self, strategy: Any, server_round: int, by_label: dict[str, Message]) -> None:
        self.strategy, self.round, self.by_label = strategy, server_round, by_label
        self.ready: list[str] = []
        self.cset: secagg.ContributorSet | None = None

    def online(self, senders: Mapping[str, str]) -> list[str]:
        # reachability shows when a node is asked; each client id is tied to the node its signed upload came from
        self.strategy.nodes.update({c: self.by_label[label].metadata.src_node_id for c, label in senders.items()})
        return list(senders)

    def _send(self, nodes: Mapping[str, int], content: Any, message_type: str) -> dict[str, Message | None]:
        """Ask each of ``nodes`` (client id -> node) at once; ``content(client_id)`` builds each query.
        Each client's reply, or None where its node did not answer in time."""
        grid = self.strategy._grid
        assert grid is not None
        queries = [Message(content(c), dst_node_id=node, message_type=message_type) for c, node in nodes.items()]
        replies = {r.metadata.src_node_id: r for r in grid.send_and_receive(queries, timeout=self.strategy.query_timeout)}
        return {c: replies.get(node) for c, node in nodes.items()}

    def _check(self, client_id: str, reply: Message | None, what: str) -> RecordDict:
        """A reply's content.

        Raises:
            ClientUnreachableError: the node did not answer or refused (its reason is in the message).
            secagg.ModelInconsistencyError: the node found that the contributors were given different
                models: an attack on the clients; the run stops, as the standalone run does.
        """
        node = self.strategy.nodes[client_id]
        if reply is None:
            raise ClientUnreachableError(f"round {self.round}: node {node} ({client_id}) did not answer the {what} "
                                         f"within {self.strategy.query_timeout} s")
        if reply.has_error():
            reason = str(reply.error.reason)
            if "ModelInconsistencyError" in reason:
                raise secagg.ModelInconsistencyError(f"round {self.round}: node {node} refused: {reason}")
            raise ClientUnreachableError(f"round {self.round}: node {node} ({client_id}) refused the {what}: {reason}")
        return reply.content

    def _ask_many(self, nodes: Mapping[str, int], content: Any, message_type: str, what: str) -> dict[str, RecordDict]:
        replies = self._send(nodes, content, message_type)
        return {c: self._check(c, reply, what) for c, reply in replies.items()}

    def _ask(self, client_id: str, content: RecordDict, message_type: str, what: str) -> RecordDict:
        return self._ask_many({client_id: self.strategy.nodes[client_id]}, lambda _: content, message_type,
                              what)[client_id]

    def sign(self, client_id: str, cset: secagg.ContributorSet) -> str:
        self.cset = cset  # the one set of the round: the release must be of it
        content = self._ask(client_id, R.set_query(cset), R.SIGN_MESSAGE_TYPE, "contributor set")
        try:
            return R.signature_of(content)
        except ValueError as exc:
            raise ClientUnreachableError(f"round {self.round}: {client_id}'s signature is unusable: {exc}") from None

    # ---- who releases -------------------------------------------------------------------------------
    def key_holders(self, contributors: list[str]) -> list[str]:
        """The contributors with a shared key set; with threshold keys the committee members that
        answered the readiness query with their signature (the combiner is drawn from them).

        One query goes to every member the server has a node for and, while members are missing, to
        every node it cannot place; a node is taken as a member's only on that member's signature of
        (epoch, run, round, the node's id). Any refusal only means "not available"."""
        epoch = self.strategy.epoch
        if epoch is None:
            return list(contributors)
        members = set(epoch.committee.ids)
        known = {m: n for m, n in self.strategy.nodes.items() if m in members}
        targets: dict[str, int] = dict(known)
        if len(known) < len(members) or self.strategy.search_members:
            grid = self.strategy._grid
            assert grid is not None
            placed = set(self.strategy.nodes.values())
            targets.update({f"node-{n}": n for n in grid.get_node_ids() if n not in placed})
        replies = self._send(targets, lambda _: R.ready_query(round=self.round, epoch=epoch.id), R.READY_MESSAGE_TYPE)
        run = str(next(iter(self.by_label.values())).metadata.run_id)
        ready: dict[str, int] = {}
        for label, reply in replies.items():
            if reply is None or reply.has_error():
                if label in known:
                    log.warning("round %d: committee member %s is not available: %s", self.round, label,
                                "no answer" if reply is None else reply.error.reason)
                continue
            node = targets[label]
            try:
                member, signature = R.ready_of(reply.content)
                if member not in members:
                    raise ValueError(f"{member!r} is not on the committee")
                self.strategy.roster.verify(member, signature, R.ready_statement(epoch=epoch.id, run=run,
                                                                                 round=self.round, node=node))
            except (ValueError, secagg.SecAggError) as exc:
                log.warning("round %d: node %d's readiness answer is refused: %s", self.round, node, exc)
                continue
            ready.setdefault(member, node)
        self.strategy.nodes.update(ready)  # signed by the member for this node: safe to remember
        self.strategy.search_members = len(ready) < len(members)
        self.ready = sorted(ready)
        threshold = epoch.committee.threshold
        if len(self.ready) < threshold:
            raise DecryptionAbortedError(f"only {len(self.ready)} committee member(s) reachable; a release needs "
                                         f"{threshold}: nothing was released")
        return self.ready

    def release(self, key_holder: str, request: bytes) -> secagg.Release:
        epoch = self.strategy.epoch
        if epoch is None:
            content = self._ask(key_holder, R.release_query(request, round=self.round,
                                                            fingerprint=self.strategy.public_context.fingerprint),
                                R.RELEASE_MESSAGE_TYPE, "release")
            return self._released(key_holder, content)
        others = [m for m in self.ready if m != key_holder]
        shift = self.round % len(others) if others else 0  # the work rotates over the ready members too
        quorum = [key_holder, *(others[shift:] + others[:shift])[:epoch.committee.threshold - 1]]
        nodes = {m: self.strategy.nodes[m] for m in quorum}
        try:
            answers = self._ask_many(nodes, lambda _: R.quorum_query(request, round=self.round, epoch=epoch.id,
                                                                     quorum=quorum),
                                     R.PARTIAL_MESSAGE_TYPE, "partial decryption")
            partials = {m: R.partial_of(answers[m], who=m) for m in quorum}
        except (ClientUnreachableError, ValueError) as exc:  # the others' partials for this quorum are spent
            raise DecryptionAbortedError(f"a quorum member was lost after the quorum was asked ({exc}); each member "
                                         "gives one partial per round: nothing was released") from None
        content = self._ask(key_holder, R.quorum_query(request, round=self.round, epoch=epoch.id, quorum=quorum,
                                                       partials=partials),
                            R.COMBINE_MESSAGE_TYPE, "combination of the partials")
        return self._released(key_holder, content)

    def _released(self, key_holder: str, content: RecordDict) -> secagg.Release:
        """The released values, applied only when signed by the party named to release, over the
        round's one contributor set; anything else aborts the round like a refusal."""
        try:
            released = R.released_of(content, like=self.strategy._global)
            cset = released.contributor_set
            if cset is None or cset != self.cset or cset.key_holder != key_holder:
                raise ValueError("it is not of the contributor set the round's members signed")
            released.verify(self.strategy.roster, run=cset.run, round=cset.round)
        except Exception as exc:  # noqa: BLE001 - a node's bytes: every failure is that node's refusal
            raise ClientUnreachableError(f"round {self.round}: {key_holder}'s release is refused: "
                                         f"{type(exc).__name__}: {exc}") from None
        return released

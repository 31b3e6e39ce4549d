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
        return R.signature_of(self._ask(client_id, R.set_query(cset), R.SIGN_MESSAGE_TYPE, "contributor set"))

    # ---- who releases -------------------------------------------------------------------------------
    def key_holders(self, contributors: list[str]) -> list[str]:
        """The contributors with a shared key set; with threshold keys the committee members that
        answered the readiness query (the combiner is drawn from them)."""
        epoch = self.strategy.epoch
        if epoch is None:
            return list(contributors)
        threshold = epoch.committee.threshold
        known = {m: self.strategy.nodes[m] for m in epoch.committee.ids if m in self.strategy.nodes}
        replies = self._send(known, lambda _: R.ready_query(round=self.round, epoch=epoch.id), R.READY_MESSAGE_TYPE)
        self.ready = []
        for m, reply in replies.items():
            try:
                said = R.ready_of(self._check(m, reply, "readiness query"))
            except (ClientUnreachableError, ValueError) as exc:
                log.warning("round %d: committee member %s is not available: %s", self.round, m, exc)
                continue
            if said == m:  # a node that holds another member's seat is not this member
                self.ready.append(m)
        missing = set(epoch.committee.ids) - set(known)
        if missing:
            self.ready += self._find_members(missing, epoch.id)
        if len(self.ready) < threshold:
            raise DecryptionAbortedError(f"only {len(self.ready)} committee member(s) reachable; a release needs "
                                         f"{threshold}: nothing was released")
        return self.ready

    def _find_members(self, missing: set[str], epoch_id: str) -> list[str]:
        """Members the server has no upload from (not sampled yet, or rejected): ask the nodes it cannot
        place. A node's claim to a seat is not taken on trust: its partial must carry that member's
        signature, or the combiner refuses it and the round aborts."""
        grid, placed = self.strategy._grid, set(self.strategy.nodes.values())
        assert grid is not None
        unplaced = {f"node-{n}": n for n in grid.get_node_ids() if n not in placed}
        found = []
        for label, reply in self._send(unplaced, lambda _: R.ready_query(round=self.round, epoch=epoch_id),
                                       R.READY_MESSAGE_TYPE).items():
            if reply is None or reply.has_error():
                continue
            try:
                member = R.ready_of(reply.content)
            except ValueError:
                continue
            if member in missing and member not in found:
                self.strategy.nodes[member] = unplaced[label]
                found.append(member)
        return found

    def release(self, key_holder: str, request: bytes) -> secagg.Release:
        epoch = self.strategy.epoch
        if epoch is None:
            content = self._ask(key_holder, R.release_query(request, round=self.round,
                                                            fingerprint=self.strategy.public_context.fingerprint),
                                R.RELEASE_MESSAGE_TYPE, "release")
            return self._released(key_holder, content)
        quorum = [key_holder, *[m for m in self.ready if m != key_holder][:epoch.committee.threshold - 1]]
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
        """The released values; a malformed answer aborts the round like a refusal (the node is at fault)."""
        try:
            return R.released_of(content, like=self.strategy._global)
        except ValueError as exc:
            raise ClientUnreachableError(f"round {self.round}: {key_holder}'s release is unusable: {exc}") from None

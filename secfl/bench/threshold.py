"""``secagg-threshold``: each client's own key, a committee of 5 with threshold 3 (``strict``).

Set-up (untimed, like every method's keys): each client generates its key and identity, the
members their X25519 keys, every client deals its shares and test ciphertexts, the members accept
them and publish their test partials, and the ceremony is checked. A round: the client encrypts
under the round's common second half; the server checks and adds first halves (as
``secagg-strict``); the key holder role is the committee - the three members' partials (sealed to
the combiner), then the combiner's verification, opening, sum, flooding and division. Its time is the committee's total CPU in one process; on separate machines the
members' partials run in parallel, so a round waits for one partial plus the combination
(``notes`` says so).
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

import secagg
from secagg.committee import Committee, HolderKeys, deal
from secagg.epoch import HolderShares, check_ceremony
from secagg.threshold import CommitteeMember

from .method import Method, Payload, Timer, Update, read_request, stream_request

COMMITTEE, THRESHOLD = 5, 3


class SecAggThreshold(Method):
    name = "secagg-threshold"
    label = "secagg, threshold keys (own key per client, committee 5, t = 3, preset 'strict')"

    def setup(self, *, shapes: dict[str, tuple[int, ...]], clients: int) -> None:
        super().setup(shapes=shapes, clients=clients)
        names = [f"client-{k}" for k in range(clients)]
        self.ids, self.roster = secagg.generate_identities(names, group_size=clients)
        self.keys = {c: secagg.generate_keys(preset="strict").secret for c in names}
        members = names[:min(COMMITTEE, clients)]
        self.quorum = members[:min(THRESHOLD, len(members))]
        self.holder_keys = {m: HolderKeys.generate() for m in members}
        committee = Committee.of(preset="strict", threshold=len(self.quorum),
                                 members=[(m, self.holder_keys[m]) for m in members])
        dealings = {c: deal(self.keys[c], self.ids[c], committee) for c in names}
        self.shares = {m: HolderShares(committee, m) for m in members}
        for m in members:
            for d in dealings.values():
                self.shares[m].accept(d, keys=self.holder_keys[m], roster=self.roster)
        self.epoch = check_ceremony(committee, dealings, {m: s.test_partials() for m, s in self.shares.items()})
        self.layout = secagg.Layout.of({n: np.zeros(s, np.float32) for n, s in shapes.items()})
        self.run, self.commitment = "bench", secagg.round_commitment(0, {}, {"run": "bench"})
        self.names = names

    def notes(self, params: int) -> str:
        return (f"key holder: the committee's CPU in one process ({THRESHOLD} partials, then the combination); "
                "members on separate machines compute their partials in parallel")

    def _uploader(self, k: int) -> secagg.Uploader:
        cid = self.names[k]
        # a fresh ledger per call: the bench repeats a round, which a real client refuses to do
        return secagg.Uploader(self.keys[cid], identity=self.ids[cid], ledger=secagg.MemoryLedger(),
                               roster=self.roster, epoch=self.epoch)

    def client(self, update: Update, k: int, timer: Timer) -> Payload:
        uploader = self._uploader(k)
        with timer("encrypt"):
            wire = uploader.upload(update, run=self.run, round=0, commitment=self.commitment)
        with timer("serialise"):
            return [wire]

    def server(self, payloads: list[Payload], timer: Timer) -> BinaryIO:
        state = secagg.Aggregator(self.epoch, roster=self.roster).open_round(run=self.run, round=0, layout=self.layout)
        for p in payloads:
            with timer("deserialise"):
                state.receive(p[0])
        cset = state.contributor_set(key_holder=self.quorum[0])
        signatures = {m: cset.sign(self.ids[m]) for m in cset.members}  # the clients' work, untimed
        with timer("aggregate"):
            return stream_request(state, cset, signatures)

    def key_holder(self, stream: BinaryIO, timer: Timer) -> tuple[Update, Update | None]:
        members = {m: CommitteeMember(shares=self.shares[m], keys=self.holder_keys[m], identity=self.ids[m],
                                      epoch=self.epoch, roster=self.roster, ledger=secagg.MemoryLedger(),
                                      min_contributors=1) for m in self.quorum}
        for m in self.quorum:  # each member "uploaded" this round itself: its commitment is the round's
            members[m].ledger.claim_round(self.run, 0, self.commitment)
        with timer("decrypt"):  # every quorum member's partial, then the combiner's checks and sum
            aggregate = read_request(stream)
            partials = {m: members[m].partial(aggregate, quorum=self.quorum) for m in self.quorum}
            out = members[self.quorum[0]].combine(aggregate, quorum=self.quorum, partials=partials)
        with timer("release"):
            pass  # flooding and division happen inside combine
        return out.values, None  # no party ever holds the raw sum

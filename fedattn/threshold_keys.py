"""Threshold keys in the simulation: each client's own key, a committee that releases in quorums.

:func:`simulated_ceremony` runs every party's step of :mod:`secagg.committee` and
:mod:`secagg.epoch` in this process (each party's secrets stay in its own objects); the first
``holders`` clients form the committee. :func:`quorum_release` is what the server's reach to the
committee does in a round: the combiner the contributor set names and ``threshold - 1`` other
members still there give their partials; fewer than ``threshold`` reachable members abort the
round (:class:`fedattn.errors.DecryptionAbortedError`), and the model stays as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import secagg
from secagg.committee import Committee, HolderKeys, deal
from secagg.epoch import Epoch, HolderShares, check_ceremony
from secagg.threshold import CommitteeMember

from .errors import ClientUnreachableError, DecryptionAbortedError

__all__ = ["ThresholdKeys", "simulated_ceremony", "quorum_release"]


@dataclass(frozen=True)
class ThresholdKeys:
    """What a simulated ceremony hands each party: its own key; the committee members their shares."""

    epoch: Epoch
    secrets: Mapping[str, secagg.SecretContext]
    members: Mapping[str, tuple[HolderShares, HolderKeys]]
    threshold: int


def simulated_ceremony(identities: Mapping[str, secagg.ClientIdentity], roster: secagg.Roster, *, holders: int,
                       threshold: int, preset: str = "strict") -> ThresholdKeys:
    """Every client generates its key and deals it to a committee of its first ``holders`` clients."""
    ids = list(identities)
    if not 1 <= threshold <= holders <= len(ids):
        raise secagg.CeremonyError(f"a committee of {holders} of {len(ids)} clients with threshold {threshold}: need "
                                   "1 <= threshold <= holders <= clients")
    secrets = {c: secagg.generate_keys(preset=preset).secret for c in ids}
    keys = {m: HolderKeys.generate() for m in ids[:holders]}
    committee = Committee.of(preset=preset, threshold=threshold, members=[(m, keys[m]) for m in keys])
    dealings = {c: deal(secrets[c], identities[c], committee) for c in ids}
    shares = {m: HolderShares(committee, m) for m in keys}
    for m, store in shares.items():
        for d in dealings.values():
            store.accept(d, keys=keys[m], roster=roster)
    epoch = check_ceremony(committee, dealings, {m: s.test_partials() for m, s in shares.items()})
    return ThresholdKeys(epoch=epoch, secrets=secrets, members={m: (shares[m], keys[m]) for m in keys},
                         threshold=threshold)


def quorum_release(members: Mapping[str, CommitteeMember], request: bytes, *, combiner: str,
                   available: Sequence[str], threshold: int) -> secagg.Release:
    """Partials of the combiner and ``threshold - 1`` other available members, then the combination.

    Raises:
        ClientUnreachableError: the combiner is gone.
        DecryptionAbortedError: fewer than ``threshold`` members are reachable.
    """
    if combiner not in available:
        raise ClientUnreachableError(f"the combining member {combiner} left during decryption")
    others = [m for m in available if m != combiner and m in members]
    if len(others) + 1 < threshold:
        raise DecryptionAbortedError(f"only {len(others) + 1} committee member(s) reachable; a release needs "
                                     f"{threshold}: nothing was released")
    quorum = [combiner, *others[:threshold - 1]]
    partials = {m: members[m].partial(request, quorum=quorum) for m in quorum}
    return members[combiner].combine(request, quorum=quorum, partials=partials)

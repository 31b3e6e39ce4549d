"""Threshold keys, the ceremony's second half: members accept shares, test them, and an epoch begins.

See :mod:`secagg.committee` for the steps. A member keeps its shares in :class:`HolderShares`
(a private file); the outcome of a successful ceremony is the public :class:`Epoch`: the
committee, every dealer's key fingerprint, and an id binding both that every upload and release of
the epoch names (and from which every round's common second half is derived).

Smudging: a test partial carries Gaussian noise of ``2^flood_bits`` times one encryption's error
(coefficient domain), drawn from the member's CSPRNG; the check allows 8 standard deviations of
the quorum's total.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import shamir
from ._files import write_private, write_public
from .committee import Committee, Dealing, HolderKeys, _share_ad, ceremony_half, open_sealed
from .errors import AuthenticationError, CeremonyError, KeyFileError, PayloadError
from .framing import canonical_json, parse_json_object
from .presets import ERROR_STD, Preset, get_preset
from .ring import Ring
from .signing import Roster

__all__ = ["HolderShares", "Epoch", "check_ceremony", "smudging_std"]


def smudging_std(preset: Preset, terms: int) -> float:
    """Std (coefficient domain) of one member's smudging noise for a decryption of ``terms`` fresh
    encryptions: ``2^flood_bits`` times their error's."""
    return 2.0**preset.flood_bits * ERROR_STD * math.sqrt(terms)


@dataclass(frozen=True, kw_only=True)
class Epoch:
    """The public outcome of a ceremony: who dealt which key to which committee."""

    committee: Committee
    dealers: tuple[tuple[str, str], ...]  # (client id, its key's fingerprint), sorted
    id: str

    @classmethod
    def of(cls, committee: Committee, dealings: Mapping[str, Dealing]) -> Epoch:
        dealers = tuple(sorted((d.dealer, d.key) for d in dealings.values()))
        transcript = canonical_json({"committee": committee.to_dict(),
                                     "dealings": sorted([d.dealer, d.key, d.digest] for d in dealings.values())})
        return cls(committee=committee, dealers=dealers, id=hashlib.blake2b(transcript, digest_size=16).hexdigest())

    def without(self, *clients: str) -> Epoch:
        """The epoch that follows removing ``clients``: their keys leave it (members discard their
        shares, :meth:`HolderShares.discard`), and its new id gives every later round new second
        halves. What a removed client keeps decrypts its own uploads only."""
        gone = set(clients)
        if not gone <= {d for d, _ in self.dealers}:
            raise CeremonyError("only dealers of this epoch can be removed from it")
        dealers = tuple(d for d in self.dealers if d[0] not in gone)
        new_id = hashlib.blake2b(canonical_json({"previous": self.id, "removed": sorted(gone)}), digest_size=16)
        return Epoch(committee=self.committee, dealers=dealers, id=new_id.hexdigest())

    @property
    def fingerprint(self) -> str:  # what receipts name in the "keys" field
        return self.id

    @property
    def preset(self) -> Preset:
        return get_preset(self.committee.preset)

    def key_of(self, client_id: str) -> str | None:
        return dict(self.dealers).get(client_id)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "secfl.epoch", "committee": self.committee.to_dict(), "dealers": [list(d) for d in self.dealers],
                "id": self.id}

    @classmethod
    def from_dict(cls, raw: Any) -> Epoch:
        try:
            if raw.get("format") != "secfl.epoch":
                raise ValueError("not an epoch record")
            return cls(committee=Committee.from_dict(raw["committee"]),
                       dealers=tuple((str(a), str(b)) for a, b in raw["dealers"]), id=str(raw["id"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CeremonyError(f"malformed epoch record ({type(exc).__name__})") from None

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        return write_public(path, canonical_json(self.to_dict()), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Epoch:
        try:
            return cls.from_dict(parse_json_object(Path(path).read_bytes(), what=str(path)))
        except OSError as exc:
            raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None


class HolderShares:
    """A member's shares of every dealer's key for one committee (a private file)."""

    def __init__(self, committee: Committee, holder_id: str, shares: dict[str, tuple[str, np.ndarray]] | None = None,
                 *, tested: bool = False) -> None:
        self.committee = committee
        self.card = committee.card(holder_id)
        self.ring = Ring(get_preset(committee.preset))
        self.shares = dict(shares or {})  # dealer -> (its key's fingerprint, share residues, NTT form)
        self.tested = tested

    def accept(self, dealing: Dealing, *, keys: HolderKeys, roster: Roster) -> None:
        """Verify ``dealing`` (signature, committee) and keep this member's share of it.

        Raises:
            AuthenticationError: a forged dealing, or a share sealed for someone else.
            CeremonyError: a dealing for another committee, or a second one from the same dealer.
            PayloadError: a share that is not a polynomial of the committee's preset.
        """
        dealing.verify(roster)
        if dealing.committee != self.committee.fingerprint:
            raise CeremonyError(f"{dealing.dealer!r}'s dealing is for another committee")
        if dealing.dealer in self.shares:
            raise CeremonyError(f"{dealing.dealer!r} dealt twice; one key per client and epoch")
        if keys.public_hex != self.card.exchange_key:
            raise AuthenticationError("these holder keys are not the ones on this member's committee card")
        blob = dealing.shares.get(self.card.holder_id)
        if blob is None:
            raise CeremonyError(f"{dealing.dealer!r}'s dealing holds no share for {self.card.holder_id!r}")
        from .committee import _x25519_public

        raw = open_sealed(keys.private, _x25519_public(dealing.ephemeral, what="the dealing's key"), blob,
                          _share_ad(self.committee, dealing.dealer, self.card, dealing.key),
                          what=f"{dealing.dealer!r}'s share")
        self.shares[dealing.dealer] = (dealing.key, self.ring.unpack(raw, what=f"{dealing.dealer!r}'s share"))

    def discard(self, *dealers: str) -> None:
        """Erase the shares of removed clients (see :meth:`Epoch.without`)."""
        for d in dealers:
            self.shares.pop(d, None)

    def share_sum(self, dealers: Any) -> np.ndarray:
        """The sum of this member's shares of ``dealers``' keys (a share of the sum of their keys)."""
        total = self.ring.zeros()
        for d in dealers:
            if d not in self.shares:
                raise CeremonyError(f"this member holds no share of {d!r}'s key")
            total = self.ring.add(total, self.shares[d][1])
        return total

    def test_partials(self) -> dict[tuple[str, tuple[int, ...]], np.ndarray]:
        """Step 3: one smudged partial per dealer and subset containing this member; once."""
        if self.tested:
            raise CeremonyError("this member already published its test partials; each is given once")
        self.tested = True
        ring, preset = self.ring, self.ring.preset
        out = {}
        for subset in self.committee.subsets():
            if self.card.index not in subset:
                continue
            lam = [shamir.lagrange_at_zero(subset, q)[self.card.index] for q in ring.primes]
            for dealer, (_, share) in sorted(self.shares.items()):
                scaled = np.stack([shamir.scalar_mul(share[i], lam[i], q) for i, q in enumerate(ring.primes)])
                a = ring.uniform(ceremony_half(self.committee, dealer, subset, preset))
                with ring.factor_from(scaled) as factor:
                    out[(dealer, subset)] = ring.ntt_plus_products(ring.gaussian(smudging_std(preset, 1))[None],
                                                                   a[None], factor, secret=True)[0]
        return out

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        doc = {"format": "secfl.holder-shares", "committee": self.committee.to_dict(), "holder": self.card.holder_id,
               "tested": self.tested,
               "shares": {d: [k, self.ring.pack(s).hex()] for d, (k, s) in sorted(self.shares.items())}}
        return write_private(path, json.dumps(doc).encode(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HolderShares:
        try:
            raw = json.loads(Path(path).read_text())
            if raw.get("format") != "secfl.holder-shares":
                raise ValueError("not a holder shares file")
            committee = Committee.from_dict(raw["committee"])
            ring = Ring(get_preset(committee.preset))
            shares = {str(d): (str(k), ring.unpack(bytes.fromhex(h), what="a stored share"))
                      for d, (k, h) in raw["shares"].items()}
            return cls(committee, str(raw["holder"]), shares, tested=bool(raw["tested"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, PayloadError) as exc:
            raise KeyFileError(f"{path}: cannot load the holder's shares ({type(exc).__name__})") from None


def check_ceremony(committee: Committee, dealings: Mapping[str, Dealing],
                   partials: Mapping[str, Mapping[tuple[str, tuple[int, ...]], np.ndarray]]) -> Epoch:
    """Step 4: every subset's partials decrypt every dealer's test ciphertext to zeros.

    ``partials``: member id -> its :meth:`HolderShares.test_partials`.

    Raises:
        CeremonyError: naming the dealer whose share for a member is bad, or the member whose
            partials are, or the tests that are missing.
    """
    preset = get_preset(committee.preset)
    ring = Ring(preset)
    subsets, size = committee.subsets(), ring.residue_bytes
    by_index = {c.index: c.holder_id for c in committee.holders}
    bound = 8 * math.sqrt(committee.threshold) * 2.0**preset.flood_bits * preset.noise_std() + 1e-9
    failed: dict[str, list[set[int]]] = {}
    for dealer, dealing in sorted(dealings.items()):
        if len(dealing.tests) != len(subsets) * size:
            raise CeremonyError(f"{dealer!r}'s dealing holds {len(dealing.tests)} bytes of test ciphertexts; "
                                f"{len(subsets)} subsets need {len(subsets) * size}")
        for k, subset in enumerate(subsets):
            total = ring.unpack(dealing.tests[k * size:(k + 1) * size], what=f"{dealer!r}'s test ciphertext")
            for index in subset:
                part = partials.get(by_index[index], {}).get((dealer, subset))
                if part is None:
                    raise CeremonyError(f"member {by_index[index]!r} sent no test partial for {dealer!r} and subset "
                                        f"{list(subset)}")
                total = ring.add(total, part)
            if not np.all(np.abs(ring.decode_ntt(total)) <= bound):
                failed.setdefault(dealer, []).append(set(subset))
    if failed:
        raise CeremonyError(_blame(failed, subsets, by_index, n_dealers=len(dealings)))
    return Epoch.of(committee, dealings)


def _blame(failed: Mapping[str, list[set[int]]], subsets: list[tuple[int, ...]], by_index: Mapping[int, str],
           *, n_dealers: int) -> str:
    """Who is at fault: the members in every failing subset of a dealer and in none of its passing ones."""
    suspects = {}
    for dealer, bad in failed.items():
        passing = [set(s) for s in subsets if set(s) not in bad]
        common = set.intersection(*bad) - set().union(*passing)
        suspects[dealer] = sorted(by_index[i] for i in common)
    blamed_members = set.intersection(*(set(v) for v in suspects.values())) if len(failed) == n_dealers > 1 else set()
    if blamed_members:
        return (f"member(s) {sorted(blamed_members)} sent test partials that fit no dealer's ciphertexts; exclude "
                "them and run the ceremony again")
    parts = [f"{dealer!r} dealt a bad share to {who}" if who else f"{dealer!r}'s tests fail for no single member"
             for dealer, who in sorted(suspects.items())]
    return "the key ceremony's test decryptions failed: " + "; ".join(parts) + "; those dealers must deal again"

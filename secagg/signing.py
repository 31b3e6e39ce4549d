"""Who may take part: Ed25519 client identities, the roster with its enrolment groups, round commitments.

* **identities** - each client holds an Ed25519 signing key (file mode 0600, created exclusively);
  the others hold the **roster**: client id -> public verification key. No one but the client can
  sign its uploads (:class:`secagg.messages.Receipt`) or its agreement to a contributor set.
* **enrolment groups** - fixed before a run and part of the roster: a key holder releases only
  sums over whole groups, each of at least ``min_contributors`` clients. A group with a member
  missing sits the round out, so that two rounds' releases differ by whole groups: differencing
  them yields at most one group's sum (So et al., AAAI 2023, on multi-round secure aggregation).
* **round commitment** - a hash of the run, the round, the global model and every configuration
  value the client reads, as the client received them. Clients sign it, so a server that sends
  different models or instructions to different clients (model inconsistency, Pasquini et al.,
  CCS 2022) produces receipts that disagree, and no key holder releases their sum.

Example:
    >>> import numpy as np
    >>> ids, roster = generate_identities(["alice", "bob", "carol"], group_size=3)
    >>> roster.groups
    (('alice', 'bob', 'carol'),)
    >>> c = round_commitment(3, {"w": np.zeros(2, np.float32)}, {"run": "r1", "rule": "fedavg"})
    >>> len(c), c == round_commitment(3, {"w": np.zeros(2, np.float32)}, {"run": "r2", "rule": "fedavg"})
    (64, False)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._check import integer, validate_client_id
from ._files import write_private, write_public
from .errors import AuthenticationError, SecAggError, SignatureError, UnknownClientError
from .framing import canonical_json

__all__ = ["ClientIdentity", "Roster", "generate_identities", "deal_identities", "round_commitment", "default_groups",
           "write_private", "validate_client_id", "DEFAULT_GROUP_SIZE"]

#: Enrolment groups hold this many clients unless the dealer says otherwise (the remainder joins the last).
DEFAULT_GROUP_SIZE = 2


@dataclass(frozen=True)
class ClientIdentity:
    """A client's signing key. Stays with the client; never give it to the server."""

    client_id: str
    key: Ed25519PrivateKey

    def public_bytes(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the key (PKCS#8 PEM, unencrypted) with mode 0600, exclusively (:func:`write_private`)."""
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        text = json.dumps({"format": "secfl.identity", "client_id": self.client_id, "key": pem.decode()})
        return write_private(path, text.encode(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClientIdentity:
        try:
            raw = json.loads(Path(path).read_text())
            if not isinstance(raw, dict) or raw.get("format") != "secfl.identity":
                raise ValueError("not a secfl identity file")
            key = serialization.load_pem_private_key(raw["key"].encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("the key is not an Ed25519 key")
            return cls(validate_client_id(raw["client_id"]), key)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SecAggError) as exc:
            raise AuthenticationError(f"{path}: cannot load a client identity ({type(exc).__name__}); ask the key "
                                      "dealer for the file written by `secfl keys generate --clients N`") from None


class Roster:
    """Who may take part (client id -> Ed25519 public key) and the enrolment groups (public data).

    Args:
        keys: client id -> 32-byte public key.
        groups: a partition of the client ids into enrolment groups; by default groups of
            :data:`DEFAULT_GROUP_SIZE` in id order, the remainder joining the last group.
    """

    def __init__(self, keys: Mapping[str, bytes], *, groups: Sequence[Sequence[str]] | None = None) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for cid, raw in keys.items():
            validate_client_id(cid)
            if not isinstance(raw, bytes) or len(raw) != 32:
                raise AuthenticationError(f"roster entry {cid!r}: an Ed25519 public key is 32 bytes")
            self._keys[cid] = Ed25519PublicKey.from_public_bytes(raw)
        ids = list(self._keys)
        self.groups: tuple[tuple[str, ...], ...] = tuple(tuple(g) for g in (groups if groups is not None
                                                                             else default_groups(ids)))
        flat = [c for g in self.groups for c in g]
        if sorted(flat) != sorted(ids) or any(not g for g in self.groups):
            raise AuthenticationError("the roster's enrolment groups must partition its clients (every client in "
                                      "exactly one non-empty group)")
        self._group_of = {c: i for i, g in enumerate(self.groups) for c in g}

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def client_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def group_of(self, client_id: str) -> tuple[str, ...]:
        return self.groups[self._group_of[client_id]]

    def group_index(self, client_id: str) -> int:
        """The index of ``client_id``'s enrolment group in :attr:`groups`."""
        return self._group_of[client_id]

    def complete_groups(self, present: Iterable[str]) -> tuple[tuple[str, ...], ...]:
        """The groups all of whose members are in ``present``."""
        have = set(present)
        return tuple(g for g in self.groups if have.issuperset(g))

    def check_whole_groups(self, members: Iterable[str], *, min_size: int) -> None:
        """``members`` must be a union of whole enrolment groups, each of at least ``min_size`` clients.

        Raises:
            AuthenticationError: a member not on the roster, a group cut in two, or a group too small.
        """
        members = set(members)
        unknown = [m for m in members if m not in self._keys]
        if unknown:
            raise UnknownClientError(f"{len(unknown)} member(s) of the set are not on the roster")
        for group in {self.groups[self._group_of[m]] for m in members}:
            if not members.issuperset(group):
                raise AuthenticationError(
                    f"the set holds {len(members & set(group))} of the {len(group)} members of an enrolment group; "
                    "releases cover whole groups only, so that no two releases differ by less than a group")
            if len(group) < min_size:
                raise AuthenticationError(
                    f"an enrolment group of {len(group)} client(s) is smaller than min_contributors={min_size}; "
                    "deal the roster again with larger groups (secfl keys generate --group-size)")

    def verify(self, client_id: str, signature: bytes, message: bytes) -> None:
        key = self._keys.get(client_id)
        if key is None:
            raise UnknownClientError(f"{client_id!r} is not on the roster: a foreign message was dropped (add the "
                                     "client's public key to the roster if it should take part)")
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise SignatureError(f"the signature of {client_id!r} does not verify: what it covers was altered after "
                                 "signing, or signed with another key; it was dropped") from None

    def to_json(self) -> str:
        raw = {cid: k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
               for cid, k in sorted(self._keys.items())}
        return json.dumps({"format": "secfl.roster", "clients": raw, "groups": [list(g) for g in self.groups]}, indent=1)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``roster.json`` (mode 0644), created exclusively and never through a link."""
        return write_public(path, self.to_json().encode(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Roster:
        try:
            raw = json.loads(Path(path).read_text())
            if not isinstance(raw, dict) or raw.get("format") != "secfl.roster":
                raise ValueError("not a secfl roster file")
            return cls({cid: bytes.fromhex(h) for cid, h in raw["clients"].items()}, groups=raw.get("groups"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SecAggError) as exc:
            raise AuthenticationError(f"{path}: cannot load the roster ({type(exc).__name__}: {exc})") from None


def default_groups(client_ids: Sequence[str], size: int = DEFAULT_GROUP_SIZE) -> list[list[str]]:
    """Consecutive groups of ``size`` in the given order; a remainder joins the last group."""
    ids = list(client_ids)
    size = integer("group size", size, minimum=1)
    if not ids:
        return []
    count = max(1, len(ids) // size)
    groups = [ids[i * size:(i + 1) * size] for i in range(count)]
    groups[-1].extend(ids[count * size:])
    return groups


def generate_identities(client_ids: Iterable[str], *, group_size: int = DEFAULT_GROUP_SIZE,
                        ) -> tuple[dict[str, ClientIdentity], Roster]:
    """One signing key per client, and the roster of their public keys in groups of ``group_size``.

    In a deployment each client generates its own key and hands the dealer only the public half;
    this helper stands for that ceremony in simulations and tests.
    """
    ids: dict[str, ClientIdentity] = {}
    for cid in client_ids:
        cid = validate_client_id(cid)
        if cid in ids:
            raise AuthenticationError(f"client id {cid!r} is listed twice")
        ids[cid] = ClientIdentity(cid, Ed25519PrivateKey.generate())
    roster = Roster({cid: i.public_bytes() for cid, i in ids.items()}, groups=default_groups(list(ids), group_size))
    return ids, roster


def deal_identities(client_ids: Iterable[str], out: str | os.PathLike[str], *, group_size: int = DEFAULT_GROUP_SIZE,
                    overwrite: bool = False) -> tuple[dict[str, ClientIdentity], Roster]:
    """:func:`generate_identities` written out as ``<client id>.id`` (mode 0600, created exclusively)
    per client and ``roster.json``, the files ``secfl keys generate --clients N`` hands out."""
    out = Path(out)
    identities, roster = generate_identities(client_ids, group_size=group_size)
    for cid, identity in identities.items():
        identity.save(out / f"{cid}.id", overwrite=overwrite)
    roster.save(out / "roster.json", overwrite=overwrite)
    return identities, roster


def round_commitment(round: int, global_state: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> str:
    """Hash of what a client was asked to train on: round, global model (names, shapes, dtypes and
    exact values) and the configuration (run id included). Equal commitments = the same model and
    instructions."""
    h = hashlib.blake2b(digest_size=32)
    h.update(b"secfl/round-commitment/v2\x00")
    h.update(canonical_json({"round": int(round), "config": dict(config),
                             "model": [[n, list(np.shape(a)), np.asarray(a).dtype.str] for n, a in global_state.items()]}))
    for a in global_state.values():
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()

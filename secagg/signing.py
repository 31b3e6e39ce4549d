"""Authenticated uploads: Ed25519 client identities, signed envelopes and round commitments.

Threat addressed: the CKKS payload's checksum detects corruption, not forgery, and its key-set
fingerprint is a label. Here every client signs what it uploads, so the server (and, through the
signed *receipts*, the key holders) can tell who sent what for which round and which model:

* **identities** - the key dealer gives each client an Ed25519 signing key (file mode 0600) and
  the server a *roster*: client id -> public verification key. No one but the client can sign.
* **envelope** - ``seal`` wraps a payload with a header {client id, round, round commitment,
  key-set fingerprint, BLAKE2b digest of the payload} and the client's signature over that header.
  ``open_envelope`` checks, in order: size, framing, schema, that the client is on the roster, the
  signature, the digest, the round, then hands the payload on. Each failure has its own error.
* **round commitment** - a hash of the round number, the global model and the public
  configuration as the client received them. Clients sign it, so a server that sends different
  models to different clients (the model-inconsistency attack that defeats secure aggregation,
  Pasquini et al., CCS 2022) produces receipts that disagree; key holders refuse to release such
  an aggregate (:func:`check_receipts`).

Example:
    >>> import numpy as np
    >>> ids, roster = generate_identities(["alice", "bob"])
    >>> c = round_commitment(3, {"w": np.zeros(2, np.float32)}, {"rule": "fedavg"})
    >>> env = seal(b"ciphertexts", ids["alice"], round=3, commitment=c, fingerprint="f")
    >>> opened = open_envelope(env, roster, expected_round=3)
    >>> opened.payload, opened.receipt.client_id
    (b'ciphertexts', 'alice')
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

from .errors import (
    AuthenticationError,
    DuplicateUploadError,
    ModelInconsistencyError,
    PayloadError,
    ReplayError,
    SecAggError,
    SignatureError,
    UnknownClientError,
)
from .framing import canonical_json, frame, unframe
from .wire import validate_client_id

__all__ = ["ClientIdentity", "Roster", "Receipt", "OpenedEnvelope", "generate_identities", "deal_identities", "round_commitment",
           "seal", "open_envelope", "check_receipts", "ENVELOPE_OVERHEAD_BYTES"]

_MAGIC = b"SFLSIGN1"
_VERSION = 1
_TAG = b"secfl/upload-signature/v1\x00"  # domain separation: these signatures mean nothing elsewhere
_SIGNED_FIELDS = ("client_id", "round", "commitment", "fingerprint", "payload_digest")
#: Upper bound on what an envelope adds to its payload (header, signature, framing).
ENVELOPE_OVERHEAD_BYTES = 4096


def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


@dataclass(frozen=True)
class ClientIdentity:
    """A client's signing key. Stays with the client; never give it to the server."""

    client_id: str
    key: Ed25519PrivateKey

    def public_bytes(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the key (PKCS#8 PEM, unencrypted) with mode 0600 from the first byte."""
        path = Path(path)
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        text = json.dumps({"format": "secfl.identity", "client_id": self.client_id, "key": pem.decode()})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClientIdentity:
        try:
            raw = json.loads(Path(path).read_text())
            if raw.get("format") != "secfl.identity":
                raise ValueError("not a secfl identity file")
            key = serialization.load_pem_private_key(raw["key"].encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("the key is not an Ed25519 key")
            return cls(validate_client_id(raw["client_id"]), key)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SecAggError) as exc:
            raise AuthenticationError(f"{path}: cannot load a client identity ({exc}); ask the key dealer for "
                                      "the file written by `secfl keys generate --clients N`") from None


class Roster:
    """The server's list of who may upload: client id -> Ed25519 public key (public data)."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for cid, raw in keys.items():
            validate_client_id(cid)
            if not isinstance(raw, bytes) or len(raw) != 32:
                raise AuthenticationError(f"roster entry {cid!r}: an Ed25519 public key is 32 bytes")
            self._keys[cid] = Ed25519PublicKey.from_public_bytes(raw)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def client_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def verify(self, client_id: str, signature: bytes, message: bytes) -> None:
        key = self._keys.get(client_id)
        if key is None:
            raise UnknownClientError(f"{client_id!r} is not on the server's roster: a foreign upload was dropped "
                                     "(add the client's public key to the roster if it should take part)")
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise SignatureError(f"the signature of {client_id!r}'s upload does not verify: the payload or its "
                                 "header was altered after signing, or signed with another key; it was dropped") from None

    def to_json(self) -> str:
        raw = {cid: k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
               for cid, k in sorted(self._keys.items())}
        return json.dumps({"format": "secfl.roster", "clients": raw}, indent=1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Roster:
        try:
            raw = json.loads(Path(path).read_text())
            if raw.get("format") != "secfl.roster":
                raise ValueError("not a secfl roster file")
            return cls({cid: bytes.fromhex(h) for cid, h in raw["clients"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AuthenticationError(f"{path}: cannot load the roster ({exc})") from None


def generate_identities(client_ids: Iterable[str]) -> tuple[dict[str, ClientIdentity], Roster]:
    """Key dealer: one signing key per client, and the roster of their public keys for the server."""
    ids = {}
    for cid in client_ids:
        cid = validate_client_id(cid)
        if cid in ids:
            raise AuthenticationError(f"client id {cid!r} is listed twice")
        ids[cid] = ClientIdentity(cid, Ed25519PrivateKey.generate())
    return ids, Roster({cid: i.public_bytes() for cid, i in ids.items()})


def deal_identities(client_ids: Iterable[str], out: str | os.PathLike[str]) -> tuple[dict[str, ClientIdentity], Roster]:
    """Key dealer: :func:`generate_identities` written out as ``<client id>.id`` (mode 0600) per
    client and ``roster.json``, the files ``secfl keys generate --clients N`` hands out."""
    out = Path(out)
    identities, roster = generate_identities(client_ids)
    for cid, identity in identities.items():
        identity.save(out / f"{cid}.id")
    roster.save(out / "roster.json")
    return identities, roster


def round_commitment(round: int, global_state: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> str:
    """Hash of what a client was asked to train on: round, global model (names, shapes, float32
    values) and the public configuration. Equal commitments = the same model and instructions."""
    h = hashlib.blake2b(digest_size=32)
    h.update(b"secfl/round-commitment/v1\x00")
    h.update(canonical_json({"round": int(round), "config": dict(config),
                             "model": [[n, list(np.shape(a))] for n, a in global_state.items()]}))
    for a in global_state.values():
        h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Receipt:
    """The signed header of one upload: enough for anyone holding the roster to check who sent what
    for which round and model, without the ciphertexts."""

    client_id: str
    round: int
    commitment: str
    fingerprint: str
    payload_digest: str
    signature: str

    def signed_bytes(self) -> bytes:
        return _TAG + canonical_json({f: getattr(self, f) for f in _SIGNED_FIELDS})

    def verify(self, roster: Roster) -> None:
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            raise SignatureError(f"{self.client_id!r}: the signature is not hex") from None
        roster.verify(self.client_id, signature, self.signed_bytes())

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in (*_SIGNED_FIELDS, "signature")}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Receipt:
        if not isinstance(raw, Mapping) or set(raw) != {*_SIGNED_FIELDS, "signature"}:
            raise AuthenticationError(f"a receipt has exactly the fields {sorted({*_SIGNED_FIELDS, 'signature'})}")
        kinds = {"client_id": str, "round": int, "commitment": str, "fingerprint": str, "payload_digest": str,
                 "signature": str}
        for f, kind in kinds.items():
            if not isinstance(raw[f], kind) or isinstance(raw[f], bool):
                raise AuthenticationError(f"receipt field {f!r} must be {kind.__name__}")
        return cls(**{f: raw[f] for f in kinds})


@dataclass(frozen=True)
class OpenedEnvelope:
    payload: bytes
    receipt: Receipt


def seal(payload: bytes, identity: ClientIdentity, *, round: int, commitment: str, fingerprint: str) -> bytes:
    """Client side: sign ``payload`` for ``round`` and the model it trained on (``commitment``)."""
    receipt = Receipt(client_id=identity.client_id, round=int(round), commitment=commitment, fingerprint=fingerprint,
                      payload_digest=_digest(payload), signature="")
    signature = identity.key.sign(receipt.signed_bytes()).hex()
    return frame(_MAGIC, _VERSION, {**receipt.to_dict(), "signature": signature}, [payload])


def open_envelope(data: bytes | bytearray | memoryview, roster: Roster, *, expected_round: int,
                  max_bytes: int | None = None) -> OpenedEnvelope:
    """Server side: verify an upload before its payload is parsed.

    Raises:
        PayloadError (secagg): malformed or oversized bytes (size is checked before anything else).
        UnknownClientError: the sender is not on the roster.
        SignatureError: the header or payload was altered, or signed by another key.
        ReplayError: a correctly signed upload for another round.
    """
    limit = None if max_bytes is None else max_bytes + ENVELOPE_OVERHEAD_BYTES
    if isinstance(data, (bytes, bytearray, memoryview)) and (limit is None or len(data) <= limit) \
            and bytes(data[:len(_MAGIC)]) != _MAGIC:
        raise SignatureError("the upload is not a signed envelope: this server accepts only uploads signed with "
                             "a client identity from the key dealer (`secfl keys generate --clients N`)")
    header, blobs = unframe(data, magic=_MAGIC, version=_VERSION, what="signed upload", max_bytes=limit)
    if len(blobs) != 1:
        raise PayloadError("a signed upload carries exactly one payload")
    receipt = Receipt.from_dict({k: v for k, v in header.items() if k != "blob_sizes"})
    receipt.verify(roster)
    payload = bytes(blobs[0])
    if _digest(payload) != receipt.payload_digest:
        raise SignatureError(f"{receipt.client_id!r}: the payload does not match its signed digest; it was altered")
    if receipt.round != expected_round:
        raise ReplayError(f"{receipt.client_id!r} signed this upload for round {receipt.round}, not round "
                          f"{expected_round}: a replayed or stale upload was dropped")
    return OpenedEnvelope(payload, receipt)


def check_receipts(receipts: Sequence[Receipt], roster: Roster, *, round: int, contributors: Sequence[str],
                   fingerprint: str, expected_commitment: str | None = None, min_contributors: int = 1) -> str:
    """Key-holder side, before releasing an aggregate: every contributor signed an upload for this
    round, this key set and one and the same global model. Returns the common commitment.

    Raises:
        SignatureError / UnknownClientError: a receipt that does not verify.
        AuthenticationError: receipts and the aggregate's contributors differ, or too few contributors.
        ReplayError: a receipt for another round.
        ModelInconsistencyError: clients were given different models or configurations.
    """
    by_client: dict[str, Receipt] = {}
    for r in receipts:
        r.verify(roster)
        if r.client_id in by_client:
            raise DuplicateUploadError(f"two receipts from {r.client_id!r} in one aggregate")
        if r.round != round:
            raise ReplayError(f"the receipt of {r.client_id!r} is for round {r.round}, not {round}")
        if r.fingerprint != fingerprint:
            raise AuthenticationError(f"{r.client_id!r} signed for another key set")
        by_client[r.client_id] = r
    if set(by_client) != set(contributors) or len(contributors) != len(set(contributors)):
        raise AuthenticationError(
            f"the aggregate claims contributors {sorted(contributors)} but signed receipts come from "
            f"{sorted(by_client)}; refusing to release it")
    if len(by_client) < min_contributors:
        raise AuthenticationError(f"only {len(by_client)} contributor(s); the key holders release aggregates of at "
                                  f"least {min_contributors}, so that no single client's update is revealed")
    views = {r.commitment for r in by_client.values()}
    if expected_commitment is not None:
        views.add(expected_commitment)
    if len(views) != 1:
        groups = {c: sorted(cid for cid, r in by_client.items() if r.commitment == c) or ["(the key holder)"]
                  for c in views}
        seen = "; ".join(f"{c[:12]}... given to {ids}" for c, ids in groups.items())
        raise ModelInconsistencyError(
            f"round {round}: clients trained on {len(views)} different global models or configurations ({seen}). "
            "The server may be attacking a client (model inconsistency); the aggregate was not released")
    return views.pop()

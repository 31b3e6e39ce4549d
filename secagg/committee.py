"""Threshold keys, the ceremony: every client keeps its own CKKS key; a committee holds shares of all.

There is no dealer of secrets. Each party generates its own: a client its CKKS secret key
(:func:`secagg.generate_keys`, of which it uses only the secret half) and its Ed25519 identity; a
committee member its X25519 key (:class:`HolderKeys`). The public record is the roster (Ed25519
keys, enrolment groups) and the :class:`Committee` (each member's index ``1..n``, its X25519
public key, the threshold ``t``), whose fingerprint every party pins out of band.

1. **Dealing** (:func:`deal`, by each client): Shamir shares (threshold ``t``, points ``1..n``) of
   its key's residues, each sealed to one member (X25519 with a fresh key per dealing, HKDF-SHA256,
   ChaCha20-Poly1305 with the committee, dealer, member and key as associated data), plus one
   test ciphertext of zeros per ``t``-subset of the committee, each under its own second half
   (domain "ceremony"); the whole dealing signed with the client's identity.
2. **Accepting** (:meth:`HolderShares.accept`, by each member): the signature against the roster,
   the committee's fingerprint, then its own share (authenticated decryption; residues below
   their primes).
3. **Test decryptions** (:meth:`HolderShares.test_partials`): for every dealer and every subset it
   belongs to, a member publishes ``lambda * a_Q * share + smudging`` - its Lagrange coefficient
   first, then its own smudging noise, each partial once (a distinct ``a_Q`` per subset, so no two
   partials of one share meet the same second half). These are releases of a decryption of zeros.
4. **Checking** (:func:`check_ceremony`, by anyone): each subset's partials must decrypt the
   dealer's test ciphertext to zeros within the smudging noise. A dealer whose failing subsets
   all contain one member dealt that member a bad share; a member failing for every dealer sent
   bad partials. The :class:`secagg.threshold.Epoch` that comes out names every dealer's key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import shamir
from ._check import integer, validate_client_id
from ._files import write_private, write_public
from .errors import AuthenticationError, CeremonyError, KeyFileError, PayloadError
from .framing import canonical_json, frame_signed, parse_json_object, unframe_signed
from .keys import SecretContext
from .presets import Preset, get_preset
from .ring import Ring, second_half
from .signing import ClientIdentity, Roster

__all__ = ["HolderKeys", "HolderCard", "Committee", "Dealing", "deal", "ceremony_half", "MAX_TEST_SUBSETS", "MIN_FLOOD_BITS", "seal",
           "open_sealed"]

#: A committee whose t-subsets outnumber this cannot test every subset in its ceremony.
MAX_TEST_SUBSETS = 256
#: Threshold keys need this much smudging (presets with less, like ``compact``, are refused).
MIN_FLOOD_BITS = 40
_DEALING_MAGIC = b"SECFLDL1"
_VERSION = 2  # 2: its test ciphertexts use second halves in NTT form
_CEREMONY = b"ceremony"


# ---- authenticated encryption between parties ----------------------------------------------------
def _aead_key(private: X25519PrivateKey, public: X25519PublicKey, associated: bytes) -> ChaCha20Poly1305:
    secret = private.exchange(public)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"secfl/seal/v1" + associated).derive(secret)
    return ChaCha20Poly1305(key)


def seal(private: X25519PrivateKey, public: X25519PublicKey, plaintext: bytes, associated: bytes) -> bytes:
    """``nonce | ciphertext`` readable only by the holder of ``public``'s private half (and the sender)."""
    nonce = os.urandom(12)
    return nonce + _aead_key(private, public, associated).encrypt(nonce, plaintext, associated)


def open_sealed(private: X25519PrivateKey, public: X25519PublicKey, blob: bytes, associated: bytes,
                *, what: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    if len(blob) < 12 + 16:
        raise PayloadError(f"{what} is too short to be sealed")
    try:
        return _aead_key(private, public, associated).decrypt(blob[:12], blob[12:], associated)
    except InvalidTag:
        raise AuthenticationError(f"{what} does not open: altered, or sealed for another party or context") from None


def _x25519_public(hex_key: str, *, what: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
    except (ValueError, TypeError):
        raise PayloadError(f"{what} is not an X25519 public key") from None


# ---- the committee -------------------------------------------------------------------------------
class HolderKeys:
    """A committee member's own X25519 key: shares and partials are sealed to it. Stays with it."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self.private = private

    @classmethod
    def generate(cls) -> HolderKeys:
        return cls(X25519PrivateKey.generate())

    @property
    def public_hex(self) -> str:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        raw = self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
        return write_private(path, json.dumps({"format": "secfl.holder-key", "key": raw.hex()}).encode(),
                             overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HolderKeys:
        try:
            raw = json.loads(Path(path).read_text())
            if raw.get("format") != "secfl.holder-key":
                raise ValueError("not a secfl holder key file")
            return cls(X25519PrivateKey.from_private_bytes(bytes.fromhex(raw["key"])))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyFileError(f"{path}: cannot load the holder key ({type(exc).__name__})") from None


@dataclass(frozen=True, kw_only=True)
class HolderCard:
    """A committee member's public card: its id (on the roster), its Shamir point, its X25519 key."""

    holder_id: str
    index: int
    exchange_key: str


@dataclass(frozen=True, kw_only=True)
class Committee:
    """The public record of a committee; pin its :attr:`fingerprint` out of band."""

    preset: str
    threshold: int
    holders: tuple[HolderCard, ...]

    def __post_init__(self) -> None:
        preset = get_preset(self.preset)
        if preset.flood_bits < MIN_FLOOD_BITS:
            raise CeremonyError(f"preset {preset.name!r} floods 2^{preset.flood_bits}; a committee's partial "
                                f"decryptions need 2^{MIN_FLOOD_BITS} of smudging (use 'strict')")
        n = len(self.holders)
        integer("threshold", self.threshold, minimum=1)
        if not 1 <= self.threshold <= n <= shamir.MAX_HOLDERS:
            raise CeremonyError(f"a committee of {n} with threshold {self.threshold}: need 1 <= threshold <= members "
                                f"<= {shamir.MAX_HOLDERS}")
        if [h.index for h in self.holders] != list(range(1, n + 1)):
            raise CeremonyError("committee members carry the points 1..n, in order")
        if len({h.holder_id for h in self.holders}) != n:
            raise CeremonyError("a committee member is listed twice")
        for h in self.holders:
            validate_client_id(h.holder_id)
            _x25519_public(h.exchange_key, what=f"{h.holder_id!r}'s exchange key")
        if len(self.subsets()) > MAX_TEST_SUBSETS:
            raise CeremonyError(f"{len(self.subsets())} subsets of {self.threshold} members: the ceremony tests every "
                                f"one, at most {MAX_TEST_SUBSETS}; choose a smaller committee")

    @classmethod
    def of(cls, *, preset: str, threshold: int, members: Iterable[tuple[str, HolderKeys | str]]) -> Committee:
        """Cards for ``(holder id, its HolderKeys or X25519 public hex)``, points in the given order."""
        cards = tuple(HolderCard(holder_id=hid, index=i + 1,
                                 exchange_key=k.public_hex if isinstance(k, HolderKeys) else k)
                      for i, (hid, k) in enumerate(members))
        return cls(preset=get_preset(preset).name, threshold=threshold, holders=cards)

    @property
    def fingerprint(self) -> str:
        return hashlib.blake2b(canonical_json(self.to_dict()), digest_size=16).hexdigest()

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(h.holder_id for h in self.holders)

    def card(self, holder_id: str) -> HolderCard:
        for h in self.holders:
            if h.holder_id == holder_id:
                return h
        raise AuthenticationError(f"{holder_id!r} is not a member of this committee")

    def subsets(self) -> list[tuple[int, ...]]:
        return list(itertools.combinations(range(1, len(self.holders) + 1), self.threshold))

    def to_dict(self) -> dict[str, Any]:
        return {"format": "secfl.committee", "preset": self.preset, "threshold": self.threshold,
                "holders": [[h.holder_id, h.index, h.exchange_key] for h in self.holders]}

    @classmethod
    def from_dict(cls, raw: Any) -> Committee:
        try:
            if raw.get("format") != "secfl.committee":
                raise ValueError("not a committee record")
            cards = tuple(HolderCard(holder_id=str(h), index=int(i), exchange_key=str(k)) for h, i, k in raw["holders"])
            return cls(preset=str(raw["preset"]), threshold=int(raw["threshold"]), holders=cards)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CeremonyError(f"malformed committee record ({type(exc).__name__})") from None

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        return write_public(path, canonical_json(self.to_dict()), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Committee:
        try:
            return cls.from_dict(parse_json_object(Path(path).read_bytes(), what=str(path)))
        except OSError as exc:
            raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None


def ceremony_half(committee: Committee, dealer: str, subset: tuple[int, ...], preset: Preset) -> bytes:
    """The key of the second half of ``dealer``'s test ciphertext for ``subset`` (its own domain)."""
    seed = hashlib.blake2b(canonical_json([committee.fingerprint, dealer, list(subset)]), digest_size=32).digest()
    return second_half(seed, chunk=0, preset=preset, label=_CEREMONY)


def _share_ad(committee: Committee, dealer: str, holder: HolderCard, key: str) -> bytes:
    return canonical_json({"committee": committee.fingerprint, "dealer": dealer, "holder": holder.holder_id,
                           "index": holder.index, "key": key})


# ---- dealing -------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Dealing:
    """One client's sealed shares for every member and its test ciphertexts, signed by the client."""

    dealer: str
    committee: str
    key: str
    ephemeral: str
    shares: dict[str, bytes]
    tests: bytes
    signature: str = ""

    def statement(self) -> bytes:
        return canonical_json({"format": "secfl.dealing", "dealer": self.dealer, "committee": self.committee,
                               "key": self.key, "ephemeral": self.ephemeral,
                               "shares": {h: hashlib.blake2b(b, digest_size=32).hexdigest()
                                          for h, b in sorted(self.shares.items())},
                               "tests": hashlib.blake2b(self.tests, digest_size=32).hexdigest()})

    @property
    def digest(self) -> str:
        return hashlib.blake2b(self.statement(), digest_size=16).hexdigest()

    def to_bytes(self) -> bytes:
        order = sorted(self.shares)
        header = {"dealer": self.dealer, "committee": self.committee, "key": self.key, "ephemeral": self.ephemeral,
                  "holders": order, "sizes": [len(self.shares[h]) for h in order], "signature": self.signature}
        return frame_signed(_DEALING_MAGIC, _VERSION, header, b"".join(self.shares[h] for h in order) + self.tests)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int | None = None) -> Dealing:
        header, body = unframe_signed(data, magic=_DEALING_MAGIC, version=_VERSION, what="a dealing", max_bytes=max_bytes)
        try:
            holders, sizes = list(header["holders"]), [int(s) for s in header["sizes"]]
            if len(holders) != len(sizes) or any(s < 0 for s in sizes) or sum(sizes) > len(body):
                raise ValueError("share sizes")
            shares, offset = {}, 0
            for h, size in zip(holders, sizes):
                shares[str(h)] = bytes(body[offset:offset + size])
                offset += size
            return cls(dealer=str(header["dealer"]), committee=str(header["committee"]), key=str(header["key"]),
                       ephemeral=str(header["ephemeral"]), shares=shares, tests=bytes(body[offset:]),
                       signature=str(header["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PayloadError(f"a malformed dealing ({type(exc).__name__})") from None

    def verify(self, roster: Roster) -> None:
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            raise AuthenticationError(f"{self.dealer!r}'s dealing carries no valid signature") from None
        roster.verify(self.dealer, signature, self.statement())


def deal(secret: SecretContext, identity: ClientIdentity, committee: Committee) -> Dealing:
    """A client's dealing of its own key to ``committee`` (step 1 of the module docstring)."""
    preset = get_preset(committee.preset)
    if secret.preset != preset:  # the parameters, not only the name: a name may have meant other primes
        raise CeremonyError(f"the committee uses preset {preset.name!r} ({'+'.join(map(str, preset.coeff_modulus_bits))} "
                            f"bits); this key is {secret.preset.name!r} "
                            f"({'+'.join(map(str, secret.preset.coeff_modulus_bits))} bits)")
    ring = Ring(preset)
    key = ring.secret_ntt(secret)
    try:
        shares = shamir.share(key, primes=ring.primes, threshold=committee.threshold, holders=len(committee.holders))
    finally:
        key.fill(0)
    ephemeral = X25519PrivateKey.generate()
    sealed = {}
    for card, share in zip(committee.holders, shares):
        ad = _share_ad(committee, identity.client_id, card, secret.fingerprint)
        sealed[card.holder_id] = seal(ephemeral, _x25519_public(card.exchange_key, what="a member's key"),
                                      ring.pack(share), ad)
    for share in shares:
        share.fill(0)  # sealed to its member; nothing of the key stays here
    zeros = np.zeros(ring.n)
    tests = b"".join(ring.pack(ring.encrypt(zeros, secret, ring.uniform(ceremony_half(
        committee, identity.client_id, subset, preset)))) for subset in committee.subsets())
    eph = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    unsigned = Dealing(dealer=identity.client_id, committee=committee.fingerprint, key=secret.fingerprint,
                       ephemeral=eph, shares=sealed, tests=tests)
    return Dealing(**{**unsigned.__dict__, "signature": identity.key.sign(unsigned.statement()).hex()})

"""What travels between the parties of an encrypted round, as signed, validated data.

* **upload** (client -> server): ``frame_signed(b"SECFLUP2", 3, receipt, c0 residues)``. The header
  is the client's :class:`Receipt`: who, for which run, round and model (its commitment), under
  which key set and preset, for which layout, the seed of each ciphertext's second half, and the
  digest of the body (:func:`body_digest`); Ed25519-signed by the client. The body is the packed ``c0`` of
  every chunk (:meth:`secagg.ring.Ring.pack`), its length fixed by the preset and the layout.
* **contributor set** (server -> each contributor -> key holder): :class:`ContributorSet` names
  the run, round, members with the digest of each member's receipt, and the one key holder that
  may release their sum. Each member signs it once.
* **release request** (server -> key holder): ``frame_signed(b"SECFLRQ2", 3, header, sum of c0)``;
  the header holds the layout, every member's receipt and every member's signature of the set.
  It carries no second half: the key holder rebuilds it from the seeds in the receipts.

Every field a party reads is checked where it is parsed (types, ranges, sizes) before it is used.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .errors import AuthenticationError, PayloadError, SignatureError
from .framing import canonical_json, frame_signed, unframe_signed
from .packing import Layout
from .parallel import choose_threads, map_ranges
from .signing import ClientIdentity, Roster, validate_client_id

__all__ = ["Receipt", "ContributorSet", "Request", "UPLOAD_MAGIC", "REQUEST_MAGIC", "FORMAT_VERSION", "MAX_RUN_LENGTH",
           "digest", "body_digest", "chunk_digests", "root_digest", "request_header", "encode_upload", "decode_upload", "encode_request", "decode_request"]

UPLOAD_MAGIC = b"SECFLUP2"
REQUEST_MAGIC = b"SECFLRQ2"
FORMAT_VERSION = 5  # 3: an upload's body digest is a digest of per-ciphertext digests; 4: second halves in NTT form;
#                     5: residues packed to their primes' bits (a 60-bit residue in 7.5 bytes, not 8)
MAX_RUN_LENGTH = 128
_RECEIPT_TAG = b"secfl/upload/v5\x00"  # domain separation: a signature means one thing only
_SET_TAG = b"secfl/contributor-set/v2\x00"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]{1,256}$")
_RUN = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,128}$")
#: Upper bound on a receipt's JSON (client id, run and the fixed-size fields).
RECEIPT_BYTES = 1536
#: A release request's body is hashed in pieces of this size (:func:`body_digest`), about one
#: ciphertext's, so that :func:`secagg.parallel.choose_threads` applies to pieces as to ciphertexts.
REQUEST_UNIT = 2**17
#: The digest units a release request may name (pieces of 1 KiB to 64 MiB).
MIN_DIGEST_UNIT, MAX_DIGEST_UNIT = 2**10, 2**26


def digest(data: bytes | memoryview) -> str:
    """SHA-256, hex: the digest every signature over bulk bytes covers (OpenSSL's SHA-256 runs at
    ~1.7 GB/s here, BLAKE2b at ~0.6: it is the server's largest cost per upload after unpacking)."""
    return hashlib.sha256(data).hexdigest()


_BODY_TAG = b"secfl/upload-body/v3\x00"


def chunk_digests(body: bytes | memoryview, unit: int, first: int, last: int) -> bytes:
    """The SHA-256 digests of pieces ``first..last-1`` of ``body`` (piece ``j`` is bytes
    ``j*unit .. (j+1)*unit``, the last one possibly shorter), concatenated."""
    view, out = memoryview(body), []
    for j in range(first, last):
        h = hashlib.sha256()
        h.update(view[j * unit:(j + 1) * unit])  # update() releases the GIL; sha256(data) does not
        out.append(h.digest())
    return b"".join(out)


def root_digest(digests: bytes, *, unit: int, size: int) -> str:
    """The body digest from every piece's digest (:func:`chunk_digests` over all pieces)."""
    return hashlib.sha256(_BODY_TAG + unit.to_bytes(8, "little") + size.to_bytes(8, "little") + digests).hexdigest()


def body_digest(body: bytes | memoryview, unit: int, *, workers: int = 1) -> str:
    """What a signature or a request names of a body: SHA-256 over the SHA-256 of each ``unit``
    bytes (an upload's: one ciphertext's ``c0``), with the unit and the length. A tree of one
    level, not one digest of the whole body, so that ``workers`` threads can each hash a range of
    pieces (the server checks an upload range by range); the cost is 32 bytes hashed per piece."""
    if unit < 1:
        raise ValueError(f"unit must be a positive number of bytes, got {unit}")
    pieces = -(-len(body) // unit)
    digests = map_ranges(lambda a, b: chunk_digests(body, unit, a, b), pieces, workers)
    return root_digest(b"".join(digests), unit=unit, size=len(body))


def _text(raw: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not pattern.match(value):
        raise PayloadError(f"{what}: field {name!r} is missing or malformed")
    return value


def _count(raw: Mapping[str, Any], name: str, what: str, *, high: int = 2**62) -> int:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise PayloadError(f"{what}: field {name!r} must be an integer in [0, {high}]")
    return value


def validate_run(run: Any) -> str:
    if not isinstance(run, str) or not _RUN.match(run):
        raise ValueError(f"a run id is 1-{MAX_RUN_LENGTH} characters of letters, digits and _.:@/+-")
    return run


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """The signed header of one upload: enough for anyone holding the roster to check who sent
    what, for which run, round, model, key set and layout, and to rebuild its second halves."""

    client_id: str
    run: str
    round: int
    commitment: str
    keys: str
    preset: str
    layout_hash: str
    seed: str
    body_digest: str
    signature: str = ""

    _FIELDS = ("client_id", "run", "round", "commitment", "keys", "preset", "layout_hash", "seed", "body_digest")

    def signed_fields(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self._FIELDS}

    def signed_bytes(self) -> bytes:
        return _RECEIPT_TAG + canonical_json(self.signed_fields())

    def to_dict(self) -> dict[str, Any]:
        return {**self.signed_fields(), "signature": self.signature}

    @property
    def digest(self) -> str:
        """What a contributor set names for this upload: the digest of the whole signed receipt."""
        return digest(canonical_json(self.to_dict()))

    def sign(self, identity: ClientIdentity) -> Receipt:
        if identity.client_id != self.client_id:
            raise AuthenticationError(f"{identity.client_id!r} cannot sign a receipt naming {self.client_id!r}")
        return Receipt(**{**self.signed_fields(), "signature": identity.key.sign(self.signed_bytes()).hex()})

    def verify(self, roster: Roster) -> None:
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            raise SignatureError(f"{self.client_id!r}: the signature is not hex") from None
        roster.verify(self.client_id, signature, self.signed_bytes())

    @classmethod
    def from_dict(cls, raw: Any, *, what: str = "a receipt") -> Receipt:
        """Parse an untrusted receipt (the signature is checked separately, by :meth:`verify`)."""
        if not isinstance(raw, Mapping) or set(raw) != {*cls._FIELDS, "signature"}:
            raise PayloadError(f"{what} must have exactly the fields {sorted({*cls._FIELDS, 'signature'})}")
        try:
            client_id = validate_client_id(raw["client_id"])
            run = validate_run(raw["run"])
        except ValueError as exc:
            raise PayloadError(f"{what}: {exc}") from None
        seed = raw.get("seed")
        if not isinstance(seed, str) or not (seed == "" or _HEX64.match(seed)):
            raise PayloadError(f"{what}: field 'seed' must be 64 hex digits (or empty for a common second half)")
        preset = raw.get("preset")
        if not isinstance(preset, str) or not 0 < len(preset) <= 64:
            raise PayloadError(f"{what}: field 'preset' must be a preset name")
        return cls(client_id=client_id, run=run, round=_count(raw, "round", what),
                   commitment=_text(raw, "commitment", _HEX, what), keys=_text(raw, "keys", _HEX, what),
                   preset=preset, layout_hash=_text(raw, "layout_hash", _HEX64, what), seed=seed,
                   body_digest=_text(raw, "body_digest", _HEX64, what),
                   signature=_text(raw, "signature", re.compile(r"^[0-9a-f]{128}$"), what))


@dataclass(frozen=True, kw_only=True)
class ContributorSet:
    """The one set of uploads a round may release: its members (with their receipts' digests) and
    the one key holder allowed to release their sum. Each member signs it once."""

    run: str
    round: int
    key_holder: str
    members: tuple[str, ...]
    receipts: tuple[str, ...]  # digest of each member's receipt, in the order of ``members``

    def __post_init__(self) -> None:
        if list(self.members) != sorted(set(self.members)) or len(self.receipts) != len(self.members):
            raise PayloadError("a contributor set lists each member once, sorted, with one receipt digest each")

    def statement(self) -> bytes:
        return _SET_TAG + canonical_json(asdict(self) | {"members": list(self.members), "receipts": list(self.receipts)})

    @property
    def digest(self) -> str:
        return digest(self.statement())

    def sign(self, identity: ClientIdentity) -> str:
        if identity.client_id not in self.members:
            raise AuthenticationError(f"{identity.client_id!r} is not a member of this set")
        return identity.key.sign(self.statement()).hex()

    def verify(self, roster: Roster, signatures: Mapping[str, str]) -> None:
        """Every member, and only members, signed exactly this set."""
        if set(signatures) != set(self.members):
            raise AuthenticationError("the contributor set carries signatures of "
                                      f"{len(set(signatures) & set(self.members))} of its {len(self.members)} members "
                                      "(and of no one else): every member must sign it")
        statement = self.statement()
        for member in self.members:
            try:
                signature = bytes.fromhex(signatures[member])
            except (ValueError, TypeError):
                raise SignatureError(f"{member!r}: the set signature is not hex") from None
            roster.verify(member, signature, statement)

    @classmethod
    def of(cls, *, run: str, round: int, key_holder: str, receipts: Sequence[Receipt]) -> ContributorSet:
        ordered = sorted(receipts, key=lambda r: r.client_id)
        return cls(run=run, round=round, key_holder=key_holder, members=tuple(r.client_id for r in ordered),
                   receipts=tuple(r.digest for r in ordered))


def encode_upload(receipt: Receipt, body: bytes | memoryview) -> bytes:
    return frame_signed(UPLOAD_MAGIC, FORMAT_VERSION, receipt.to_dict(), body)


def decode_upload(data: bytes | bytearray | memoryview, *, max_bytes: int | None = None) -> tuple[Receipt, memoryview]:
    """An upload's receipt (parsed, not yet verified) and body (not yet checked against its digest)."""
    header, body = unframe_signed(data, magic=UPLOAD_MAGIC, version=FORMAT_VERSION, what="secfl upload",
                                  max_bytes=max_bytes, max_header=RECEIPT_BYTES)
    return Receipt.from_dict(header, what="the upload's header"), body


def _request_digest(body: bytes | memoryview, unit: int) -> str:
    return body_digest(body, unit, workers=choose_threads(-(-len(body) // unit), None))


def request_header(cset: ContributorSet, *, layout: Layout, receipts: Sequence[Receipt], signatures: Mapping[str, str],
                   kind: str, body_digest: str, digest_unit: int, blob_sizes: Sequence[int] = ()) -> dict[str, Any]:
    """A release request's header; ``body_digest`` is :func:`body_digest` of the body in pieces of
    ``digest_unit`` bytes (to stream a request, see :meth:`secagg.RoundAggregate.write_request`)."""
    return {"format": "secfl.release-request", "kind": kind, "set": asdict(cset) | {
        "members": list(cset.members), "receipts": list(cset.receipts)}, "layout": layout.to_list(),
        "receipts": [r.to_dict() for r in receipts], "signatures": dict(signatures), "body_digest": body_digest,
        "digest_unit": digest_unit, "blob_sizes": list(blob_sizes)}


def encode_request(cset: ContributorSet, *, layout: Layout, receipts: Sequence[Receipt], signatures: Mapping[str, str],
                   kind: str, body: bytes | memoryview, blob_sizes: Sequence[int] = (),
                   digest_unit: int = REQUEST_UNIT) -> bytes:
    header = request_header(cset, layout=layout, receipts=receipts, signatures=signatures, kind=kind,
                            body_digest=_request_digest(body, digest_unit), digest_unit=digest_unit,
                            blob_sizes=blob_sizes)
    return frame_signed(REQUEST_MAGIC, FORMAT_VERSION, header, body)


@dataclass(frozen=True, kw_only=True)
class Request:
    """A parsed release request; nothing in it is trusted until the key holder verified it."""

    kind: str
    cset: ContributorSet
    layout: Layout
    receipts: tuple[Receipt, ...]
    signatures: dict[str, str]
    body: memoryview
    blob_sizes: tuple[int, ...] = ()  # a circuit's output: the size of each serialised ciphertext


def decode_request(data: bytes | bytearray | memoryview, *, max_members: int, max_bytes: int | None = None) -> Request:
    """Parse a release request, bounding every list by ``max_members`` (the roster's size)."""
    header, body = unframe_signed(data, magic=REQUEST_MAGIC, version=FORMAT_VERSION, what="release request",
                                  max_bytes=max_bytes, max_header=4 * 2**20 + 2 * RECEIPT_BYTES * max_members)
    what = "the release request"
    if header.get("format") != "secfl.release-request" or header.get("kind") not in ("sum", "circuit"):
        raise PayloadError(f"{what} is not a secfl release request of a known kind")
    raw_set, raw_receipts, raw_sigs = header.get("set"), header.get("receipts"), header.get("signatures")
    if not (isinstance(raw_set, dict) and isinstance(raw_receipts, list) and isinstance(raw_sigs, dict)):
        raise PayloadError(f"{what} must carry a set, a receipt list and a signature map")
    if not 0 < len(raw_receipts) <= max_members or len(raw_sigs) > max_members:
        raise PayloadError(f"{what} names more members than this key holder's roster holds")
    members, digests = raw_set.get("members"), raw_set.get("receipts")
    if not (isinstance(members, list) and isinstance(digests, list) and len(members) <= max_members
            and set(raw_set) == {"run", "round", "key_holder", "members", "receipts"}):
        raise PayloadError(f"{what}: the contributor set is malformed")
    try:
        cset = ContributorSet(run=validate_run(raw_set["run"]), round=_count(raw_set, "round", what),
                              key_holder=validate_client_id(raw_set["key_holder"]),
                              members=tuple(validate_client_id(m) for m in members),
                              receipts=tuple(_text({"d": d}, "d", _HEX64, what) for d in digests))
    except ValueError as exc:
        raise PayloadError(f"{what}: {exc}") from None
    signatures = {}
    for member, signature in raw_sigs.items():
        if not isinstance(signature, str) or len(signature) != 128:
            raise PayloadError(f"{what}: a set signature must be 128 hex digits")
        signatures[str(member)] = signature
    unit = header.get("digest_unit")
    if not (isinstance(unit, int) and not isinstance(unit, bool) and MIN_DIGEST_UNIT <= unit <= MAX_DIGEST_UNIT):
        raise PayloadError(f"{what}: its digest unit is missing or outside {MIN_DIGEST_UNIT}..{MAX_DIGEST_UNIT} bytes")
    if header.get("body_digest") != _request_digest(body, unit):
        raise PayloadError(f"{what}: its body does not match its digest (altered or truncated in transit)")
    sizes = header.get("blob_sizes")
    if not isinstance(sizes, list) or len(sizes) > 1_000_000 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes) or (sizes and sum(sizes) != len(body)):
        raise PayloadError(f"{what}: its blob sizes are malformed or do not add up to its body")
    return Request(kind=str(header["kind"]), cset=cset, layout=Layout.from_list(header.get("layout")),
                   receipts=tuple(Receipt.from_dict(r, what="a receipt in the release request") for r in raw_receipts),
                   signatures=signatures, body=body, blob_sizes=tuple(sizes))

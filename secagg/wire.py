"""The encrypted update and its versioned wire format.

An :class:`EncryptedUpdate` is what travels: a client's encrypted update, or an aggregate the
server computed from several. On the wire it is a :mod:`secagg.framing` container whose header
holds the format version, key fingerprint, preset, round, contributors, layout and layout hash,
and one *term* per ciphertext; the context is never repeated per ciphertext.

A term ``[position, start, stop]`` says that ciphertext ``i`` carries the packed values
``[start, stop)`` of chunk ``position``. A client's update has one term per chunk; an aggregate
with per-layer weights may have several per chunk (one per run of equally weighted layers).

:meth:`EncryptedUpdate.from_bytes` validates all of it, and the SEAL blobs' own headers and sizes,
before any byte reaches SEAL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import tenseal.sealapi as sealapi

from . import sealio
from .errors import KeyMismatchError, PayloadError, RoundMismatchError
from .framing import frame, unframe
from .keys import PublicContext, SecretContext
from .packing import Layout
from .presets import Preset

__all__ = ["EncryptedUpdate", "Term", "FORMAT_VERSION", "validate_client_id"]

FORMAT_VERSION = 1
_MAGIC = b"SECFLPAY"
KINDS = ("update", "sum", "weighted_sum")
ENCRYPTIONS = ("symmetric", "public")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,128}$")

Context = PublicContext | SecretContext


def validate_client_id(client_id: Any) -> str:
    if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
        raise ValueError(
            f"client_id must be 1-128 characters of letters, digits and _.:@/+-, got {str(client_id)[:40]!r}"
        )
    return client_id


@dataclass(frozen=True)
class Term:
    """Ciphertext ``i`` of an update holds packed values ``[start, stop)`` of chunk ``position``."""

    position: int
    start: int
    stop: int


@dataclass(eq=False)
class EncryptedUpdate:
    """Ciphertexts of one update (or an aggregate of several) plus the metadata to use them.

    Attributes:
        preset: the key set's parameters.
        fingerprint: the key set's fingerprint (a label against mix-ups, not a proof).
        round: the federated round this belongs to.
        kind: ``"update"`` (one client), ``"sum"`` or ``"weighted_sum"`` (server aggregates).
        contributors: client ids whose updates are inside.
        layout: names, shapes and dtypes of the arrays.
        terms: which packed values each ciphertext carries.
        scale_bits: log2 of the ciphertexts' scale (plaintext weights raise it).
        bound: public bound on any absolute value inside, used to guard against wrap-around.
        noise_std: estimated CKKS error std per value, which sizes the release flooding.
        encryption: ``"symmetric"`` (seeded, half size) or ``"public"`` for the fresh ciphertexts.
    """

    preset: Preset
    fingerprint: str
    round: int
    kind: str
    contributors: tuple[str, ...]
    layout: Layout
    terms: tuple[Term, ...]
    scale_bits: float
    bound: float
    noise_std: float
    encryption: str
    blobs: Sequence[bytes | memoryview] | None = field(default=None, repr=False)
    ciphertexts: list[sealapi.Ciphertext] | None = field(default=None, repr=False)

    @property
    def client_id(self) -> str:
        if self.kind != "update":
            raise AttributeError(f"an aggregate has {len(self.contributors)} contributors, not one client_id")
        return self.contributors[0]

    def header(self) -> dict[str, Any]:
        return {
            "format": "secfl.encrypted-update",
            "preset": self.preset.to_dict(),
            "fingerprint": self.fingerprint,
            "round": self.round,
            "kind": self.kind,
            "contributors": list(self.contributors),
            "layout": self.layout.to_list(),
            "layout_hash": self.layout.hash,
            "terms": [[t.position, t.start, t.stop] for t in self.terms],
            "scale_bits": self.scale_bits,
            "bound": self.bound,
            "noise_std": self.noise_std,
            "encryption": self.encryption,
        }

    def to_bytes(self) -> bytes:
        """Serialise to the versioned, checksummed wire format."""
        if self.blobs is None:
            assert self.ciphertexts is not None
            self.blobs = [sealio.dump(ct) for ct in self.ciphertexts]
        return frame(_MAGIC, FORMAT_VERSION, self.header(), self.blobs)

    def load(self, context: Context) -> list[sealapi.Ciphertext]:
        """SEAL ciphertexts of this update under ``context`` (loaded once, then cached)."""
        check_context(self, context)
        if self.ciphertexts is None:
            assert self.blobs is not None
            bound = _ciphertext_bound(self.preset)
            self.ciphertexts = [
                _check_ciphertext(sealio.load(sealapi.Ciphertext, context.seal, blob, max_inflated=bound,
                                              what=f"ciphertext {i} of {self._who()}"), self, context, i)
                for i, blob in enumerate(self.blobs)
            ]
        return self.ciphertexts

    def _who(self) -> str:
        return f"client {self.contributors[0]!r}" if self.kind == "update" else f"{self.kind} of round {self.round}"

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | memoryview,
        context: Context,
        *,
        expected_round: int | None = None,
        max_bytes: int | None = None,
        load: bool = True,
    ) -> EncryptedUpdate:
        """Parse and fully validate a payload under ``context``.

        ``load=False`` stops after the checks that need no SEAL object (the ciphertexts are loaded
        and checked on first use, e.g. by :class:`secagg.RunningSum`): a server folding many
        uploads then holds one update's ciphertexts at a time.

        Checks, in order: size limit, magic, version, checksum, header schema, preset and key
        fingerprint, round, layout hash, term coverage, blob sizes; then SEAL loads each
        ciphertext and its parameter id, size and scale are checked.

        Raises:
            PayloadTooLargeError, UnsupportedVersionError, PayloadError: malformed bytes.
            KeyMismatchError: another key set or preset.
            RoundMismatchError: ``expected_round`` given and the payload is for another round.
        """
        header, blobs = unframe(data, magic=_MAGIC, version=FORMAT_VERSION, what="secfl payload",
                                max_bytes=max_bytes)
        # views into immutable input cost nothing; a mutable buffer is copied so later writes cannot reach us
        views: list[bytes | memoryview] = list(blobs) if isinstance(data, bytes) else [bytes(b) for b in blobs]
        update = _from_header(header, views, context)
        if expected_round is not None and update.round != expected_round:
            raise RoundMismatchError(
                f"payload from {update._who()} is for round {update.round}, expected round {expected_round}; "
                "a stale or replayed update was dropped"
            )
        if load:
            update.load(context)
        return update

    @property
    def nbytes(self) -> int:
        """Bytes of the serialised ciphertexts (without the small header)."""
        if self.blobs is None:
            self.to_bytes()
        return sum(len(b) for b in self.blobs or [])


def check_context(update: EncryptedUpdate, context: Context) -> None:
    if not isinstance(context, (PublicContext, SecretContext)):
        raise TypeError(f"context must be a PublicContext or SecretContext, got {type(context).__name__}")
    if update.preset != context.preset:
        raise KeyMismatchError(
            f"{update._who()} uses preset {update.preset.name!r}, this context uses {context.preset.name!r}"
        )
    if update.fingerprint != context.fingerprint:
        raise KeyMismatchError(
            f"{update._who()} was encrypted under key set {update.fingerprint[:12]}..., this context is "
            f"{context.fingerprint[:12]}...; provision that client with the current client.key"
        )


def _ciphertext_bound(preset: Preset) -> int:
    return 2 * sealio.poly_bytes(preset.poly_modulus_degree, len(preset.coeff_modulus_bits)) + 4096


def max_payload_bytes(preset: Preset, n_values: int, n_arrays: int = 1) -> int:
    """The largest valid payload for an update of ``n_values`` numbers in ``n_arrays`` arrays (ratio
    form included): a server's size limit, enforced before anything is parsed."""
    chunks = -(-(n_values + n_arrays) // preset.values_per_ciphertext)
    header = 64 * 1024 + 256 * n_arrays
    return chunks * _ciphertext_bound(preset) + header


def _check_ciphertext(ct: sealapi.Ciphertext, update: EncryptedUpdate, context: Context, i: int) -> sealapi.Ciphertext:
    where = f"ciphertext {i} of {update._who()}"
    if ct.size() != 2:
        raise PayloadError(f"{where} has {ct.size()} polynomials; expected 2 (relinearised)")
    if not ct.is_ntt_form() or ct.is_transparent():
        raise PayloadError(f"{where} is not a valid CKKS ciphertext (wrong form flag, or transparent)")
    if update.kind == "update" and list(ct.parms_id()) != list(context.seal.first_parms_id()):
        raise PayloadError(f"{where} is not at the fresh level of preset {update.preset.name!r}")
    scale = ct.scale
    # a client's fresh ciphertext is encoded at exactly 2^scale_bits; aggregates that were rescaled
    # on the server carry scale^2/prime, which is a power of two only approximately
    exact = update.kind == "update" and scale == 2.0**update.scale_bits
    if not exact and not (update.kind != "update" and math.isfinite(scale) and scale > 0
                          and math.isclose(math.log2(scale), update.scale_bits, abs_tol=1e-9)):
        raise PayloadError(f"{where} has scale {scale!r}, the header says 2^{update.scale_bits}")
    return ct


def _field(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PayloadError(f"payload header field {name!r} is missing or has the wrong type")
    return value


def _from_header(header: dict[str, Any], blobs: list[bytes | memoryview], context: Context) -> EncryptedUpdate:
    if header.get("format") != "secfl.encrypted-update":
        raise PayloadError("payload header is not a secfl encrypted update")
    try:
        preset = Preset.from_dict(header.get("preset"))  # type: ignore[arg-type]  # from_dict validates the type
    except ValueError as exc:
        raise PayloadError(f"payload preset is malformed: {exc}") from None
    fingerprint = _field(header, "fingerprint", str)
    rnd = _field(header, "round", int)
    if rnd < 0:
        raise PayloadError("payload round must be non-negative")
    kind = _field(header, "kind", str)
    if kind not in KINDS:
        raise PayloadError(f"payload kind {kind!r} is not one of {KINDS}")
    contributors = _field(header, "contributors", list)
    try:
        contributors = [validate_client_id(c) for c in contributors]
    except ValueError as exc:
        raise PayloadError(f"payload contributors: {exc}") from None
    if not contributors or len(set(contributors)) != len(contributors) or (kind == "update" and len(contributors) != 1):
        raise PayloadError("payload contributors must be unique, and exactly one for a client update")
    layout = Layout.from_list(header.get("layout"))
    if header.get("layout_hash") != layout.hash:
        raise PayloadError("payload layout hash does not match its layout")
    encryption = _field(header, "encryption", str)
    if encryption not in ENCRYPTIONS:
        raise PayloadError(f"payload encryption {encryption!r} is not one of {ENCRYPTIONS}")
    scale_bits = float(_field(header, "scale_bits", (int, float)))
    bound = float(_field(header, "bound", (int, float)))
    noise_std = float(_field(header, "noise_std", (int, float)))
    if not (math.isfinite(bound) and bound > 0 and math.isfinite(noise_std) and noise_std >= 0):
        raise PayloadError("payload bound and noise_std must be finite and positive")
    if not preset.scale_bits <= scale_bits <= preset.data_modulus_bits - 1 - math.log2(bound):
        raise PayloadError(f"payload scale 2^{scale_bits} and bound {bound} do not fit preset {preset.name!r}")
    per_ct = preset.values_per_ciphertext
    terms = _parse_terms(header.get("terms"), layout, per_ct, len(blobs))
    bound_bytes = _ciphertext_bound(preset)
    for i, b in enumerate(blobs):
        if len(b) > bound_bytes:
            raise PayloadError(f"ciphertext {i} is {len(b)} bytes; preset {preset.name!r} allows {bound_bytes}")
    update = EncryptedUpdate(preset, fingerprint, rnd, kind, tuple(contributors), layout, terms, scale_bits,
                             bound, noise_std, encryption, blobs=blobs)
    check_context(update, context)
    return update


def _parse_terms(raw: Any, layout: Layout, per_ct: int, n_blobs: int) -> tuple[Term, ...]:
    if not isinstance(raw, list) or len(raw) != n_blobs or not raw:
        raise PayloadError("payload terms must list one [position, start, stop] per ciphertext")
    terms = []
    for t in raw:
        if not (isinstance(t, list) and len(t) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in t)):
            raise PayloadError("payload term must be three integers [position, start, stop]")
        pos, start, stop = t
        if not (0 <= pos < layout.chunks(per_ct) and pos * per_ct <= start < stop <= min((pos + 1) * per_ct, layout.total)):
            raise PayloadError(f"payload term {t} lies outside its chunk or the layout")
        terms.append(Term(pos, start, stop))
    covered = sorted((t.start, t.stop) for t in terms)
    expect = 0
    for start, stop in covered:
        if start != expect:
            raise PayloadError("payload terms overlap or leave values uncovered")
        expect = stop
    if expect != layout.total:
        raise PayloadError("payload terms do not cover the whole layout")
    return tuple(terms)


def chunk_terms(layout: Layout, per_ct: int) -> tuple[Term, ...]:
    """One term per chunk: how a client's update is cut."""
    return tuple(Term(j, j * per_ct, min((j + 1) * per_ct, layout.total)) for j in range(layout.chunks(per_ct)))


def same_round(updates: Sequence[EncryptedUpdate]) -> int:
    rounds = {u.round for u in updates}
    if len(rounds) != 1:
        raise RoundMismatchError(f"updates come from different rounds {sorted(rounds)}; aggregate one round at a time")
    return rounds.pop()

"""Key roles: the dealer, the clients' secret context and the server's public context.

Default trust model (as in NVIDIA FLARE): a key dealer creates one CKKS key set. Every client and
every key holder gets the **secret context** (secret key + public key); the aggregation server
gets the **public context** (public key and only the evaluation keys its protocol needs). The
server can add ciphertexts but cannot decrypt; a server that colludes with any client can. Every
upload names the key set's fingerprint, so that mixing key sets fails loudly.

Example:
    >>> import tempfile, pathlib
    >>> from secagg import generate_keys, load_public_context
    >>> keys = generate_keys(preset="compact")
    >>> paths = keys.save(pathlib.Path(tempfile.mkdtemp()))
    >>> load_public_context(paths["server"]).fingerprint == keys.secret.fingerprint
    True
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import tenseal.sealapi as sealapi

from . import sealio
from ._files import write_private, write_public
from .errors import InvalidParametersError, KeyFileError, MissingSecretKeyError, PayloadError
from .framing import canonical_json, frame, unframe
from .presets import DEFAULT_PRESET, Preset, get_preset

__all__ = ["PublicContext", "SecretContext", "KeySet", "generate_keys", "load_public_context",
           "load_secret_context", "seal_context"]

_KEY_MAGIC = b"SECFLKEY"
_KEY_VERSION = 1
SECRET_FILE = "client.key"
PUBLIC_FILE = "server.ctx"


@lru_cache(maxsize=16)
def seal_context(preset: Preset) -> sealapi.SEALContext:
    """The SEAL context of ``preset``, with SEAL's own 128-bit security check enforced."""
    params = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    params.set_poly_modulus_degree(preset.poly_modulus_degree)
    params.set_coeff_modulus(sealapi.CoeffModulus.Create(preset.poly_modulus_degree, list(preset.coeff_modulus_bits)))
    ctx = sealapi.SEALContext(params, True, sealapi.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise InvalidParametersError(
            f"SEAL rejects preset {preset.name!r}: {ctx.parameters_error_message()}"
        )
    return ctx


def _galois_elements(preset: Preset) -> list[int]:
    """Rotations by every power of two (slot sums) and complex conjugation (real parts)."""
    m = 2 * preset.poly_modulus_degree
    steps = [1 << i for i in range(preset.slots.bit_length() - 1)]
    return [pow(3, s, m) for s in steps] + [m - 1]


def _fingerprint(preset: Preset, public_key_blob: bytes) -> str:
    material = canonical_json({k: v for k, v in preset.to_dict().items() if k != "description"})
    return hashlib.blake2b(material + public_key_blob, digest_size=16).hexdigest()


def _key_bound(preset: Preset, polys: int) -> int:
    """Largest uncompressed size a key object of ``polys`` polynomials may have."""
    return sealio.poly_bytes(preset.poly_modulus_degree, len(preset.coeff_modulus_bits)) * polys + 4096


class _ContextBase:
    preset: Preset
    fingerprint: str

    def __init__(self, preset: Preset, blobs: dict[str, bytes]) -> None:
        self.preset = preset
        self._blobs = blobs
        self.seal = seal_context(preset)
        self.encoder = sealapi.CKKSEncoder(self.seal)
        self.fingerprint = _fingerprint(preset, blobs["public_key"])
        self.public_key = self._load("public_key", sealapi.PublicKey, 2)

    def _load(self, name: str, factory: Any, polys: int) -> Any:
        try:
            return sealio.load(factory, self.seal, self._blobs[name], max_inflated=_key_bound(self.preset, polys),
                               what=f"{name} of a {self.preset.name!r} key file")
        except PayloadError as exc:
            raise KeyFileError(str(exc)) from None

    @property
    def scale(self) -> float:
        return 2.0 ** self.preset.scale_bits

    def _to_bytes(self, role: str, names: list[str]) -> bytes:
        header = {"role": role, "preset": self.preset.to_dict(), "fingerprint": self.fingerprint, "objects": names}
        return frame(_KEY_MAGIC, _KEY_VERSION, header, [self._blobs[n] for n in names])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(preset={self.preset.name!r}, fingerprint={self.fingerprint[:12]}...)"


class PublicContext(_ContextBase):
    """What the aggregation server holds: public key and evaluation keys, never a secret key.

    It adds first halves of ciphertexts and, with the ``deep`` preset's evaluation keys, evaluates
    the server-scored circuit. Decryption is impossible by construction: there is no secret key
    in this object, its file, or anything it serialises.
    """

    def __init__(self, preset: Preset, blobs: dict[str, bytes]) -> None:
        if "secret_key" in blobs:
            raise KeyFileError("a public context must not carry a secret key")
        super().__init__(preset, blobs)
        n_primes = len(preset.coeff_modulus_bits)
        self.relin_keys = self._load("relin_keys", sealapi.RelinKeys, 2 * n_primes) if "relin_keys" in blobs else None
        n_galois = len(_galois_elements(preset))
        self.galois_keys = (self._load("galois_keys", sealapi.GaloisKeys, 2 * n_primes * n_galois)
                            if "galois_keys" in blobs else None)
        self.evaluator = sealapi.Evaluator(self.seal)

    def to_bytes(self) -> bytes:
        return self._to_bytes("public", [n for n in ("public_key", "relin_keys", "galois_keys") if n in self._blobs])

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the server's file (mode 0644: it holds nothing secret), created exclusively and never
        through a link (an existing file is refused unless ``overwrite``)."""
        return write_public(path, self.to_bytes(), overwrite=overwrite)

    def decrypt(self, *_: Any, **__: Any) -> None:
        raise MissingSecretKeyError(
            "the server's public context holds no secret key and cannot decrypt; a key holder (a client "
            "with client.key) releases the round's sum"
        )

    @staticmethod
    def public_context() -> None:  # pragma: no cover - symmetry with SecretContext
        raise AttributeError("already a public context")


class SecretContext(_ContextBase):
    """What clients and key holders hold: secret key and public key (no evaluation keys).

    Clients encrypt with the secret key (symmetric, seeded ciphertexts: half the bytes); key
    holders decrypt. The file is written with mode 0600.
    """

    def __init__(self, preset: Preset, blobs: dict[str, bytes], *, server_blobs: dict[str, bytes] | None = None) -> None:
        super().__init__(preset, blobs)
        self.secret_key = self._load("secret_key", sealapi.SecretKey, 1)
        self.encryptor = sealapi.Encryptor(self.seal, self.secret_key)
        self.decryptor = sealapi.Decryptor(self.seal, self.secret_key)
        self.evaluator = sealapi.Evaluator(self.seal)
        #: the secret key at the data level as a SEAL plaintext, the factor clients multiply second
        #: halves by: built once, on first use, by :meth:`secagg.ring.Ring.key_factor`
        self.data_key: sealapi.Plaintext | None = None
        self._server_blobs = server_blobs  # evaluation keys, only while the dealer holds this object

    def __del__(self) -> None:  # SEAL's memory pool frees the key factor's memory without clearing it
        key = getattr(self, "data_key", None)
        if key is not None:
            key.set_zero()

    def to_bytes(self) -> bytes:
        return self._to_bytes("secret", ["public_key", "secret_key"])

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the clients' file with mode 0600, created exclusively and never through a link
        (an existing file is refused unless ``overwrite``)."""
        return write_private(path, self.to_bytes(), overwrite=overwrite)

    def public_context(self) -> PublicContext:
        """The server's context of this key set, built from public material only."""
        blobs = {"public_key": self._blobs["public_key"], **(self._server_blobs or {})}
        missing = [k for k in self.preset.eval_keys if f"{k}_keys" not in blobs]
        if missing:
            raise KeyFileError(
                f"preset {self.preset.name!r} needs {missing} evaluation keys, which only the dealer's "
                "generate_keys() result carries; load the server.ctx file it wrote instead"
            )
        return PublicContext(self.preset, blobs)


@dataclass(frozen=True)
class KeySet:
    """The dealer's output: the clients' secret context and the server's public context."""

    secret: SecretContext
    public: PublicContext

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> dict[str, Path]:
        """Write ``client.key`` (mode 0600, for clients and key holders) and ``server.ctx`` (server);
        existing files are refused unless ``overwrite``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return {
            "client": self.secret.save(directory / SECRET_FILE, overwrite=overwrite),
            "server": self.public.save(directory / PUBLIC_FILE, overwrite=overwrite),
        }


def generate_keys(*, preset: str | Preset = DEFAULT_PRESET) -> KeySet:
    """Act as the key dealer: create a fresh key set for ``preset``.

    Example:
        >>> keys = generate_keys(preset="compact")
        >>> keys.public.fingerprint == keys.secret.fingerprint
        True
    """
    preset = get_preset(preset)
    ctx = seal_context(preset)
    keygen = sealapi.KeyGenerator(ctx)
    public_key = sealapi.PublicKey()  # the seeded form is not exposed for public keys
    keygen.create_public_key(public_key)
    blobs = {"public_key": sealio.dump(public_key), "secret_key": sealio.dump(keygen.secret_key())}
    server = {"public_key": blobs["public_key"]}
    if "relin" in preset.eval_keys:
        server["relin_keys"] = sealio.dump(keygen.create_relin_keys())
    if "galois" in preset.eval_keys:
        server["galois_keys"] = sealio.dump(keygen.create_galois_keys(_galois_elements(preset)))
    secret = SecretContext(preset, blobs, server_blobs={k: v for k, v in server.items() if k != "public_key"})
    return KeySet(secret=secret, public=PublicContext(preset, server))


def _read_key_file(source: str | os.PathLike[str] | bytes, role: str) -> tuple[Preset, dict[str, bytes]]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), f"{role} key bytes"
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
        label = f"key file {path}"
    try:
        header, blobs = unframe(data, magic=_KEY_MAGIC, version=_KEY_VERSION, what=label)
    except PayloadError as exc:
        raise KeyFileError(str(exc)) from None
    if header.get("role") != role:
        other = {"secret": "client.key", "public": "server.ctx"}[role]
        raise KeyFileError(f"{label} holds a {header.get('role')!r} context, expected {role!r} (use {other})")
    names = header.get("objects")
    if not isinstance(names, list) or len(names) != len(blobs) or len(set(names)) != len(names):
        raise KeyFileError(f"{label} has a malformed object list")
    allowed = {"secret": {"public_key", "secret_key"}, "public": {"public_key", "relin_keys", "galois_keys"}}[role]
    if not set(names) <= allowed or "public_key" not in names:
        raise KeyFileError(f"{label} lists objects {names}; a {role} context holds {sorted(allowed)}")
    try:
        preset = Preset.from_dict(header.get("preset"))  # type: ignore[arg-type]  # from_dict validates the type
    except InvalidParametersError as exc:
        raise KeyFileError(f"{label}: {exc}") from None
    contents = {n: bytes(b) for n, b in zip(names, blobs)}
    if header.get("fingerprint") != _fingerprint(preset, contents["public_key"]):
        raise KeyFileError(f"{label}: fingerprint does not match its contents; the file was altered")
    return preset, contents


def load_secret_context(source: str | os.PathLike[str] | bytes) -> SecretContext:
    """Load a client's / key holder's ``client.key`` (path or bytes)."""
    preset, blobs = _read_key_file(source, "secret")
    return SecretContext(preset, blobs)


def load_public_context(source: str | os.PathLike[str] | bytes) -> PublicContext:
    """Load the server's ``server.ctx`` (path or bytes)."""
    preset, blobs = _read_key_file(source, "public")
    missing = [k for k in preset.eval_keys if f"{k}_keys" not in blobs]
    if missing:
        raise KeyFileError(f"server context lacks the {missing} evaluation keys its preset {preset.name!r} needs")
    return PublicContext(preset, blobs)

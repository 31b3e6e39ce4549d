"""Exceptions raised by :mod:`secagg`.

Every failure a caller can provoke with bad input has its own class, so that a server can drop
one client's payload (``PayloadError``) without aborting a round for a configuration mistake
(``KeyMismatchError``). Each message says what to do next.
"""

from __future__ import annotations

__all__ = [
    "SecAggError",
    "InvalidParametersError",
    "UnknownPresetError",
    "InvalidUpdateError",
    "NonFiniteValueError",
    "ValueOutOfRangeError",
    "HeadroomError",
    "LayoutMismatchError",
    "KeyMismatchError",
    "MissingSecretKeyError",
    "KeyFileError",
    "PayloadError",
    "PayloadTooLargeError",
    "UnsupportedVersionError",
    "RoundMismatchError",
    "EmptyAggregationError",
    "DuplicateClientError",
    "AuthenticationError",
    "UnknownClientError",
    "SignatureError",
    "ReplayError",
    "DuplicateUploadError",
    "ModelInconsistencyError",
    "ReleaseRefusedError",
    "LedgerError",
    "CeremonyError",
    "QuorumError",
]


class SecAggError(Exception):
    """Base class of every error raised by :mod:`secagg`."""


class InvalidParametersError(SecAggError, ValueError):
    """CKKS parameters that are invalid or below the 128-bit security level."""


class UnknownPresetError(SecAggError, KeyError):
    """A preset name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else ""


class InvalidUpdateError(SecAggError, ValueError):
    """An update that is not a mapping of names to finite float arrays."""


class NonFiniteValueError(InvalidUpdateError):
    """An update holds NaN or infinity, which CKKS would encrypt into garbage."""


class ValueOutOfRangeError(InvalidUpdateError):
    """A value exceeds the preset's safe range; CKKS would wrap around silently."""


class HeadroomError(SecAggError, ValueError):
    """An aggregate could exceed the ciphertext modulus (too many clients or too large weights)."""


class LayoutMismatchError(SecAggError, ValueError):
    """Updates whose layouts (names, shapes, dtypes) differ cannot be combined."""


class KeyMismatchError(SecAggError, ValueError):
    """A payload, key file or ciphertext belongs to another key set or preset."""


class MissingSecretKeyError(SecAggError, PermissionError):
    """An operation that needs the secret key was attempted with a public context."""


class KeyFileError(SecAggError, ValueError):
    """A key file that is missing, unreadable, corrupted or of the wrong role."""


class PayloadError(SecAggError, ValueError):
    """Bytes that are not a valid secfl payload (truncated, corrupted, oversized, malformed)."""


class PayloadTooLargeError(PayloadError):
    """A payload larger than the caller's size limit; rejected before it is parsed."""


class UnsupportedVersionError(PayloadError):
    """A payload written by an incompatible version of the wire format."""


class RoundMismatchError(SecAggError, ValueError):
    """A payload for another round (stale, replayed or early)."""


class EmptyAggregationError(SecAggError, ValueError):
    """Aggregation was asked over no update at all."""


class DuplicateClientError(SecAggError, ValueError):
    """Two payloads in one aggregation claim the same client id."""


class AuthenticationError(SecAggError, ValueError):
    """An upload, receipt or identity that cannot be authenticated."""


class UnknownClientError(AuthenticationError):
    """An upload from a client that is not on the server's roster (a foreign payload)."""


class SignatureError(AuthenticationError):
    """An unsigned upload, or one whose signature does not verify (tampered, or another key)."""


class ReplayError(AuthenticationError):
    """A correctly signed upload for another round (replayed or stale)."""


class DuplicateUploadError(AuthenticationError):
    """A second upload from the same client in one round."""


class ModelInconsistencyError(SecAggError, RuntimeError):
    """Clients were given different global models or configurations in one round (a malicious server)."""


class ReleaseRefusedError(SecAggError, PermissionError):
    """A key holder refused to release a decryption (not an aggregate, too few clients, asked twice)."""


class LedgerError(SecAggError, OSError):
    """A party's ledger of signed and released rounds cannot be opened or written."""


class CeremonyError(SecAggError, ValueError):
    """A threshold key ceremony failed its checks; the message names the dealer or holder at fault."""


class QuorumError(SecAggError, ValueError):
    """A threshold release was asked of a quorum that is not ``threshold`` distinct committee members
    including the combining one, or fewer partials came back than the quorum needs."""

"""Exceptions raised by :mod:`fedattn`; each message says what to do."""

from __future__ import annotations

__all__ = [
    "FedAttnError", "UnknownDatasetError", "PartitionError", "ModelMismatchError", "EmptyClientError",
    "AllClientsDroppedError", "ScoreOutOfRangeError", "InvalidConfigError", "PrivacyConfigError",
    "AuthenticationError", "UnknownClientError", "SignatureError", "ReplayError", "DuplicateUploadError",
    "ModelInconsistencyError", "DecryptionAbortedError",
]


class FedAttnError(Exception):
    """Base class of every error raised by :mod:`fedattn`."""


class UnknownDatasetError(FedAttnError, ValueError):
    """A dataset name that is not registered."""


class PartitionError(FedAttnError, ValueError):
    """Data that cannot be split as asked (too few samples for the clients, bad alpha)."""


class ModelMismatchError(FedAttnError, ValueError):
    """A client's model differs in architecture from the global model."""


class EmptyClientError(FedAttnError, ValueError):
    """A client that holds no training sample."""


class AllClientsDroppedError(FedAttnError, RuntimeError):
    """Every sampled client dropped out of a round: there is nothing to aggregate."""


class ScoreOutOfRangeError(FedAttnError, ValueError):
    """An attention score outside the public range that the protocol clips to."""


class InvalidConfigError(FedAttnError, ValueError):
    """A configuration value that makes no sense."""


class PrivacyConfigError(InvalidConfigError):
    """Differential-privacy options that make no sense (negative noise, delta >= 1, ...)."""


class AuthenticationError(FedAttnError, ValueError):
    """An upload, receipt or identity that cannot be authenticated."""


class UnknownClientError(AuthenticationError):
    """An upload from a client that is not on the server's roster (a foreign payload)."""


class SignatureError(AuthenticationError):
    """An unsigned upload, or one whose signature does not verify (tampered, or another key)."""


class ReplayError(AuthenticationError):
    """A correctly signed upload for another round (replayed or stale)."""


class DuplicateUploadError(AuthenticationError):
    """A second upload from the same client in one round."""


class ModelInconsistencyError(FedAttnError, RuntimeError):
    """Clients were given different global models or configurations in one round (a malicious server)."""


class DecryptionAbortedError(FedAttnError, RuntimeError):
    """No key holder completed the decryption of a round's aggregate; the round was aborted."""

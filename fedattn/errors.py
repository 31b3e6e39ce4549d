"""Exceptions raised by :mod:`fedattn`; each message says what to do."""

from __future__ import annotations

from collections.abc import Mapping

# the signing layer lives in secagg; its errors are re-exported here for fedattn users
from secagg import (
    AuthenticationError,
    DuplicateUploadError,
    ModelInconsistencyError,
    ReplayError,
    SignatureError,
    UnknownClientError,
)

__all__ = [
    "FedAttnError", "UnknownDatasetError", "PartitionError", "ModelMismatchError", "EmptyClientError",
    "AllClientsDroppedError", "ScoreOutOfRangeError", "InvalidConfigError", "PrivacyConfigError",
    "AuthenticationError", "UnknownClientError", "SignatureError", "ReplayError", "DuplicateUploadError",
    "ModelInconsistencyError", "DecryptionAbortedError", "ClientUnreachableError", "ArchitectureMismatchError",
    "ProvenanceError",
]


class FedAttnError(Exception):
    """Base class of every error raised by :mod:`fedattn`."""


class UnknownDatasetError(FedAttnError, ValueError):
    """A dataset name that is not registered."""


class PartitionError(FedAttnError, ValueError):
    """Data that cannot be split as asked (too few samples for the clients, bad alpha)."""


class ModelMismatchError(FedAttnError, ValueError):
    """A client's model differs in architecture from the global model."""


class ArchitectureMismatchError(ModelMismatchError):
    """The server sent another architecture than the one pinned at enrolment (an added layer, say):
    the client refused to train it."""


class ProvenanceError(ModelMismatchError):
    """The server sent weights that are not the committed initialisation plus the signed releases
    since: the client refused to train them."""


class EmptyClientError(FedAttnError, ValueError):
    """A client that holds no training sample."""


class AllClientsDroppedError(FedAttnError, RuntimeError):
    """Every sampled client dropped out of a round: there is nothing to aggregate. ``reasons`` maps
    each client that refused or was refused to the name of the error."""

    def __init__(self, message: str, *, reasons: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


class ScoreOutOfRangeError(FedAttnError, ValueError):
    """An attention score outside the public range that the protocol clips to."""


class InvalidConfigError(FedAttnError, ValueError):
    """A configuration value that makes no sense."""


class PrivacyConfigError(InvalidConfigError):
    """Differential-privacy options that make no sense (negative noise, delta >= 1, ...)."""


class DecryptionAbortedError(FedAttnError, RuntimeError):
    """No key holder completed the decryption of a round's aggregate; the round was aborted."""


class ClientUnreachableError(FedAttnError, ConnectionError):
    """A client the server needed (to sign the round's set, or to release it) did not answer."""

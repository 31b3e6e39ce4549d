"""Exceptions of the Flower adapter; each message says what to do next."""

from __future__ import annotations

# refusals and ledger failures are secagg's (the key holder's policy lives there), re-exported here
from secagg import LedgerError, ReleaseRefusedError

from ..errors import FedAttnError, InvalidConfigError

__all__ = ["FlowerAdapterError", "MissingPublicContextError", "MissingKeyError", "MissingCiphertextError",
           "NotSecflMessageError", "ReleaseRefusedError", "MissingIdentityError", "LedgerError"]


class FlowerAdapterError(FedAttnError):
    """Base class of the errors raised by :mod:`fedattn.flower`."""


class MissingPublicContextError(FlowerAdapterError, InvalidConfigError):
    """The server was started without a public context (``server.ctx``)."""


class MissingKeyError(FlowerAdapterError, ValueError):
    """A client node that was given no secret key (``client.key``) or cannot read it."""


class MissingCiphertextError(FlowerAdapterError, ValueError):
    """A client reply that carries no secfl ciphertext payload (plaintext arrays, or nothing)."""


class NotSecflMessageError(FlowerAdapterError, ValueError):
    """A message without the secfl configuration: the client refuses to answer it in plaintext."""



class MissingIdentityError(FlowerAdapterError, ValueError):
    """A node asked for a signed upload that holds no signing identity (``client-<i>.id``)."""



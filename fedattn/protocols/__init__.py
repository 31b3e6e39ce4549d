"""How updates travel from clients to the server, and what each party sees (see :mod:`.base`)."""

from __future__ import annotations

import secagg

from ..errors import InvalidConfigError
from .base import (
    ClientMessage,
    ClientScoredProtocol,
    EncryptedProtocol,
    PlainProtocol,
    Protocol,
    RoundAggregate,
    ServerResult,
)
from .server_scored import ServerScoredProtocol

__all__ = ["Protocol", "PlainProtocol", "EncryptedProtocol", "ServerResult", "ClientScoredProtocol", "ServerScoredProtocol",
           "ClientMessage", "RoundAggregate", "PROTOCOLS", "make_protocol"]

PROTOCOLS = ("plain", "client-scored", "server-scored")


def make_protocol(name: str, *, keys: secagg.KeySet | None = None, preset: str = secagg.DEFAULT_PRESET,
                  release_seed: int | None = None, **options) -> Protocol:
    """Build a protocol by name; encrypted ones use ``keys`` or a fresh key set of ``preset``, and
    take the keyword ``options`` of :class:`EncryptedProtocol` (identities, roster, ...)."""
    if name == "plain":
        return PlainProtocol()
    if name == "client-scored":
        return ClientScoredProtocol(keys or secagg.generate_keys(preset=preset), release_seed=release_seed, **options)
    if name == "server-scored":
        return ServerScoredProtocol(keys or secagg.generate_keys(preset="deep"), release_seed=release_seed, **options)
    raise InvalidConfigError(f"unknown protocol {name!r}; choose one of {PROTOCOLS}")

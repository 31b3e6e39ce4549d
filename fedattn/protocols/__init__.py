"""How updates travel from clients to the server, and what each party sees (see :mod:`.base`).

Example:
    >>> from fedattn.rules import FedAtt
    >>> make_protocol("client-scored", FedAtt()).encrypted
    True
"""

from __future__ import annotations

from ..errors import InvalidConfigError
from ..rules import AggregationRule
from .base import ClientScoredProtocol, EncryptedProtocol, PlainProtocol, Protocol
from .server_scored import ServerScoredProtocol

__all__ = ["Protocol", "PlainProtocol", "EncryptedProtocol", "ClientScoredProtocol", "ServerScoredProtocol",
           "PROTOCOLS", "make_protocol"]

PROTOCOLS: dict[str, type[PlainProtocol | ClientScoredProtocol | ServerScoredProtocol]] = {"plain": PlainProtocol, "client-scored": ClientScoredProtocol, "server-scored": ServerScoredProtocol}


def make_protocol(name: str, rule: AggregationRule) -> Protocol:
    """The protocol called ``name``, configured with ``rule``."""
    try:
        cls = PROTOCOLS[name]
    except KeyError:
        raise InvalidConfigError(f"unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}") from None
    return cls(rule)

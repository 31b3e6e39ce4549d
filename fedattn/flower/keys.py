"""Where each party's key material comes from, and the public context's trip to the clients.

* A **client** loads its secret context (``client.key``, written by ``secfl keys generate``) from
  a path in its own node configuration (``flower-supernode --node-config 'secret-key="..."'``),
  or, for local simulations where Flower gives nodes no custom configuration, from the
  ``SECFL_CLIENT_KEY`` environment variable of the machine it runs on. Nothing the server sends
  can name or carry a key.
* The **server** loads ``server.ctx`` (public key and evaluation keys only) from the run
  configuration's ``server-context`` path; a secret context is refused.
* With signed uploads, a client also loads its Ed25519 identity (``client-<i>.id``) from its node
  config's ``identity`` (or ``SECFL_CLIENT_IDENTITY``): a file, or the folder ``secfl keys generate
  --clients N`` wrote, where the node picks the file named for its client id. The server and the
  key holders load the roster of public keys (``roster.json``): the server from the run config's
  ``roster``, a key holder from its node config's ``roster`` (or ``SECFL_ROSTER``).
* The public context travels to the clients in the round's ConfigRecord (its fingerprint always,
  its bytes as well while they are small): each client checks it against its own key set and
  refuses to train for a server with another one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context

import secagg
from secagg.epoch import Epoch
from secagg.signing import ClientIdentity, Roster

from ..errors import AuthenticationError
from .errors import MissingKeyError, MissingPublicContextError

__all__ = ["SECRET_KEY_CONFIG", "SECRET_KEY_ENV", "SERVER_CONTEXT_CONFIG", "KeyLocator", "default_key_path",
           "load_client_key", "load_server_context", "check_server_context", "client_id_of",
           "IDENTITY_CONFIG", "IDENTITY_ENV", "ROSTER_CONFIG", "ROSTER_ENV", "default_identity_path",
           "default_roster_path", "identity_file", "load_identity", "load_roster", "load_server_roster",
           "load_server_epoch", "EPOCH_RUN_CONFIG"]
log = logging.getLogger(__name__)

SECRET_KEY_CONFIG = "secret-key"
SECRET_KEY_ENV = "SECFL_CLIENT_KEY"
SERVER_CONTEXT_CONFIG = "server-context"
IDENTITY_CONFIG = "identity"
IDENTITY_ENV = "SECFL_CLIENT_IDENTITY"
ROSTER_CONFIG = "roster"
ROSTER_ENV = "SECFL_ROSTER"
EPOCH_RUN_CONFIG = "epoch"

#: Given a node's Context, the path of its client.key (or None when it has none).
KeyLocator = Callable[[Context], "str | os.PathLike[str] | None"]


def default_key_path(context: Context) -> str | None:
    """The node config's ``secret-key``, else the ``SECFL_CLIENT_KEY`` environment variable."""
    path = context.node_config.get(SECRET_KEY_CONFIG) or os.environ.get(SECRET_KEY_ENV)
    return str(path) if path else None


def default_identity_path(context: Context) -> str | None:
    """The node config's ``identity``, else the ``SECFL_CLIENT_IDENTITY`` environment variable."""
    path = context.node_config.get(IDENTITY_CONFIG) or os.environ.get(IDENTITY_ENV)
    return str(path) if path else None


def default_roster_path(context: Context) -> str | None:
    """The node config's ``roster``, else the ``SECFL_ROSTER`` environment variable."""
    path = context.node_config.get(ROSTER_CONFIG) or os.environ.get(ROSTER_ENV)
    return str(path) if path else None


def client_id_of(context: Context) -> str:
    """The id a client's payloads carry: node config ``client-id``, else its partition, else its node id."""
    cfg = context.node_config
    if cfg.get("client-id"):
        return str(cfg["client-id"])
    if "partition-id" in cfg:
        return f"client-{cfg['partition-id']}"
    return f"node-{context.node_id}"


def load_client_key(context: Context, locate: KeyLocator | None = None) -> secagg.SecretContext:
    """The node's secret context; :class:`MissingKeyError` saying how to provide it otherwise."""
    path = (locate or default_key_path)(context)
    if not path:
        raise MissingKeyError(
            f"node {context.node_id} has no secret key: start its SuperNode with --node-config "
            f"'{SECRET_KEY_CONFIG}=\"/path/to/client.key\"' (local simulations: set {SECRET_KEY_ENV}); "
            "keys are provisioned by the key dealer (secfl keys generate), never sent by the server"
        )
    try:
        return secagg.load_secret_context(Path(path))
    except secagg.KeyFileError as exc:
        raise MissingKeyError(f"node {context.node_id} cannot use its secret key: {exc}") from None


def identity_file(context: Context, locate: KeyLocator | None = None) -> Path | None:
    """Where the node's signing identity is (a folder stands for ``<folder>/<client id>.id``, or for
    ``<folder>/<client id>/<client id>.id`` as ``secfl keys ceremony`` writes it); None where none is
    configured (the node then refuses to train)."""
    path = (locate or default_identity_path)(context)
    if not path:
        return None
    path, cid = Path(path), client_id_of(context)
    if not path.is_dir():
        return path
    # the dealer's folder of client-<i>.id files, or the ceremony's folder of client-<i>/ folders
    nested = path / cid / f"{cid}.id"
    return nested if nested.exists() and not (path / f"{cid}.id").exists() else path / f"{cid}.id"


def load_identity(context: Context, locate: KeyLocator | None = None) -> ClientIdentity | None:
    """The node's signing identity, or None when it was given none.

    A folder stands for the key dealer's output: the node takes ``<client id>.id`` from it, its
    client id being :func:`client_id_of`. The identity then names the client: a node config
    ``client-id`` that says otherwise is an error, not a silent rename.

    Raises:
        MissingKeyError: a configured identity that cannot be read.
    """
    path = identity_file(context, locate)
    if path is None:
        return None
    try:
        identity = ClientIdentity.load(path)
    except AuthenticationError as exc:
        raise MissingKeyError(f"node {context.node_id} cannot use its signing identity: {exc}") from None
    claimed = context.node_config.get("client-id")
    if claimed and str(claimed) != identity.client_id:
        raise MissingKeyError(f"node {context.node_id}: node config client-id {claimed!r} but its identity file is "
                              f"{identity.client_id!r}'s; give each node its own client-<i>.id")
    return identity


def load_roster(context: Context, locate: KeyLocator | None = None) -> Roster | None:
    """A key holder's roster of the clients' public keys, or None when it was given none."""
    path = (locate or default_roster_path)(context)
    return Roster.load(path) if path else None


def load_server_roster(source: Any) -> Roster | None:
    """The server's roster from a Roster, a path, or a run config mapping (``roster``); None where none is given
    (the strategy then refuses to start: it accepts signed uploads only)."""
    if isinstance(source, Mapping):
        source = source.get(ROSTER_CONFIG) or None
    if source is None or isinstance(source, Roster):
        return source
    if isinstance(source, (str, os.PathLike)):
        return Roster.load(source)
    raise AuthenticationError(f"roster: expected a secagg.signing.Roster or the path of roster.json, got "
                              f"{type(source).__name__}")


def load_server_epoch(source: Any) -> Epoch:
    """The server's epoch record (threshold keys) from an Epoch, a path, or a run config mapping (``epoch``).

    Raises:
        MissingPublicContextError: nothing given, or a file that is not an epoch record.
    """
    if isinstance(source, Epoch):
        return source
    if isinstance(source, Mapping):
        source = source.get(EPOCH_RUN_CONFIG) or None
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise MissingPublicContextError("the server has no epoch: pass epoch=epoch.json's path (written by `secfl keys "
                                        "ceremony`) or a secagg.epoch.Epoch")
    try:
        return Epoch.load(source)
    except (secagg.KeyFileError, secagg.CeremonyError) as exc:
        raise MissingPublicContextError(f"the server's epoch cannot be loaded: {exc}") from None


def load_server_context(source: Any) -> secagg.PublicContext:
    """The server's public context from a PublicContext, a path, bytes, or a run config mapping.

    Raises:
        MissingPublicContextError: nothing given, an unreadable file, or a secret context (the
            server must never hold one).
    """
    if isinstance(source, secagg.PublicContext):
        return source
    if isinstance(source, (secagg.SecretContext, secagg.KeySet)):
        raise MissingPublicContextError(
            "the server was given a secret key; give it the public context only (server.ctx, or keys.public)"
        )
    if isinstance(source, Mapping):
        value = source.get(SERVER_CONTEXT_CONFIG)
        if not value:
            raise MissingPublicContextError(
                f"the server has no public context: set the run config's {SERVER_CONTEXT_CONFIG!r} to the path of "
                f"server.ctx (flwr run . --run-config \"{SERVER_CONTEXT_CONFIG}='/abs/path/keys/server.ctx'\"); "
                "create it with `secfl keys generate --out keys/`"
            )
        source = Path(str(value))
    if source is None:
        raise MissingPublicContextError("the server has no public context: pass public_context=server.ctx's path or "
                                        "a secagg.PublicContext (create one with `secfl keys generate --out keys/`)")
    try:
        return secagg.load_public_context(source)
    except secagg.KeyFileError as exc:
        raise MissingPublicContextError(f"the server's public context cannot be loaded: {exc}") from None


def check_server_context(secret: secagg.SecretContext, *, fingerprint: object, context_bytes: object,
                         epoch: Any = None) -> None:
    """A client's check that the server's public context belongs to its own key set.

    ``context_bytes``, when the server sent them, are parsed and their fingerprint recomputed from
    their contents; otherwise only the fingerprint label is compared (a guard against mix-ups, not
    an authentication: a server could claim any fingerprint, but could not decrypt anyway). With
    threshold keys (``epoch``, the node's own epoch record) the server must name that epoch.
    """
    if epoch is not None:
        if fingerprint != epoch.id:
            raise secagg.KeyMismatchError(
                f"the server names key material {str(fingerprint)[:12]}..., this node is in epoch {epoch.id[:12]}...; "
                "give the server the epoch.json of this node's ceremony. Nothing was trained or sent")
        return
    if isinstance(context_bytes, bytes) and context_bytes:
        try:
            public = secagg.load_public_context(context_bytes)
        except secagg.KeyFileError as exc:
            raise secagg.KeyMismatchError(f"the server's public context is unusable: {exc}") from None
        if public.fingerprint != fingerprint:
            raise secagg.KeyMismatchError("the server's public context does not match the fingerprint it announced")
    if fingerprint != secret.fingerprint:
        raise secagg.KeyMismatchError(
            f"the server uses key set {str(fingerprint)[:12]}..., this client holds {secret.fingerprint[:12]}...; "
            "provision both from the same `secfl keys generate` run. Nothing was trained or sent"
        )

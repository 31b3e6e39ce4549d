"""What a node holds, loaded from its own configuration for one message: never from the server.

A node is a client (its own ``client.key``, signing identity, roster and ledger) and, with
threshold keys, may also sit on the committee (its ``holder.key`` and ``holder.shares``) of the
epoch named in its own ``epoch.json``. Every path comes from the node config, else from an
environment variable for local simulations; a folder stands for the layout ``secfl keys
ceremony`` writes (``<folder>/<client id>/client.key``, ``holder.key``, ``holder.shares``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode

import secagg
from secagg.committee import HolderKeys
from secagg.epoch import Epoch, HolderShares
from secagg.threshold import CommitteeMember

from . import records as R
from .errors import MissingIdentityError, MissingKeyError
from .keys import KeyLocator, client_id_of, default_key_path, identity_file, load_client_key, load_identity, load_roster
from .ledger import open_ledger

__all__ = ["Locators", "Party", "load_party", "load_member", "error_reply", "EPOCH_CONFIG", "EPOCH_ENV",
           "HOLDER_KEY_CONFIG", "HOLDER_KEY_ENV", "HOLDER_SHARES_CONFIG", "HOLDER_SHARES_ENV",
           "MIN_CONTRIBUTORS_CONFIG"]
log = logging.getLogger(__name__)

EPOCH_CONFIG, EPOCH_ENV = "epoch", "SECFL_EPOCH"
HOLDER_KEY_CONFIG, HOLDER_KEY_ENV = "holder-key", "SECFL_HOLDER_KEY"
HOLDER_SHARES_CONFIG, HOLDER_SHARES_ENV = "holder-shares", "SECFL_HOLDER_SHARES"
#: A node agrees to and releases only sums of at least this many clients (node config ``secfl-min-contributors``).
MIN_CONTRIBUTORS_CONFIG = "secfl-min-contributors"


@dataclass(frozen=True)
class Locators:
    """Where a node finds its key material (defaults: node config, then environment variables)."""

    key: KeyLocator | None = None
    identity: KeyLocator | None = None
    roster: KeyLocator | None = None
    ledger: KeyLocator | None = None
    epoch: KeyLocator | None = None
    holder_key: KeyLocator | None = None
    holder_shares: KeyLocator | None = None


def _configured(context: Context, locate: KeyLocator | None, config: str, env: str) -> str | None:
    path = locate(context) if locate is not None else (context.node_config.get(config) or os.environ.get(env))
    return str(path) if path else None


def _own_file(context: Context, path: str, name: str) -> Path:
    """``path``, or where it is a folder of the ceremony's layout, this node's ``<client id>/name`` in it."""
    p = Path(path)
    return p / client_id_of(context) / name if p.is_dir() else p


def load_epoch(context: Context, locate: KeyLocator | None = None) -> Epoch | None:
    """The node's own epoch record (threshold keys), or None for a shared key set."""
    path = _configured(context, locate, EPOCH_CONFIG, EPOCH_ENV)
    if path is None:
        return None
    try:
        return Epoch.load(path)
    except (secagg.KeyFileError, secagg.CeremonyError) as exc:
        raise MissingKeyError(f"node {context.node_id} cannot use its epoch record: {exc}") from None


@dataclass(frozen=True)
class Party:
    """What one node holds as a client, loaded from its own configuration for one message."""

    secret: secagg.SecretContext
    identity: secagg.ClientIdentity
    roster: secagg.Roster
    ledger: secagg.Ledger
    min_contributors: int
    epoch: Epoch | None = None

    def uploader(self) -> secagg.Uploader:
        return secagg.Uploader(self.secret, identity=self.identity, ledger=self.ledger, roster=self.roster,
                               min_contributors=self.min_contributors, epoch=self.epoch)

    @property
    def keys_id(self) -> str:
        """What the server must name as its key material: the epoch's id, or the shared key set's fingerprint."""
        return self.epoch.id if self.epoch is not None else self.secret.fingerprint


def _signer(context: Context, find: Locators) -> tuple[secagg.ClientIdentity, secagg.Roster, secagg.Ledger, int]:
    identity = load_identity(context, find.identity)
    if identity is None:
        raise MissingIdentityError(
            f"node {context.node_id} has no signing identity: start its SuperNode with --node-config "
            "'identity=\"/path/to/client-<i>.id\"' (local simulations: set SECFL_CLIENT_IDENTITY to the folder of "
            "`secfl keys generate --clients N`). Nothing was trained or sent")
    roster = load_roster(context, find.roster)
    if roster is None:
        raise MissingKeyError(
            f"node {context.node_id} has no roster to check the other contributors against: start it with "
            "--node-config 'roster=\"/path/to/roster.json\"' (local simulations: SECFL_ROSTER). Nothing was sent")
    ledger = open_ledger(context, client_id=identity.client_id, locate=find.ledger,
                         identity_file=identity_file(context, find.identity))
    minimum = (R.config_int(context.node_config, MIN_CONTRIBUTORS_CONFIG)
               if MIN_CONTRIBUTORS_CONFIG in context.node_config else secagg.DEFAULT_MIN_CONTRIBUTORS)
    return identity, roster, ledger, minimum


def load_party(context: Context, find: Locators) -> Party:
    """The node as a client: its key (``<folder>/<client id>/client.key`` where a folder is given), identity,
    roster, ledger and, with threshold keys, its epoch."""
    path = (find.key or default_key_path)(context)
    secret = load_client_key(context, lambda _: None if path is None else _own_file(context, str(path), "client.key"))
    identity, roster, ledger, minimum = _signer(context, find)
    return Party(secret, identity, roster, ledger, minimum, load_epoch(context, find.epoch))


def load_member(context: Context, find: Locators, **options: object) -> CommitteeMember:
    """The node as a committee member: its X25519 key, its shares, its epoch; no client key needed
    (a dedicated committee node uploads nothing).

    Raises:
        MissingKeyError: the node holds no epoch, holder key or shares (it is not on the committee),
            or they are not one member's of one committee.
    """
    epoch = load_epoch(context, find.epoch)
    key_path = _configured(context, find.holder_key, HOLDER_KEY_CONFIG, HOLDER_KEY_ENV)
    shares_path = _configured(context, find.holder_shares, HOLDER_SHARES_CONFIG, HOLDER_SHARES_ENV)
    if epoch is None or key_path is None or shares_path is None:
        raise MissingKeyError(
            f"node {context.node_id} is not on a committee: it needs --node-config '{EPOCH_CONFIG}=...', "
            f"'{HOLDER_KEY_CONFIG}=...' and '{HOLDER_SHARES_CONFIG}=...' (files of the key ceremony; local "
            f"simulations: {EPOCH_ENV}, {HOLDER_KEY_ENV}, {HOLDER_SHARES_ENV})")
    try:
        keys = HolderKeys.load(_own_file(context, key_path, "holder.key"))
        shares = HolderShares.load(_own_file(context, shares_path, "holder.shares"))
    except secagg.KeyFileError as exc:
        raise MissingKeyError(f"node {context.node_id} cannot use its committee seat: {exc}") from None
    identity, roster, ledger, minimum = _signer(context, find)
    try:
        return CommitteeMember(shares=shares, keys=keys, identity=identity, epoch=epoch, roster=roster, ledger=ledger,
                               min_contributors=minimum, **options)  # type: ignore[arg-type]
    except secagg.AuthenticationError as exc:
        raise MissingKeyError(f"node {context.node_id} cannot use its committee seat: {exc}") from None


def error_reply(msg: Message, exc: BaseException, *, what: str) -> Message:
    """A refusal as Flower's error reply: the exception's class and message, logged on the node."""
    reason = f"secfl {what}: {type(exc).__name__}: {exc}"
    log.error("node %s, %s: %s", msg.metadata.dst_node_id, msg.metadata.message_type, reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)

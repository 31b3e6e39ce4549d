"""Client side: the mod that encrypts a ClientApp's plaintext reply, and the key holder's release.

Use::

    app = ClientApp(mods=[secagg_mod, fixedclipping_mod])   # secagg_mod first: it is the outermost
    @app.train()
    def train(msg, context): ...                             # plain Flower code, returns the trained model
    enable_release(app)                                      # this node may release aggregates

Flower applies mods outermost first: ``mods=[a, b]`` runs ``a(msg, ctx, b(...))``. Every mod that
touches plaintext (clipping, local DP noise) must therefore come *after* ``secagg_mod`` in the list,
so that it sees the plaintext reply before ``secagg_mod`` encrypts it. A mod listed before it would
see only ciphertext bytes (Flower's ``fixedclipping_mod`` then replies with an error, since the
reply's array names no longer match the global model's).

On a train message ``secagg_mod``: refuses messages without the secfl configuration (no plaintext
reply to a plain FedAvg server); loads this node's secret key and checks it against the server's
public context before any training; strips the server's reference step; calls the app; computes
the update against the global model it received, the client's attention weights, and replaces the
reply's arrays with the ciphertext payload of ``Protocol.client_message``. When the round asks
for signed uploads (the server holds the roster), the payload goes out in an envelope signed with
the node's identity over the round commitment of the model and configuration it received; a node
that holds an identity refuses to upload to a server that does not ask for signatures, so a
server cannot quietly turn the key holders' model-consistency check off. Other messages pass
through untouched. Failures become error replies with the exception's class and message, logged on
the client; the plaintext never leaves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

import secagg
from secagg import signing as auth
from secagg.signing import ClientIdentity

from ..protocols import make_protocol
from ..round import ClientRole
from ..rules import FedAvg
from . import records as R
from .errors import MissingIdentityError, NotSecflMessageError, ReleaseRefusedError, UnsignedRoundError
from .keys import (
    KeyLocator,
    check_server_context,
    client_id_of,
    identity_file,
    load_client_key,
    load_identity,
    load_roster,
)
from .ledger import open_ledger

__all__ = ["make_secagg_mod", "secagg_mod", "make_release_handler", "enable_release", "MIN_RELEASE_CONTRIBUTORS"]
log = logging.getLogger(__name__)

Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]

ENCRYPTED_PROTOCOLS = ("client-scored", "server-scored")
#: A key holder releases only sums of at least this many clients (node config ``secfl-min-contributors``).
MIN_RELEASE_CONTRIBUTORS = 2


def _error_reply(msg: Message, exc: BaseException, *, what: str) -> Message:
    reason = f"secfl {what}: {type(exc).__name__}: {exc}"
    log.error("node %s, %s: %s", msg.metadata.dst_node_id, msg.metadata.message_type, reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)


def _single_config(msg: Message) -> ConfigRecord:
    configs = list(msg.content.config_records.values())
    if len(configs) != 1 or R.CONFIG_PROTOCOL not in configs[0]:
        raise NotSecflMessageError(
            "this train message carries no secfl configuration; the client refuses to send its update in "
            "plaintext (run the server with fedattn.flower.SecAggFedAvg)"
        )
    if R.CONFIG_ROUND not in configs[0]:
        raise NotSecflMessageError(f"this train message's config has no {R.CONFIG_ROUND!r} (Flower's FedAvg sets it)")
    return configs[0]


def _signing(context: Context, config: ConfigRecord, locate: KeyLocator | None) -> ClientIdentity | None:
    identity = load_identity(context, locate)
    signed = config.get(R.CONFIG_SIGNED, False) is True
    if signed and identity is None:
        raise MissingIdentityError(
            f"the server accepts signed uploads only and node {context.node_id} has no signing identity: start its "
            "SuperNode with --node-config 'identity=\"/path/to/client-<i>.id\"' (local simulations: set "
            "SECFL_CLIENT_IDENTITY to the folder of `secfl keys generate --clients N`). Nothing was trained or sent"
        )
    if identity is not None and not signed:
        raise UnsignedRoundError(
            f"node {context.node_id} signs its uploads as {identity.client_id!r}, but this server does not verify "
            "signatures, so the key holders could not check that every client got the same model; start "
            "SecAggFedAvg with roster=roster.json (or remove this node's identity). Nothing was trained or sent"
        )
    return identity


def make_secagg_mod(*, locate_key: KeyLocator | None = None, locate_identity: KeyLocator | None = None,
                    locate_ledger: KeyLocator | None = None) -> Mod:
    """A :data:`secagg_mod` that finds each node's ``client.key`` with ``locate_key``, its signing
    identity (a file, or the dealer's folder of ``client-<i>.id``) with ``locate_identity``, and
    the ledger of the rounds it signed (:mod:`fedattn.flower.ledger`) with ``locate_ledger``.

    The defaults look at the node config's ``secret-key`` / ``identity`` / ``secfl-ledger``, then
    ``SECFL_CLIENT_KEY`` / ``SECFL_CLIENT_IDENTITY`` / ``SECFL_LEDGER``; the ledger defaults to a
    file beside the identity.

    A signing node records the commitment of each round before it trains, in its ledger, and
    signs one update per round of a run: a second train message for this or an earlier round is
    refused (it would give the server two signed updates, or overwrite the view the node checks
    receipts against as a key holder).
    """

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if not msg.metadata.message_type.startswith(MessageType.TRAIN):
            return call_next(msg, context)
        try:
            config = _single_config(msg)
            secret = load_client_key(context, locate_key)
            check_server_context(secret, fingerprint=config.get(R.CONFIG_FINGERPRINT),
                                 context_bytes=config.get(R.CONFIG_CONTEXT))
            reference = None
            if R.REFERENCE_RECORD in msg.content.array_records:
                reference = R.to_numpy(msg.content.array_records[R.REFERENCE_RECORD], what="the reference step")
                del msg.content[R.REFERENCE_RECORD]  # the user's app (and Flower's mods) see one ArrayRecord
            records = list(msg.content.array_records.values())
            if len(records) != 1:
                raise ValueError(f"a train message should carry one ArrayRecord (the global model), got {len(records)}")
            global_state = R.to_numpy(records[0], what="the global model")
            rule = R.rule_from_spec(str(config[R.CONFIG_RULE]))
            protocol_name = str(config[R.CONFIG_PROTOCOL])
            if protocol_name not in ENCRYPTED_PROTOCOLS:  # "plain" would put the update on the wire in the clear
                raise NotSecflMessageError(f"the server asks for protocol {protocol_name!r}; this client sends "
                                           f"encrypted updates only ({', '.join(ENCRYPTED_PROTOCOLS)})")
            rnd = R.config_int(config, R.CONFIG_ROUND)
            identity = _signing(context, config, locate_identity)
            commitment = None
            if identity is not None:
                commitment = R.train_commitment(config, global_state, reference, run_id=msg.metadata.run_id)
                ledger = open_ledger(context, client_id=identity.client_id, locate=locate_ledger,
                                     identity_file=identity_file(context, locate_identity))
                ledger.claim_round(str(msg.metadata.run_id), rnd, commitment)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a specific error reply, never plaintext
            return _error_reply(msg, exc, what="refused to train")

        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        try:
            return _encrypt_reply(reply, context, secret=secret, global_state=global_state, reference=reference,
                                  rule=rule, protocol_name=protocol_name, rnd=rnd, identity=identity,
                                  commitment=commitment)
        except Exception as exc:  # noqa: BLE001
            return _error_reply(msg, exc, what="could not encrypt the update")

    mod.__name__ = mod.__qualname__ = "secagg_mod"
    return mod


def _encrypt_reply(reply: Message, context: Context, *, secret: secagg.SecretContext, global_state, reference, rule,
                   protocol_name: str, rnd: int, identity: ClientIdentity | None, commitment: str | None) -> Message:
    items = list(reply.content.array_records.items())
    if len(items) != 1:
        raise ValueError(f"the app's reply should carry one ArrayRecord (the trained model), got {len(items)}")
    key, record = items[0]
    local = R.to_numpy(record, what="the trained model")
    if list(local) != list(global_state):
        raise ValueError(f"the trained model's arrays {list(local)[:4]}... differ from the global model's "
                         f"{list(global_state)[:4]}...")
    update = {}
    for name, g in global_state.items():
        if local[name].shape != g.shape or not np.issubdtype(g.dtype, np.floating):
            raise ValueError(f"array {name!r}: shape {local[name].shape} vs {g.shape}, dtype {g.dtype}; secfl encrypts "
                             "floating-point arrays of the global model's shapes")
        update[name] = local[name] - g  # in the arrays' own dtype, as the standalone simulation does
    metrics = list(reply.content.metric_records.values())
    num_samples = R.config_int(metrics[0], R.WEIGHT_KEY) if len(metrics) == 1 and R.WEIGHT_KEY in metrics[0] else None
    if num_samples is None:
        if isinstance(rule, FedAvg) and not rule.equal_weights:
            raise ValueError(f"FedAvg weights need the reply's MetricRecord to hold {R.WEIGHT_KEY!r}")
        num_samples = 1
    client_id = identity.client_id if identity is not None else client_id_of(context)
    # the mod recorded this round in the node's ledger before training; the uploader's own record is
    # per message (a node answers one train message of a round)
    uploader = secagg.Uploader(secret, identity=identity, client_id=client_id)
    role = ClientRole(make_protocol(protocol_name, rule), client_id=client_id, uploader=uploader)
    message = role.message(update, num_samples=num_samples, reference=reference, run=str(context.run_id), round=rnd,
                           commitment=commitment or "")
    reply.content[key] = R.payload_record(message.payload)  # the plaintext record is replaced, not kept
    log.info("round %d: %s sent %d ciphertext bytes%s", rnd, client_id, len(message.payload),
             ", signed" if identity is not None else "")
    return reply


#: The mod with the default key lookup (node config ``secret-key``, else ``SECFL_CLIENT_KEY``).
secagg_mod = make_secagg_mod()


def make_release_handler(*, locate_key: KeyLocator | None = None, locate_roster: KeyLocator | None = None,
                         locate_identity: KeyLocator | None = None,
                         locate_ledger: KeyLocator | None = None) -> Callable[[Message, Context], Message]:
    """The key holder's answer to the server's release query (register it with :func:`enable_release`).

    It parses the aggregate under the node's secret key, refuses anything that is not a sum of at
    least ``secfl-min-contributors`` (node config, default 2) clients or that asks for a second
    release of the same round from this node, then returns ``secagg.decrypt_ratio``'s released,
    noise-flooded values.

    With a roster (``locate_roster``; default: node config ``roster``, else ``SECFL_ROSTER``) it
    releases only rounds of this run that it trained in itself, and only aggregates whose every
    named contributor sent a signed receipt for this round and key set, all committing to the
    model, configuration and run this node trained on (:func:`secagg.signing.check_receipts`): a
    server can name only clients that uploaded this round, cannot replay another run's uploads,
    and a model-inconsistency attack is refused. Receipts do not bind what the server summed: it
    can still add one client's ciphertext under another's receipt (computation integrity,
    ``docs/security.md``). A node with a signing identity (``locate_identity``) but no roster
    refuses to release, as does any node sent receipts without a roster. Without signing it can
    check only what the aggregate's header says (BRIEF section 3's honest-but-curious server).
    """

    def release(msg: Message, context: Context) -> Message:
        try:
            secret = load_client_key(context, locate_key)
            config = msg.content.config_records.get(R.RELEASE_CONFIG)
            if config is None or R.AGGREGATE_RECORD not in msg.content.array_records:
                raise NotSecflMessageError("a release query carries the secfl config and the encrypted aggregate")
            check_server_context(secret, fingerprint=config.get(R.CONFIG_FINGERPRINT), context_bytes=None)
            if R.CONFIG_ROUND not in config:
                raise NotSecflMessageError(f"a release query names its round ({R.CONFIG_ROUND!r})")
            rnd = R.config_int(config, R.CONFIG_ROUND)
            wire = R.payload_of(RecordDict({R.AGGREGATE_RECORD: msg.content.array_records[R.AGGREGATE_RECORD]}),
                                who="the server's release query", stype=R.AGGREGATE_STYPE)
            identity = load_identity(context, locate_identity)
            roster = load_roster(context, locate_roster)
            raw = config.get(R.RELEASE_RECEIPTS)
            if roster is None and (identity is not None or raw is not None):
                raise ReleaseRefusedError(
                    f"round {rnd}: this node signs its uploads (or was sent receipts) but holds no roster to check the "
                    "contributors' receipts against; start it with --node-config 'roster=\"/path/to/roster.json\"' (local simulations: "
                    "SECFL_ROSTER)")
            if roster is not None and raw is None:
                raise ReleaseRefusedError(
                    f"round {rnd}: this key holder releases aggregates of signed uploads only and the server sent "
                    "no receipts; start SecAggFedAvg with roster=roster.json")
            receipts = [auth.Receipt.from_dict(json.loads(str(r))) for r in raw] if isinstance(raw, list) else []
            ledger = open_ledger(context, client_id=identity.client_id if identity else client_id_of(context),
                                 identity_file=identity_file(context, locate_identity), locate=locate_ledger)
            minimum = R.config_int(context.node_config, "secfl-min-contributors") \
                if "secfl-min-contributors" in context.node_config else MIN_RELEASE_CONTRIBUTORS
            holder = secagg.KeyHolder(secret, roster=roster, min_contributors=minimum, ledger=ledger)
            released = holder.release(wire, run=str(msg.metadata.run_id), round=rnd, receipts=receipts)
        except Exception as exc:  # noqa: BLE001 - refusals are error replies with their reason
            return _error_reply(msg, exc, what="refused to release")
        log.info("round %d: released the aggregate of %d clients%s", rnd, len(released.contributors),
                 ", every receipt checked against the roster" if roster is not None else " (no roster: receipts unchecked)")
        content = RecordDict({
            R.RELEASED_RECORD: ArrayRecord({n: Array(np.asarray(v)) for n, v in released.values.items()}),
            R.RELEASE_CONFIG: ConfigRecord({"contributors": list(released.contributors)}),
        })
        return Message(content, reply_to=msg)

    return release


def enable_release(app: ClientApp, *, locate_key: KeyLocator | None = None, locate_roster: KeyLocator | None = None,
                   locate_identity: KeyLocator | None = None, locate_ledger: KeyLocator | None = None) -> ClientApp:
    """Register the release handler (``query.secfl_release``) on ``app``: its nodes become key holders."""
    app.query(R.RELEASE_ACTION)(make_release_handler(locate_key=locate_key, locate_roster=locate_roster,
                                                     locate_identity=locate_identity, locate_ledger=locate_ledger))
    return app

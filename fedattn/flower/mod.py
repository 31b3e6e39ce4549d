"""Client side: the mod that encrypts a ClientApp's plaintext reply, and the node's answers to the
server's contributor-set and release queries.

Use::

    app = ClientApp(mods=[secagg_mod, fixedclipping_mod])   # secagg_mod first: it is the outermost
    @app.train()
    def train(msg, context): ...                             # plain Flower code, returns the trained model
    enable_release(app)                                      # sign contributor sets, release as key holder

Flower applies mods outermost first: ``mods=[a, b]`` runs ``a(msg, ctx, b(...))``. Every mod that
touches plaintext (clipping, local DP noise) must therefore come *after* ``secagg_mod`` in the list,
so that it sees the plaintext reply before ``secagg_mod`` encrypts it.

A node is a party: its own ``client.key``, signing identity, roster and ledger, each from its own
node configuration (never from the server). On a train message ``secagg_mod``: refuses messages
without the secfl configuration (no plaintext reply to a plain FedAvg server); loads the node's
key material and checks the server's public context against it before any training; refuses a
second train message of a round it already uploaded for; computes the round commitment over the
model, the round's configuration **and the whole run config** (every value the ClientApp can read)
as received; calls the app; and replaces the reply's arrays with the signed upload of
:class:`secagg.Uploader`. On ``query.secfl_sign_set`` it signs the round's one contributor set if
that set names its own upload unchanged and whole enrolment groups; on ``query.secfl_release`` it
acts as :class:`secagg.KeyHolder` (verified, once per round, noise-flooded); with threshold keys
it answers the committee's queries instead (:mod:`fedattn.flower.committee`). Failures become
error replies with the exception's class and message, logged on the client; the plaintext never leaves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp

import secagg

from ..protocols import make_protocol
from ..round import ClientRole
from ..rules import AggregationRule, FedAvg
from . import records as R
from .committee import make_committee_handlers
from .errors import NotSecflMessageError
from .keys import KeyLocator, check_server_context
from .party import MIN_CONTRIBUTORS_CONFIG, Locators, Party, error_reply, load_party

__all__ = ["make_secagg_mod", "secagg_mod", "make_release_handler", "make_sign_handler", "enable_release",
           "MIN_RELEASE_CONTRIBUTORS", "MIN_CONTRIBUTORS_CONFIG"]
log = logging.getLogger(__name__)

Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]

ENCRYPTED_PROTOCOLS = ("client-scored", "server-scored")
#: A node agrees to and releases only sums of at least this many clients (node config ``secfl-min-contributors``).
MIN_RELEASE_CONTRIBUTORS = secagg.DEFAULT_MIN_CONTRIBUTORS


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


@dataclass(frozen=True)
class _Round:
    """A train message as the node received it, parsed and committed to."""

    party: Party
    global_state: dict[str, np.ndarray]
    reference: dict[str, np.ndarray] | None
    rule: AggregationRule
    protocol: str
    round: int
    run: str
    commitment: str


def _receive_train(msg: Message, context: Context, find: Locators) -> _Round:
    config = _single_config(msg)
    party = load_party(context, find)
    check_server_context(party.secret, fingerprint=config.get(R.CONFIG_FINGERPRINT),
                         context_bytes=config.get(R.CONFIG_CONTEXT), epoch=party.epoch)
    reference = None
    if R.REFERENCE_RECORD in msg.content.array_records:
        reference = R.to_numpy(msg.content.array_records[R.REFERENCE_RECORD], what="the reference step")
        del msg.content[R.REFERENCE_RECORD]  # the user's app (and Flower's mods) see one ArrayRecord
    records = list(msg.content.array_records.values())
    if len(records) != 1:
        raise ValueError(f"a train message should carry one ArrayRecord (the global model), got {len(records)}")
    global_state = R.to_numpy(records[0], what="the global model")
    protocol = str(config[R.CONFIG_PROTOCOL])
    if protocol not in ENCRYPTED_PROTOCOLS:  # "plain" would put the update on the wire in the clear
        raise NotSecflMessageError(f"the server asks for protocol {protocol!r}; this client sends encrypted updates "
                                   f"only ({', '.join(ENCRYPTED_PROTOCOLS)})")
    rnd, run = R.config_int(config, R.CONFIG_ROUND), str(msg.metadata.run_id)
    last = party.ledger.last_round(run)
    if last is not None and rnd <= last:
        raise secagg.ReplayError(f"this node already uploaded for round {last} of this run; a train message for round "
                                 f"{rnd} is refused before any training (one upload per round, rounds only grow)")
    commitment = R.train_commitment(config, global_state, reference, run_id=msg.metadata.run_id,
                                    run_config=context.run_config)
    return _Round(party, global_state, reference, R.rule_from_spec(str(config[R.CONFIG_RULE])), protocol, rnd, run,
                  commitment)


def make_secagg_mod(*, locate_key: KeyLocator | None = None, locate_identity: KeyLocator | None = None,
                    locate_ledger: KeyLocator | None = None, locate_roster: KeyLocator | None = None,
                    locate_epoch: KeyLocator | None = None, locate_holder_key: KeyLocator | None = None,
                    locate_holder_shares: KeyLocator | None = None, **key_holder_options: Any) -> Mod:
    """A :data:`secagg_mod` that finds each node's ``client.key``, signing identity (a file, or the
    dealer's folder of ``client-<i>.id``), roster and ledger with the given locators; with
    threshold keys its ``epoch.json`` and, on a committee member, ``holder.key`` and ``holder.shares``.

    The defaults look at the node config's ``secret-key`` / ``identity`` / ``roster`` /
    ``secfl-ledger`` / ``epoch`` / ``holder-key`` / ``holder-shares``, then ``SECFL_CLIENT_KEY`` /
    ``SECFL_CLIENT_IDENTITY`` / ``SECFL_ROSTER`` / ``SECFL_LEDGER`` / ``SECFL_EPOCH`` /
    ``SECFL_HOLDER_KEY`` / ``SECFL_HOLDER_SHARES``; the ledger defaults to a file beside the
    identity. A folder given for a key, an identity or a seat stands for ``secfl keys ceremony``'s
    layout (``<folder>/<client id>/client.key``...).

    The mod answers the server's secfl queries (signing the contributor set, releasing, the
    committee's steps) itself, before any inner mod or handler sees them (Flower's mods, e.g.
    ``fixedclipping_mod``, expect train messages). ``key_holder_options`` go to
    :class:`secagg.KeyHolder` (and ``max_weight`` / ``release_seed`` to a committee member).
    """
    find = Locators(locate_key, locate_identity, locate_roster, locate_ledger, locate_epoch, locate_holder_key,
                    locate_holder_shares)
    answers = _answers(find, key_holder_options)

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        answer = answers.get(msg.metadata.message_type)
        if answer is not None:
            return answer(msg, context)
        if not msg.metadata.message_type.startswith(MessageType.TRAIN):
            return call_next(msg, context)
        try:
            received = _receive_train(msg, context, find)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a specific error reply, never plaintext
            return error_reply(msg, exc, what="refused to train")
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        try:
            return _encrypt_reply(reply, received)
        except Exception as exc:  # noqa: BLE001
            return error_reply(msg, exc, what="could not encrypt the update")

    mod.__name__ = mod.__qualname__ = "secagg_mod"
    return mod


def _update(reply: Message, global_state: Mapping[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    items = list(reply.content.array_records.items())
    if len(items) != 1:
        raise ValueError(f"the app's reply should carry one ArrayRecord (the trained model), got {len(items)}")
    key, record = items[0]
    local = R.to_numpy(record, what="the trained model")
    if list(local) != list(global_state):
        raise ValueError("the trained model's arrays differ from the global model's (names or order)")
    update = {}
    for name, g in global_state.items():
        if local[name].shape != g.shape or not np.issubdtype(g.dtype, np.floating):
            raise ValueError(f"array {name!r} differs from the global model's in shape or dtype; secfl encrypts "
                             "floating-point arrays of the global model's shapes")
        update[name] = (local[name] - g).astype(g.dtype)  # in the global model's dtype, as the standalone simulation
    return key, update


def _encrypt_reply(reply: Message, rnd: _Round) -> Message:
    key, update = _update(reply, rnd.global_state)
    metrics = list(reply.content.metric_records.values())
    num_samples = R.config_int(metrics[0], R.WEIGHT_KEY) if len(metrics) == 1 and R.WEIGHT_KEY in metrics[0] else None
    if num_samples is None:
        if isinstance(rnd.rule, FedAvg) and not rnd.rule.equal_weights:
            raise ValueError(f"FedAvg weights need the reply's MetricRecord to hold {R.WEIGHT_KEY!r}")
        num_samples = 1
    party = rnd.party
    role = ClientRole(make_protocol(rnd.protocol, rnd.rule), client_id=party.identity.client_id, uploader=party.uploader())
    message = role.message(update, num_samples=num_samples, reference=rnd.reference, run=rnd.run, round=rnd.round,
                           commitment=rnd.commitment)
    reply.content[key] = R.payload_record(message.payload)  # the plaintext record is replaced, not kept
    log.info("round %d: %s sent %d signed ciphertext bytes", rnd.round, party.identity.client_id, len(message.payload))
    return reply


def make_sign_handler(find: Locators | None = None) -> Callable[[Message, Context], Message]:
    """A node's answer to the server's ``query.secfl_sign_set``: its signature of the round's one
    contributor set (:meth:`secagg.Uploader.sign_set`), or an error reply saying why not."""
    find = find or Locators()

    def sign(msg: Message, context: Context) -> Message:
        try:
            cset = R.set_of(msg.content)
            if cset.run != str(msg.metadata.run_id):
                raise secagg.ReplayError("the contributor set names another run than the one this node is in")
            signature = load_party(context, find).uploader().sign_set(cset)
        except Exception as exc:  # noqa: BLE001 - refusals are error replies with their reason
            return error_reply(msg, exc, what="refused to sign the contributor set")
        return Message(RecordDict({R.RELEASE_CONFIG: ConfigRecord({R.SIGNATURE_KEY: signature})}), reply_to=msg)

    return sign


def make_release_handler(*, locate_key: KeyLocator | None = None, locate_roster: KeyLocator | None = None,
                         locate_identity: KeyLocator | None = None, locate_ledger: KeyLocator | None = None,
                         **key_holder_options: Any) -> Callable[[Message, Context], Message]:
    """A node's answer to the server's ``query.secfl_release``: :meth:`secagg.KeyHolder.release` of
    the request (verified against the node's own roster and ledger, once per round, flooded).

    ``key_holder_options`` go to :class:`secagg.KeyHolder` (``trust_server_circuit=True`` and
    ``max_weight`` for the server-scored protocol, whose output no key holder can check).
    """
    return _release_handler(Locators(locate_key, locate_identity, locate_roster, locate_ledger), key_holder_options)


def _release_handler(find: Locators, key_holder_options: dict[str, Any]) -> Callable[[Message, Context], Message]:
    def release(msg: Message, context: Context) -> Message:
        try:
            party = load_party(context, find)
            config = msg.content.config_records.get(R.RELEASE_CONFIG)
            if config is None:
                raise NotSecflMessageError("a release query carries the secfl config")
            if party.epoch is not None:
                raise secagg.ReleaseRefusedError("this node holds threshold keys: its committee releases in quorums "
                                                 "(query.secfl_partial), no node releases alone")
            check_server_context(party.secret, fingerprint=config.get(R.CONFIG_FINGERPRINT), context_bytes=None)
            holder = secagg.KeyHolder(party.secret, identity=party.identity, roster=party.roster, ledger=party.ledger,
                                      min_contributors=party.min_contributors, **key_holder_options)
            released = holder.release(R.request_of(msg.content), run=str(msg.metadata.run_id))
        except Exception as exc:  # noqa: BLE001 - refusals are error replies with their reason
            return error_reply(msg, exc, what="refused to release")
        log.info("released the sum of %d clients after checking every receipt and signature", len(released.contributors))
        return Message(R.released_reply(released), reply_to=msg)

    return release


def _answers(find: Locators, key_holder_options: dict[str, Any]) -> dict[str, Callable[[Message, Context], Message]]:
    member_options = {k: v for k, v in key_holder_options.items() if k in ("max_weight", "release_seed")}
    return {R.SIGN_MESSAGE_TYPE: make_sign_handler(find),
            R.RELEASE_MESSAGE_TYPE: _release_handler(find, key_holder_options),
            **make_committee_handlers(find, **member_options)}


def enable_release(app: ClientApp, *, locate_key: KeyLocator | None = None, locate_roster: KeyLocator | None = None,
                   locate_identity: KeyLocator | None = None, locate_ledger: KeyLocator | None = None,
                   locate_epoch: KeyLocator | None = None, locate_holder_key: KeyLocator | None = None,
                   locate_holder_shares: KeyLocator | None = None, **key_holder_options: Any) -> ClientApp:
    """Register the node's answers to the server's queries on ``app``: signing the round's
    contributor set (``query.secfl_sign_set``, every client needs it), releasing as key holder
    (``query.secfl_release``) and, with threshold keys, the committee's steps
    (``query.secfl_ready``, ``query.secfl_partial``, ``query.secfl_combine``). Flower refuses a
    query with no registered handler before any mod runs; where ``secagg_mod`` is installed it
    answers these queries itself, with its own locators and options, and the handlers registered
    here stand behind it."""
    find = Locators(locate_key, locate_identity, locate_roster, locate_ledger, locate_epoch, locate_holder_key,
                    locate_holder_shares)
    for message_type, handler in _answers(find, key_holder_options).items():
        app.query(message_type.removeprefix("query."))(handler)
    return app


#: The mod with the default key lookup (node config, else environment variables).
secagg_mod = make_secagg_mod()

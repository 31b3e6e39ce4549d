"""What crosses Flower's wire: record keys, the ciphertext ``Array``, the rule and model conversions.

Only bytes and numbers cross: TenSEAL / SEAL objects do not pickle, and Flower's records hold
scalars, bytes and ``Array``s. A ciphertext payload (the versioned :mod:`secagg.wire` format)
travels as one ``Array`` of ``uint8`` with a secfl ``stype``; Flower's own code that calls
``Array.numpy()`` on it raises ``TypeError`` instead of misreading the bytes as numbers, which is
why Flower's DP wrappers and ``FedAvg.aggregate_train`` cannot be used on secfl replies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

import secagg
from secagg import ContributorSet, parse_json_object, round_commitment

from ..rules import AggregationRule, make_rule
from .errors import MissingCiphertextError, NotSecflMessageError

__all__ = [
    "CONFIG_PROTOCOL", "CONFIG_RULE", "CONFIG_FINGERPRINT", "CONFIG_CONTEXT", "CONFIG_ROUND", "REFERENCE_RECORD",
    "PAYLOAD_ARRAY", "PAYLOAD_STYPE", "AGGREGATE_RECORD", "AGGREGATE_STYPE", "RELEASE_ACTION",
    "RELEASE_MESSAGE_TYPE", "RELEASE_CONFIG", "RELEASED_RECORD", "WEIGHT_KEY", "SIGN_ACTION", "SIGN_MESSAGE_TYPE",
    "SET_KEY", "SIGNATURE_KEY", "payload_record", "payload_of", "config_int", "rule_spec", "rule_from_spec", "to_numpy",
    "to_record", "train_commitment", "set_query", "set_of", "signature_of", "release_query", "request_of", "released_of",
    "READY_ACTION", "READY_MESSAGE_TYPE", "PARTIAL_ACTION", "PARTIAL_MESSAGE_TYPE", "COMBINE_ACTION",
    "COMBINE_MESSAGE_TYPE", "ready_query", "ready_of", "quorum_query", "quorum_of", "partial_reply", "partial_of",
    "partials_of", "released_reply", "ready_reply", "ready_statement",
]

# keys of the one ConfigRecord of a train message (Flower's clipping mods insist on exactly one)
CONFIG_PROTOCOL = "secfl-protocol"
CONFIG_RULE = "secfl-rule"
CONFIG_FINGERPRINT = "secfl-fingerprint"
CONFIG_CONTEXT = "secfl-public-context"
CONFIG_ROUND = "server-round"  # set by Flower's FedAvg.configure_train
#: optional second ArrayRecord of a train message: the previous global step (cosine attention's
#: reference); the client mod removes it before the user's train function sees the message
REFERENCE_RECORD = "secfl-reference"

PAYLOAD_ARRAY = "secfl-payload"
PAYLOAD_STYPE = "secfl.encrypted-update.v1"
AGGREGATE_RECORD = "secfl-aggregate"
AGGREGATE_STYPE = "secfl.encrypted-aggregate.v1"

#: the server's request to a key holder: verify, release (noise-flood, round, then divide) one sum
RELEASE_ACTION = "secfl_release"
RELEASE_MESSAGE_TYPE = f"query.{RELEASE_ACTION}"
RELEASE_CONFIG = "secfl"
RELEASED_RECORD = "secfl-released"
#: the server's request to a contributor: sign the round's one contributor set
SIGN_ACTION = "secfl_sign_set"
SIGN_MESSAGE_TYPE = f"query.{SIGN_ACTION}"
SET_KEY = "contributor-set"
SIGNATURE_KEY = "signature"

#: threshold keys: is a committee member there for this epoch (and which member is it)?
READY_ACTION = "secfl_ready"
READY_MESSAGE_TYPE = f"query.{READY_ACTION}"
#: threshold keys: a member's partial decryption of the request for one quorum, sealed to the combiner
PARTIAL_ACTION = "secfl_partial"
PARTIAL_MESSAGE_TYPE = f"query.{PARTIAL_ACTION}"
PARTIAL_RECORD = "secfl-partials"
PARTIAL_STYPE = "secfl.partial.v1"
QUORUM_KEY = "quorum"
MEMBER_KEY = "member"
#: threshold keys: the combiner's release from the quorum's partials
COMBINE_ACTION = "secfl_combine"
COMBINE_MESSAGE_TYPE = f"query.{COMBINE_ACTION}"

#: the MetricRecord entry with the client's sample count (Flower's convention)
WEIGHT_KEY = "num-examples"


def payload_record(payload: bytes, *, name: str = PAYLOAD_ARRAY, stype: str = PAYLOAD_STYPE) -> ArrayRecord:
    """An ArrayRecord holding one ciphertext payload as bytes."""
    return ArrayRecord({name: Array(dtype="uint8", shape=(len(payload),), stype=stype, data=bytes(payload))})


def payload_of(content: RecordDict, *, who: str, stype: str = PAYLOAD_STYPE) -> bytes:
    """The one ciphertext payload in ``content``; a specific error when there is none.

    A reply with plaintext arrays is refused without reading them (their names are reported):
    it means the client app runs without :func:`fedattn.flower.secagg_mod`, or a mod outside it
    added plaintext after encryption.
    """
    found: list[tuple[str, Array]] = []
    plain: list[tuple[str, Array]] = []
    for record in content.array_records.values():
        for name, arr in record.items():
            (found if arr.stype == stype else plain).append((name, arr))
    if plain:
        names = sorted(n for n, _ in plain)[:5]
        raise MissingCiphertextError(
            f"{who} replied with plaintext arrays {names}{'...' if len(plain) > 5 else ''} "
            f"{'next to' if found else 'instead of'} its ciphertexts; the reply was dropped unused. Put "
            "fedattn.flower.secagg_mod first (outermost) in that ClientApp's mods"
        )
    if len(found) != 1:
        raise MissingCiphertextError(
            f"{who} replied with {len(found)} secfl payloads, expected exactly one (is secagg_mod installed on "
            "that ClientApp?)"
        )
    name, arr = found[0]
    if arr.dtype != "uint8" or tuple(arr.shape) != (len(arr.data),):
        raise MissingCiphertextError(f"{who}: payload {name!r} is not a byte array (dtype {arr.dtype}, shape {arr.shape})")
    return bytes(arr.data)


def rule_spec(name: str, options: Mapping[str, object]) -> str:
    """The rule as the clients rebuild it: JSON, so the round config carries it as one string."""
    return json.dumps({"name": name, "options": dict(options)}, sort_keys=True)


def rule_from_spec(spec: str) -> AggregationRule:
    data = json.loads(spec)
    if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
        raise ValueError(f"malformed secfl rule spec {spec[:80]!r}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in data["options"].items()}
    return make_rule(str(data.get("name")), **options)


def config_int(record: Mapping[str, object], key: str) -> int:
    """``record[key]`` as an int; a clear error when the sender put something else there."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{key!r} must be an integer, got a {type(value).__name__}")
    return int(value)


def to_numpy(record: ArrayRecord, *, what: str) -> dict[str, np.ndarray]:
    """Name -> numpy array; a clear error when an array is not a numpy array (e.g. a ciphertext)."""
    out = {}
    for name, arr in record.items():
        try:
            out[name] = arr.numpy()
        except TypeError:
            raise ValueError(f"{what}: array {name!r} has stype {arr.stype!r}, not a numpy array") from None
    return out


def to_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.asarray(a)) for name, a in state.items()})


def train_commitment(config: Mapping[str, object], global_state: Mapping[str, np.ndarray],
                     reference: Mapping[str, np.ndarray] | None = None, *, run_id: int,
                     run_config: Mapping[str, object] | None = None) -> str:
    """The round commitment a client signs for a train message, as it received it.

    It covers the Flower run, the round, every entry of the round's ConfigRecord (bytes by their
    BLAKE2b digest; the public context's bytes are left to the fingerprint they were checked
    against), **every value of the run config** (which the SuperLink controls and a ClientApp may
    read: learning rate, epochs, seeds...), the global model and, for cosine attention, the
    reference step. Clients of an honest server compute the same value; a server that gives one
    client another model, configuration or run config cannot hide it from the key holder, nor pass
    off a receipt of another run as one of this run.
    """
    def plain(v: object) -> object:
        if isinstance(v, bytes):  # a tagged object: no str value can hash like it
            return {"blake2b": hashlib.blake2b(v, digest_size=32).hexdigest()}
        return [plain(x) for x in v] if isinstance(v, list) else v

    public = {k: plain(v) for k, v in config.items() if k != CONFIG_CONTEXT}
    runtime = {str(k): plain(v) for k, v in (run_config or {}).items()}
    rnd = config_int(config, CONFIG_ROUND)
    step = None if reference is None else round_commitment(rnd, reference, {"secfl": "reference step"})
    return round_commitment(rnd, global_state, {"run": str(run_id), "train-config": public, "run-config": runtime,
                                                "reference": step})


def set_query(cset: ContributorSet) -> RecordDict:
    """A contributor-set signing request's content."""
    return RecordDict({RELEASE_CONFIG: ConfigRecord({SET_KEY: json.dumps(_set_dict(cset))})})


def _set_dict(cset: ContributorSet) -> dict[str, object]:
    return {"run": cset.run, "round": cset.round, "key_holder": cset.key_holder, "members": list(cset.members),
            "receipts": list(cset.receipts)}


def set_of(content: RecordDict) -> ContributorSet:
    """The contributor set in a signing request (validated; a malformed one is a PayloadError)."""
    config = content.config_records.get(RELEASE_CONFIG)
    raw = None if config is None else config.get(SET_KEY)
    if not isinstance(raw, str) or len(raw) > 2**22:
        raise NotSecflMessageError("a signing request carries one contributor set")
    return _parse_set(raw)


def _parse_set(raw: str) -> ContributorSet:
    data = parse_json_object(raw.encode(), what="the contributor set")
    if set(data) != {"run", "round", "key_holder", "members", "receipts"} or not isinstance(data["members"], list) \
            or not isinstance(data["receipts"], list) or isinstance(data["round"], bool) or not isinstance(data["round"], int):
        raise secagg.PayloadError("the contributor set is malformed")
    try:
        return ContributorSet(run=str(data["run"]), round=data["round"], key_holder=secagg.validate_client_id(
            data["key_holder"]), members=tuple(secagg.validate_client_id(m) for m in data["members"]),
            receipts=tuple(str(r) for r in data["receipts"]))
    except ValueError as exc:
        raise secagg.PayloadError(f"the contributor set is malformed: {exc}") from None


def signature_of(content: RecordDict) -> str:
    config = content.config_records.get(RELEASE_CONFIG)
    value = None if config is None else config.get(SIGNATURE_KEY)
    if not isinstance(value, str) or len(value) != 128:
        raise ValueError("the answer carries no set signature")
    return value


def release_query(request: bytes, *, round: int, fingerprint: str) -> RecordDict:
    return RecordDict({
        AGGREGATE_RECORD: payload_record(request, name="request", stype=AGGREGATE_STYPE),
        RELEASE_CONFIG: ConfigRecord({CONFIG_ROUND: round, CONFIG_FINGERPRINT: fingerprint}),
    })


def request_of(content: RecordDict) -> bytes:
    if AGGREGATE_RECORD not in content.array_records:
        raise NotSecflMessageError("a release query carries the secfl release request")
    return payload_of(RecordDict({AGGREGATE_RECORD: content.array_records[AGGREGATE_RECORD]}),
                      who="the server's release query", stype=AGGREGATE_STYPE)


def released_of(content: RecordDict, *, like: Mapping[str, np.ndarray] | None) -> secagg.Release:
    """A key holder's answer, checked against the global model's layout (``like``)."""
    record = content.array_records.get(RELEASED_RECORD)
    if record is None:
        raise ValueError("the answer carries no released aggregate")
    values = to_numpy(record, what="the released aggregate")
    if like is not None and (list(values) != list(like) or any(values[n].shape != np.shape(g) for n, g in like.items())):
        raise ValueError("the released aggregate does not have the global model's layout")
    if not all(np.all(np.isfinite(v)) for v in values.values()):
        raise ValueError("the released aggregate holds non-finite values")
    if not all(np.issubdtype(v.dtype, np.floating) for v in values.values()):
        raise ValueError("the released aggregate holds non-float arrays")
    config = content.config_records.get(RELEASE_CONFIG)
    said = None if config is None else config.get("contributors")
    if not isinstance(said, list) or not all(isinstance(c, str) for c in said):
        raise ValueError("the answer does not name whose sum it released")
    signature = config.get(SIGNATURE_KEY) if config is not None else None
    raw = config.get(SET_KEY) if config is not None else None
    cset = _parse_set(raw) if isinstance(raw, str) and len(raw) <= 2**22 else None
    return secagg.Release(values=values, contributors=tuple(str(c) for c in said), contributor_set=cset,
                          signature=signature if isinstance(signature, str) else "")


def ready_query(*, round: int, epoch: str) -> RecordDict:
    return RecordDict({RELEASE_CONFIG: ConfigRecord({CONFIG_ROUND: round, CONFIG_FINGERPRINT: epoch})})


def ready_reply(member: str, signature: bytes) -> RecordDict:
    return RecordDict({RELEASE_CONFIG: ConfigRecord({MEMBER_KEY: member, SIGNATURE_KEY: signature.hex()})})


def ready_of(content: RecordDict) -> tuple[str, bytes]:
    """The member id a node answered the readiness query with, and its signature of
    :func:`ready_statement` (checked by the server against the roster)."""
    config = content.config_records.get(RELEASE_CONFIG)
    member = None if config is None else config.get(MEMBER_KEY)
    signature = None if config is None else config.get(SIGNATURE_KEY)
    if not isinstance(member, str) or not isinstance(signature, str) or len(signature) != 128:
        raise ValueError("the answer names no committee member with its signature")
    try:
        return secagg.validate_client_id(member), bytes.fromhex(signature)
    except ValueError:
        raise ValueError("the readiness answer is malformed") from None


def quorum_query(request: bytes, *, round: int, epoch: str, quorum: list[str],
                 partials: Mapping[str, bytes] | None = None) -> RecordDict:
    """A partial query (no ``partials``) or the combiner's query (the quorum's partials)."""
    content = RecordDict({
        AGGREGATE_RECORD: payload_record(request, name="request", stype=AGGREGATE_STYPE),
        RELEASE_CONFIG: ConfigRecord({CONFIG_ROUND: round, CONFIG_FINGERPRINT: epoch, QUORUM_KEY: list(quorum)}),
    })
    if partials is not None:
        content[PARTIAL_RECORD] = ArrayRecord({m: Array(dtype="uint8", shape=(len(b),), stype=PARTIAL_STYPE,
                                                        data=bytes(b)) for m, b in partials.items()})
    return content


def quorum_of(content: RecordDict) -> tuple[str, list[str]]:
    """The epoch a quorum query names and its quorum (validated member ids)."""
    config = content.config_records.get(RELEASE_CONFIG)
    quorum = None if config is None else config.get(QUORUM_KEY)
    epoch = None if config is None else config.get(CONFIG_FINGERPRINT)
    if not isinstance(quorum, list) or not isinstance(epoch, str) or len(quorum) > 255:
        raise NotSecflMessageError("a quorum query carries the epoch and the quorum")
    try:
        return epoch, [secagg.validate_client_id(m) for m in quorum]
    except ValueError as exc:
        raise secagg.PayloadError(f"the quorum is malformed: {exc}") from None


def partial_reply(partial: bytes) -> RecordDict:
    return RecordDict({PARTIAL_RECORD: payload_record(partial, name="partial", stype=PARTIAL_STYPE)})


def partial_of(content: RecordDict, *, who: str) -> bytes:
    record = content.array_records.get(PARTIAL_RECORD)
    if record is None:
        raise ValueError(f"{who}'s answer carries no partial")
    return payload_of(RecordDict({PARTIAL_RECORD: record}), who=who, stype=PARTIAL_STYPE)


def partials_of(content: RecordDict) -> dict[str, bytes]:
    """The quorum's partials in the combiner's query, by member (bytes only; the combiner opens and checks them)."""
    record = content.array_records.get(PARTIAL_RECORD)
    if record is None:
        raise NotSecflMessageError("a combine query carries the quorum's partials")
    out = {}
    for name, arr in record.items():
        if arr.stype != PARTIAL_STYPE or arr.dtype != "uint8" or tuple(arr.shape) != (len(arr.data),):
            raise secagg.PayloadError("a partial in the combine query is not a byte array")
        out[name] = bytes(arr.data)
    return out


def released_reply(released: secagg.Release) -> RecordDict:
    """A key holder's or combiner's answer: the released values, whose sum they are, the contributor
    set and the releasing party's signature over both (the server checks it: :func:`released_of`)."""
    config = ConfigRecord({"contributors": list(released.contributors), SIGNATURE_KEY: released.signature})
    if released.contributor_set is not None:
        config[SET_KEY] = json.dumps(_set_dict(released.contributor_set))
    return RecordDict({
        RELEASED_RECORD: ArrayRecord({n: Array(np.asarray(v)) for n, v in released.values.items()}),
        RELEASE_CONFIG: config,
    })


def ready_statement(*, epoch: str, run: str, round: int, node: int) -> bytes:
    """What a committee member signs to say it is there: its epoch, the run, the round and its node."""
    return json.dumps({"secfl": "ready", "epoch": epoch, "run": run, "round": round, "node": node},
                      sort_keys=True, separators=(",", ":")).encode()

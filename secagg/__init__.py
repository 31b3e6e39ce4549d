"""secagg: CKKS-encrypted model updates that a server adds without a secret key, and that a key
holder decrypts only after verifying what it decrypts.

The whole flow, from key dealer to released aggregate::

    >>> import numpy as np
    >>> import secagg
    >>> keys = secagg.generate_keys(preset="strict")                       # dealer: the CKKS key set
    >>> ids, roster = secagg.generate_identities([f"client-{k}" for k in range(4)])  # each client's signing key
    >>> ledgers = {c: secagg.MemoryLedger() for c in ids}                   # each client's own records
    >>> clients = {c: secagg.Uploader(keys.secret, identity=ids[c], ledger=ledgers[c], roster=roster) for c in ids}
    >>> model = {"layer": np.zeros(5, np.float32)}                          # what the server sent
    >>> commitment = secagg.round_commitment(3, model, {"run": "run-1"})
    >>> uploads = [clients[c].upload({"layer": np.full(5, 0.01 * k, np.float32)}, run="run-1", round=3,
    ...                              commitment=commitment) for k, c in enumerate(ids)]
    >>> server = secagg.Aggregator(keys.public, roster=roster).open_round(
    ...     run="run-1", round=3, layout=secagg.Layout.of(model))            # server: public context only
    >>> for u in uploads:
    ...     receipt = server.receive(u)
    >>> cset = server.contributor_set(key_holder="client-0")                 # the round's one set
    >>> request = server.request(cset, {c: clients[c].sign_set(cset) for c in cset.members})
    >>> holder = secagg.KeyHolder(keys.secret, identity=ids["client-0"], roster=roster, ledger=ledgers["client-0"])
    >>> np.round(holder.release(request).values["layer"].astype(float), 5).tolist()   # verified, flooded, once
    [0.06, 0.06, 0.06, 0.06, 0.06]
"""

from .errors import *  # noqa: F403 - the exception hierarchy is part of the public API
from .errors import __all__ as _errors_all
from .framing import parse_json_object
from .keys import KeySet, PublicContext, SecretContext, generate_keys, load_public_context, load_secret_context
from .ledger import FileLedger, Ledger, MemoryLedger
from .local import local_round
from .messages import FORMAT_VERSION, ContributorSet, Receipt
from .packing import Layout
from .parallel import PARALLEL_MIN_CHUNKS, choose_workers, worker_limit
from .presets import DEFAULT_PRESET, PRESETS, Preset, get_preset, register_preset, sized_preset
from .release import release
from .roles import (
    DEFAULT_MIN_CONTRIBUTORS,
    WEIGHTS_ENTRY,
    Aggregator,
    KeyHolder,
    Release,
    RoundAggregate,
    Uploader,
    max_payload_bytes,
)
from .signing import (
    DEFAULT_GROUP_SIZE,
    ClientIdentity,
    Roster,
    deal_identities,
    generate_identities,
    round_commitment,
    validate_client_id,
    write_private,
)

__all__ = [
    "KeySet", "PublicContext", "SecretContext", "generate_keys", "load_public_context", "load_secret_context",
    "FileLedger", "Ledger", "MemoryLedger", "FORMAT_VERSION", "ContributorSet", "Receipt", "Layout",
    "PARALLEL_MIN_CHUNKS", "choose_workers", "worker_limit", "DEFAULT_PRESET", "PRESETS", "Preset", "get_preset", "register_preset", "sized_preset",
    "release", "DEFAULT_MIN_CONTRIBUTORS", "WEIGHTS_ENTRY", "Aggregator", "KeyHolder", "Release", "RoundAggregate",
    "Uploader", "max_payload_bytes", "DEFAULT_GROUP_SIZE", "ClientIdentity", "Roster", "deal_identities",
    "generate_identities", "round_commitment", "validate_client_id", "write_private", "parse_json_object", "local_round",
    *_errors_all,
]
__version__ = "0.2.0"

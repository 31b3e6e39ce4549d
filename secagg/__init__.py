"""secagg: CKKS-encrypted model updates that a server can add and weight without a secret key.

The whole flow, from key dealer to released aggregate::

    >>> import numpy as np
    >>> import secagg
    >>> keys = secagg.generate_keys(preset="strict")           # dealer
    >>> updates = [secagg.encrypt_update({"layer": np.full(5, 0.01 * k, np.float32)}, keys.secret,
    ...                                  round=3, client_id=f"client-{k}") for k in range(4)]  # clients
    >>> wire = [u.to_bytes() for u in updates]
    >>> received = [secagg.EncryptedUpdate.from_bytes(b, keys.public, expected_round=3) for b in wire]  # server
    >>> total = secagg.aggregate(received, keys.public)
    >>> np.round(secagg.decrypt(total, keys.secret)["layer"].astype(float), 5).tolist()  # key holders
    [0.06, 0.06, 0.06, 0.06, 0.06]
"""

from .aggregate import RunningSum, aggregate
from .decrypt import decrypt, decrypt_ratio
from .encrypt import WEIGHTS_ENTRY, encrypt_update
from .errors import *  # noqa: F403 - the exception hierarchy is part of the public API
from .errors import __all__ as _errors_all
from .keys import KeySet, PublicContext, SecretContext, generate_keys, load_public_context, load_secret_context
from .ledger import FileLedger, Ledger, MemoryLedger
from .packing import Layout
from .parallel import PARALLEL_MIN_CHUNKS, choose_workers
from .presets import DEFAULT_PRESET, PRESETS, Preset, get_preset, register_preset
from .release import release
from .roles import DEFAULT_MIN_CONTRIBUTORS, Aggregator, KeyHolder, Received, Release, Uploader
from .signing import ClientIdentity, Receipt, Roster, deal_identities, generate_identities, round_commitment
from .wire import FORMAT_VERSION, EncryptedUpdate, max_payload_bytes, validate_client_id

__all__ = [
    "aggregate", "RunningSum", "decrypt", "decrypt_ratio", "encrypt_update", "WEIGHTS_ENTRY", "KeySet",
    "PublicContext", "SecretContext", "generate_keys", "load_public_context", "load_secret_context", "Layout",
    "DEFAULT_PRESET", "PRESETS", "Preset", "get_preset", "register_preset", "release", "FORMAT_VERSION",
    "EncryptedUpdate", "max_payload_bytes", "validate_client_id", "choose_workers", "PARALLEL_MIN_CHUNKS",
    "Uploader", "Aggregator", "KeyHolder", "Received", "Release", "DEFAULT_MIN_CONTRIBUTORS", "Ledger", "MemoryLedger", "FileLedger",
    "ClientIdentity", "Receipt", "Roster", "generate_identities", "deal_identities", "round_commitment",
    *_errors_all,
]
__version__ = "0.1.0"

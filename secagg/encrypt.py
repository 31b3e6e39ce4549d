"""Client side: validate an update, pack it densely and encrypt it.

Example:
    >>> import numpy as np
    >>> from secagg import generate_keys, encrypt_update
    >>> keys = generate_keys(preset="compact")
    >>> update = {"fc.weight": np.full((4, 3), 0.01, np.float32), "fc.bias": np.zeros(4, np.float32)}
    >>> enc = encrypt_update(update, keys.secret, round=0, client_id="alice")
    >>> enc.kind, enc.contributors, len(enc.terms)
    ('update', ('alice',), 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from . import parallel, sealio
from ._check import integer
from .errors import InvalidUpdateError, NonFiniteValueError, ValueOutOfRangeError
from .keys import PublicContext, SecretContext
from .packing import Layout, as_arrays
from .wire import EncryptedUpdate, chunk_terms, validate_client_id

__all__ = ["encrypt_update", "WEIGHTS_ENTRY", "encrypt_chunks"]

#: Name of the array that carries a client's per-layer weights in the ratio form.
WEIGHTS_ENTRY = "__secagg_weights__"


def encrypt_update(
    update: Mapping[str, Any],
    context: SecretContext | PublicContext,
    *,
    round: int,
    client_id: str,
    weights: float | Mapping[str, float] | None = None,
    workers: int | None = None,
) -> EncryptedUpdate:
    """Encrypt one client's update.

    Args:
        update: name -> float array (any shapes; e.g. a ``state_dict`` difference).
        context: a :class:`SecretContext` (symmetric, seeded ciphertexts: the compact default)
            or a :class:`PublicContext` (public-key encryption: twice the bytes).
        round: the federated round, checked by the server against replays.
        client_id: this client's id (letters, digits and ``_.:@/+-``).
        weights: the ratio form of attention aggregation (BRIEF section 2): a positive weight
            ``w`` per layer (or one for all). The client then sends ``Enc(w_l * update_l)`` and
            ``Enc(w_l)``; after summing, :func:`secagg.decrypt_ratio` returns
            ``sum_k w_kl update_kl / sum_k w_kl``. Weighted values must stay within ``max_abs``.
        workers: processes to encrypt with; ``None`` picks 2 for large updates on multi-core
            machines, 1 otherwise.

    Raises:
        InvalidUpdateError: not a mapping of float arrays, or empty.
        NonFiniteValueError: NaN or infinity anywhere.
        ValueOutOfRangeError: a value beyond the preset's ``max_abs`` (CKKS would wrap silently).
    """
    rnd = _check_round(round)
    client_id = _check_id(client_id)
    if not isinstance(context, (SecretContext, PublicContext)):
        raise TypeError(f"context must be a SecretContext or PublicContext, got {type(context).__name__}")
    preset = context.preset
    arrays = as_arrays(update)
    if WEIGHTS_ENTRY in arrays:
        raise InvalidUpdateError(f"the name {WEIGHTS_ENTRY!r} is reserved for the ratio form's weights")
    _check_finite(arrays)
    if weights is not None:
        arrays = _apply_weights(arrays, weights)
    layout = Layout.of(arrays)
    if layout.total == 0:
        raise InvalidUpdateError("the update holds no values (every array is empty)")
    vector = layout.pack(arrays)
    _check_range(vector, layout, preset.max_abs, preset.name)
    blobs = encrypt_chunks(vector, context, workers=workers)
    public = isinstance(context, PublicContext)
    return EncryptedUpdate(
        preset=preset,
        fingerprint=context.fingerprint,
        round=rnd,
        kind="update",
        contributors=(client_id,),
        layout=layout,
        terms=chunk_terms(layout, preset.values_per_ciphertext),
        scale_bits=float(preset.scale_bits),
        bound=preset.max_abs,
        noise_std=preset.noise_std(public_key=public),
        encryption="public" if public else "symmetric",
        blobs=blobs,
    )


def encrypt_chunks(vector: np.ndarray, context: SecretContext | PublicContext, *, workers: int | None = None) -> list[bytes]:
    """Encrypt a packed float64 vector chunk by chunk; returns one serialised ciphertext each."""
    per_ct = context.preset.values_per_ciphertext
    n_chunks = max(1, -(-vector.size // per_ct))
    n_workers = parallel.choose_workers(n_chunks, workers)
    if n_workers > 1 and isinstance(context, SecretContext):
        return parallel.encrypt(vector, context, n_workers)
    return encrypt_range(vector, context, 0, n_chunks)


def encrypt_range(vector: np.ndarray, context: SecretContext | PublicContext, first: int, last: int) -> list[bytes]:
    """Encrypt chunks ``first..last-1`` of ``vector`` (the unit of work of one process)."""
    per_ct = context.preset.values_per_ciphertext
    scale = context.scale
    symmetric = isinstance(context, SecretContext)
    out = []
    buf = np.zeros(per_ct, dtype=np.float64)
    for j in range(first, last):
        chunk = vector[j * per_ct:(j + 1) * per_ct]
        buf[:chunk.size] = chunk
        buf[chunk.size:] = 0.0
        plain = sealapi.Plaintext()
        context.encoder.encode((buf[0::2] + 1j * buf[1::2]).tolist(), scale, plain)
        if symmetric:
            out.append(sealio.dump(context.encryptor.encrypt_symmetric(plain)))
        else:
            ct = sealapi.Ciphertext()
            context.encryptor.encrypt(plain, ct)
            out.append(sealio.dump(ct))
    return out


def _check_round(value: Any) -> int:
    return integer("round", value)


def _check_id(client_id: Any) -> str:
    return validate_client_id(client_id)


def _check_finite(arrays: Mapping[str, np.ndarray]) -> None:
    for name, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise NonFiniteValueError(
                f"array {name!r} holds {bad} NaN or infinite values; CKKS cannot encrypt them. "
                "Check the local training (diverged loss?) before sending"
            )


def _check_range(vector: np.ndarray, layout: Layout, max_abs: float, preset_name: str) -> None:
    peak = float(np.max(np.abs(vector))) if vector.size else 0.0
    if peak > max_abs:
        worst = max(layout.layers, key=lambda s: float(np.max(np.abs(vector[s.offset:s.stop]), initial=0.0)))
        raise ValueOutOfRangeError(
            f"array {worst.name!r} holds |value| = {peak:.4g} > {max_abs:g}, the safe range of preset "
            f"{preset_name!r}; CKKS would wrap around silently. Clip or scale the update (and undo the "
            "scaling after decryption), or use a preset with a larger max_abs"
        )


def _apply_weights(arrays: dict[str, np.ndarray], weights: float | Mapping[str, float]) -> dict[str, np.ndarray]:
    names = list(arrays)
    if isinstance(weights, Mapping):
        if set(weights) != set(names):
            raise InvalidUpdateError(
                f"weights name {sorted(set(weights) ^ set(names))[:5]} not matching the update; give one weight per array"
            )
        per_layer = [weights[n] for n in names]
    else:
        per_layer = [weights] * len(names)
    try:
        w = np.array(per_layer, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidUpdateError("weights must be real numbers") from None
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InvalidUpdateError(f"weights must be finite and non-negative, got {per_layer[:5]}")
    out = {n: (arrays[n] * w[i]).astype(arrays[n].dtype) for i, n in enumerate(names)}
    out[WEIGHTS_ENTRY] = w
    return out

"""Key-holder side: decrypt an (aggregated) update, check it, and release it safely.

Example:
    >>> import numpy as np
    >>> from secagg import generate_keys, encrypt_update, aggregate, decrypt_ratio
    >>> keys = generate_keys(preset="strict")
    >>> ups = [encrypt_update({"w": np.full(2, x)}, keys.secret, round=0, client_id=f"c{i}", weights=w)
    ...        for i, (x, w) in enumerate([(0.2, 1.0), (0.8, 0.25)])]
    >>> np.round(decrypt_ratio(aggregate(ups, keys.public), keys.secret)["w"], 6).tolist()  # (0.2 + 0.2) / 1.25
    [0.32, 0.32]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from .encrypt import WEIGHTS_ENTRY
from .errors import EmptyAggregationError, HeadroomError, MissingSecretKeyError, PayloadError
from .keys import PublicContext, SecretContext
from .release import release
from .wire import EncryptedUpdate

__all__ = ["decrypt", "decrypt_ratio", "decrypt_raw"]


def _require_secret(context: Any) -> SecretContext:
    if isinstance(context, PublicContext):
        context.decrypt()  # raises MissingSecretKeyError with instructions
    if not isinstance(context, SecretContext):
        raise MissingSecretKeyError(f"decryption needs a SecretContext (client.key), got {type(context).__name__}")
    return context


def _decode(ct: sealapi.Ciphertext, context: SecretContext) -> np.ndarray:
    plain = sealapi.Plaintext()
    try:
        context.decryptor.decrypt(ct, plain)
        z = np.asarray(context.encoder.decode_complex(plain))
    except Exception as exc:  # SEAL refuses a malformed ciphertext that slipped past parsing
        raise PayloadError(f"a ciphertext cannot be decrypted ({type(exc).__name__}: {exc}); discard it") from None
    out = np.empty(2 * z.size, dtype=np.float64)
    out[0::2], out[1::2] = z.real, z.imag
    return out


def decrypt_raw(update: EncryptedUpdate, context: SecretContext) -> np.ndarray:
    """The packed plaintext vector, **unreleased**: for use inside the key holders only.

    Raises:
        HeadroomError: a value exceeds the update's public bound (overflow, or a tampered
            ciphertext); nothing is returned.
    """
    context = _require_secret(context)
    # serial on purpose: parsing already loaded every ciphertext here, and SEAL objects cannot
    # cross processes; a worker would have to load each blob again, which costs more than it saves
    decoded = [_decode(ct, context) for ct in update.load(context)]
    per_ct = context.preset.values_per_ciphertext
    vector = np.empty(update.layout.total, dtype=np.float64)
    for term, values in zip(update.terms, decoded):
        base = term.position * per_ct
        vector[term.start:term.stop] = values[term.start - base:term.stop - base]
    slack = update.bound * 1e-6 + 64 * update.noise_std
    peak = float(np.max(np.abs(vector)))
    if not math.isfinite(peak) or peak > update.bound + slack:
        raise HeadroomError(
            f"decrypted {update._who()} holds |value| = {peak:.4g}, beyond its bound {update.bound:.4g}: the "
            "aggregate overflowed or a ciphertext was tampered with; discard this round"
        )
    return vector


def _released(update: EncryptedUpdate, context: SecretContext, flood_bits: int | None, seed: int | None) -> np.ndarray:
    vector = decrypt_raw(update, context)
    bits = update.preset.flood_bits if flood_bits is None else flood_bits
    floor = update.preset.noise_std(public_key=update.encryption == "public")
    return release(vector, noise_std=max(update.noise_std, floor), flood_bits=bits, seed=seed)


def decrypt(
    update: EncryptedUpdate,
    context: SecretContext,
    *,
    flood_bits: int | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Decrypt and **release** an update: noise-flooded and rounded (see :mod:`secagg.release`).

    Args:
        flood_bits: flooding level in bits above the CKKS noise; default: the preset's.
        seed: makes the flooding reproducible (tests only: production noise uses the OS CSPRNG).

    Returns:
        name -> array with the original shapes and dtypes.
    """
    vector = _released(update, context, flood_bits, seed)
    return update.layout.unpack(vector)


def decrypt_ratio(
    update: EncryptedUpdate,
    context: SecretContext,
    *,
    flood_bits: int | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Release the ratio form: ``sum_k w_kl x_kl / sum_k w_kl`` for every layer ``l``.

    The update must be a sum of updates encrypted with ``encrypt_update(..., weights=...)``.
    Numerator and denominator are released (flooded) first, then divided.

    Raises:
        PayloadError: the update carries no weights.
        EmptyAggregationError: a layer's total weight is not distinguishable from zero.
    """
    if WEIGHTS_ENTRY not in update.layout.names:
        raise PayloadError("this update was not encrypted in the ratio form (encrypt_update(..., weights=...))")
    vector = _released(update, context, flood_bits, seed)
    spec = update.layout[WEIGHTS_ENTRY]
    denominators = vector[spec.offset:spec.stop]
    noise = 2.0 ** (update.preset.flood_bits if flood_bits is None else flood_bits) * max(update.noise_std, 1e-300)
    out: dict[str, np.ndarray] = {}
    for i, layer in enumerate(s for s in update.layout.layers if s.name != WEIGHTS_ENTRY):
        den = denominators[i]
        if not den > 8 * noise:
            raise EmptyAggregationError(
                f"the total weight of {layer.name!r} is {den:.3g}, indistinguishable from zero; every client "
                "sent weight ~0 for it, so there is nothing to average"
            )
        out[layer.name] = (vector[layer.offset:layer.stop] / den).reshape(layer.shape).astype(layer.dtype)
    return out

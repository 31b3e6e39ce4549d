"""SEAL objects of a preset that hold no key, built once per process: its encoder and evaluator,
and the metadata SEAL writes before a ciphertext's and a plaintext's residues (so
that :class:`secagg.ring.Ring` can hand SEAL numpy arrays as SEAL's own serialised objects)."""

from __future__ import annotations

from functools import lru_cache

import tenseal.sealapi as sealapi

from . import sealio
from .keys import seal_context
from .presets import Preset

__all__ = ["seal_tools", "templates", "batch_template", "MAX_POLYS"]

#: The most polynomials a SEAL ciphertext holds (``SEAL_CIPHERTEXT_SIZE_MAX``).
MAX_POLYS = 16


@lru_cache(maxsize=16)
def seal_tools(preset: Preset) -> tuple[sealapi.CKKSEncoder, sealapi.Evaluator]:
    """A preset's encoder and evaluator (no key in either; SEAL's bindings hold the GIL, so threads
    never use one at the same time)."""
    context = seal_context(preset)
    return sealapi.CKKSEncoder(context), sealapi.Evaluator(context)


@lru_cache(maxsize=16)
def templates(preset: Preset) -> tuple[bytes, bytes, bytes]:
    """The serialised metadata SEAL writes before a data-level ciphertext's and plaintext's residues
    (the plaintext at the preset's scale, and at scale 1)."""
    ctx = seal_context(preset)
    keygen = sealapi.KeyGenerator(ctx)  # a throwaway key: only the object's layout is taken
    public = sealapi.PublicKey()
    keygen.create_public_key(public)
    encoder = sealapi.CKKSEncoder(ctx)
    plain = sealapi.Plaintext()
    encoder.encode(0.0, ctx.first_parms_id(), 2.0**preset.scale_bits, plain)
    ct = sealapi.Ciphertext()
    sealapi.Encryptor(ctx, public).encrypt(plain, ct)
    limbs = len(ctx.first_context_data().parms().coeff_modulus())
    polys = 8 * limbs * preset.poly_modulus_degree
    unit = sealapi.Plaintext()
    encoder.encode(0.0, ctx.first_parms_id(), 1.0, unit)
    ct_raw = sealio.inflate(sealio.dump(ct), max_inflated=4 * polys, what="a template")
    pt_raw = sealio.inflate(sealio.dump(plain), max_inflated=4 * polys, what="a template")
    unit_raw = sealio.inflate(sealio.dump(unit), max_inflated=4 * polys, what="a template")
    return ct_raw[:len(ct_raw) - 2 * polys], pt_raw[:len(pt_raw) - polys], unit_raw[:len(unit_raw) - polys]


@lru_cache(maxsize=64)
def batch_template(preset: Preset, size: int) -> bytes:
    """The serialised metadata before the residues of a data-level ciphertext of ``size``
    polynomials (2 to :data:`MAX_POLYS`), NTT form, scale 1: SEAL transforms and multiplies every
    polynomial of a ciphertext in one call, so unrelated polynomials can share one."""
    if not 2 <= size <= MAX_POLYS:
        raise ValueError(f"size must lie in [2, {MAX_POLYS}], got {size}")
    ctx = seal_context(preset)
    keygen = sealapi.KeyGenerator(ctx)  # a throwaway key, as above
    public = sealapi.PublicKey()
    keygen.create_public_key(public)
    unit = sealapi.Plaintext()
    sealapi.CKKSEncoder(ctx).encode(0.0, ctx.first_parms_id(), 1.0, unit)
    ct = sealapi.Ciphertext()
    sealapi.Encryptor(ctx, public).encrypt(unit, ct)
    ct.resize(ctx, size)
    polys = 8 * len(ctx.first_context_data().parms().coeff_modulus()) * preset.poly_modulus_degree
    raw = sealio.inflate(sealio.dump(ct), max_inflated=(size + 2) * polys, what="a template")
    return raw[:len(raw) - size * polys]

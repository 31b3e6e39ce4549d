"""SEAL's own buffers as numpy arrays, where the pinned TenSEAL build allows it.

TenSEAL's bindings move a SEAL object's residues only through a file, and SEAL's ``save``
compresses them with zstd: for a client's batch of 15 polynomials that costs more than the NTT
itself, and every copy through the file is one more place a secret passes. The bindings do give
the C++ object's address (behind the pybind11 instance's value pointer, the first word after the
Python object header) and SEAL 4.1's classes keep their fields at fixed offsets, so a buffer can
be read and written in place:

==========  ======  ===========================================================
class       offset  field
==========  ======  ===========================================================
Ciphertext  0       ``parms_id`` (4 x u64)
Ciphertext  32      ``is_ntt_form`` (bool)
Ciphertext  40      size (polynomials), then 48 ``N``, 56 primes, 64 scale (f64)
Ciphertext  80      ``DynArray``: 96 capacity, 104 size (u64s), 112 data pointer
Plaintext   0       ``parms_id``, then 32 coefficient count, 40 scale (f64)
Plaintext   48      ``DynArray``: 64 capacity, 72 size (u64s), 80 data pointer
==========  ======  ===========================================================

Nothing here is trusted on faith. :func:`available` is true only where TenSEAL is the pinned
version and a self-check at first use passes: for a ciphertext (in both forms) and a plaintext
that SEAL built, every field read this way equals what the bindings report, and the buffer equals SEAL's own
serialisation of it, residue for residue. Each access checks the fields again against the
bindings (sizes, scale, NTT flag) before it touches the buffer, and only SEAL's own two types are
read. Where any of this fails, callers take the file path (:mod:`secagg.sealio`), which gives the
same results, byte for byte. The module hands out copies, never views: a view of SEAL's buffer
outlives it when SEAL reallocates (an addition of a larger ciphertext does).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal
import tenseal.sealapi as sealapi

__all__ = ["available", "disable", "new_ciphertext", "new_plaintext", "read", "wipe"]

log = logging.getLogger(__name__)

_TESTED_TENSEAL = "0.3.18"  # the layout above is SEAL 4.1's, as this TenSEAL release ships it
_OBJECT_HEADER = 16  # ob_refcnt, ob_type: pybind11 keeps the C++ object's address right after them
_CT_NTT, _CT_SIZE, _CT_N, _CT_PRIMES, _CT_SCALE, _CT_CAP, _CT_LEN, _CT_DATA = 32, 40, 48, 56, 64, 96, 104, 112
_PT_COUNT, _PT_SCALE, _PT_CAP, _PT_LEN, _PT_DATA = 32, 40, 64, 72, 80

_state: bool | None = None  # None: not checked yet


def _u64(address: int) -> int:
    return int(ctypes.c_uint64.from_address(address).value)


def _address(obj: Any) -> int:
    return _u64(id(obj) + _OBJECT_HEADER)


def _array(obj: Any, data: int, count: int) -> np.ndarray:
    buffer = (ctypes.c_uint64 * count).from_address(data)
    buffer.owner = obj  # type: ignore[attr-defined]  # the view keeps the SEAL object (and its buffer) alive
    return np.ctypeslib.as_array(buffer)


def _ciphertext_fields(ct: sealapi.Ciphertext) -> tuple[int, int] | None:
    """The data pointer and length of ``ct``'s buffer, or None where a field disagrees with the bindings."""
    if type(ct) is not sealapi.Ciphertext:  # another object's memory would be read as SEAL's
        return None
    p = _address(ct)
    if not p:
        return None
    size, n, primes = ct.size(), ct.poly_modulus_degree(), ct.coeff_modulus_size()
    fields = (_u64(p + _CT_SIZE), _u64(p + _CT_N), _u64(p + _CT_PRIMES), _u64(p + _CT_LEN))
    if fields != (size, n, primes, size * n * primes) or _u64(p + _CT_CAP) < fields[3]:
        return None
    if ctypes.c_double.from_address(p + _CT_SCALE).value != ct.scale:
        return None
    if bool(ctypes.c_uint8.from_address(p + _CT_NTT).value) != ct.is_ntt_form():
        return None
    return _u64(p + _CT_DATA), fields[3]


def _plaintext_fields(pt: sealapi.Plaintext) -> tuple[int, int] | None:
    if type(pt) is not sealapi.Plaintext:
        return None
    p = _address(pt)
    if not p:
        return None
    count = pt.coeff_count()
    if (_u64(p + _PT_COUNT), _u64(p + _PT_LEN)) != (count, count) or _u64(p + _PT_CAP) < count:
        return None
    if ctypes.c_double.from_address(p + _PT_SCALE).value != pt.scale:
        return None
    return _u64(p + _PT_DATA), count


def _ciphertext_view(ct: sealapi.Ciphertext) -> np.ndarray:
    """``ct``'s residues in place, a writable ``(size, primes, N)`` uint64 array. Private: a view
    stays valid only until SEAL reallocates the buffer (an addition of a larger ciphertext does), so
    every use below takes one, uses it and drops it before the next SEAL call."""
    fields = _ciphertext_fields(ct) if available() else None
    if fields is None or not fields[0]:
        raise RuntimeError("SEAL's ciphertext buffer is not reachable here; use the file path")
    return _array(ct, *fields).reshape(ct.size(), ct.coeff_modulus_size(), ct.poly_modulus_degree())


def _plaintext_view(pt: sealapi.Plaintext) -> np.ndarray:
    """``pt``'s coefficients in place, a writable flat uint64 array (private, as above)."""
    fields = _plaintext_fields(pt) if available() else None
    if fields is None or not fields[0]:
        raise RuntimeError("SEAL's plaintext buffer is not reachable here; use the file path")
    return _array(pt, *fields)


def read(obj: sealapi.Ciphertext | sealapi.Plaintext, start: int = 0, stop: int | None = None) -> np.ndarray:
    """A copy of a ciphertext's polynomials ``start:stop`` (a ``(count, primes, N)`` uint64 array), or
    of a plaintext's coefficients (flat). Only where :func:`available`."""
    if isinstance(obj, sealapi.Plaintext):
        return _plaintext_view(obj).copy()
    return _ciphertext_view(obj)[start:stop].copy()


def wipe(obj: sealapi.Ciphertext | sealapi.Plaintext) -> None:
    """Zero an object's residues in place (SEAL's memory pool keeps what it frees). Only where :func:`available`."""
    (_plaintext_view(obj) if isinstance(obj, sealapi.Plaintext) else _ciphertext_view(obj)).fill(0)


def new_ciphertext(context: sealapi.SEALContext, parms_id: list[int], polys: Sequence[np.ndarray], *, ntt: bool,
                   scale: float) -> sealapi.Ciphertext:
    """A ciphertext at ``parms_id`` holding ``polys`` (each a ``(primes, N)`` uint64 array of that
    level, residues the caller has checked), in NTT form or not, at ``scale``. Only where
    :func:`available`."""
    if not available():
        raise RuntimeError("SEAL's ciphertext fields are not reachable here; use the file path")
    ct = sealapi.Ciphertext(context)
    ct.resize(context, parms_id, len(polys))  # SEAL zero-fills what it allocates
    p = _address(ct)
    ctypes.c_uint8.from_address(p + _CT_NTT).value = int(ntt)
    ctypes.c_double.from_address(p + _CT_SCALE).value = scale
    if ct.is_ntt_form() != ntt or ct.scale != scale or _ciphertext_fields(ct) is None:
        raise RuntimeError("SEAL's ciphertext layout is not the one this module knows")
    view = _ciphertext_view(ct)
    for i, poly in enumerate(polys):
        if poly.shape != view.shape[1:] or poly.dtype != np.uint64:
            raise ValueError(f"a polynomial of this level is a {view.shape[1:]} uint64 array, got {poly.shape} "
                             f"{poly.dtype}")
        view[i] = poly
    return ct


def new_plaintext(parms_id: list[int], poly: np.ndarray, *, scale: float) -> sealapi.Plaintext:
    """A plaintext in NTT form at ``parms_id`` and ``scale`` holding ``poly`` (a uint64 array of ``N``
    times the primes of that level, in any shape; residues the caller has checked; SEAL refuses a
    count that does not fit the level). Only where :func:`available`."""
    if not available():
        raise RuntimeError("SEAL's plaintext fields are not reachable here; use the file path")
    if poly.dtype != np.uint64:
        raise ValueError(f"a plaintext's residues are uint64, got {poly.dtype}")
    pt = sealapi.Plaintext(poly.size)  # zero-filled, parms_id zero: not yet in NTT form
    p = _address(pt)
    for i, word in enumerate(parms_id):
        ctypes.c_uint64.from_address(p + 8 * i).value = word
    ctypes.c_double.from_address(p + _PT_SCALE).value = scale
    if list(pt.parms_id()) != list(parms_id) or pt.scale != scale or _plaintext_fields(pt) is None:
        raise RuntimeError("SEAL's plaintext layout is not the one this module knows")
    _plaintext_view(pt)[:] = poly.reshape(-1)
    return pt


def disable() -> None:
    """Use the file path from now on (for tests of it, and as a switch should the layout ever doubt)."""
    global _state
    _state = False


def available() -> bool:
    """Whether SEAL's buffers are reachable here (checked once per process, at first use)."""
    global _state
    if _state is None:
        try:
            _state = tenseal.__version__ == _TESTED_TENSEAL and _self_check()
        except Exception:  # a SEAL build that cannot even run the check: the file path
            _state = False
        if not _state:
            log.info("SEAL buffers are not reachable in place (TenSEAL %s); objects go through files",
                     tenseal.__version__)
    return _state


def _self_check() -> bool:
    """SEAL builds a ciphertext and a plaintext; every field and residue read in place must equal
    what the bindings and SEAL's own serialisation say."""
    from . import sealio  # here: sealio needs nothing of this module, and the check runs once

    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(1024)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(1024, [30, 27]))
    context = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.NONE)
    keygen = sealapi.KeyGenerator(context)
    public = sealapi.PublicKey()
    keygen.create_public_key(public)
    plain = sealapi.Plaintext()
    sealapi.CKKSEncoder(context).encode([0.5, -0.25, 0.125], context.first_parms_id(), 2.0**20, plain)
    ct = sealapi.Ciphertext()
    sealapi.Encryptor(context, public).encrypt(plain, ct)
    evaluator = sealapi.Evaluator(context)
    for step in ("ntt", "coefficients", "plaintext"):  # the NTT flag read both ways
        if step == "coefficients":
            evaluator.transform_from_ntt_inplace(ct)
        obj = plain if step == "plaintext" else ct
        fields = _plaintext_fields(plain) if step == "plaintext" else _ciphertext_fields(ct)
        if fields is None or not fields[0]:
            return False
        data, count = fields
        raw = sealio.dump_own(obj, max_inflated=8 * count + 1024)
        if len(raw) < 8 * count:
            return False
        serialised = np.frombuffer(raw, dtype="<u8", count=count, offset=len(raw) - 8 * count)
        if not np.array_equal(_array(obj, data, count), serialised):
            return False
    return True

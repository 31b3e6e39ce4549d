"""CKKS encoding in numpy: real values to a plaintext polynomial's residues, coefficient form.

SEAL's ``CKKSEncoder.encode`` takes a Python list (one object per slot) and returns a plaintext
in NTT form that can only leave SEAL through a file; a client then adds it to its ciphertext. Here
the same polynomial is built with numpy's FFT and added to the error polynomial before the one NTT
the ciphertext needs anyway, which saves SEAL's encode, its NTT and the addition.

The encoding, as SEAL 4 does it: with ``N`` the ring degree, ``M = 2N`` and ``zeta = exp(i pi /
N)``, slot ``j`` (of ``N/2``) holds the value of ``m(X)`` at ``zeta^(3^j mod M)`` and its conjugate
at ``zeta^(-3^j mod M)``, divided by the scale. The ``N`` values ``v_k = m(zeta^(2k+1))`` determine
``m``: ``m_t zeta^t = (1/N) sum_k v_k exp(-2 pi i t k / N)``, one FFT of size ``N``; the
coefficients, times the scale, are rounded to integers as SEAL rounds them. The two FFTs differ
in their last bits, so a rare coefficient may round the other way: SEAL decodes our polynomial to
within 4 / scale of its own encoding (tested for compact and strict).

Integers up to 2^75 become residues exactly: ``|x| = hi * 2^32 + lo`` with both halves exact in
float64, and ``hi * (2^32 mod q)`` reduced with a floating-point quotient estimate whose error is
below one (``hi < 2^43``), corrected in 64-bit wrapping arithmetic (:func:`_reduce_split`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["encode_coeff", "MAX_ENCODED_BITS"]

#: The largest magnitude (in bits) a scaled coefficient may have: the split into 32-bit halves
#: keeps the high half below 2^43, where the quotient estimate is exact to within one.
MAX_ENCODED_BITS = 75


@lru_cache(maxsize=8)
def _slots(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where slot ``j`` and its conjugate sit among the ``N`` evaluation points, and the twist."""
    m = 2 * n
    powers = np.empty(n // 2, dtype=np.int64)
    p = 1
    for j in range(n // 2):
        powers[j] = p
        p = p * 3 % m
    twist = np.exp(-1j * np.pi * np.arange(n) / n) / n
    return (powers - 1) // 2, (m - powers - 1) // 2, twist


def _reduce_split(hi: np.ndarray, lo: np.ndarray, q: int) -> np.ndarray:
    """``(hi * 2^32 + lo) mod q`` for uint64 ``hi < 2^43``, ``lo < 2^32`` and a prime ``q < 2^62``.

    ``hi * (2^32 mod q)`` is reduced with a quotient from float64 (off by at most one), so the
    remainder, computed in wrapping uint64 arithmetic, lies in ``(-q, 2q)``; with ``lo mod q`` it lies
    in ``(-q, 3q)``. Unsigned minima then bring it below ``q`` without a division or a mask: a
    negative value wraps past ``2^63``, so ``min(u, u + q)`` picks ``u + q``; a value below ``q``
    makes ``u - q`` wrap, so ``min(u, u - q)`` keeps it."""
    r, qq = (1 << 32) % q, np.uint64(q)
    quot = np.floor(hi.astype(np.float64) * (r / q)).astype(np.uint64)
    with np.errstate(over="ignore"):
        u = hi * np.uint64(r) - quot * qq
        u += lo if q > 1 << 32 else lo % qq
        np.minimum(u, u + qq, out=u)  # (-q, 0) -> (0, q)
        np.minimum(u, u - qq, out=u)  # [0, 3q) -> [0, 2q)
        np.minimum(u, u - qq, out=u)  # -> [0, q)
    return u


def encode_coeff(values: np.ndarray, *, scale: float, primes: list[int]) -> np.ndarray:
    """``N`` real values (two per complex slot) encoded at ``scale``: a ``(len(primes), N)`` uint64
    array of residues, coefficient form; for ``(count, N)`` values, ``(count, len(primes), N)``
    (one FFT call for all of them).

    Raises:
        ValueError: a scaled coefficient beyond 2^:data:`MAX_ENCODED_BITS` or not finite (the
            caller's range checks keep values far inside).
    """
    batch = values.reshape(-1, values.shape[-1])
    count, n = batch.shape
    k1, k2, twist = _slots(n)
    z = batch[:, 0::2] + 1j * batch[:, 1::2]
    v = np.empty((count, n), dtype=np.complex128)
    v[:, k1], v[:, k2] = z, z.conj()
    coeffs = np.fft.fft(v, axis=1)
    coeffs *= twist
    x = np.rint(coeffs.real * scale)
    mag = np.abs(x)
    if not np.all(mag < 2.0**MAX_ENCODED_BITS):
        raise ValueError(f"a scaled coefficient is not finite or beyond 2^{MAX_ENCODED_BITS}: lower the scale or the values")
    out = np.empty((count, len(primes), n), dtype=np.uint64)
    if float(mag.max()) < min(primes):  # every integer below every prime (the usual case): no reduction
        u = x.astype(np.int64).view(np.uint64)  # a negative x wraps to 2^64 - |x|, and + q to q - |x|
        with np.errstate(over="ignore"):
            for i, q in enumerate(primes):
                np.minimum(u, u + np.uint64(q), out=out[:, i])
    else:
        hi = np.floor(mag * 2.0**-32)
        lo = (mag - hi * 2.0**32).astype(np.uint64)
        hi_u = hi.astype(np.uint64)
        negative = x < 0
        for i, q in enumerate(primes):
            r = _reduce_split(hi_u, lo, q)
            t = np.uint64(q) - r
            np.minimum(t, t - np.uint64(q), out=t)  # q - r modulo q: 0 stays 0
            out[:, i] = np.where(negative, t, r)
    return out.reshape(*values.shape[:-1], len(primes), n)

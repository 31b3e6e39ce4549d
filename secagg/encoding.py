"""CKKS encoding in numpy: real values to a plaintext polynomial's residues, coefficient form.

SEAL's ``CKKSEncoder.encode`` takes a Python list (one object per slot) and returns a plaintext
in NTT form that can only leave SEAL through a file; a client then adds it to its ciphertext. Here
the same polynomial is built with numpy's FFT and added to the error polynomial before the one NTT
the ciphertext needs anyway, which saves SEAL's encode, its NTT and the addition.

The encoding, as SEAL 4 does it: with ``N`` the ring degree, ``M = 2N`` and ``zeta = exp(i pi /
N)``, slot ``j`` (of ``N/2``) holds the value of ``m(X)`` at ``zeta^(3^j mod M)`` and its conjugate
at ``zeta^(-3^j mod M)``, divided by the scale. The real polynomial ``m`` is determined by its
values at the ``N/2`` points ``x_k = zeta^(4k+1)``, one of each conjugate pair (``3^j`` is 1 modulo
4 for even ``j``, 3 for odd ``j``, whose conjugate point ``-3^j`` is then the one taken). At those
points ``x^(N/2) = i``, so ``m(x_k) = sum_{t<N/2} c_t zeta^t (zeta^4)^(kt)`` with ``c_t = m_t + i
m_(t+N/2)``: one inverse FFT of size ``N/2``, ``c_t = zeta^-t (2/N) sum_k m(x_k) exp(-2 pi i t k /
(N/2))``, gives every coefficient. Times the scale, they are rounded to integers as SEAL rounds
them. SEAL's FFT differs from numpy's in the last bits, so a rare coefficient may round the other
way: SEAL decodes our polynomial to within 4 / scale of its own encoding (tested for compact and
strict).

Integers ``|x| < 2^75`` become residues exactly: ``x + 2^75 = hi * 2^32 + lo`` with both halves
exact in float64 (``0 <= hi < 2^44``, ``0 <= lo < 2^32``), ``hi * (2^32 mod q)`` reduced with a
floating-point quotient estimate whose error is below one, corrected in 64-bit wrapping arithmetic
(:func:`_reduce_split`), and ``2^75 mod q`` taken off again.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["encode_coeff", "decode_coeff", "decodes", "coefficients", "MAX_ENCODED_BITS"]

#: The largest magnitude (in bits) a scaled coefficient may have: the split into 32-bit halves
#: of ``x + 2^75`` keeps the high half below 2^44, where the quotient estimate is exact to within one.
MAX_ENCODED_BITS = 75


@lru_cache(maxsize=8)
def _slots(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point ``x_k`` (``k < N/2``): the slot whose value (``+1``) or conjugate (``-1``)
    it takes, that sign, and the twist ``zeta^-t (2/N)``."""
    m = 2 * n
    slot, sign = np.empty(n // 2, dtype=np.int64), np.empty(n // 2, dtype=np.float64)
    p = 1
    for j in range(n // 2):
        e = p if p % 4 == 1 else m - p  # the point of the pair that is 1 modulo 4
        slot[(e - 1) // 4], sign[(e - 1) // 4] = j, 1.0 if p % 4 == 1 else -1.0
        p = p * 3 % m
    twist = np.exp(-1j * np.pi * np.arange(n // 2) / n) * (2 / n)
    return slot, sign, twist


def coefficients(values: np.ndarray, scale: float) -> np.ndarray:
    """The integers (as float64) that ``(count, N)`` real values encode to at ``scale``: the
    polynomial's coefficients, rounded."""
    count, n = values.shape
    slot, sign, twist = _slots(n)
    v = np.empty((count, n // 2), dtype=np.complex128)
    v.real = values[:, 2 * slot]
    v.imag = values[:, 2 * slot + 1]
    v.imag *= sign  # a conjugate where the point is the slot's conjugate
    c = np.fft.fft(v, axis=1)
    c *= twist
    x = np.empty((count, n), dtype=np.float64)
    np.rint(c.real * scale, out=x[:, :n // 2])
    np.rint(c.imag * scale, out=x[:, n // 2:])
    return x


def _reduce_split(hi: np.ndarray, lo: np.ndarray, q: int) -> np.ndarray:
    """``(hi * 2^32 + lo) mod q`` for uint64 ``hi < 2^44``, ``lo < 2^32`` and a prime ``q < 2^62``.

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
    x = coefficients(batch, scale)
    top = float(np.max(np.abs(x)))
    if not top < 2.0**MAX_ENCODED_BITS:  # NaN fails this too
        raise ValueError(f"a scaled coefficient is not finite or beyond 2^{MAX_ENCODED_BITS}: lower the scale or the values")
    out = np.empty((count, len(primes), n), dtype=np.uint64)
    if top < min(primes):  # every integer below every prime (the usual case): no reduction
        u = x.astype(np.int64).view(np.uint64)  # a negative x wraps to 2^64 - |x|, and + q to q - |x|
        with np.errstate(over="ignore"):
            for i, q in enumerate(primes):
                np.minimum(u, u + np.uint64(q), out=out[:, i])
    else:  # x = hi * 2^32 + lo, hi signed: x + 2^75 = (hi + 2^43) * 2^32 + lo, both halves non-negative
        hi = np.floor(x * 2.0**-32)
        lo = (x - hi * 2.0**32).astype(np.uint64)  # exact: in [0, 2^32), a multiple of x's last bit
        hi += 2.0**(MAX_ENCODED_BITS - 32)
        hi_u = hi.astype(np.uint64)  # below 2^44
        with np.errstate(over="ignore"):
            for i, q in enumerate(primes):
                u = _reduce_split(hi_u, lo, q)
                u += np.uint64(q - (1 << MAX_ENCODED_BITS) % q)  # minus 2^75, modulo q: in [0, 2q)
                np.minimum(u, u - np.uint64(q), out=out[:, i])
    return out.reshape(*values.shape[:-1], len(primes), n)


def _mulmod(a: np.ndarray, b: int, q: int) -> np.ndarray:
    """``a * b mod q`` for uint64 ``a < q``, a constant ``b < q`` and ``q < 2^57``: a quotient from
    float64 (off by less than 2^7), the remainder in wrapping 64-bit arithmetic (below 2^63 in size,
    so exact as int64), a second quotient of that, then unsigned minima as in :func:`_reduce_split`."""
    qq = np.uint64(q)
    with np.errstate(over="ignore"):
        quot = np.floor(a.astype(np.float64) * (b / q)).astype(np.uint64)
        r = (a * np.uint64(b) - quot * qq).view(np.int64)
        r -= np.floor(r / q).astype(np.int64) * np.int64(q)  # now in (-q, 2q)
        u = r.view(np.uint64)
        np.minimum(u, u + qq, out=u)
        np.minimum(u, u - qq, out=u)
    return u


@lru_cache(maxsize=8)
def _crt(q0: int, q1: int) -> int:
    return pow(q0, -1, q1)


def decodes(primes: list[int]) -> bool:
    """Whether :func:`decode_coeff` composes residues modulo ``primes``: one prime, or two whose
    second lies below 2^57 (its modular product's bound); SEAL's decoder takes the rest."""
    return len(primes) == 1 or (len(primes) == 2 and primes[1] < 1 << 57)


def decode_coeff(residues: np.ndarray, *, scale: float, primes: list[int]) -> np.ndarray:
    """The values a polynomial encodes: ``(count, len(primes), N)`` residues in coefficient form to
    ``(count, N)`` reals (two per complex slot), as SEAL's ``decode`` computes them.

    Each coefficient is the integer of least magnitude with these residues: ``r0`` centred modulo
    one prime; modulo two, ``x = r0 + q0 * t`` with ``t = (r1 - r0) / q0 mod q1`` centred (for
    ``|x|`` within ``q0`` of half the modulus, far beyond any sum the headroom admits, the other
    representative may be taken). ``x`` is exact in 64 bits below ``q0``, and as float64 relative to
    2^-52 above. Then one FFT of size ``N/2`` evaluates the polynomial at the slots' points (the
    module's note, the other way round).

    Raises:
        ValueError: primes :func:`decodes` does not take.
    """
    count, limbs, n = residues.shape
    if limbs == 1:
        q0 = primes[0]
        r = residues[:, 0].astype(np.int64)  # below 2^61
        x = np.where(r > q0 // 2, r - q0, r).astype(np.float64)
    elif decodes(primes):
        q0, q1 = primes
        r0 = residues[:, 0]
        with np.errstate(over="ignore"):
            d = residues[:, 1] + np.uint64(q1) - r0 % np.uint64(q1)  # (r1 - r0) mod q1, in (0, 2 q1)
            np.minimum(d, d - np.uint64(q1), out=d)
        t = _mulmod(d, _crt(q0, q1), q1).astype(np.int64)
        t[t > q1 // 2] -= q1
        below = t < 0  # x = (r0 - q0) + q0 (t + 1): the first part exact in int64
        base = r0.astype(np.int64) - below * np.int64(q0)
        x = base.astype(np.float64) + float(q0) * (t + below).astype(np.float64)
    else:
        raise ValueError(f"decode_coeff takes one prime or two with the second below 2^57, got {limbs}")
    slot, sign, twist = _slots(n)
    m = np.fft.ifft((x[:, :n // 2] + 1j * x[:, n // 2:]) * np.conj(twist), axis=1)
    m *= (n / 2) ** 2 / scale  # the twist carries 2/N, the inverse FFT 1/(N/2)
    out = np.empty((count, n), dtype=np.float64)
    out[:, 2 * slot] = m.real
    out[:, 2 * slot + 1] = m.imag * sign
    return out

"""Shamir secret sharing of RNS polynomials, coefficient-wise modulo each prime.

A secret ``s`` (an array of residues, one row per prime ``q``) is shared with threshold ``t``
among holders ``1..n``: a random polynomial ``f(x) = s + r_1 x + ... + r_{t-1} x^{t-1}`` per
residue, holder ``h`` gets ``f(h)``. Any ``t`` shares give ``s = sum_h lambda_h f(h)`` with the
Lagrange coefficients at zero ``lambda_h = prod_{k != h} k / (k - h) mod q``; fewer than ``t``
reveal nothing (every value of ``s`` is equally likely). Sharing is linear: shares of
``s_1 + s_2`` are the sums of the shares, which is how a committee decrypts a sum of clients' keys.

Evaluation points are the holders' fixed indices ``1..n``, never random: a holder whose partial
decryptions for two quorums used random points gave away its smudging noise (a small
two-dimensional closest-vector problem), and with it its share.

Products with a small point use double-and-add in ``uint64`` (every prime is below 2^61, so a sum
of two residues fits); products with a Lagrange coefficient (as large as the prime) use the same
ladder over its bits.

Example:
    >>> import numpy as np
    >>> q = [2**61 - 1]
    >>> secret = np.array([[5, 7, 11]], dtype=np.uint64)
    >>> shares = share(secret, primes=q, threshold=2, holders=3)
    >>> bool(np.array_equal(combine({1: shares[0], 3: shares[2]}, primes=q), secret))
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["share", "combine", "lagrange_at_zero", "scalar_mul", "MAX_HOLDERS"]

#: Evaluation points are 1..n; far below every prime, so that they are distinct and invertible.
MAX_HOLDERS = 255


def _add(x: np.ndarray, y: np.ndarray, q: np.uint64) -> np.ndarray:
    s = x + y
    out: np.ndarray = np.where(s >= q, s - q, s)
    return out


def scalar_mul(v: np.ndarray, c: int, q: int) -> np.ndarray:
    """``c * v mod q`` for residues ``v < q < 2^61`` and any integer ``c`` (double-and-add)."""
    qq = np.uint64(q)
    c %= q
    out = np.zeros_like(v)
    base = v.copy()
    while c:
        if c & 1:
            out = _add(out, base, qq)
        base = _add(base, base, qq)
        c >>= 1
    return out


def _uniform(shape: tuple[int, ...], q: int) -> np.ndarray:
    """Residues uniform below ``q`` from AES-256-CTR keyed by the OS (rejection sampling)."""
    need = int(np.prod(shape))
    bits = q.bit_length()
    mask = np.uint64((1 << bits) - 1)
    key, got, parts, counter = os.urandom(32), 0, [], 0
    while got < need:
        enc = Cipher(algorithms.AES(key), modes.CTR(counter.to_bytes(16, "big"))).encryptor()
        words = np.frombuffer(enc.update(bytes(8 * (need - got + 64))), dtype="<u8") & mask
        ok = words[words < np.uint64(q)][:need - got]
        parts.append(ok)
        got += ok.size
        counter += 1 << 64
    return np.concatenate(parts).reshape(shape)


def share(secret: np.ndarray, *, primes: Sequence[int], threshold: int, holders: int) -> list[np.ndarray]:
    """Shares of ``secret`` (rows of residues, one per prime) for holders ``1..holders``; any
    ``threshold`` of them reconstruct it. Randomness from the OS."""
    if not 1 <= threshold <= holders <= MAX_HOLDERS:
        raise ValueError(f"need 1 <= threshold <= holders <= {MAX_HOLDERS}, got threshold={threshold}, "
                         f"holders={holders}")
    if secret.ndim != 2 or secret.shape[0] != len(primes):
        raise ValueError("the secret must hold one row of residues per prime")
    out = [np.empty_like(secret) for _ in range(holders)]
    for i, q in enumerate(primes):
        qq = np.uint64(q)
        coefficients = [_uniform(secret.shape[1:], q) for _ in range(threshold - 1)]
        for h in range(1, holders + 1):
            value = np.zeros_like(secret[i])
            for c in reversed(coefficients):  # Horner: ((r_{t-1} h + r_{t-2}) h + ...) h + s
                value = _add(scalar_mul(value, h, q), c, qq)
            out[h - 1][i] = _add(scalar_mul(value, h, q), secret[i], qq)
    return out


def lagrange_at_zero(points: Sequence[int], q: int) -> dict[int, int]:
    """``lambda_h`` for each point ``h`` of ``points``: ``sum_h lambda_h f(h) = f(0) mod q``."""
    pts = list(points)
    if len(set(pts)) != len(pts) or not all(1 <= p <= MAX_HOLDERS for p in pts):
        raise ValueError(f"points must be distinct holder indices in 1..{MAX_HOLDERS}")
    out = {}
    for h in pts:
        num, den = 1, 1
        for k in pts:
            if k != h:
                num, den = num * k % q, den * (k - h) % q
        out[h] = num * pow(den, -1, q) % q
    return out


def combine(shares: Mapping[int, np.ndarray], *, primes: Sequence[int]) -> np.ndarray:
    """The secret from shares ``{point: residues}`` (as many as the threshold; for tests and the
    key ceremony's own checks - a committee never reconstructs a key)."""
    points = sorted(shares)
    first = shares[points[0]]
    out = np.zeros_like(first)
    for i, q in enumerate(primes):
        lam = lagrange_at_zero(points, q)
        for h in points:
            out[i] = _add(out[i], scalar_mul(shares[h][i], lam[h], q), np.uint64(q))
    return out

"""Randomness of a ring's polynomials: second halves every party expands from a seed, fresh errors,
and smudging noise.

A second half ``a`` comes from AES-256 in counter mode keyed by SHAKE-256 of the seed and its place
(domain, chunk), rejection-sampled per prime so that it is uniform; errors ``e`` and smudging noise
from AES-256-CTR keyed by 32 bytes of ``os.urandom`` per call (a polynomial, or a batch of them).

:class:`Sampling` is a part of :class:`secagg.ring.Ring` (its primes ``primes``, their bit
lengths ``bits``, ``q`` as a ``(limbs, 1)`` array and the degree ``n``).
"""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .presets import CBD_ETA, Preset

__all__ = ["Sampling", "second_half"]

_DOMAIN = b"secfl/second-half/v2\x00"  # v2: ``a`` in NTT form


def second_half(seed: bytes, *, chunk: int, preset: Preset, label: bytes = b"shared") -> bytes:
    """The 32-byte key from which ciphertext ``chunk``'s ``a`` is expanded (:meth:`Sampling.uniform`).

    ``seed`` is a client's per-upload seed (shared key) or the round's public seed (threshold
    keys); ``chunk`` binds each ``a`` to its place, so a seed cannot be moved to another chunk.
    """
    h = hashlib.shake_256(_DOMAIN)
    for part in (label, seed, preset.name.encode(), struct.pack("<Q", chunk)):
        h.update(struct.pack("<I", len(part)) + part)
    return h.digest(32)


def _aes_stream(key: bytes, nonce: int, nbytes: int) -> np.ndarray:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce.to_bytes(16, "big"))).encryptor()
    return np.frombuffer(encryptor.update(bytes(nbytes)), dtype="<u8")


class Sampling:
    """Sampling for a ring of ``n`` coefficients modulo ``primes``."""

    n: int
    primes: list[int]
    bits: list[int]
    q: np.ndarray

    def uniform(self, key: bytes) -> np.ndarray:
        """A uniform polynomial (**NTT form**) expanded from a 32-byte key (:func:`second_half`)."""
        out = np.zeros((len(self.primes), self.n), dtype=np.uint64)
        for i, (q, bits) in enumerate(zip(self.primes, self.bits)):
            mask, got, refill = np.uint64((1 << bits) - 1), 0, 0
            words = _aes_stream(key, i << 96, 8 * (self.n + 64)) & mask
            if int(words[:self.n].max()) < q:  # the first N words all accepted (the usual case): no compaction
                out[i] = words[:self.n]
                continue
            while got < self.n:  # rejection sampling: acceptance q / 2^bits > 1/2, usually ~1
                if refill:
                    words = _aes_stream(key, (i << 96) | (refill << 64), 8 * (self.n - got + 64)) & mask
                ok = words[words < np.uint64(q)][:self.n - got]
                out[i, got:got + ok.size] = ok
                got += ok.size
                refill += 1
        return out

    def error(self) -> np.ndarray:
        """A fresh error polynomial (coefficient form), centred binomial with eta = 21, from OS randomness."""
        out: np.ndarray = self.errors(1)[0]
        return out

    def errors(self, count: int) -> np.ndarray:
        """``count`` fresh error polynomials, a ``(count, limbs, N)`` array (one AES-256-CTR stream
        keyed by 32 bytes of ``os.urandom``)."""
        words = _aes_stream(os.urandom(32), 0, 8 * self.n * count).reshape(count, self.n)
        mask = np.uint64((1 << CBD_ETA) - 1)
        e = (np.bitwise_count(words & mask).astype(np.int64)
             - np.bitwise_count((words >> np.uint64(CBD_ETA)) & mask).astype(np.int64))
        return self.residues_of(e)

    def residues_of(self, e: np.ndarray) -> np.ndarray:
        """Signed integers (one per coefficient; ``(N,)`` or ``(count, N)``) as residues modulo each
        prime: ``(limbs, N)`` or ``(count, limbs, N)``."""
        bound = min(self.primes)
        if e.size and (int(e.max()) >= bound or int(e.min()) <= -bound):  # not abs: |INT64_MIN| overflows
            out: np.ndarray = (e[..., None, :] % self.q.astype(np.int64)).astype(np.uint64)
            return out
        u = e.astype(np.uint64)[..., None, :]  # below every prime: a negative e wraps to 2^64 - |e|, + q to q - |e|
        out = np.minimum(u, u + self.q)
        return out

    def gaussian(self, std: float) -> np.ndarray:
        """A polynomial (coefficient form) of rounded Gaussian coefficients of ``std``, from a CSPRNG
        (AES-256-CTR keyed by the OS): smudging noise that no other party may be able to predict."""
        half = self.n // 2  # Box-Muller: each pair of uniforms gives two independent normals
        words = _aes_stream(os.urandom(32), 0, 16 * half).reshape(2, half)
        u1 = ((words[0] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
        u2 = (words[1] >> np.uint64(11)).astype(np.float64) * 2.0**-53
        r, theta = std * np.sqrt(-2.0 * np.log(u1)), 2.0 * np.pi * u2
        e = np.rint(np.concatenate([r * np.cos(theta), r * np.sin(theta)])).astype(np.int64)
        return self.residues_of(e)

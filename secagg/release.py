"""Noise flooding and rounding of decrypted values before they leave the key holders.

Why: a raw CKKS decryption ``m + e`` lets anyone who also holds the ciphertext recover the
error ``e`` exactly by re-encoding, and from it the secret key by linear algebra (Li and
Micciancio, Eurocrypt 2021, eprint 2020/1533). Adding Gaussian noise far larger than ``e``
before release turns that exact equation into a noisy one.

What: with ``sigma_e`` the CKKS error std per value (the key holder's own figure: the preset's
analytic noise of one fresh encryption times the square root of the number of members it verified;
see :meth:`secagg.Preset.noise_std`) and ``k = flood_bits``, we
add i.i.d. Gaussian noise of std ``sigma_f = 2^k * sigma_e`` to every value and round to a grid of
step ``2^floor(log2 sigma_f)``. Per-value Gaussian noise in the slots is Gaussian noise in the
polynomial coefficients (the embedding is orthogonal up to scaling), so the released coefficients
are ``m + e + f`` with ``f`` of std ``2^k`` times that of ``e``. The statistical distance between
releases for any two error vectors of that size is at most ``sqrt(N) * 2^-(k+1)`` per decryption:

========  ==========  ==================================  =========================================
preset    flood bits  distance bound per decryption       precision cost (std per value, 1 client)
========  ==========  ==================================  =========================================
strict    40          2^-34.5                             4.8e-8
compact   12          2^-6.5 (0.011): heuristic only      7.7e-7
deep      12          2^-6 (0.016): heuristic only        1.1e-6
========  ==========  ==================================  =========================================

The cost grows with sqrt(number of clients). ``compact`` cannot afford more flooding in its
60-bit modulus; use ``strict`` where released aggregates may meet their ciphertexts (an observer
of the server's traffic, or the server itself). Noise comes from AES-256-CTR keyed by 32 bytes of
the operating system's CSPRNG, unless a ``seed`` is passed (reproducible, for tests only).

Nothing the server writes sizes the flooding: a sum of fresh encryptions added without scaling
(all a key holder decrypts, since it rebuilds the second half itself) has exactly that error.
"""

from __future__ import annotations

import math
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["release", "flood_sigma"]


def flood_sigma(noise_std: float, flood_bits: int) -> float:
    """Std of the flooding noise for a decryption error of ``noise_std``."""
    if not 0 <= flood_bits <= 64:
        raise ValueError(f"flood_bits must lie in 0..64, got {flood_bits}")
    if not (math.isfinite(noise_std) and noise_std > 0):
        raise ValueError(f"noise_std must be positive and finite, got {noise_std}")
    return noise_std * 2.0**flood_bits


def _secure_normal(n: int) -> np.ndarray:
    """Standard normal samples from a CSPRNG (Box-Muller on 53-bit uniforms): AES-256 in counter
    mode under a fresh key from ``os.urandom`` (a 32-byte read instead of 16 bytes per pair of
    samples: the kernel's generator ran at ~0.8 GB/s here, AES at several)."""
    m = (n + 1) // 2
    encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()
    raw = np.frombuffer(encryptor.update(bytes(16 * m)), dtype=np.uint64).reshape(2, m)
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53  # (0, 1]
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) / 2.0**53
    r = np.sqrt(-2.0 * np.log(u1))
    return np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]


def release(values: np.ndarray, *, noise_std: float, flood_bits: int, seed: int | None = None) -> np.ndarray:
    """Flood ``values`` with Gaussian noise ``2^flood_bits * noise_std`` and round to its grid.

    Example:
        >>> import numpy as np
        >>> out = release(np.zeros(4), noise_std=1e-10, flood_bits=10, seed=0)
        >>> bool(np.all(np.abs(out) < 1e-5))
        True
    """
    sigma = flood_sigma(noise_std, flood_bits)
    values = np.asarray(values, dtype=np.float64)
    noise = np.random.default_rng(seed).standard_normal(values.size) if seed is not None else _secure_normal(values.size)
    step = 2.0 ** math.floor(math.log2(sigma))
    return np.round((values + sigma * noise.reshape(values.shape)) / step) * step

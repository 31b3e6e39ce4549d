"""Encryption and decryption on several cores.

SEAL's Python bindings hold the GIL, so threads do not help; we use worker processes that load
the secret context once (from its bytes, through a pipe: never a file) and then encrypt or
decrypt ranges of chunks. Pools are kept per key set, so only the first large update of a
process pays the start-up (about a second).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

#: Auto mode parallelises updates of at least this many ciphertexts (2M values at N=8192).
PARALLEL_MIN_CHUNKS = 256

_pools: dict[str, ProcessPoolExecutor] = {}
_worker_context: Any = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def choose_workers(n_chunks: int, workers: int | None) -> int:
    if workers is None:
        return min(2, available_cores()) if n_chunks >= PARALLEL_MIN_CHUNKS else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    return max(1, min(workers, n_chunks))


def _init(secret_bytes: bytes) -> None:
    global _worker_context
    from .keys import load_secret_context

    _worker_context = load_secret_context(secret_bytes)


def _encrypt_task(vector: np.ndarray, n_chunks: int) -> list[bytes]:
    from .encrypt import encrypt_range

    return encrypt_range(vector, _worker_context, 0, n_chunks)


def _decrypt_task(blobs: list[bytes], scale_bits: float) -> list[np.ndarray]:
    from .decrypt import decrypt_blobs

    return decrypt_blobs(blobs, _worker_context)


def _pool(context: Any, n_workers: int) -> ProcessPoolExecutor:
    key = f"{context.fingerprint}:{n_workers}"
    pool = _pools.get(key)
    if pool is None:
        pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init, initargs=(context.to_bytes(),))
        _pools[key] = pool
    return pool


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def encrypt(vector: np.ndarray, context: Any, n_workers: int) -> list[bytes]:
    per_ct = context.preset.values_per_ciphertext
    n_chunks = -(-vector.size // per_ct)
    pool = _pool(context, n_workers)
    futures = [pool.submit(_encrypt_task, vector[a * per_ct:b * per_ct], b - a) for a, b in _split(n_chunks, n_workers)]
    return [blob for f in futures for blob in f.result()]


def decrypt(blobs: list[bytes], context: Any, n_workers: int, scale_bits: float) -> list[np.ndarray]:
    pool = _pool(context, n_workers)
    futures = [pool.submit(_decrypt_task, blobs[a:b], scale_bits) for a, b in _split(len(blobs), n_workers)]
    return [v for f in futures for v in f.result()]


@atexit.register
def shutdown() -> None:
    """Stop every worker pool (also called at interpreter exit)."""
    for pool in _pools.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _pools.clear()

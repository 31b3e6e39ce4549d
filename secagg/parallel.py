"""Encryption and the server's fold on several cores.

SEAL's Python bindings hold the GIL, so threads do not help encryption. Worker processes are started as
``python -m secagg._worker`` (not through :mod:`multiprocessing`, whose ``spawn`` and
``forkserver`` methods re-import the caller's main script and hang scripts without a
``__main__`` guard; ``fork`` is unsafe once other libraries have started threads). Each worker
receives the secret context once, through a pipe (never a file), then ranges of chunks to
encrypt. (Decryption stays serial: SEAL objects cannot cross processes, and a worker would have
to parse each ciphertext again.) Workers
are kept per key set, so only the first large update of a process pays the start-up (~1 s).

The server's work on an upload is hashing, unpacking and adding residues: hashlib and numpy
release the GIL for buffers of this size, so :func:`map_ranges` runs it on threads, each on its
own range of ciphertexts, without copying an upload to another process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from ._check import integer
from .errors import SecAggError

#: Auto mode parallelises updates of at least this many ciphertexts (2M values at N=8192).
PARALLEL_MIN_CHUNKS = 256
#: Auto mode folds uploads of at least this many ciphertexts on threads (256k values at N=8192):
#: below it, handing ranges to threads costs more than it saves.
THREADS_MIN_CHUNKS = 32

_LEN = struct.Struct("<Q")
_workers: dict[str, list[_Worker]] = {}
_threads: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_cap: list[int] = []  # the innermost worker_limit() in force


def choose_workers(n_chunks: int, workers: int | None) -> int:
    if workers is None:
        chosen = min(2, available_cores()) if n_chunks >= PARALLEL_MIN_CHUNKS else 1
    else:
        chosen = max(1, min(integer("workers", workers, minimum=1), n_chunks))
    return min(chosen, _cap[-1]) if _cap else chosen


def choose_threads(n_chunks: int, workers: int | None) -> int:
    """Threads for the server's fold of ``n_chunks`` ciphertexts: ``workers`` (at most one per
    ciphertext), or in auto mode (``None``) every available core up to 4 from
    :data:`THREADS_MIN_CHUNKS` ciphertexts; never more than a :func:`worker_limit` in force."""
    if workers is None:
        chosen = min(4, available_cores()) if n_chunks >= THREADS_MIN_CHUNKS else 1
    else:
        chosen = max(1, min(integer("workers", workers, minimum=1), n_chunks))
    return min(chosen, _cap[-1]) if _cap else chosen


def map_ranges(fn: Callable[[int, int], Any], n_items: int, workers: int) -> list[Any]:
    """``fn(first, last)`` for ``workers`` contiguous ranges covering ``0..n_items-1``, on threads
    (in this thread when ``workers`` is 1); the results in range order. Every range has finished
    before this returns or raises (a failed range raises its exception, the first in range order),
    so no thread still writes to the caller's arrays afterwards."""
    parts = _split(n_items, max(1, workers))
    if len(parts) <= 1:
        return [fn(0, n_items)]
    with _lock:
        pool = _threads.get(len(parts))
        if pool is None:
            pool = _threads[len(parts)] = ThreadPoolExecutor(len(parts), thread_name_prefix="secagg-fold")
    futures = [pool.submit(fn, a, b) for a, b in parts]
    try:
        wait(futures)
    except BaseException:  # interrupted while waiting: still no thread left writing when this returns
        wait(futures)
        raise
    return [f.result() for f in futures]


@contextlib.contextmanager
def worker_limit(n: int) -> Iterator[None]:
    """At most ``n`` encryption processes, and server threads, inside the block (``1``: all in this
    process and thread, e.g. to measure one core's CPU time)."""
    _cap.append(integer("worker limit", n, minimum=1))
    try:
        yield
    finally:
        _cap.pop()


def send(stream: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LEN.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream: Any) -> Any:
    head = stream.read(_LEN.size)
    if len(head) != _LEN.size:
        raise EOFError
    (size,) = _LEN.unpack(head)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return pickle.loads(data)  # only ever from our own child or parent process


class _Worker:
    def __init__(self, secret_bytes: bytes) -> None:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "secagg._worker", str(write_fd)], stdin=subprocess.PIPE,
                                     pass_fds=(write_fd,), close_fds=True)
        os.close(write_fd)
        self.results = os.fdopen(read_fd, "rb")
        send(self.proc.stdin, secret_bytes)

    def submit(self, op: str, payload: Any) -> None:
        send(self.proc.stdin, (op, payload))

    def result(self) -> Any:
        try:
            status, value = receive(self.results)
        except EOFError:
            raise SecAggError(f"a secagg worker process died (exit code {self.proc.poll()}); retry with workers=1") from None
        if status == "error":
            raise SecAggError(f"a secagg worker failed: {value}")
        return value

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.results.close()


def _pool(context: Any, n_workers: int) -> list[_Worker]:
    key = f"{context.fingerprint}:{n_workers}"
    with _lock:
        pool = _workers.get(key)
        if pool is None or any(w.proc.poll() is not None for w in pool):
            secret = context.to_bytes()
            pool = _workers[key] = [_Worker(secret) for _ in range(n_workers)]
        return pool


def _run(context: Any, n_workers: int, op: str, payloads: list[Any]) -> list[Any]:
    pool = _pool(context, n_workers)
    try:
        for worker, payload in zip(pool, payloads):
            worker.submit(op, payload)
        return [worker.result() for worker, _ in zip(pool, payloads)]
    except (SecAggError, OSError):
        _discard(context, n_workers)
        raise


def _discard(context: Any, n_workers: int) -> None:
    with _lock:
        for w in _workers.pop(f"{context.fingerprint}:{n_workers}", []):
            w.close()


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    edges = [n * i // parts for i in range(parts + 1)]  # integers: this runs for every upload the server folds
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def encrypt_range(vector: np.ndarray, secret: Any, *, seed: bytes, label: bytes, first: int, last: int) -> np.ndarray:
    """Chunks ``first..last-1`` of ``vector`` encrypted and packed (the unit of work of one process),
    as one uint8 array: each ciphertext is packed straight into its place."""
    from .ring import BATCH, ring_of, second_half

    ring = ring_of(secret.preset)
    per_ct, size, count = ring.n, ring.residue_bytes, last - first
    out = np.empty(count * size, dtype=np.uint8)
    key = ring.key_factor(secret)
    for b0 in range(0, count, BATCH):  # a batch at a time: one FFT call, one NTT call (SEAL's) per batch
        b1 = min(count, b0 + BATCH)
        values = np.zeros((b1 - b0) * per_ct, dtype=np.float64)
        part = vector[b0 * per_ct:b1 * per_ct]
        values[:part.size] = part
        messages = ring.encode_coeff(values.reshape(b1 - b0, per_ct))
        a = np.stack([ring.uniform(second_half(seed, chunk=first + k, preset=secret.preset, label=label))
                      for k in range(b0, b1)])
        ring.pack_into(ring.encrypt_many(messages, key, a), out[b0 * size:b1 * size])
    return out


def encrypt(vector: np.ndarray, secret: Any, *, seed: bytes, label: bytes, workers: int | None = None) -> np.ndarray:
    """Every chunk of ``vector`` encrypted under second halves derived from ``seed``, packed, in
    order: one uint8 array."""
    per_ct = secret.preset.values_per_ciphertext
    n_chunks = max(1, -(-vector.size // per_ct))
    n_workers = choose_workers(n_chunks, workers)
    if n_workers == 1:
        return encrypt_range(vector, secret, seed=seed, label=label, first=0, last=n_chunks)
    parts = _split(n_chunks, n_workers)
    payloads = [(vector[a * per_ct:b * per_ct], seed, label, a, b) for a, b in parts]
    return np.concatenate(_run(secret, len(parts), "encrypt", payloads))


@atexit.register
def shutdown() -> None:
    """Stop every worker process (also called at interpreter exit)."""
    with _lock:
        for pool in _workers.values():
            for w in pool:
                w.close()
        _workers.clear()
        for threads in _threads.values():
            threads.shutdown(wait=True)
        _threads.clear()

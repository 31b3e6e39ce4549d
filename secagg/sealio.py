"""Moving SEAL objects to and from bytes, with every check done before SEAL sees the bytes.

TenSEAL's SEAL bindings only save to and load from file paths, so blobs pass through a file.
On Linux that file is anonymous memory (``memfd_create``), one per thread of each process, reached
by SEAL as ``/proc/self/fd/N``: it never has a name another process could open, nothing is left
behind if the process dies, and no file is created or unlinked per call. Like a heap buffer, it
holds the last blob until the next call overwrites it, except a secret key's (wiped at once) and
anything over :data:`_KEEP_BYTES` (not kept in memory). Elsewhere blobs pass
through a private temporary directory (``/dev/shm`` where it exists), a file per call. SEAL
compresses with zstd; a crafted stream could inflate without bound inside SEAL, so we inflate it
ourselves with a hard output limit and hand SEAL an uncompressed blob.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import tenseal.sealapi as sealapi
import zstandard

from .errors import PayloadError

_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_COMPR_NONE, _COMPR_ZSTD = 0, 2

_tmpdir: str | None = None
_tmplock = threading.Lock()

T = TypeVar("T")


def _scratch_dir() -> str:
    global _tmpdir
    with _tmplock:
        if _tmpdir is None or not os.path.isdir(_tmpdir):
            base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            _tmpdir = tempfile.mkdtemp(prefix="secagg-", dir=base)
            os.chmod(_tmpdir, 0o700)  # blobs of secret keys pass through here
            atexit.register(shutil.rmtree, _tmpdir, True)
        return _tmpdir


def _scratch_path() -> str:
    return os.path.join(_scratch_dir(), f"{os.getpid()}-{threading.get_ident()}.bin")


class _Memfd:
    """An anonymous in-memory file (``memfd_create``) that SEAL reaches as ``/proc/self/fd/N``."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("secfl-seal", os.MFD_CLOEXEC)
        self.pid = os.getpid()
        self.path = f"/proc/self/fd/{self.fd}"
        with _owned_lock:
            _owned.add(self.fd)

    def __del__(self) -> None:  # a thread's local state goes when the thread does: so does its file
        if self.pid != os.getpid():
            return  # a forked child's copy: closed at the fork (its number may be reused since)
        with _owned_lock:
            _owned.discard(self.fd)
        try:
            os.close(self.fd)
        except OSError:
            pass


_local = threading.local()
_owned: set[int] = set()  # this process's files, every thread's
_owned_lock = threading.Lock()
_KEEP_BYTES = 1 << 22  # a blob larger than this (Galois keys: hundreds of MB) is not kept after use
_MEMFD_OK = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def _close_inherited() -> None:
    """In a forked child: close the parent's files. Unlike memory, a file descriptor is not copied
    at a fork but shared, so the child would read what the parent writes afterwards."""
    global _owned_lock
    _owned_lock = threading.Lock()  # another thread of the parent may have held it at the fork
    for fd in _owned:
        try:
            os.close(fd)
        except OSError:
            pass
    _owned.clear()


if _MEMFD_OK:
    os.register_at_fork(after_in_child=_close_inherited)


def _memfd() -> _Memfd | None:
    """This thread's anonymous scratch file, or None where there is none (then a named file is used).
    A forked child inherits its parent's descriptor, so the owner's pid is checked: one file shared
    by two processes would mix their blobs."""
    global _MEMFD_OK
    if not _MEMFD_OK:
        return None
    scratch: _Memfd | None = getattr(_local, "memfd", None)
    if scratch is None or scratch.pid != os.getpid():
        try:
            scratch = _local.memfd = _Memfd()
        except OSError:
            _MEMFD_OK = False
            return None
    return scratch


def dump(obj: Any, *, secret: bool = False) -> bytes:
    """Serialise a SEAL object (or a seeded ``Serializable``) to bytes. ``secret``: the object holds
    what must not outlive the call in the scratch file (a secret key always counts as such)."""
    scratch = _memfd()
    if scratch is not None:
        try:
            obj.save(scratch.path)  # SEAL opens it for writing, which truncates it first
            return os.pread(scratch.fd, os.fstat(scratch.fd).st_size, 0)
        finally:
            if secret or isinstance(obj, sealapi.SecretKey) or os.fstat(scratch.fd).st_size > _KEEP_BYTES:
                os.ftruncate(scratch.fd, 0)
    path = _scratch_path()
    try:
        obj.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def inflate(blob: bytes | memoryview, *, max_inflated: int, what: str) -> bytes:
    """Check a SEAL blob's header and return it uncompressed, never larger than ``max_inflated``."""
    blob = bytes(blob)
    if len(blob) < _SEAL_HEADER.size:
        raise PayloadError(f"{what} is truncated ({len(blob)} bytes)")
    magic, head_size, major, _minor, compr, reserved, size = _SEAL_HEADER.unpack_from(blob, 0)
    if magic != _SEAL_MAGIC or head_size != _SEAL_HEADER.size or reserved != 0:
        raise PayloadError(f"{what} does not carry a valid SEAL header")
    if major != 4:
        raise PayloadError(f"{what} was written by SEAL {major}.x; this build reads SEAL 4.x")
    if size != len(blob):
        raise PayloadError(f"{what} declares {size} bytes but holds {len(blob)}")
    body = blob[_SEAL_HEADER.size:]
    if compr == _COMPR_ZSTD:
        try:
            # a streaming read never trusts the frame's declared content size for allocation
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True) as reader:
                parts, got = [], 0
                while got <= max_inflated:
                    part = reader.read(max_inflated + 1 - got)
                    if not part:
                        break
                    parts.append(part)
                    got += len(part)
                body = b"".join(parts)
        except zstandard.ZstdError as exc:
            raise PayloadError(f"{what} has a corrupt or oversized compressed body: {exc}") from None
    elif compr != _COMPR_NONE:
        raise PayloadError(f"{what} uses compression mode {compr}; only none and zstd are accepted")
    if len(body) > max_inflated:
        raise PayloadError(f"{what} inflates to {len(body)} bytes, more than the {max_inflated} its parameters allow")
    head = _SEAL_HEADER.pack(_SEAL_MAGIC, _SEAL_HEADER.size, 4, _minor, _COMPR_NONE, 0, _SEAL_HEADER.size + len(body))
    return head + body


def load(factory: Callable[[], T], context: sealapi.SEALContext, blob: bytes | memoryview, *,
         max_inflated: int, what: str, secret: bool = False) -> T:
    """Validate ``blob`` and load it into ``factory()`` under ``context``.

    SEAL itself then checks the metadata (parameter id, sizes, coefficient ranges) against the
    context; any complaint it raises becomes a :class:`PayloadError`.
    """
    return load_own(factory, context, inflate(blob, max_inflated=max_inflated, what=what), what=what, secret=secret)


def load_own(factory: Callable[[], T], context: sealapi.SEALContext, blob: bytes | bytearray, *, what: str,
             secret: bool = False) -> T:
    """Load an uncompressed blob this process assembled itself (a template's header and numpy
    arrays, see :class:`secagg.ring.Ring`; or one :func:`load` has validated): no header to
    distrust, so no inflation and no copy; SEAL's own checks still apply."""
    obj: Any = factory()
    scratch = _memfd()
    path = _scratch_path() if scratch is None else scratch.path
    try:
        if scratch is not None:
            view, done = memoryview(blob), 0
            while done < len(view):  # pwrite may write less than asked
                done += os.pwrite(scratch.fd, view[done:], done)
        else:
            with open(path, "wb") as fh:
                fh.write(blob)
        obj.load(context, path)
    except Exception as exc:  # SEAL's C++ exceptions arrive as several Python types
        raise PayloadError(f"{what} was rejected by SEAL ({type(exc).__name__}: {exc})") from None
    finally:
        if scratch is None:
            _unlink(path)
        elif secret or isinstance(obj, sealapi.SecretKey) or len(blob) > _KEEP_BYTES:
            os.ftruncate(scratch.fd, 0)  # otherwise the next blob overwrites this one (SEAL reads only its own size)
    return obj  # type: ignore[no-any-return]  # SEAL's bindings are untyped


def dump_own(obj: Any, *, max_inflated: int, secret: bool = False) -> bytes:
    """The uncompressed bytes after the header of a SEAL object this process made (SEAL's zstd
    output of our own object: decompressed in one call, bounded all the same)."""
    blob = dump(obj, secret=secret)
    compr = blob[5] if len(blob) >= _SEAL_HEADER.size else -1  # magic, header size, major, minor, then the mode
    body = blob[_SEAL_HEADER.size:]
    if compr == _COMPR_ZSTD:
        return zstandard.ZstdDecompressor().decompress(body, max_output_size=max_inflated)
    if compr != _COMPR_NONE:
        raise PayloadError(f"SEAL wrote an object with compression mode {compr}")
    return body


def poly_bytes(poly_modulus_degree: int, n_primes: int) -> int:
    """Uncompressed bytes of one RNS polynomial."""
    return poly_modulus_degree * n_primes * 8

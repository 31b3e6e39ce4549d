"""Writing key material: created exclusively, with its final mode from the first byte, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import KeyFileError

__all__ = ["write_private", "write_public"]


def write_private(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Create ``path`` with mode 0600 from the first byte and write ``data``; never through a link.

    Without ``overwrite`` an existing file (or a link planted where the file goes) is refused; with
    it, the old file is replaced atomically (a new file renamed over it), still never followed.

    Raises:
        KeyFileError: the file exists (without ``overwrite``) or cannot be written.
    """
    return _write(path, data, mode=0o600, overwrite=overwrite)


def write_public(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """:func:`write_private` with mode 0644, for files everyone may read but nobody else may have
    planted (the server's context, the roster): a file another user created where the dealer
    writes would stay theirs to change later."""
    return _write(path, data, mode=0o644, overwrite=overwrite)


def _write(path: str | os.PathLike[str], data: bytes, *, mode: int, overwrite: bool) -> Path:
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if overwrite else path
    try:
        fd = os.open(target, flags, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; pass --force (overwrite=True) to replace it") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; a public file must stay readable
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if overwrite:
            os.replace(target, path)  # replaces a link itself, never what it points to
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from None
    return path

"""Writing secret files: created exclusively, mode 0600 from the first byte, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import KeyFileError

__all__ = ["write_private"]


def write_private(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Create ``path`` with mode 0600 from the first byte and write ``data``; never through a link.

    Without ``overwrite`` an existing file (or a link planted where the file goes) is refused; with
    it, the old file is replaced atomically (a new file renamed over it), still never followed.

    Raises:
        KeyFileError: the file exists (without ``overwrite``) or cannot be written.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if overwrite else path
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; pass --force (overwrite=True) to replace it") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if overwrite:
        os.replace(target, path)  # replaces a link itself, never what it points to
    return path

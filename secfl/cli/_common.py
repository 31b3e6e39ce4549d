"""What every ``secfl`` command shares: where output goes, how errors read, how results are written.

* Results go to stdout; progress, logging and errors to stderr. An error is one line, naming the
  command-line flag (never a Python option), and exits with status 2.
* On a terminal tables fit its width; anywhere else (a pipe, a file) they are printed at their
  natural width, never cut off, and ``--json`` prints the result as JSON instead.
* Files are written into a fresh temporary directory beside the target and moved into place when
  complete: an interrupted run leaves nothing half-made. An existing target is refused unless
  ``--force``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["console", "err", "fail", "spinner", "check_target", "written", "print_json", "flags"]

#: results; at its natural width when not a terminal, so that nothing is truncated
console = Console(width=None if sys.stdout.isatty() else 10_000, soft_wrap=not sys.stdout.isatty())
#: progress, logging, errors; unwrapped when not a terminal (one error, one line)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 10_000, soft_wrap=not sys.stderr.isatty())

def flags(message: str, names: set[str]) -> str:
    """``message`` with the Python option names of ``names`` written as their ``--flag``:
    ``name=value`` everywhere, and names with an underscore (never plain words) anywhere."""
    for name in sorted(names, key=len, reverse=True):
        flag = "--" + name.replace("_", "-")
        message = re.sub(rf"\b{re.escape(name)}=", f"{flag} ", message)
        if "_" in name:
            message = re.sub(rf"(?<!-)\b{re.escape(name)}\b", flag, message)
    return message


def fail(message: str, *, names: set[str] | None = None) -> NoReturn:
    """One line on stderr, exit status 2."""
    err.print(f"[bold red]error:[/] {escape(flags(message, names or set()))}", markup=True, highlight=False,
              soft_wrap=True)
    raise typer.Exit(code=2)


@contextmanager
def spinner() -> Iterator[Callable[[str], None]]:
    """A transient spinner on stderr with the elapsed time; yields the callback a job names its step with."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task("starting", total=None)
        yield lambda message: progress.update(task, description=message)


def check_target(path: Path, *, force: bool) -> None:
    """Before any long work: ``path`` must not exist (unless ``force``), and its nearest existing
    ancestor must be a writable directory. Nothing is created yet."""
    if path.exists() and not force:
        fail(f"{path} already exists; pass --force to replace it")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        fail(f"cannot write to {path}: {parent} is not a writable directory")


@contextmanager
def written(path: Path, *, force: bool) -> Iterator[Path]:
    """A temporary directory beside ``path``, moved to ``path`` when the block completes (replacing
    it with ``force``); removed if the block fails or is interrupted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not force:
                fail(f"{path} appeared while this command ran; pass --force to replace it")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")

"""The ``secfl`` command line: ``presets``, ``keys``, ``demo``, ``train``, ``audit``, ``bench``.

Conventions (:mod:`secfl.cli._common`): results on stdout, errors and progress on stderr (errors
exit with status 2 and name flags), tables never cut off outside a terminal, ``--json`` where a
program reads the result, ``--force`` to replace an output, nothing half-written when interrupted.
Logging is configured here, once; the libraries only log.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Annotated

import typer

from . import keys, measure, run  # noqa: F401 - they register their commands
from ._app import app, keys_app
from ._common import err

__all__ = ["app", "keys_app", "main"]


def _version(value: bool) -> None:
    if value:
        try:
            version = metadata.version("secfl")
        except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
            version = "unknown (not installed)"
        print(f"secfl {version}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the libraries do (to stderr).")] = False,
) -> None:
    """Secure federated learning that measures what it protects."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    for handler in root.handlers[:]:  # ours from an earlier invocation in this process: replaced, not doubled
        if getattr(handler, "secfl", False):
            root.removeHandler(handler)
    handler = RichHandler(console=err, show_path=False, show_time=False)
    handler.secfl = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)

"""The Typer applications every command module registers on."""

from __future__ import annotations

import typer

# an unexpected error prints its traceback without local variables: they hold updates and keys
app = typer.Typer(name="secfl", help="Secure federated learning that measures what it protects.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  rich_markup_mode=None)
keys_app = typer.Typer(help="Create and inspect CKKS key sets.", no_args_is_help=True,
                       pretty_exceptions_show_locals=False, rich_markup_mode=None)
app.add_typer(keys_app, name="keys")

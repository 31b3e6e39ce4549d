"""``python -m secfl``: the same command line as ``secfl``."""

from secfl.cli import app

app(prog_name="secfl")

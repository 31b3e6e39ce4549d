"""The repository protects its users: every path the README's commands write is ignored by git, and
no document cites sources a reader does not have."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "examples" / "flower" / "README.md"]


def _written_paths() -> set[str]:
    """Every relative ``--out PATH`` in a code block of the README and the docs."""
    paths = set()
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
            for path in re.findall(r"--out\s+(\S+)", block):
                if not path.startswith(("/", "~", "$")):
                    paths.add(path.rstrip("/"))
    return paths


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a checkout")
def test_every_path_the_commands_write_is_ignored():
    # docs/ holds generated tables that are committed on purpose (secfl bench --out docs/bench)
    paths = {p for p in _written_paths() if not p.startswith("docs/")} | {"audit-report", "bench-out"}
    assert paths, "the README shows commands that write files"
    secrets = ["anywhere/client.key", "anywhere/client-0.id", "anywhere/client-0.ledger", "anywhere/holder.shares"]
    for path in sorted(paths) + secrets:
        probe = f"{path}/x" if "." not in Path(path).name else path
        ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT).returncode == 0
        assert ignored, f"{path} (written by a documented command) is not in .gitignore"


def test_documents_stand_alone():
    for doc in DOCS + sorted(ROOT.glob("*/**/*.py")):
        if ".venv" in doc.parts or doc.name == "test_repository.py":
            continue
        text = doc.read_text()
        assert "BRIEF" not in text, f"{doc} cites a document the reader does not have"
        assert not re.search(r"\bissue [0-9]+\b", text), f"{doc} cites an issue number"


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 120

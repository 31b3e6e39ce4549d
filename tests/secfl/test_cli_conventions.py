"""The command line as a program reads it: stdout for results, stderr for errors, nothing cut off in
a pipe, JSON on request, flags in messages, contradictions refused, outputs replaced only with
--force and never left half-made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def secfl(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "60"}  # a narrow terminal width, which a pipe must ignore
    return subprocess.run([sys.executable, "-m", "secfl", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, env=env)


def test_errors_go_to_stderr_with_status_2_and_name_flags():
    out = secfl("train", "--dataset", "nosuch")
    assert out.returncode == 2 and out.stdout == "" and "error: unknown dataset 'nosuch'" in out.stderr
    out = secfl("train", "--clients", "3", "--clients-per-round", "5")
    assert out.returncode == 2 and "--clients-per-round" in out.stderr and "clients_per_round" not in out.stderr


def test_output_in_a_pipe_is_not_cut_off_and_json_is_json():
    out = secfl("presets")
    assert out.returncode == 0 and "…" not in out.stdout and "strict" in out.stdout
    assert all(len(line) > 60 for line in out.stdout.splitlines() if line.startswith("│ strict"))
    presets = json.loads(secfl("presets", "--json").stdout)
    assert {p["name"] for p in presets} >= {"compact", "strict", "deep"}
    version = secfl("--version")
    assert version.returncode == 0 and version.stdout.startswith("secfl ")


@pytest.mark.parametrize("args, words", [
    (["train", "--protocol", "server-scored", "--protection", "plain"], "contradicts --protection plain"),
    (["train", "--protocol", "server-scored", "--preset", "compact"], "contradicts --preset compact"),
    (["train", "--dp", "client"], "--aggregation fedavg"),
    (["audit", "--quick", "--full"], "choose one"),
])
def test_contradictory_options_are_refused(args, words):
    out = secfl(*args)
    assert out.returncode == 2 and words in out.stderr


def test_demo_refuses_a_preset_that_contradicts_its_keys(tmp_path):
    assert secfl("keys", "generate", "--preset", "compact", "--out", str(tmp_path / "k")).returncode == 0
    out = secfl("demo", "--keys", str(tmp_path / "k"), "--preset", "strict", "--params", "100")
    assert out.returncode == 2 and "contradicts the keys" in out.stderr
    ok = json.loads(secfl("demo", "--keys", str(tmp_path / "k"), "--params", "100", "--clients", "2", "--json").stdout)
    assert ok["preset"] == "compact" and ok["max_error"] < 1e-3


def test_train_out_is_replaced_only_with_force(tmp_path):
    target = tmp_path / "run"
    args = ["train", "--rounds", "1", "--clients", "3", "--protection", "plain", "--out", str(target)]
    first = secfl(*args)
    assert first.returncode == 0 and json.loads((target / "train.json").read_text())["rounds"]
    again = secfl(*args)
    assert again.returncode == 2 and "--force" in again.stderr
    assert secfl(*args, "--force").returncode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary directory left beside it


def test_an_interrupted_audit_leaves_nothing_behind(tmp_path, monkeypatch):
    """Ctrl-C in the middle of the work: no output directory, no temporary one beside it."""
    from typer.testing import CliRunner

    import attacks.audit
    from secfl.cli import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(attacks.audit, "run_audit", interrupted)
    result = CliRunner().invoke(app, ["audit", "--quick", "--out", str(tmp_path / "report")])
    assert result.exit_code != 0 and list(tmp_path.iterdir()) == []

    from secfl.cli._common import written

    with pytest.raises(KeyboardInterrupt), written(tmp_path / "half", force=False) as tmp:
        (tmp / "report.json").write_text("{")
        raise KeyboardInterrupt  # interrupted while writing
    assert list(tmp_path.iterdir()) == []


def test_libraries_leave_logging_to_the_application():
    code = ("import logging\nimport secagg, fedattn, attacks, fedattn.privacy, attacks.membership\n"
            "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).returncode == 0

import os
import stat

import pytest
from typer.testing import CliRunner

import secagg
from secfl.cli import app

runner = CliRunner(env={"COLUMNS": "300"})


def test_keys_generate_writes_both_files_and_says_where_they_go(tmp_path):
    result = runner.invoke(app, ["keys", "generate", "--preset", "compact", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert "client.key" in result.output and "server.ctx" in result.output
    assert "aggregation server only" in result.output and "every client" in result.output
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "client.key").st_mode) == 0o600
    secret = secagg.load_secret_context(tmp_path / "k" / "client.key")
    assert secret.fingerprint == secagg.load_public_context(tmp_path / "k" / "server.ctx").fingerprint
    again = runner.invoke(app, ["keys", "generate", "--preset", "compact", "--out", str(tmp_path / "k")])
    assert again.exit_code == 2 and "--force" in again.output
    shown = runner.invoke(app, ["keys", "show", str(tmp_path / "k" / "server.ctx")])
    assert shown.exit_code == 0 and secret.fingerprint in shown.output.replace("\n", "")


def test_keys_generate_unknown_preset(tmp_path):
    result = runner.invoke(app, ["keys", "generate", "--preset", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown preset" in result.output
    assert not (tmp_path / "client.key").exists()


def test_keys_generate_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["keys", "generate", "--out", str(blocker / "sub")])
    assert result.exit_code == 2 and "cannot write" in result.output


def test_keys_show_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"nonsense")
    result = runner.invoke(app, ["keys", "show", str(bad)])
    assert result.exit_code == 2 and "error" in result.output


def test_presets_and_demo_run():
    assert runner.invoke(app, ["presets"]).exit_code == 0
    result = runner.invoke(app, ["demo", "--clients", "3", "--params", "5000", "--preset", "compact"])
    assert result.exit_code == 0, result.output
    err = float(result.output.split("numpy sum|")[1].split()[1])
    assert err < 1e-4


@pytest.mark.parametrize(("clients", "group_size", "groups"), [(3, None, [3]), (7, 3, [3, 4]), (4, 2, [2, 2])])
def test_keys_generate_writes_identities_in_enrolment_groups(tmp_path, clients, group_size, groups):
    extra = [] if group_size is None else ["--group-size", str(group_size)]
    res = runner.invoke(app, ["keys", "generate", "--preset", "compact", "--out", str(tmp_path), "--clients",
                              str(clients), *extra])
    assert res.exit_code == 0, res.output
    roster = secagg.Roster.load(tmp_path / "roster.json")
    assert roster.client_ids == tuple(f"client-{i}" for i in range(clients))
    assert [len(g) for g in roster.groups] == groups
    assert stat.S_IMODE((tmp_path / f"client-{clients - 1}.id").stat().st_mode) == 0o600
    assert "verification keys" in res.output

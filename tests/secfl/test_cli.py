import json
import os
import stat
import subprocess
import sys

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
    sized = json.loads(runner.invoke(app, ["presets", "--json", "--members", "10"]).stdout)
    by_name = {p["name"]: (p["coeff_modulus_bits"], p["bytes_per_float32"]) for p in sized}  # other tests may add presets
    assert by_name["compact-for-10"] == ([47], 47 / 32) and by_name["strict-for-10"] == ([56, 23, 60], 79 / 32)
    assert "deep-for-10" not in by_name and "compact-lean-for-10" not in by_name  # circuits keep theirs; no twin rows
    refused = runner.invoke(app, ["keys", "generate", "--preset", "deep-for-3", "--out", "unused"])
    assert refused.exit_code == 2 and "evaluates circuits" in refused.output
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


def test_keys_generate_never_writes_through_planted_files(tmp_path):
    """Another user's pre-created identity file, or a link where the roster goes, in a shared folder."""
    (tmp_path / "client-1.id").write_text("planted")
    result = runner.invoke(app, ["keys", "generate", "--preset", "compact", "--out", str(tmp_path), "--clients", "3"])
    assert result.exit_code == 2 and "client-1.id" in result.output and "--force" in result.output
    assert not (tmp_path / "client.key").exists() and (tmp_path / "client-1.id").read_text() == "planted"
    elsewhere = tmp_path / "elsewhere"
    other = tmp_path / "other"
    other.mkdir()
    (other / "roster.json").symlink_to(elsewhere)
    result = runner.invoke(app, ["keys", "generate", "--preset", "compact", "--out", str(other), "--clients", "2"])
    assert result.exit_code == 2 and "roster.json" in result.output
    assert not elsewhere.exists() and (other / "roster.json").is_symlink()


def test_demo_with_keys_of_two_key_sets_is_a_clear_error(tmp_path):
    for name in ("a", "b"):
        assert runner.invoke(app, ["keys", "generate", "--preset", "compact", "--out", str(tmp_path / name)]).exit_code == 0
    (tmp_path / "a" / "server.ctx").unlink()
    (tmp_path / "b" / "server.ctx").rename(tmp_path / "a" / "server.ctx")
    result = runner.invoke(app, ["demo", "--keys", str(tmp_path / "a"), "--params", "100", "--clients", "2"])
    assert result.exit_code == 2 and "different key sets" in result.output and "Traceback" not in result.output


def test_an_unexpected_error_prints_no_local_variables():
    """Typer's pretty tracebacks show local variables by default: updates and keys would be printed."""
    script = ("import sys, secfl.cli as c\n"
              "@c.app.command('boom')\n"
              "def boom():\n"
              "    update = 'PLAINTEXT-' + str(1234 * 5)\n"
              "    raise RuntimeError('unexpected')\n"
              "sys.argv = ['secfl', 'boom']\n"
              "c.app()\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200", "_TYPER_STANDARD_TRACEBACK": ""})
    shown = out.stdout + out.stderr
    assert out.returncode != 0 and "RuntimeError" in shown
    assert "PLAINTEXT-6170" not in shown


def test_keys_ceremony_writes_each_partys_files_in_its_own_folder(tmp_path):
    from secagg.epoch import Epoch, HolderShares

    result = runner.invoke(app, ["keys", "ceremony", "--out", str(tmp_path), "--clients", "4", "--committee", "3",
                                 "--threshold", "2"])
    assert result.exit_code == 0, result.output
    epoch = Epoch.load(tmp_path / "epoch.json")
    assert [c for c, _ in epoch.dealers] == [f"client-{i}" for i in range(4)]
    for i in range(4):
        key = secagg.load_secret_context(tmp_path / f"client-{i}" / "client.key")
        assert epoch.key_of(f"client-{i}") == key.fingerprint
        assert stat.S_IMODE((tmp_path / f"client-{i}" / "client.key").stat().st_mode) == 0o600
        assert (tmp_path / f"client-{i}" / "holder.shares").exists() == (i < 3)
    shares = HolderShares.load(tmp_path / "client-1" / "holder.shares")
    assert sorted(shares.shares) == [f"client-{i}" for i in range(4)] and shares.tested
    again = runner.invoke(app, ["keys", "ceremony", "--out", str(tmp_path), "--clients", "4", "--committee", "3"])
    assert again.exit_code == 2 and "--force" in again.output
    bad = runner.invoke(app, ["keys", "ceremony", "--out", str(tmp_path / "x"), "--clients", "4", "--committee", "3",
                              "--threshold", "4"])
    assert bad.exit_code == 2 and "threshold" in bad.output


def test_audit_threat_malicious_writes_the_matrix(tmp_path):
    out = tmp_path / "threat"
    result = runner.invoke(app, ["audit", "--threat", "malicious", "--quick", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["threat"] == "malicious" and len(report["cells"]) == 7 * 5 and (out / "report.html").exists()
    refused = {(c["row"], c["column"]): c["refused"] for c in report["cells"]}
    assert refused[("imprint-paper", "pinned")] == "ArchitectureMismatchError"
    bad = runner.invoke(app, ["audit", "--threat", "malicious", "--rounds", "3", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--rounds" in bad.output
    bad = runner.invoke(app, ["audit", "--threat", "sneaky", "--out", str(tmp_path / "y")])
    assert bad.exit_code == 2 and "--threat" in bad.output

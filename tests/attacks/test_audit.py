"""The audit end to end on a small case, its configuration errors, the report and the browser check."""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attacks.audit import AuditConfig, run_audit
from attacks.report import write_report
from fedattn.errors import InvalidConfigError, UnknownDatasetError
from secfl.cli import app

SMALL = {"clients": 3, "rounds": 1, "quick": True, "inversion_clients": [3], "shadow_models": 4,
         "inversion_iterations": 100}


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    report = run_audit(AuditConfig.from_mapping(SMALL))
    out = tmp_path_factory.mktemp("audit")
    return report, write_report(report, out)


def test_report_holds_every_protection_and_metric(small_report):
    report, paths = small_report
    data = json.loads(paths["json"].read_text())
    assert set(data["protections"]) == {"plain", "ckks", "ckks+dp"}
    assert len(data["config_hash"]) == 64 and data["versions"]["tenseal"] == "0.3.18"
    plain, ckks, dp = (data["protections"][p] for p in ("plain", "ckks", "ckks+dp"))
    assert plain["inversion"]["attacks"]["analytic"]["share_psnr_ge_20db"] == 1.0  # each update visible: exact
    assert dp["epsilon"] > 0 and plain["epsilon"] is None
    assert ckks["bytes_per_client_per_round"] > plain["bytes_per_client_per_round"]
    assert "psnr_vs_clients" in ckks["inversion"]
    for p in data["protections"].values():
        m = p["membership"]["lira_offline"]
        assert 0 <= m["auc"]["low"] <= m["auc"]["value"] <= m["auc"]["high"] <= 1
        assert set(m["tpr_at_fpr"]) == {"0.01", "0.001", "0.0"}
        assert p["membership"]["loss"]["empirical_epsilon"]["lower_bound"] >= 0
    assert plain["membership"]["client_update_loss"]["members"] > 0  # the visible update is attacked too
    assert "client_update_loss" not in ckks["membership"]
    for p in data["protections"].values():  # the last round's aggregate, as the server applied it
        step = p["membership"]["aggregate_step_loss"]
        assert step["members"] > 0 and step["nonmembers"] > 0 and 0 <= step["auc"]["value"] <= 1
    for name in ("reconstructions.png", "roc.png", "psnr_vs_clients.png", "accuracy.png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_figures_render_in_a_headless_browser(small_report):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    _, paths = small_report
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom", paths["html"].resolve().as_uri()],
            capture_output=True, text=True, timeout=120).stdout
    assert 'data-figures-ok="true"' in dom and 'data-figures="4"' in dom


@pytest.mark.parametrize("options, error, message", [
    ({"epochs": 3}, InvalidConfigError, "unknown audit option"),
    ({"protections": ["tee"]}, InvalidConfigError, "unknown protection"),
    ({"attacks": ["poisoning"]}, InvalidConfigError, "unknown attack"),
    ({"dataset": "cifar"}, UnknownDatasetError, "unknown dataset"),
    ({"shadow_models": 3}, InvalidConfigError, "even"),
    ({"dp_delta": 1.5}, InvalidConfigError, "delta"),
])
def test_bad_configuration_fails_before_training(options, error, message):
    with pytest.raises(error, match=message):
        AuditConfig.from_mapping(options)


def test_toml_config_and_cli_errors(tmp_path):
    good = tmp_path / "audit.toml"
    good.write_text('[audit]\nclients = 4\nprotections = ["plain", "ckks"]\n')
    cfg = AuditConfig.from_toml(good, rounds=2)
    assert (cfg.clients, cfg.rounds, cfg.protections) == (4, 2, ("plain", "ckks"))
    bad = tmp_path / "bad.toml"
    bad.write_text("clients = [")
    with pytest.raises(InvalidConfigError, match="not valid TOML"):
        AuditConfig.from_toml(bad)
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, ["audit", "--protections", "plain,tee", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown protection" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["audit", "--out", str(blocker / "x")])
    assert result.exit_code == 2 and "cannot write" in result.output
    result = runner.invoke(app, ["audit", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "cannot read config" in result.output


def test_cli_audit_quick_writes_the_report(tmp_path):
    runner = CliRunner(env={"COLUMNS": "200"})
    out = tmp_path / "report"
    result = runner.invoke(app, ["audit", "--quick", "--clients", "3", "--rounds", "1", "--protections", "plain",
                                 "--attacks", "inversion", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "plain" in result.output and (out / "report.html").exists()
    assert json.loads((out / "report.json").read_text())["config"]["protections"] == ["plain"]
    assert Path(out / "figures" / "reconstructions.png").exists()

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

SMALL = {"clients": 4, "rounds": 2, "seeds": 2, "probe_clients": 3, "shadow_models": 4, "inversion_iterations": 60,
         "canaries": 60, "canary_guesses": 20, "protections": ["plain", "ckks", "ckks+dp", "ckks+dpsgd"]}


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    report = run_audit(AuditConfig.from_mapping(SMALL))
    out = tmp_path_factory.mktemp("audit")
    return report, write_report(report, out)


def test_report_summarises_every_protection_over_the_seeds(small_report):
    report, paths = small_report
    data = json.loads(paths["json"].read_text())
    assert set(data["summary"]) == {"plain", "ckks", "ckks+dp", "ckks+dpsgd"} and data["seeds"] == [0, 1]
    assert len(data["per_seed"]) == 2 and data["modality"] == "image"
    plain, ckks, dp, dpsgd = (data["summary"][p] for p in ("plain", "ckks", "ckks+dp", "ckks+dpsgd"))
    for row in (plain, ckks):  # every headline: a mean over both seeds with an interval
        iv = row["reconstructed_share"]
        assert iv["n"] == 2 and iv["low"] <= iv["mean"] <= iv["high"] and len(iv["values"]) == 2
    assert plain["epsilon"] is None and dp["epsilon"]["mean"] > 0 and dpsgd["epsilon_audited"] is not None
    assert dp["epsilon_replace_one"]["mean"] > dp["epsilon"]["mean"]
    assert plain["client_update_auc"] is not None and ckks["client_update_auc"] is None  # hidden by encryption
    assert ckks["change_vs_plain"]["reconstructed_share"] is not None
    seed0 = data["per_seed"][0]
    assert seed0["plain"]["real_run"]["rounds_attacked"] == [0, 1]  # two rounds: both attacked
    assert seed0["plain"]["real_run"]["images_in_views"] > seed0["plain"]["probe"]["share_ge_20db"]
    assert "worst case" in seed0["ckks"]["probe"]["view"]
    assert seed0["ckks+dp"]["epsilon"]["relation"] == "add or remove one client's whole update"
    final = seed0["plain"]["membership"]["final_model"]
    assert {"loss", "lira_online", "rmia"} <= set(final) and "with or without encryption" in final["note"]
    for m in (final["rmia"], seed0["ckks"]["membership"]["aggregate"]):
        assert 0 <= m["auc"]["low"] <= m["auc"]["value"] <= m["auc"]["high"] <= 1
        assert all(m["nonmembers"] >= 10 / float(f) for f in m["tpr_at_fpr"])  # only resolvable FPRs
    assert seed0["ckks+dpsgd"]["dp_audit"]["epsilon_lower_bound"] <= seed0["ckks+dpsgd"]["dp_audit"]["epsilon_accountant"]
    for name in ("probe.png", "membership_roc.png", "accuracy.png", "most_exposed.png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["html"].read_text()
    assert "Executive summary" in page and "hidden by encryption" in page and "no DP claimed" in page


def test_a_tabular_audit_reports_attribute_inference_and_no_images(tmp_path):
    report = run_audit(AuditConfig.from_mapping({**SMALL, "dataset": "breast_cancer", "seeds": 1,
                                                 "protections": ["plain", "ckks"], "attacks": ["inversion"]}))
    paths = write_report(report, tmp_path)
    assert report.modality == "table"
    real = report.per_seed[0]["plain"]["real_run"]
    assert real["attribute"].startswith("the label column") and real["records_in_views"] > 0
    assert 0 <= real["attribute_baseline"] <= 1 and "share_ge_20db" not in report.per_seed[0]["plain"]["probe"]
    assert not any(name.endswith(".png") and ("probe" in name or "real_run" in name) for name in paths)
    assert "attribute" in paths["html"].read_text()


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
    figures = sum(1 for name in paths if name.endswith(".png"))
    assert 'data-figures-ok="true"' in dom and f'data-figures="{figures}"' in dom


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
    assert Path(out / "figures" / "probe.png").exists()

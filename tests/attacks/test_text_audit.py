"""The audit's text rows end to end on a small federation, and the text audit's configuration."""

from __future__ import annotations

import json

import pytest

from attacks.audit import AuditConfig, run_audit
from attacks.report import summary_rows, write_report
from attacks.text_audit import TEXT_DEFAULTS, text_run
from fedattn.errors import InvalidConfigError, PartitionError

SMALL = {"dataset": "pydoc-topics", "clients": 4, "rounds": 1, "seeds": 2, "probe_clients": 2,
         "protections": ["plain", "ckks"]}


@pytest.fixture(scope="module")
def text_report(tmp_path_factory):
    report = run_audit(AuditConfig.from_mapping(SMALL), workers=2)  # the process pool's path
    return report, write_report(report, tmp_path_factory.mktemp("text-audit"))


def test_a_text_corpus_gets_the_text_audits_defaults_and_bad_options_are_refused():
    cfg = AuditConfig.from_mapping({"dataset": "pydoc-topics"})
    assert {k: getattr(cfg, k) for k in TEXT_DEFAULTS} == TEXT_DEFAULTS
    assert AuditConfig.from_mapping({"dataset": "pydoc-topics", "model": "lstm"}).model == "lstm"
    with pytest.raises(InvalidConfigError, match="is text: audit a language model"):
        AuditConfig(dataset="pydoc-topics")  # built directly: the image defaults, refused
    with pytest.raises(InvalidConfigError, match="for text data"):
        AuditConfig.from_mapping({"dataset": "pydoc-topics", "attacks": ["inversion"]})
    with pytest.raises(InvalidConfigError, match="for image and table data"):
        AuditConfig.from_mapping({"attacks": ["canary"]})
    with pytest.raises(InvalidConfigError, match="unknown model"):  # before any worker starts
        AuditConfig.from_mapping({"dataset": "pydoc-topics", "model": "gpt"})
    with pytest.raises(InvalidConfigError, match="forward_embedded"):
        AuditConfig.from_mapping({"dataset": "pydoc-topics", "model": "helpers.custom_model:bag_of_words"})
    with pytest.raises(PartitionError, match="63 natural groups"):
        AuditConfig.from_mapping({"dataset": "pydoc-topics", "clients": 64})


def test_the_server_reads_each_clients_words_under_plain_and_their_union_under_ckks(text_report):
    report, _ = text_report
    assert report.modality == "text" and len(report.per_seed) == 2
    for seed in report.per_seed:
        plain, ckks = seed["plain"]["bag_of_words"], seed["ckks"]["bag_of_words"]
        # one client's update: its words and no other (a word seen once can move its row below the threshold)
        assert plain["precision"] == 1.0 and plain["recall"] > 0.99
        assert ckks["recall"] > 0.95 and ckks["precision"] < 0.9  # hidden among the other clients' words
        assert seed["ckks"]["bytes_per_client_per_round"] > seed["plain"]["bytes_per_client_per_round"]


def test_the_probe_reconstructs_sentences_above_chance_from_one_clients_gradient(text_report):
    report, _ = text_report
    s = report.summary["plain"]
    assert s["rouge1"]["mean"] > s["rouge1_chance"]["mean"] + 0.3
    assert s["rouge1"]["n"] == 2 and s["rouge1"]["low"] is not None  # an interval over the two seeds
    canaries = [seed["plain"]["canary"] for seed in report.per_seed]
    assert all(c["model"] == f"w + {c['client']}'s update" and c["windows"] > 0 for c in canaries)


def test_training_lowers_perplexity_below_the_untrained_models(text_report):
    import math

    import torch

    from fedattn.data import load_dataset
    from fedattn.models import make_model

    report, _ = text_report
    ds = load_dataset("pydoc-topics")
    model = make_model("transformer", input_shape=ds.input_shape, n_classes=ds.n_classes, seed=report.seeds[0])
    with torch.no_grad():
        logits = model(torch.as_tensor(ds.x_test))
    untrained = math.exp(float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(ds.y_test))))
    assert report.per_seed[0]["plain"]["perplexity"] < 0.5 * untrained


def test_results_do_not_depend_on_the_process_that_ran_them(text_report):
    report, _ = text_report
    entry, _ = text_run(AuditConfig.from_mapping({**SMALL, "seeds": 1}), "plain", report.seeds[0])
    pooled = dict(report.per_seed[0]["plain"])
    assert pooled.pop("seconds_train") > 0 and entry.pop("seconds_train") > 0  # the one field that is a timing
    assert entry == pooled


def test_the_text_report_has_its_rows_sentences_and_figures(text_report):
    report, paths = text_report
    data = json.loads(paths["json"].read_text())
    assert data["modality"] == "text" and set(data["summary"]) == {"plain", "ckks"}
    assert {"text_leakage.png", "perplexity.png"} <= set(paths)
    page = paths["html"].read_text()
    assert "Sentences the probe reconstructed" in page and " | " in page
    rows = summary_rows(report)
    assert [r["protection"] for r in rows] == ["plain", "ckks"] and "bits of 13.3" in rows[0]["canary exposure (real run)"]

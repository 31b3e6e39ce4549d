"""Rendering a text audit (an :class:`~attacks.audit.AuditReport` whose modality is ``text``) for
:func:`attacks.report.write_report`: two figures and the HTML page - the summary, the sentences the
probe reconstructed, the detail seed by seed and what each column means."""

from __future__ import annotations

import html
import json
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .render import COLLUSION, FIGURE_CHECK, STYLE, fmt, html_figures, per_round, png, table
from .text_reconstruction import assign

__all__ = ["TEXT_MEANINGS", "TEXT_FIGURES", "summary_rows", "verdict", "page"]

AuditReport = Any  # attacks.audit.AuditReport, duck-typed: attacks.report imports this module

TEXT_MEANINGS = {
    "bag of words (real run)": "Precision / recall of the tokens read off the embedding rows that moved in the "
                               "first round's view - each client's update under plain, the released aggregate "
                               "otherwise - against each client's own tokens, averaged over the clients. Under "
                               "encryption recall stays high (every client's words are in the sum); precision "
                               "falls to the share of the union a client used.",
    "canary exposure (real run)": "A secret sentence (the private key is + 4 words from an alphabet of 10) placed "
                                  "20 times in one client's text (drawn by seed); log2(candidates) - log2(rank of "
                                  "the secret) under the last round's model the server can form (w + that client's "
                                  "update under plain, the global model otherwise). 13.3 bits: the secret ranked first; about 1.4: "
                                  "chance.",
    "sentence ROUGE (probe)": "A FedSGD round on the untrained model, one window per client; the TAG/LAMP-style "
                              "attack reconstructs the windows from each gradient (plain) or from their released "
                              "mean; ROUGE-1 / ROUGE-2 F1 against the originals, beside the same scores for random "
                              "public windows (chance). A worst case for the clients, not the run.",
    "ε claimed": "The accountant's ε at δ for the relation named: one training window under DP-SGD, one client's "
                 "whole update under client-level DP. An upper bound for that relation only.",
    "perplexity": "exp of the final global model's next-word cross-entropy on the held-out text (lower is better). "
                  "The rules differ (plain is FedAvg, ckks FedAtt), so a difference is not the cost of encryption "
                  "alone.",
    "change vs plain": "The protection's mean minus plain's, over the same seeds.",
}


def summary_rows(report: AuditReport) -> list[dict[str, str]]:
    """One row per protection (the CLI prints the same rows)."""
    rows = []
    for protection, s in report.summary.items():
        change = s.get("change_vs_plain") or {}
        bytes_ = s["bytes_per_client_per_round"]
        rows.append({
            "protection": protection,
            "who must collude to see one update": COLLUSION.get(protection, "-"),
            "perplexity": fmt(s["perplexity"], digits=4),
            "KB / client / round": f"{bytes_['mean'] / 1e3:.0f}" if bytes_ else "-",
            "bag of words (real run)": f"precision {fmt(s['bag_of_words_precision'])}, recall "
                                       f"{fmt(s['bag_of_words_recall'])}",
            "canary exposure (real run)": f"{fmt(s['canary_exposure'])} bits of 13.3",
            "sentence ROUGE (probe)": f"ROUGE-1 {fmt(s['rouge1'])} (chance {fmt(s['rouge1_chance'])}), ROUGE-2 "
                                      f"{fmt(s['rouge2'])} (chance {fmt(s['rouge2_chance'])})",
            "ε claimed": "no DP claimed" if s["epsilon"] is None else f"{fmt(s['epsilon'])} ({_relation(report, protection)})",
            "change vs plain": "-" if not change else ", ".join(
                f"{k.replace('_', ' ')} {v:+.3g}" for k, v in change.items() if v is not None),
        })
    return rows


def _relation(report: AuditReport, protection: str) -> str:
    eps = next((e[protection]["epsilon"] for e in report.per_seed if e[protection].get("epsilon")), None)
    return "" if eps is None else f"{eps['relation']}, δ = {eps['delta']:g}, {eps['accountant']}"


def verdict(report: AuditReport) -> list[str]:
    """Plain sentences: per protection, what the server learns and what it costs."""
    out = []
    for protection, s in report.summary.items():
        parts = [f"<b>{html.escape(protection)}</b>: from the real run the server reads each client's words with "
                 f"recall {fmt(s['bag_of_words_recall'])} at precision {fmt(s['bag_of_words_precision'])}",
                 f"the canary is exposed by {fmt(s['canary_exposure'])} bits of 13.3",
                 f"in the worst case (probe) it reconstructs sentences at ROUGE-1 {fmt(s['rouge1'])} / ROUGE-2 "
                 f"{fmt(s['rouge2'])} (chance {fmt(s['rouge1_chance'])} / {fmt(s['rouge2_chance'])})",
                 f"perplexity {fmt(s['perplexity'], digits=4)}"]
        parts.append("no DP claimed" if s["epsilon"] is None else f"ε {fmt(s['epsilon'])} claimed")
        out.append("; ".join(parts) + ".")
    return out


def _bars(report: AuditReport) -> bytes | None:
    measures = {"bag-of-words recall": ("bag_of_words_recall", 1.0), "precision": ("bag_of_words_precision", 1.0),
                "canary exposure / 13.3": ("canary_exposure", 13.29), "ROUGE-1 (probe)": ("rouge1", 1.0),
                "ROUGE-2 (probe)": ("rouge2", 1.0)}
    protections = list(report.summary)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(protections)
    for k, p in enumerate(protections):
        means, errs = [], []
        for key, scale in measures.values():
            iv = report.summary[p].get(key)
            means.append(np.nan if iv is None else iv["mean"] / scale)
            errs.append(0.0 if iv is None or iv.get("low") is None else (iv["high"] - iv["low"]) / 2 / scale)
        ax.bar(np.arange(len(measures)) + k * width, means, width, yerr=errs, label=p, capsize=2)
    ax.set_xticks(np.arange(len(measures)) + 0.4 - width / 2, list(measures), fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of the maximum")
    ax.set_title("What the server learns from text, per protection (95% intervals over seeds)")
    ax.legend(fontsize=8)
    return png(fig)


def _perplexity(report: AuditReport) -> bytes | None:
    runs = {p: f["perplexity"] for p, f in (report.figures.get("text") or {}).items() if f.get("perplexity")}
    return per_round(runs, ylabel="test perplexity", title="Perplexity per round (first seed)")


TEXT_FIGURES = {
    "text_leakage.png": (_bars, "Each measure as a share of its maximum: bars near the top mean the server learns "
                                "it. ROUGE bars come from the probe (a worst case), the others from the real run."),
    "perplexity.png": (_perplexity, "What each protection costs in perplexity, round by round."),
}


def sentences(report: AuditReport, shown: int = 3) -> list[dict[str, str]]:
    """The probe's first windows per protection and the reconstruction assigned to each, as scored (first seed)."""
    words = report.figures.get("vocabulary") or {}
    rows = []
    for protection, f in (report.figures.get("text") or {}).items():
        rec = f.get("reconstruction")
        if not rec:
            continue
        index, _ = assign(rec["reconstructed"], rec["originals"])
        for original, k in zip(rec["originals"][:shown], index):
            best = rec["reconstructed"][k] if k >= 0 else np.zeros_like(original)
            rows.append({"protection": protection,
                         "window | next word": " ".join(words.get(int(t), "?") for t in original[:-1]) + " | "
                                               + words.get(int(original[-1]), "?"),
                         "its reconstruction": " ".join(words.get(int(t), "?") for t in best[:-1]) + " | "
                                                   + words.get(int(best[-1]), "?")})
    return rows


def _detail_rows(report: AuditReport) -> list[dict[str, str]]:
    rows = []
    for seed, entry in zip(report.seeds, report.per_seed):
        for protection, e in entry.items():
            bow, can, rec = e.get("bag_of_words") or {}, e.get("canary") or {}, e.get("reconstruction") or {}
            rows.append({"seed": str(seed), "protection": protection, "perplexity": f"{e['perplexity']:.2f}",
                         "bag of words P / R": f"{bow['precision']:.3f} / {bow['recall']:.3f}" if bow else "-",
                         "exposure": f"{can['exposure']:.2f}" if can else "-",
                         "ROUGE-1 / 2": f"{rec['rouge1']:.3f} / {rec['rouge2']:.3f}" if rec else "-"})
    return rows


def page(report: AuditReport, images: dict[str, tuple[bytes, str]]) -> str:
    cfg = report.config
    meanings = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in TEXT_MEANINGS.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    verdicts = "".join(f"<li>{v}</li>" for v in verdict(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>secfl privacy audit (text)</title>
<style>{STYLE}</style></head>
<body><h1>secfl privacy audit: text</h1>
<p>Corpus <b>{html.escape(str(cfg['dataset']))}</b>, model {html.escape(str(cfg['model']))}, {cfg['clients']} clients,
{cfg['rounds']} rounds, seeds {', '.join(str(s) for s in report.seeds)}. Config hash
<code>{report.config_hash[:16]}</code>; run time {report.seconds:.0f} s.</p>
<h2>Executive summary</h2><ul>{verdicts}</ul>
<p>Means over the seeds with 95 % t-intervals in brackets.</p>{table(summary_rows(report))}
<ul>{notes}</ul>
<h2>Sentences the probe reconstructed (first seed, a worst case)</h2>{table(sentences(report))}
<h2>Figures</h2>{html_figures(images)}
<h2>Detail, seed by seed</h2>{table(_detail_rows(report))}
<h2>What the numbers mean, and their limits</h2><dl>{meanings}</dl>
<h2>Configuration and versions</h2><pre>{html.escape(json.dumps(cfg, indent=1))}</pre>
<pre>{html.escape(json.dumps(report.versions, indent=1))}</pre>
{FIGURE_CHECK}</body></html>
"""

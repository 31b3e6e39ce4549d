"""Rendering an :class:`~attacks.audit.AuditReport`: ``report.json`` (canonical), PNG figures and a
self-contained ``report.html``: an executive summary first, then the most exposed records, then the
detail. Every figure has a title and a caption that says what to read from it."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from . import text_report
from .audit import AuditReport
from .render import COLLUSION, FIGURE_CHECK, STYLE, fmt, html_figures, jsonable, per_round, png, table

__all__ = ["write_report", "summary_rows", "MEANINGS", "fmt"]

HIDDEN = "hidden by encryption"
NO_DP = "no DP claimed"

#: What each column means, its threat model and its limits (shown in the HTML report; docs/audit.md has more).
MEANINGS = {
    "reconstructed (real run)": "Share of the training images in the views the server saw, in the run's first, "
                                "middle and last round, that the analytic first-layer attack reconstructs at "
                                "≥ 20 dB PSNR. Under plain the view is each client's update, under encryption "
                                "the released aggregate (FedAtt weights unknown to the server).",
    "probe (worst case)": "A FedSGD round on the untrained model, one example per client, equal weights; Inverting "
                          "Gradients with the labels known runs its whole schedule. A worst case for the clients, "
                          "not the run.",
    "membership AUC (server's view)": "LOSS-change attack on the last round's aggregate as the server applied it; "
                                      "members are the contributors' examples, non-members test examples with the "
                                      "same labels, as many. 0.5 is chance.",
    "client-update AUC": "Plain only (hidden by encryption): the LOSS attack on each client's own update.",
    "final-model AUC": "Online LiRA on the final model with reference models trained by the same recipe. "
                       "Encryption does not change the final model: this column separates protections only "
                       "through DP.",
    "ε claimed": "The accountant's (ε, δ) and its neighbouring relation; client-level DP has no amplification by "
                 "client sampling, because the server sees who uploads. An upper bound for that relation only.",
    "ε audited": "A lower bound on ε at 95 % confidence from one training run with canaries (Steinke et al. "
                 "2023); a lower bound far below the claim says the audit is not tight, not that DP is loose.",
    "change vs plain": "The protection's mean minus plain's, over the same seeds.",
    "who must collude to see one update": "Which parties, together with the server, can decrypt a single client's "
                                          "update (the protections differ in keys, not only in what is released).",
}


def summary_rows(report: AuditReport) -> list[dict[str, str]]:
    """The executive summary, one row per protection (the CLI prints the same rows)."""
    if report.modality == "text":
        return text_report.summary_rows(report)
    rows = []
    for protection, s in report.summary.items():
        encrypted = protection != "plain"
        dp = s.get("epsilon")
        claim = NO_DP if dp is None else f"{fmt(dp)} ({_relation(report, protection)})"
        if dp is not None and s.get("epsilon_replace_one") is not None:
            claim += f"; replace-one {fmt(s['epsilon_replace_one'])}"
        audited = "-" if protection != "ckks+dpsgd" else fmt(s.get("epsilon_audited"))
        if protection == "ckks+dp":
            audited = "not audited (needs hundreds of canary clients)"
        change = s.get("change_vs_plain") or {}
        rows.append({
            "protection": protection,
            "who must collude to see one update": COLLUSION.get(protection, "-"),
            "accuracy": fmt(s["accuracy"], pct=True),
            "KB / client / round": f"{s['bytes_per_client_per_round']['mean'] / 1e3:.0f}" if s["bytes_per_client_per_round"] else "-",
            "reconstructed (real run)": (fmt(s["reconstructed_share"], pct=True) if report.modality == "image"
                                         else f"{fmt(s['reconstructed_share'], pct=True)} of records; attribute "
                                              f"{fmt(s['attribute_accuracy'], pct=True)}"),
            "probe (worst case)": fmt(s["probe_share"], pct=True),
            "membership AUC (server's view)": fmt(s["aggregate_auc"]),
            "client-update AUC": HIDDEN if encrypted else fmt(s["client_update_auc"]),
            "final-model AUC": fmt(s["final_model_lira_auc"]),
            "ε claimed": claim,
            "ε audited": audited,
            "change vs plain": "-" if not encrypted else (
                f"reconstructed {_signed(change.get('reconstructed_share'), pct=True)}, accuracy "
                f"{_signed(change.get('accuracy'), pct=True)}"),
        })
    return rows


def _signed(v: float | None, *, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:+.1f} pp" if pct else f"{v:+.3f}"


def _relation(report: AuditReport, protection: str) -> str:
    for seed in report.per_seed:
        eps = seed.get(protection, {}).get("epsilon")
        if eps:
            return f"{eps['relation']}, δ = {eps['delta']:g}, {eps['accountant']}"
    return ""


def verdict(report: AuditReport) -> list[str]:
    """Plain sentences: per protection, what a server reconstructs and infers, and the cost."""
    out = []
    s = report.summary
    for protection, row in s.items():
        rec = row["reconstructed_share"]
        probe = row["probe_share"]
        parts = [f"<b>{html.escape(protection)}</b>: in the real run the server reconstructs "
                 f"{fmt(rec, pct=True)} of the training images it saw"
                 if report.modality == "image" else
                 f"<b>{html.escape(protection)}</b>: in the real run the server recovers {fmt(rec, pct=True)} "
                 f"of the records it saw"]
        parts.append(f"in the worst case (probe) {fmt(probe, pct=True)}")
        parts.append(f"membership on its view gives AUC {fmt(row['aggregate_auc'])}")
        parts.append(f"accuracy {fmt(row['accuracy'], pct=True)}")
        if row["bytes_per_client_per_round"]:
            parts.append(f"{row['bytes_per_client_per_round']['mean'] / 1e3:.0f} KB per client and round")
        if row.get("epsilon") is not None:
            audited = row.get("epsilon_audited")
            parts.append(f"ε {fmt(row['epsilon'])} claimed" + (f", at least {fmt(audited)} audited" if audited else
                                                                 ", not audited"))
        else:
            parts.append(NO_DP)
        out.append("; ".join(parts) + ".")
    return out


# ---- figures -------------------------------------------------------------------------------------

def figure_probe(report: AuditReport) -> bytes | None:
    f = report.figures
    probes = f.get("probe") or {}
    if report.modality != "image" or not probes:
        return None
    n = min(6, min(len(v) for v in probes.values()))
    shape = f["probe_originals"].shape[-2:]
    fig, axes = plt.subplots(2 * len(probes), n, figsize=(1.3 * n, 2.7 * len(probes)), squeeze=False)
    for r, (name, recs) in enumerate(probes.items()):
        for k, imgs in enumerate((f["probe_order"][name], recs)):
            for c in range(n):
                ax = axes[2 * r + k][c]
                ax.imshow(imgs[c].reshape(shape), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
        axes[2 * r][0].set_ylabel(f"{name}\noriginal", rotation=0, ha="right", va="center", fontsize=8)
        axes[2 * r + 1][0].set_ylabel("reconstructed", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Probe (worst case): one example per client, untrained model")
    return png(fig)


def figure_real_run(report: AuditReport) -> bytes | None:
    f = report.figures
    found = {p: ex for p, ex in (f.get("real_run") or {}).items() if ex}
    if report.modality != "image" or not found:
        return None
    n = max(len(ex) for ex in found.values())
    fig, axes = plt.subplots(2 * len(found), n, figsize=(1.3 * n, 2.8 * len(found)), squeeze=False)
    for r, (name, ex) in enumerate(found.items()):
        for c in range(n):
            for k in (0, 1):
                ax = axes[2 * r + k][c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < len(ex):
                    ax.imshow(ex[c][k].reshape(ex[c][0].shape[-2:]), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.axis("off")
        axes[2 * r][0].set_ylabel(f"{name}\ntraining image", rotation=0, ha="right", va="center", fontsize=8)
        axes[2 * r + 1][0].set_ylabel("recovered", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Real run: training images the server recovered at ≥ 20 dB (first seed)")
    return png(fig)


def figure_roc(report: AuditReport) -> bytes | None:
    roc = report.figures.get("roc") or {}
    curves = {p: c["aggregate"] for p, c in roc.items() if "aggregate" in c}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 4))
    for name, (fpr, tpr) in curves.items():
        ax.loglog(np.maximum(fpr, 1e-3), np.maximum(tpr, 1e-3), label=name)
    ax.plot([1e-3, 1], [1e-3, 1], "k:", lw=1, label="chance")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("Membership on the server's view (last aggregate), log-log")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    return png(fig)


def figure_accuracy(report: AuditReport) -> bytes | None:
    return per_round(report.figures.get("accuracy") or {}, ylabel="test accuracy",
                     title="Accuracy per round (first seed)")


def figure_exposed(report: AuditReport) -> bytes | None:
    exposed = (report.figures.get("most_exposed") or {}).get("plain")
    pool = report.figures.get("pool_x")
    if report.modality != "image" or not exposed or pool is None:
        return None
    fig, axes = plt.subplots(1, len(exposed), figsize=(1.3 * len(exposed), 1.6), squeeze=False)
    for ax, (i, score) in zip(axes[0], exposed):
        ax.imshow(pool[i].reshape(pool.shape[-2:]), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{score:.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Most exposed members of the final model (plain, RMIA score)", fontsize=9)
    return png(fig)


FIGURES = {
    "real_run.png": (figure_real_run, "Pairs of a training image and the candidate the analytic attack produced from "
                                      "the view the server saw in the real run. An empty figure means nothing was "
                                      "recovered at 20 dB."),
    "probe.png": (figure_probe, "The probe's reconstructions per protection, under the originals: a worst case "
                                "(one example per client, untrained model), not the run."),
    "membership_roc.png": (figure_roc, "TPR against FPR on log axes for the attack on the last aggregate: a curve "
                                       "on the dotted line is chance; what matters is the TPR at low FPR."),
    "accuracy.png": (figure_accuracy, "What each protection costs in accuracy, round by round (the rules differ: "
                                      "plain is FedAvg, ckks FedAtt, ckks+dp equal-weight FedAvg)."),
    "most_exposed.png": (figure_exposed, "The members the final model gives away most (highest RMIA score): the "
                                         "records a membership attack would name first."),
}


# ---- HTML ----------------------------------------------------------------------------------------

def _detail_rows(report: AuditReport) -> list[dict[str, str]]:
    rows = []
    for i, seed in enumerate(report.per_seed):
        for protection, e in seed.items():
            real = e.get("real_run") or {}
            mem = e.get("membership") or {}
            rows.append({"seed": str(report.seeds[i]), "protection": protection,
                         "rounds attacked": ", ".join(str(r) for r in real.get("rounds_attacked", [])),
                         "recovered / seen": f"{real.get('recovered_ge_20db', real.get('records_recovered', '-'))} / "
                                             f"{real.get('images_in_views', real.get('records_in_views', '-'))}",
                         "probe": f"{(e.get('probe') or {}).get('share_ge_20db', float('nan')) * 100:.0f}%"
                         if "share_ge_20db" in (e.get("probe") or {}) else "-",
                         "aggregate AUC": f"{mem['aggregate']['auc']['value']:.3f}" if "aggregate" in mem else "-",
                         "final LOSS / LiRA / RMIA": " / ".join(
                             f"{mem['final_model'][k]['auc']['value']:.3f}" for k in ("loss", "lira_online", "rmia"))
                         if "final_model" in mem else "-"})
    return rows


def _html(report: AuditReport, images: dict[str, tuple[bytes, str]]) -> str:
    cfg = report.config
    meanings = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in MEANINGS.items())

    def block(names: list[str]) -> str:
        return html_figures(images, names)

    risk = block(["real_run.png", "most_exposed.png"]) or "<p>Nothing was recovered at 20 dB in the real run.</p>"
    figures = block([n for n in images if n not in ("real_run.png", "most_exposed.png")])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    verdicts = "".join(f"<li>{v}</li>" for v in verdict(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>secfl privacy audit</title>
<style>{STYLE}</style></head>
<body><h1>secfl privacy audit</h1>
<p>Dataset <b>{html.escape(str(cfg['dataset']))}</b> ({report.modality} data), {cfg['clients']} clients,
{cfg['rounds']} rounds, seeds {', '.join(str(s) for s in report.seeds)}. Config hash
<code>{report.config_hash[:16]}</code>; run time {report.seconds:.0f} s.</p>
<h2>Executive summary</h2><ul>{verdicts}</ul>
<p>Means over the seeds with 95 % t-intervals in brackets.</p>{table(summary_rows(report))}
<ul>{notes}</ul>
<h2>Per-record risk</h2>{risk}
<h2>Figures</h2>{figures}
<h2>Detail, seed by seed</h2>{table(_detail_rows(report))}
<h2>What the numbers mean, and their limits</h2><dl>{meanings}</dl>
<h2>Configuration and versions</h2><pre>{html.escape(json.dumps(cfg, indent=1))}</pre>
<pre>{html.escape(json.dumps(report.versions, indent=1))}</pre>
{FIGURE_CHECK}</body></html>
"""


def write_report(report: AuditReport, out: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``figures/*.png`` into ``out``."""
    text = report.modality == "text"
    figures, page = (text_report.TEXT_FIGURES, text_report.page) if text else (FIGURES, _html)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(jsonable(report.to_dict()), indent=2, allow_nan=False))
    images = {}
    for name, (make, caption) in figures.items():
        data = make(report)
        if data is not None:
            images[name] = (data, caption)
            (out / "figures" / name).write_bytes(data)
            paths[name] = out / "figures" / name
    paths["html"].write_text(page(report, images))
    return paths

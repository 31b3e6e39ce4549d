"""Rendering an :class:`~attacks.audit.AuditReport`: ``report.json`` (canonical), PNG figures and a
self-contained ``report.html`` with the figures embedded."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .audit import AuditReport  # noqa: E402

__all__ = ["write_report", "summary_rows", "MEANINGS"]

#: How the ROC figure names each membership attack.
ATTACK_LABELS = {"loss": "LOSS", "lira_offline": "LiRA offline", "client_update_loss": "client-0 update / LOSS",
                 "aggregate_step_loss": "last aggregate / LOSS change"}

#: What each reported number means, and its limits (shown in the HTML report).
MEANINGS = {
    "accuracy": "Test accuracy of the final global model on the held-out split. The protections also differ "
                "in their rule (plain: FedAvg; ckks: FedAtt; ckks+dp: equal-weight FedAvg), so accuracy "
                "differences are not the cost of encryption alone.",
    "epsilon": "Client-level (ε, δ) of the DP protection, from an Opacus RDP accountant over the rounds; "
               "an upper bound on what any attack can achieve, not a measurement. With few clients the noise "
               "needed for a small ε swamps the mean: meaningful client-level ε needs hundreds of clients.",
    "bytes": "Bytes one client uploads per round (ciphertexts and header for CKKS, float32 for plain).",
    "share ≥ 20 dB": "Share of the attacked clients' images reconstructed at PSNR ≥ 20 dB after matching "
                     "reconstructions to originals (Hungarian assignment). 20 dB on 8×8 digits is a clearly "
                     "recognisable image.",
    "identifiability": "Share of reconstructions whose nearest training image is the true one: whether the "
                       "attacker can tell whose record it is.",
    "labels known": "The attacker is given the true labels: the worst case, always reported. 'Labels recovered' "
                    "estimates them from the last layer's bias gradient first.",
    "AUC / TPR@FPR": "Membership inference on the final model: members are the clients' training examples, "
                     "non-members the held-out test set. TPR at a low FPR is what matters for privacy; the "
                     "brackets are 95 % bootstrap intervals.",
    "aggregate-step AUC": "LOSS-change attack on the last round's step as the server applies it (under CKKS "
                          "the released aggregate, the only update it sees): how much the step lowered each "
                          "example's loss; members are every client's training examples.",
    "client-update AUC": "Under plain FedAvg only: LOSS attack on one client's visible update (its local model), "
                         "members its own training examples.",
    "empirical ε": "A lower bound on ε at 95 % confidence (Clopper-Pearson) from the attack's TPR and FPR at a "
                   "threshold chosen on a separate half of the data. A lower bound only: a weak attack gives a "
                   "small number even for a leaky model.",
    "inversion view": "The attack runs on a FedSGD probe round on the initial model with one example per client "
                      "(the worst case for the clients), on exactly what the server sees under each protection.",
}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _best_attack(inv: dict[str, Any]) -> str:
    return max(inv["attacks"], key=lambda a: (inv["attacks"][a]["share_psnr_ge_20db"], inv["attacks"][a]["median_psnr_db"]))


def figure_reconstructions(report: AuditReport) -> bytes | None:
    art = report.artefacts
    if art.get("originals") is None:
        return None
    originals = np.asarray(art["originals"])
    n = min(10, len(originals))
    rows = [("original", originals[:n])]
    for protection, recs in art["reconstructions"].items():
        attack = _best_attack(report.protections[protection]["inversion"])
        rows.append((f"{protection}\n{attack}", np.asarray(recs[attack])[:n]))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.25 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                img = np.asarray(images[c]).reshape(-1)
                side = int(math.isqrt(img.size))
                ax.imshow(np.clip(img[: side * side].reshape(side, side), 0, 1), cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Originals and the best reconstruction the server obtains under each protection", fontsize=9)
    return _png(fig)


def figure_roc(report: AuditReport) -> bytes | None:
    roc = report.artefacts.get("roc") or {}
    if not roc:
        return None
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for protection, curves in roc.items():
        for attack, (fpr, tpr) in curves.items():
            auc = report.protections[protection]["membership"][attack]["auc"]["value"]
            ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4),
                    label=f"{protection} / {ATTACK_LABELS.get(attack, attack)} (AUC {auc:.3f})")
    grid = np.logspace(-4, 0, 50)
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Membership inference on what the server sees (log axes)", fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    return _png(fig)


def figure_psnr_vs_clients(report: AuditReport) -> bytes | None:
    sweep = report.artefacts.get("psnr_vs_clients") or {}
    if not sweep:
        return None
    ks = sorted(int(k) for k in sweep)
    attacks = list(sweep[str(ks[0])])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    for attack in attacks:
        a1.plot(ks, [sweep[str(k)][attack]["share_psnr_ge_20db"] for k in ks], "o-", label=attack)
        a2.plot(ks, [sweep[str(k)][attack]["median_psnr_db"] for k in ks], "o-", label=attack)
    a1.set_ylabel("share of images ≥ 20 dB")
    a2.set_ylabel("median matched PSNR (dB)")
    for ax in (a1, a2):
        ax.set_xlabel("clients in the released CKKS mean")
        ax.set_xticks(ks)
    a1.legend(fontsize=7)
    fig.suptitle("Inversion of the released aggregate as the number of clients grows", fontsize=9)
    return _png(fig)


def figure_accuracy(report: AuditReport) -> bytes | None:
    acc = report.artefacts.get("accuracy") or {}
    if not acc:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for protection, values in acc.items():
        ax.plot(range(1, len(values) + 1), values, "o-", label=protection)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy per round", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


FIGURES = {
    "reconstructions.png": figure_reconstructions,
    "roc.png": figure_roc,
    "psnr_vs_clients.png": figure_psnr_vs_clients,
    "accuracy.png": figure_accuracy,
}


def summary_rows(report: AuditReport, *, intervals: bool = True) -> list[dict[str, str]]:
    """One row per protection (terminal table and HTML summary; ``intervals`` adds the 95 % CIs)."""
    rows = []
    for protection, r in report.protections.items():
        crypto = r["seconds_encrypt"] + r["seconds_aggregate"] + r["seconds_decrypt"]
        row = {"protection": protection, "accuracy": f"{r['accuracy']:.3f}",
               "ε (DP)": "-" if r.get("epsilon") is None else f"{r['epsilon']:.2f}",
               "KB/client/round": f"{r['bytes_per_client_per_round'] / 1000:,.1f}",
               "crypto s": f"{crypto:.2f}"}
        inv = r.get("inversion")
        if inv:
            a = inv["attacks"]
            known = max(a["analytic"]["share_psnr_ge_20db"], a["ig_labels_known"]["share_psnr_ge_20db"])
            recovered = max(a["analytic"]["share_psnr_ge_20db"], a["ig_labels_recovered"]["share_psnr_ge_20db"])
            row["≥20 dB known/recov."] = f"{known:.0%} / {recovered:.0%}"
            row["identifiable"] = f"{max(v['identifiability'] for v in a.values()):.0%}"
        mem = r.get("membership")
        if mem:
            lira = mem["lira_offline"]
            auc, t = lira["auc"], lira["tpr_at_fpr"]["0.001"]
            row["LiRA AUC"] = f"{auc['value']:.3f}" + (f" [{auc['low']:.3f}, {auc['high']:.3f}]" if intervals else "")
            row["TPR@0.1%FPR"] = f"{t['value']:.3f}" + (f" [{t['low']:.3f}, {t['high']:.3f}]" if intervals else "")
            row["ε lower bd"] = f"{max(mem[a]['empirical_epsilon']['lower_bound'] for a in ('loss', 'lira_offline')):.2f}"
            if "aggregate_step_loss" in mem:
                row["aggregate-step AUC"] = f"{mem['aggregate_step_loss']['auc']['value']:.3f}"
            if "client_update_loss" in mem:
                row["client-update AUC"] = f"{mem['client_update_loss']['auc']['value']:.3f}"
        rows.append(row)
    return rows


def _html(report: AuditReport, images: dict[str, bytes]) -> str:
    rows = summary_rows(report)
    cols = list(rows[0]) if rows else []
    table = "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows) + "</table>"
    meanings = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in MEANINGS.items())
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, data in images.items())
    cfg = html.escape(json.dumps(report.config, indent=1))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>secfl privacy audit</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:4px 8px;font-size:13px}}th{{background:#eee}}img{{max-width:100%}}
dt{{font-weight:bold;margin-top:.5em}}pre{{background:#f6f6f6;padding:8px;font-size:12px}}</style></head>
<body><h1>secfl privacy audit</h1>
<p>What leaks, under which protection, at what cost. Dataset <b>{html.escape(str(report.config['dataset']))}</b>,
{report.config['clients']} clients, {report.config['rounds']} rounds, seed {report.config['seed']}.
Config hash <code>{report.config_hash[:16]}</code>; run time {report.seconds:.0f} s.</p>
<h2>Summary</h2>{table}
<h2>Figures</h2>{figures}
<h2>What the numbers mean, and their limits</h2><dl>{meanings}</dl>
<h2>Configuration and versions</h2><pre>{cfg}</pre><pre>{html.escape(json.dumps(report.versions, indent=1))}</pre>
<script>
window.addEventListener('load', function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.length > 0 && imgs.every(function (i) {{ return i.complete && i.naturalWidth > 0; }});
  document.body.setAttribute('data-figures-ok', ok ? 'true' : 'false');
  document.body.setAttribute('data-figures', String(imgs.length));
}});
</script></body></html>
"""


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_report(report: AuditReport, out: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``figures/*.png`` into ``out``."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(_jsonable(report.to_dict()), indent=2, allow_nan=False))
    images = {}
    for name, make in FIGURES.items():
        data = make(report)
        if data is not None:
            images[name] = data
            (out / "figures" / name).write_bytes(data)
            paths[name] = out / "figures" / name
    paths["html"].write_text(_html(report, images))
    return paths

"""Rendering a :class:`~attacks.malicious_audit.ThreatReport`: ``report.json`` (canonical), the
figure of recovered images and a self-contained ``report.html`` whose first table is the matrix
attack x (protection + defences)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .malicious import THRESHOLD_DB
from .malicious_audit import COLUMNS, ROWS, ThreatReport, matrix
from .render import FIGURE_CHECK, html_figures, jsonable, png, table

__all__ = ["write_threat_report", "findings"]

NOTES = (
    f"A cell is the share of the round's images some recovered candidate matches at {THRESHOLD_DB:.0f} dB PSNR "
    "or more, mean over the seeds with a 95 % t-interval, after fitting each candidate's scale to the image "
    "(FedAtt weighs a layer's weight and bias tensors separately, so a recovered image is the example times "
    "an unknown positive factor); the matching uses the originals, the attacker-favourable convention.",
    "Every cell is one round of a real run: CKKS uploads, key holders that verify before they decrypt, "
    "clients that check what they are sent. The server is the attacker in that round.",
    "\"Paper's regime\" rows are the attack's best case as its paper measures it, labelled as such; the "
    "real run's settings are the ordinary audit's (whole shards, batches of 32, one local epoch).",
    "The model-crafting attacks need no key: CKKS alone does not stop them. Signed commitments stop every "
    "attack that sends clients different models; a pinned architecture stops added layers; provenance stops "
    "crafted weights inside the architecture; client-level DP bounds what any of them recovers, at a utility "
    "cost the ordinary audit measures.",
    "The release-request rows are refused by the key holder's verification, which no switch turns off; "
    "what the same requests give a key holder that does not verify (the secret key) is shown by the "
    "project's tests.",
)


def findings(report: ThreatReport) -> list[str]:
    """One sentence per attack: what recovers it, and the first column that stops it."""
    by = {(c.row, c.column): c for c in report.cells}
    out = []
    for row in report.config["rows"]:
        cells = [by[(row, col)] for col in report.config["columns"]]
        open_ = [c for c in cells if not c.refused and c.summary and c.summary["mean"] > 0]
        stops = [c for c in cells if c.refused]
        worst = max(open_, key=lambda c: c.summary["mean"] if c.summary else 0.0, default=None)
        text = ROWS[row]
        if worst is not None and worst.summary is not None:
            text += f": up to {worst.summary['mean'] * 100:.1f}% of the images under {COLUMNS[worst.column][0]}"
        else:
            text += ": nothing recovered"
        if stops and stops[0] is cells[0] and len(stops) == len(cells):
            text += f"; refused in every column ({stops[0].refused}, the {stops[0].refused_by})"
        elif stops:
            text += f"; stopped by {COLUMNS[stops[0].column][0]} ({stops[0].refused}, the {stops[0].refused_by})"
        else:
            text += "; no defence in this audit refuses it"
        dp = by.get((row, "dp"))
        if dp is not None and dp.summary is not None:
            text += f"; under client-level DP {dp.summary['mean'] * 100:.1f}% is recovered"
        out.append(text + ".")
    return out


def _figure(report: ThreatReport) -> bytes | None:
    ex = report.example
    if not ex:
        return None
    originals, recovered = ex["originals"], ex["recovered"]
    k = len(originals)
    fig, axes = plt.subplots(2, k, figsize=(1.3 * k, 2.9))
    for j in range(k):
        for i, (img, label) in enumerate(((originals[j], "original"), (recovered[j], "read out"))):
            ax = axes[i, j] if k > 1 else axes[i]
            ax.imshow(np.clip(np.asarray(img).reshape(originals.shape[-2:]), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle("Imprint block, paper's regime, ckks: the first images of the round and what the server read",
                 fontsize=9)
    return png(fig)


def _html(report: ThreatReport, images: dict[str, tuple[bytes, str]]) -> str:
    cfg = report.config
    items = "".join(f"<li>{html.escape(f)}</li>" for f in findings(report))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in NOTES)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>secfl malicious-server audit</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:4px 8px;font-size:13px;vertical-align:top}}
th{{background:#eee}}img{{max-width:100%}}.scroll{{overflow-x:auto;max-width:100%}}figure{{margin:1.5em 0}}
figcaption{{font-size:13px;color:#444;max-width:800px}}pre{{background:#f6f6f6;padding:8px;font-size:12px}}</style>
</head><body><h1>secfl malicious-server audit</h1>
<p>Dataset <b>{html.escape(str(cfg['dataset']))}</b>, {cfg['clients']} clients, seeds
{', '.join(str(s) for s in report.seeds)}; run time {report.seconds:.0f} s. The server chooses the model its
clients train and what it asks the key holders to decrypt; the clients and key holders check what the
columns switch on.</p>
<h2>What stops what</h2><ul>{items}</ul>
<h2>The matrix</h2>{table(matrix(report))}
<ul>{notes}</ul>
<h2>Figure</h2>{html_figures(images)}
<h2>Configuration</h2><pre>{html.escape(json.dumps(cfg, indent=1))}</pre>
{FIGURE_CHECK}</body></html>
"""


def write_threat_report(report: ThreatReport, out: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``figures/recovered.png`` into ``out``."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(jsonable({"threat": "malicious", **report.to_dict()}), indent=2,
                                        allow_nan=False))
    images = {}
    data = _figure(report)
    if data is not None:
        caption = ("Top: the first images of one round (paper's regime, first seed). Bottom: for each, the best "
                   "candidate the server read out of the released aggregate, its scale fitted to the image.")
        images["recovered.png"] = (data, caption)
        (out / "figures" / "recovered.png").write_bytes(data)
        paths["recovered.png"] = out / "figures" / "recovered.png"
    paths["html"].write_text(_html(report, images))
    return paths

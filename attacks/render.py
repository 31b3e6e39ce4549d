"""What the audit reports share: an interval as text, a figure as PNG bytes, HTML tables and
figures, and JSON without NaN."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["COLLUSION", "fmt", "png", "per_round", "table", "html_figures", "FIGURE_CHECK", "STYLE", "jsonable"]

#: who, with the server, decrypts a single client's update under each protection (docs/security.md)
COLLUSION = {
    "plain": "nobody: the server sees it",
    "ckks": "the server and any one client (one shared key)",
    "ckks-threshold": "the server and 3 of the 5 committee members",
    "ckks+dp": "the server and any one client; DP bounds what it shows",
    "ckks+dpsgd": "the server and any one client; DP bounds what it shows",
}

#: the reports' stylesheet
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px;font-size:13px;vertical-align:top}
th{background:#eee}img{max-width:100%}.scroll{overflow-x:auto;max-width:100%}figure{margin:1.5em 0}
figcaption{font-size:13px;color:#444;max-width:800px}dt{font-weight:bold;margin-top:.5em}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto}"""


def fmt(iv: dict[str, Any] | None, *, pct: bool = False, digits: int = 3) -> str:
    """``mean [low, high]`` of a seed interval, or ``-``."""
    if iv is None:
        return "-"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    one = (lambda v: f"{v * scale:.1f}{unit}") if pct else (lambda v: f"{v:.{digits}g}")
    if iv.get("low") is None:
        return f"{one(iv['mean'])} (1 seed)"
    return f"{one(iv['mean'])} [{one(max(iv['low'], 0.0) if pct else iv['low'])}, {one(iv['high'])}]"


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def html_figures(images: dict[str, tuple[bytes, str]], names: list[str] | None = None) -> str:
    """The figures (all, or those named) inline, each with its caption."""
    return "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, (data, caption) in images.items() if names is None or name in names)


#: marks the page once every figure has loaded (a headless browser reads the marks)
FIGURE_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.length > 0 && imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-figures-ok', ok ? 'true' : 'false');
  document.body.setAttribute('data-figures', String(imgs.length));
});
</script>"""


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def per_round(series: dict[str, Any], *, ylabel: str, title: str) -> bytes | None:
    """One line per protection of a value after each round, as PNG bytes (None: nothing to draw)."""
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    return png(fig)

"""What ``secfl bench`` writes: ``bench.json``, PNG plots, a terminal table and the README's block.

The README's performance block is generated, never typed: ``secfl bench --out bench-out
--markdown docs/performance.md`` rewrites everything between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` from the run it just measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .cells import figure
from .threads import THREADS_TARGET

__all__ = ["write_outputs", "markdown", "targets_text", "scaling_text", "threads_text", "wide_text", "rounds_text", "check_block", "replace_block", "cell_rows", "CELL_COLUMNS", "START", "END"]

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ORDER = ("plaintext", "flower-secagg+", "flare-tenseal", "secagg-compact", "secagg-strict", "secagg-threshold",
         "secagg-compact-lean", "secagg-strict-lean", "secagg-compact-sized", "secagg-strict-sized")
CELL_COLUMNS = ("method", "params", "clients", "client s", "server s", "key holder s", "x float32",
                "server peak MB", "max error")


def _methods(result: dict[str, Any]) -> list[str]:
    present = dict.fromkeys(c["method"] for c in result["cells"])
    return [m for m in ORDER if m in present] + [m for m in present if m not in ORDER]


def _s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3g} s" if v >= 1 else f"{v * 1e3:.3g} ms"


def _mb(v: int | None) -> str:
    return "—" if v is None else f"{v / 2**20:,.0f} MB"


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×" if v >= 0.1 else f"{v:.2g}×"


def _e(v: float | None) -> str:
    return "—" if v is None else ("0" if v == 0 else f"{v:.1e}")


def cell_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per measured cell, for the terminal table (columns: :data:`CELL_COLUMNS`)."""
    rank = {m: i for i, m in enumerate(_methods(result))}
    cells = sorted(result["cells"], key=lambda c: (rank[c["method"]], c["params"], c["clients"]))
    return [[c["method"], f"{c['params']:,}", str(c["clients"]), _s(c["client_s"]), _s(c["server_s"]), _s(c["key_holder_s"]),
             _x(c["bytes_x_float32"]), _mb(c["peak_rss"]["server"]), _e(c["max_error"])] for c in cells] + [
        [s["method"], "", "", s["reason"], "", "", "", "", ""] for s in result["skipped"]]


# ---- plots -------------------------------------------------------------------------------------
def _plot(result: dict[str, Any], path: Path, *, x: str, panels: list[tuple[str, str]], fixed: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cfg = result["config"]
    keep = (lambda c: c["clients"] == cfg["ref_clients"]) if x == "params" else (lambda c: c["params"] == cfg["ref_params"])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (metric, title) in zip(axes[0], panels):
        xs: set[int] = set()
        for method in _methods(result):
            pts = sorted((c[x], y) for c in result["cells"] if c["method"] == method and keep(c)
                         and (y := figure(c, metric)) is not None and y > 0)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method)
                xs.update(p for p, _ in pts)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted(xs), [f"{v:,}" for v in sorted(xs)])  # the measured points, not log decades
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("parameters per client" if x == "params" else "clients")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{fixed}; {result['machine']['usable_cores']} cores, same run ({result['started'][:10]})", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_outputs(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``bench.json`` and the PNG plots into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = result["config"]
    paths = {"json": out / "bench.json", "time_vs_params": out / "time_vs_params.png",
             "bytes_vs_params": out / "bytes_vs_params.png", "time_vs_clients": out / "time_vs_clients.png"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    at_clients = f"{cfg['ref_clients']} clients"
    _plot(result, paths["time_vs_params"], x="params", fixed=at_clients,
          panels=[("client_s", "client: encrypt + serialise (s)"), ("server_s", "server: deserialise + aggregate (s)")])
    _plot(result, paths["bytes_vs_params"], x="params", fixed=at_clients, panels=[("bytes_per_client", "bytes per client")])
    _plot(result, paths["time_vs_clients"], x="clients", fixed=f"{cfg['ref_params']:,} parameters",
          panels=[("server_s", "server: deserialise + aggregate (s)"),
                  ("server_peak_rss", "server: peak RSS increase (bytes)")])
    return paths


# ---- the README block --------------------------------------------------------------------------
def _slope(fit: dict[str, Any] | None, top: dict[str, Any] | None = None) -> str:
    text = "—" if fit is None else f"{fit['slope']:.2f}"
    return text if top is None or fit is None or top["points"] == fit["points"] else f"{text} ({top['slope']:.2f})"


def markdown(result: dict[str, Any], *, json_path: str = "bench-out/bench.json") -> str:
    """The README's performance block (without the markers), from one run's result."""
    m, cfg = result["machine"], result["config"]
    pk = m["packages"]
    mode = "quick grid" if cfg["repeats"] == 1 else "full grid"
    loads = [c["load_average_1m"] for c in result["cells"] if c.get("load_average_1m") is not None]
    load = f", load average {min(loads):.1f}–{max(loads):.1f} during the run" if loads else ""
    head = (f"Generated by `{result['command']}` on {result['started'][:10]} in {result['seconds']:.0f} s ({mode}); "
            f"machine: {m['cpu']}, {m['usable_cores']} usable cores{load}, {m['memory_bytes'] / 2**30:.0f} GiB, "
            f"Python {m['python']}, tenseal {pk['tenseal']}, flwr {pk['flwr']}, torch {pk['torch']}. "
            f"Every figure comes from that one run ({json_path} holds them all, with per-step times); "
            f"times are medians of {cfg['repeats']} repetitions interleaved across the methods, every method on one "
            "core (CPU seconds beside wall seconds); peak memory comes from each method run again alone in a fresh "
            "process.")
    return "\n".join([head, "", targets_text(result), *(["", threads_text(result)] if result.get("server_threads") else []),
                      "", scaling_text(result), *(["", rounds_text(result)] if result["rounds"] else [])])


def targets_text(result: dict[str, Any]) -> str:
    """The methods side by side at the targets' cell, and where each secagg preset stands."""
    tg = result["targets"]
    lines = [
        f"**{tg['params']:,} parameters per client, {tg['clients']} clients**",
        "",
        "| method | client: encrypt + serialise (CPU) | vs FLARE | bytes / client | × float32 | server: deserialise + "
        "aggregate (CPU) | vs FLARE | key holder: decrypt + release (CPU) | max abs error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    at = {c["method"]: c for c in result["cells"] if c["params"] == tg["params"] and c["clients"] == tg["clients"]}
    flare = at.get("flare-tenseal")
    for name in _methods(result):
        c = at.get(name)
        if c is None:
            continue
        rc = _x(c["client_s"] / flare["client_s"]) if flare else "—"
        rs = _x(c["server_s"] / flare["server_s"]) if flare else "—"
        lines.append(f"| {name} | {_s(c['client_s'])} ({_s(c.get('client_cpu_s'))}) | {rc} | "
                     f"{c['bytes_per_client'] / 1e6:.2f} MB | {_x(c['bytes_x_float32'])} | {_s(c['server_s'])} "
                     f"({_s(c.get('server_cpu_s'))}) | {rs} | {_s(c['key_holder_s'])} ({_s(c.get('key_holder_cpu_s'))}) "
                     f"| {_e(c['max_error'])} |")
    for s in result["skipped"]:
        lines.append(f"| {s['method']} | {s['reason']} | | | | | | | |")
    lines += ["", "Targets, against FLARE as provisioned, one core each: bytes ≤ 1.5× float32 (compact) and ≤ 2.5× "
              "(strict); client ≤ 0.25× and server ≤ 0.25× FLARE's; client + server + key holder ≤ 0.4× FLARE's three.",
              ""]
    for name, row in tg["methods"].items():
        ok = lambda flag: "met" if flag else "**missed**"  # noqa: E731
        parts = [f"bytes {row['bytes_x_float32']:.2f}×" + ("" if row.get("bytes_ok") is None else
                                                          f" ({ok(row['bytes_ok'])})")]
        if "client_vs_flare" in row:
            parts += [f"client {row['client_vs_flare']:.2f}× FLARE ({ok(row['client_ok'])})",
                      f"server {row['server_vs_flare']:.2f}× FLARE ({ok(row['server_ok'])})",
                      f"all three roles {row['all_vs_flare']:.2f}× FLARE's ({ok(row['all_ok'])})"]
        if "client_vs_flower" in row:
            parts.append(f"against Flower SecAgg+: client {row['client_vs_flower']:.1f}×, server "
                         f"{row['server_vs_flower']:.1f}×, bytes {row['bytes_vs_flower']:.2f}× its figures")
        sized = f" ({row['label'].removeprefix('secagg, ')})" if name.endswith("-sized") and "label" in row else ""
        lines.append(f"- `{name}`{sized}: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def threads_text(result: dict[str, Any]) -> str:
    """The secagg servers on several fold threads, against one (:mod:`secfl.bench.threads`)."""
    rows = result["server_threads"]
    counts = sorted({int(n) for r in rows for n in r["by_threads"]})
    first = rows[0]
    lines = [f"**The server on threads**: {first['params']:,} parameters × {first['clients']} clients, each upload "
             f"checked and added a range of ciphertexts per thread; medians of {first['repeats']} interleaved "
             f"repetitions on {result['machine']['usable_cores']} usable cores. Target: 2 threads ≥ "
             f"{THREADS_TARGET}× one.", "",
             "| method | " + " | ".join(f"{n} thread{'s' if n > 1 else ''} (CPU)" for n in counts) + " | "
             + " | ".join(f"speedup, {n}" for n in counts if n > 1) + " |",
             "|---|" + "---|" * (2 * len(counts) - 1)]
    for r in rows:
        by = r["by_threads"]
        times = [f"{_s(by[str(n)]['server_s'])} ({_s(by[str(n)]['server_cpu_s'])})" for n in counts]
        speed = []
        for n in counts[1:]:
            mark = "" if n != 2 else (" (met)" if r["speedup"][str(n)] >= THREADS_TARGET else " (**missed**)")
            speed.append(f"{r['speedup'][str(n)]:.2f}×{mark}")
        lines.append(f"| {r['method']} | " + " | ".join(times + speed) + " |")
    return "\n".join(lines)


def scaling_text(result: dict[str, Any]) -> str:
    cfg = result["config"]
    most, largest = max(cfg["clients"]), max(cfg["sizes"])
    lines = [f"**How costs grow**: slope on log-log axes, cost ∝ parameters^slope at {cfg['ref_clients']} clients "
             f"({min(cfg['sizes']):,} to {largest:,}; in brackets between the two largest sizes, the slope to "
             f"extrapolate with, above the fixed costs that flatten small updates), ∝ clients^slope at "
             f"{cfg['ref_params']:,} parameters ({min(cfg['clients'])} to {most} clients)", "",
             "| method | client s vs params | server s vs params | key holder s vs params | bytes vs params "
             f"| server s vs clients | server peak RSS vs clients | server peak RSS, {most} clients "
             f"| server peak RSS, {largest:,} parameters |", "|---|---|---|---|---|---|---|---|---|"]
    peak = {(c["method"], c["params"], c["clients"]): c["peak_rss"]["server"] for c in result["cells"]}
    for name in _methods(result):
        if name in cfg.get("target_methods", ()):  # measured at one cell: no slope
            continue
        sc = result["scaling"][name]
        slopes = [_slope(sc["vs_params"][m], sc["vs_params_top"][m]) for m in ("client_s", "server_s", "key_holder_s", "bytes_per_client")]
        slopes += [_slope(sc["vs_clients"][m]) for m in ("server_s", "server_peak_rss")]
        lines.append(f"| {name} | " + " | ".join(slopes) + f" | {_mb(peak.get((name, cfg['ref_params'], most)))} | "
                     f"{_mb(peak.get((name, largest, cfg['ref_clients'])))} |")
    wide = cfg.get("wide_clients") or []
    if len(wide) >= 2:
        lines += ["", wide_text(result)]
    return "\n".join(lines)


def wide_text(result: dict[str, Any]) -> str:
    """Many clients with small updates: the server's time and memory from the fewest clients to the most."""
    cfg = result["config"]
    p, lo, hi = cfg["wide_params"], min(cfg["wide_clients"]), max(cfg["wide_clients"])
    at = {(c["method"], c["clients"]): c for c in result["cells"] if c["params"] == p}
    lines = [f"**Many clients**: {p:,} parameters per client, {lo} and {hi} clients; a slope above 1 would mean "
             "a cost that grows faster than the number of clients", "",
             f"| method | server, {lo} clients (CPU) | server, {hi} clients (CPU) | server s vs clients "
             f"| server peak RSS, {hi} clients | server peak RSS vs clients |", "|---|---|---|---|---|---|"]
    for name in _methods(result):
        a, b = at.get((name, lo)), at.get((name, hi))
        sc = result["scaling"][name].get("vs_clients_wide")
        if a is None or b is None or sc is None:
            continue
        lines.append(f"| {name} | {_s(a['server_s'])} ({_s(a['server_cpu_s'])}) | {_s(b['server_s'])} "
                     f"({_s(b['server_cpu_s'])}) | {_slope(sc['server_s'])} | {_mb(b['peak_rss']['server'])} | "
                     f"{_slope(sc['server_peak_rss'])} |")
    return "\n".join(lines)


def rounds_text(result: dict[str, Any]) -> str:
    rows = result["rounds"]
    steady = [r.get("steady") for r in rows]
    runs = next((f"{s['rounds_per_run']}-round " for s in steady if s is not None), "")
    lines = ["**One federated round** (digits, 10 clients, FedAtt, training included): encrypted vs plaintext. "
             "*One-round run*: best wall time of a one-round simulation, the federation's set-up included. "
             f"*Per round*: medians over the rounds after the first of several {runs}runs (set-up and "
             "first round left out), wall (CPU), and the ratio's range over the repetitions (not measured for the "
             "server-scored protocol, whose one round takes seconds)", "",
             "| model | protocol / preset | one-round run: plaintext | encrypted | ratio | per round: plaintext | "
             "encrypted | ratio (range) | bytes up / client |", "|---|---|---|---|---|---|---|---|---|"]
    for r, s in zip(rows, steady):
        per_round = ("— | — | not measured" if s is None else
                     f"{_s(s['plain_s'])} ({_s(s['plain_cpu_s'])}) | {_s(s['encrypted_s'])} ({_s(s['encrypted_cpu_s'])}) | "
                     f"{s['ratio']:.2f}× ({s['ratio_range'][0]:.2f}–{s['ratio_range'][1]:.2f})")
        lines.append(f"| {r['model']} | {r['protocol']} / {r['preset']} | {_s(r['plain_s'])} | {_s(r['encrypted_s'])} | "
                     f"{r['ratio']:.2f}× | {per_round} | {r['bytes_per_client'] / 1e3:,.0f} kB |")
    return "\n".join(lines)


def check_block(path: Path) -> None:
    """ValueError where ``path`` lacks the bench markers (OSError where it cannot be read)."""
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"markdown: {path} has no '{START}' ... '{END}' block to rewrite")


def replace_block(path: Path, block: str) -> None:
    """Rewrite the text between the bench markers of ``path`` (ValueError where they are missing)."""
    check_block(path)
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    path.write_text(text[:start + len(START)] + "\n" + block + "\n" + text[end:])

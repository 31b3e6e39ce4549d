"""``secfl audit`` and ``secfl bench``: what leaks, and what it costs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import secagg

from ._app import app
from ._common import check_target, console, err, fail, print_json, spinner, written

#: AuditConfig fields with a flag of the same name (errors name the flag)
AUDIT_FLAGS = {"dp_noise_multiplier", "dp_clip_norm", "dp_delta", "shadow_models", "inversion_iterations",
               "probe_clients", "canary_guesses"}


@app.command()
def audit(
    out: Annotated[Path, typer.Option(help="Directory for report.json, report.html and figures/ (created; see "
                                           "--force).")] = Path("audit-report"),
    config: Annotated[Path | None, typer.Option("--config", help="TOML file with any audit option ([audit] table "
                                                                 "or top level).")] = None,
    dataset: Annotated[str | None, typer.Option(help="digits (default), mnist, breast_cancer, credit, or pydoc-topics "
                                                     "(text: the text audit, docs/text.md).")] = None,
    model: Annotated[str | None, typer.Option(help="mlp (default), cnn; for text transformer (default) or lstm.")] = None,
    clients: Annotated[int | None, typer.Option(min=1, help="Clients in the federation (default 10).")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, help="Federated rounds (default 5).")] = None,
    protections: Annotated[str | None, typer.Option(help="Comma-separated: plain, ckks, ckks-threshold, ckks+dp, "
                                                         "ckks+dpsgd (default all).")] = None,
    attacks: Annotated[str | None, typer.Option(help="Comma-separated: inversion, membership, dp-audit; for text "
                                                     "bag-of-words, canary, reconstruction (default all).")] = None,
    seed: Annotated[int | None, typer.Option(help="First seed (default 0); the others follow it.")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Seeds to average over (default 3).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Attack every round of the run, not the first, middle and "
                                                      "last.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="One seed, fewer rounds and iterations: a smoke run, not "
                                                        "an audit.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report's JSON instead of tables.")] = False,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes for the text audit's runs (default: the "
                                                            "CPUs); results do not depend on it.")] = None,
    threat: Annotated[str, typer.Option(help="honest (an honest-but-curious server: the privacy audit) or malicious "
                                             "(a server that crafts models and release requests: attack x "
                                             "defence matrix).")] = "honest",
) -> None:
    """The privacy audit: train under each protection, attack what the server sees, write a report."""
    from attacks.audit import AuditConfig, run_audit
    from attacks.report import summary_rows, write_report
    from fedattn.errors import FedAttnError

    if threat not in ("honest", "malicious"):
        fail(f"--threat must be honest or malicious, got {threat!r}")
    if threat == "malicious":
        honest_only = {"--config": config, "--rounds": rounds, "--protections": protections, "--attacks": attacks,
                       "--full": full or None, "--model": model, "--workers": workers}
        given = [flag for flag, value in honest_only.items() if value is not None]
        if given:
            fail(f"{', '.join(given)} belong to the honest-server audit; the malicious-server audit runs every "
                 "attack against every defence")
        _threat_audit(out, dataset=dataset, clients=clients, seed=seed, seeds=1 if quick else seeds, force=force,
                      as_json=as_json)
        return
    overrides = {"dataset": dataset, "model": model, "clients": clients, "rounds": rounds, "seed": seed, "seeds": seeds,
                 "protections": protections.split(",") if protections else None,
                 "attacks": attacks.split(",") if attacks else None, "quick": quick or None, "full": full or None}
    if quick and full:
        fail("--quick is a smoke run and --full attacks every round: choose one")
    check_target(out, force=force)
    try:
        if config is not None:
            cfg = AuditConfig.from_toml(config, **overrides)
        else:
            cfg = AuditConfig.from_mapping({k: v for k, v in overrides.items() if v is not None})
    except (FedAttnError, secagg.SecAggError) as exc:
        fail(str(exc), names=AUDIT_FLAGS)
    with spinner() as step:
        try:
            report = run_audit(cfg, progress=step, workers=workers)
        except (FedAttnError, secagg.SecAggError) as exc:
            fail(str(exc), names=AUDIT_FLAGS)
    with written(out, force=force) as tmp:
        paths = {k: out / p.relative_to(tmp) for k, p in write_report(report, tmp).items()}
    if as_json:
        import json

        print_json(json.loads(paths["json"].read_text()))
        return
    rows = summary_rows(report)
    console.print(f"secfl audit: {cfg.dataset}, {cfg.clients} clients, {report.config['rounds']} rounds, "
                  f"seeds {', '.join(str(s) for s in report.seeds)} ({report.seconds:.0f} s); means [95% intervals]")
    for row in rows:  # one small table per protection: nothing is cut off on a narrow terminal
        table = Table(title=row["protection"], show_header=False, title_justify="left")
        table.add_column("measure", overflow="fold")
        table.add_column("value", overflow="fold")
        for key, value in row.items():
            if key != "protection":
                table.add_row(key, value)
        console.print(table)
    for note in report.notes:
        console.print(f"- {note}")
    err.print(f"report: {paths['html']}  (canonical: {paths['json']})")


def _threat_audit(out: Path, *, dataset: str | None, clients: int | None, seed: int | None, seeds: int | None,
                  force: bool, as_json: bool) -> None:
    """``secfl audit --threat malicious``: the attack x defence matrix."""
    from attacks.malicious_audit import ThreatConfig, matrix, run_threat_audit
    from attacks.malicious_report import findings, write_threat_report
    from fedattn.errors import FedAttnError

    options: dict[str, Any] = {"dataset": dataset, "clients": clients, "seed": seed, "seeds": seeds}
    check_target(out, force=force)
    try:
        cfg = ThreatConfig(**{k: v for k, v in options.items() if v is not None})
        with spinner() as step:
            report = run_threat_audit(cfg, progress=step)
    except (FedAttnError, secagg.SecAggError) as exc:
        fail(str(exc))
    with written(out, force=force) as tmp:
        paths = {k: out / p.relative_to(tmp) for k, p in write_threat_report(report, tmp).items()}
    if as_json:
        import json

        print_json(json.loads(paths["json"].read_text()))
        return
    console.print(f"secfl audit --threat malicious: {cfg.dataset}, {cfg.clients} clients, seeds "
                  f"{', '.join(str(s) for s in report.seeds)} ({report.seconds:.0f} s); share of the round's images "
                  "recovered at 30 dB, mean [95% interval], or the refusal")
    for row in matrix(report):  # one small table per attack: nothing is cut off on a narrow terminal
        table = Table(title=row.pop("attack"), show_header=False, title_justify="left")
        table.add_column("protection", overflow="fold")
        table.add_column("result", overflow="fold")
        for key, value in row.items():
            table.add_row(key, value)
        console.print(table)
    for line in findings(report):
        console.print(f"- {line}")
    err.print(f"report: {paths['html']}  (canonical: {paths['json']})")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="A small grid (up to 1M parameters, 1 repetition): about a minute.")] = False,
    out: Annotated[Path, typer.Option(help="Directory for bench.json and the PNG plots (created; see --force).")]
        = Path("bench-out"),
    markdown: Annotated[Path | None, typer.Option(help="Rewrite this file's <!-- bench:start/end --> block (docs/performance.md).")] = None,
    methods: Annotated[str | None, typer.Option(help="Comma-separated subset of: plaintext, secagg-compact, secagg-strict, secagg-threshold, flare-tenseal, flower-secagg+.")] = None,
    sizes: Annotated[str | None, typer.Option(hidden=True, help="Comma-separated update sizes (tests).")] = None,
    clients: Annotated[str | None, typer.Option(hidden=True, help="Comma-separated client counts (tests).")] = None,
    rounds: Annotated[bool, typer.Option("--rounds/--no-rounds", hidden=True, help="Measure federated rounds.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print bench.json instead of tables.")] = False,
) -> None:
    """Measure what encryption costs next to plaintext, NVIDIA FLARE's TenSEAL usage and Flower SecAgg+,
    in one run: seconds, bytes, peak memory, error, scaling slopes; write bench.json and plots."""

    from secfl.bench import grid as b
    from secfl.bench import report

    args = [f"--{k} {v}" for k, v in (("out", out), ("markdown", markdown), ("methods", methods), ("sizes", sizes),
                                       ("clients", clients)) if v is not None]
    command = " ".join(["secfl bench", *(["--quick"] if quick else []), *args, *([] if rounds else ["--no-rounds"])])
    try:
        ints = lambda text: [int(v) for v in text.split(",")] if text else None  # noqa: E731
        config = b.config_for(quick=quick, command=command, sizes=ints(sizes), clients=ints(clients),
                              methods=methods.split(",") if methods else None, rounds=rounds)
        if markdown is not None:
            report.check_block(markdown)  # before the long run, not after it
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot use {exc.filename or out}: {exc.strerror}")
    check_target(out, force=force)
    with spinner() as step:
        result = b.run_bench(config, progress=step)
    with written(out, force=force) as tmp:
        paths = {k: out / p.relative_to(tmp) for k, p in report.write_outputs(result, tmp).items()}
    if markdown is not None:
        report.replace_block(markdown, report.markdown(result, json_path=str(paths["json"])))
        err.print(f"rewrote the bench block of {markdown}")
    if as_json:
        import json

        print_json(json.loads(paths["json"].read_text()))
        return
    table = Table(title=f"secfl bench ({result['seconds']:.0f} s): best of the repetitions, same run")
    for col in report.CELL_COLUMNS:
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in report.cell_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(report.targets_text(result))
    err.print(f"wrote {paths['json']} and {', '.join(p.name for k, p in paths.items() if k != 'json')}")



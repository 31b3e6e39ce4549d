"""The ``secfl`` command line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import secagg

# an unexpected error prints its traceback without local variables: they hold updates and keys
app = typer.Typer(name="secfl", help="Secure federated learning that measures what it protects.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
keys_app = typer.Typer(help="Create and inspect CKKS key sets.", no_args_is_help=True,
                       pretty_exceptions_show_locals=False)
app.add_typer(keys_app, name="keys")
console = Console()
log = logging.getLogger("secfl")


def _ensure_writable(directory: Path) -> None:
    """Create ``directory`` and prove it writable before any long work starts (raises OSError)."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / ".secfl-write-test"
    probe.write_text("")
    probe.unlink()


@contextmanager
def _spinner() -> Iterator[Callable[[str], None]]:
    """A transient spinner with the elapsed time; yields the callback a long job names its step with."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("starting", total=None)
        yield lambda message: progress.update(task, description=message)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command()
def presets() -> None:
    """List the CKKS parameter presets with their security, depth, cost and precision."""
    table = Table(title="secagg presets (128-bit security by the HE standard)")
    for col in ("name", "N", "modulus bits", "scale", "depth", "max |x|", "noise std", "flood bits", "server keys"):
        table.add_column(col)
    for p in secagg.PRESETS.values():
        table.add_row(p.name + ("*" if p.name == secagg.DEFAULT_PRESET else ""), str(p.poly_modulus_degree),
                      "+".join(map(str, p.coeff_modulus_bits)), f"2^{p.scale_bits}", str(p.depth), f"{p.max_abs:g}",
                      f"{p.noise_std():.1e}", str(p.flood_bits), "+".join(p.eval_keys) or "pk")
    console.print(table)
    console.print("* default.  " + "  ".join(f"[bold]{p.name}[/]: {p.description}." for p in secagg.PRESETS.values()))


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option("--out", help="Directory to write client.key and server.ctx into.")],
    preset: Annotated[str, typer.Option("--preset", help="Parameter preset (see `secfl presets`).")] = secagg.DEFAULT_PRESET,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing key files.")] = False,
    clients: Annotated[int, typer.Option("--clients", min=0, max=100_000,
                                         help="Also write a signing identity per client (client-<i>.id) and the "
                                              "server's roster.json of their public keys.")] = 0,
    group_size: Annotated[int, typer.Option("--group-size", min=2, max=100_000,
                                            help="Clients per enrolment group (with --clients): a release covers "
                                                 "whole groups, so rounds differ by at least a group's sum.")]
        = secagg.signing.DEFAULT_GROUP_SIZE,
) -> None:
    """Act as the key dealer: write the clients' secret key file and the server's public context
    (and, with --clients, each client's signing identity and the server's roster)."""
    try:
        p = secagg.get_preset(preset)
    except secagg.UnknownPresetError as exc:
        _fail(str(exc))
    targets = [out / "client.key", out / "server.ctx"]
    if clients:
        targets += [out / "roster.json"] + [out / f"client-{i}.id" for i in range(clients)]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        _fail(f"{shown} already exist; pass --force to replace them (old ciphertexts become undecryptable)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with console.status(f"generating a {p.name!r} key set"):
            keys = secagg.generate_keys(preset=p)
            paths = keys.save(out, overwrite=force)
            if clients:
                from secagg.signing import deal_identities

                deal_identities((f"client-{i}" for i in range(clients)), out, group_size=min(group_size, clients),
                                overwrite=force)
    except secagg.KeyFileError as exc:  # a file or a link planted meanwhile, or one that cannot be written
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror}")
    table = Table(title=f"key set {keys.secret.fingerprint} (preset {p.name!r})")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    table.add_column("mode")
    table.add_column("goes to")
    table.add_row(str(paths["client"]), f"{paths['client'].stat().st_size:,}", "0600",
                  "every client and every key holder (secret key: keep it off the server)")
    table.add_row(str(paths["server"]), f"{paths['server'].stat().st_size:,}", "0644",
                  "the aggregation server only (public key + evaluation keys, no secret key)")
    if clients:
        table.add_row(str(out / "client-<i>.id"), f"{clients} files", "0600",
                      "client i only: its Ed25519 signing key (signs its uploads)")
        table.add_row(str(out / "roster.json"), f"{(out / 'roster.json').stat().st_size:,}", "0644",
                      f"the server and the key holders: the clients' public verification keys and "
                      f"enrolment groups of {min(group_size, clients)}")
    console.print(table)


@keys_app.command("ceremony")
def keys_ceremony(
    out: Annotated[Path, typer.Option("--out", help="Directory for every party's folder and the public records.")],
    clients: Annotated[int, typer.Option("--clients", min=2, max=1000, help="Clients, each with its own key.")] = 10,
    committee: Annotated[int, typer.Option("--committee", min=1, max=255,
                                           help="Committee members (the first clients).")] = 5,
    threshold: Annotated[int, typer.Option("--threshold", min=1, help="Members needed to release a round.")] = 3,
    group_size: Annotated[int, typer.Option("--group-size", min=2, help="Clients per enrolment group.")]
        = secagg.signing.DEFAULT_GROUP_SIZE,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Run a threshold key ceremony on this machine (every party's step, each party's files in its
    own folder): each client generates its own key and deals Shamir shares of it to the committee,
    the members check them with test decryptions, and the epoch is written."""
    from secfl.ceremony import run_local_ceremony

    try:
        with console.status(f"ceremony: {clients} clients deal to a committee of {committee} (threshold {threshold})"):
            done = run_local_ceremony(out, clients=clients, committee=committee, threshold=threshold,
                                      group_size=group_size, force=force)
    except (secagg.CeremonyError, secagg.KeyFileError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror}")
    table = Table(title=f"epoch {done['epoch']} (preset 'strict')")
    table.add_column("file")
    table.add_column("goes to")
    table.add_row(str(out / "committee.json"), f"everyone; pin its fingerprint {done['committee']} out of band")
    table.add_row(str(out / "epoch.json"), "everyone: the server and every client and member")
    table.add_row(str(out / "roster.json"), "everyone: verification keys and enrolment groups")
    table.add_row(str(out / "client-<i>" / "client.key, client-<i>.id"), "client i only (0600): its own key, "
                  "never shared")
    table.add_row(str(out / "client-<i>" / "holder.key, holder.shares"),
                  f"committee member i only (0600): {', '.join(done['members'])}")
    console.print(table)
    console.print(f"any {done['threshold']} of the {len(done['members'])} members release a round; each client's "
                  f"dealing was {done['dealing_bytes']:,} bytes")


@keys_app.command("show")
def keys_show(path: Annotated[Path, typer.Argument(help="A client.key or server.ctx file.")]) -> None:
    """Print a key file's role, preset and fingerprint (never its key material)."""
    errors = []
    for role, loader in (("secret", secagg.load_secret_context), ("public", secagg.load_public_context)):
        try:
            ctx = loader(path)
        except secagg.KeyFileError as exc:
            errors.append(str(exc))
            continue
        console.print(f"{path}: {role} context, preset {ctx.preset.name!r}, fingerprint {ctx.fingerprint}")
        return
    _fail(errors[-1] if "holds a" not in errors[0] else errors[1])


@app.command()
def demo(
    clients: Annotated[int, typer.Option(min=1, max=10_000, help="Number of simulated clients.")] = 10,
    params: Annotated[int, typer.Option(min=1, max=50_000_000, help="Parameters per update.")] = 100_000,
    preset: Annotated[str, typer.Option(help="Parameter preset.")] = secagg.DEFAULT_PRESET,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic updates.")] = 0,
    keys_dir: Annotated[Path | None, typer.Option("--keys", help="Use the key set in this directory.")] = None,
) -> None:
    """Encrypt synthetic client updates, aggregate them with the public context only, release
    the sum, and report bytes, seconds and error against numpy."""
    try:
        if keys_dir is not None:
            secret = secagg.load_secret_context(keys_dir / "client.key")
            public = secagg.load_public_context(keys_dir / "server.ctx")
        else:
            keys = secagg.generate_keys(preset=preset)
            secret, public = keys.secret, keys.public
    except (secagg.SecAggError, OSError) as exc:
        _fail(str(exc))
    if keys_dir is not None and secret.fingerprint != public.fingerprint:
        _fail(f"{keys_dir / 'client.key'} and {keys_dir / 'server.ctx'} belong to different key sets; use the two "
              "files one `secfl keys generate` wrote")
    try:
        figures = _demo_round(secret, public, clients=clients, params=params, seed=seed)
    except secagg.SecAggError as exc:
        _fail(str(exc))
    bytes_up, t_encrypt, t_aggregate, t_decrypt, err = figures
    table = Table(title=f"{clients} clients x {params:,} parameters, preset {secret.preset.name!r}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("bytes per client (x float32)", f"{bytes_up:,} ({bytes_up / (4 * params):.2f}x)")
    table.add_row("encrypt + serialise, per client", f"{t_encrypt / clients:.3f} s")
    table.add_row("server: verify + sum (public context only)", f"{t_aggregate:.3f} s")
    table.add_row("key holder: verify + rebuild + decrypt + release", f"{t_decrypt:.3f} s")
    table.add_row("max |released sum - numpy sum|", f"{err:.2e}")
    console.print(table)


def _demo_round(secret: secagg.SecretContext, public: secagg.PublicContext, *, clients: int, params: int,
                seed: int) -> tuple[int, float, float, float, float]:
    """One round of ``secfl demo``: bytes per upload, seconds per role, max error against numpy."""
    rng = np.random.default_rng(seed)
    n_hidden = max(1, params // 100)
    shapes = {"layer1.weight": (n_hidden, (params - n_hidden) // n_hidden), "layer1.bias": (n_hidden,)}
    rest = params - sum(int(np.prod(s)) for s in shapes.values())
    if rest:
        shapes["layer2.weight"] = (rest,)
    magnitudes = 10.0 ** rng.uniform(-4, -1, size=clients)
    ids, roster = secagg.generate_identities([f"client-{k}" for k in range(clients)], group_size=clients)
    ledgers = {c: secagg.MemoryLedger() for c in ids}
    uploaders = {c: secagg.Uploader(secret, identity=ids[c], ledger=ledgers[c], roster=roster, min_contributors=1)
                 for c in ids}
    layout = secagg.Layout.of({n: np.zeros(s, np.float32) for n, s in shapes.items()})
    commitment = secagg.round_commitment(0, {}, {"run": "demo"})
    reference = {n: np.zeros(s) for n, s in shapes.items()}
    t0 = time.perf_counter()
    wire = []
    for k, cid in enumerate(ids):
        update = {n: (rng.standard_normal(s) * magnitudes[k]).clip(-1, 1).astype(np.float32) for n, s in shapes.items()}
        for n, a in update.items():
            reference[n] += a
        wire.append(uploaders[cid].upload(update, run="demo", round=0, commitment=commitment))
    t_encrypt = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = secagg.Aggregator(public, roster=roster).open_round(run="demo", round=0, layout=layout)
    for b in wire:
        state.receive(b)
    cset = state.contributor_set(key_holder="client-0")
    t_aggregate = time.perf_counter() - t0
    signatures = {m: uploaders[m].sign_set(cset) for m in cset.members}  # each client, once
    t0 = time.perf_counter()
    request = state.request(cset, signatures)
    t_aggregate += time.perf_counter() - t0
    t0 = time.perf_counter()
    holder = secagg.KeyHolder(secret, identity=ids["client-0"], roster=roster, ledger=ledgers["client-0"],
                              min_contributors=1)
    released = holder.release(request).values
    t_decrypt = time.perf_counter() - t0
    err = max(float(np.max(np.abs(released[n] - reference[n]))) for n in reference)
    return len(wire[0]), t_encrypt, t_aggregate, t_decrypt, err


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="digits, mnist, breast_cancer or credit (synthetic).")] = "digits",
    model: Annotated[str, typer.Option(help="mlp or cnn.")] = "mlp",
    clients: Annotated[int, typer.Option(min=1, help="Number of clients.")] = 10,
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 10,
    clients_per_round: Annotated[int | None, typer.Option(min=1, help="Clients sampled per round (default: all).")] = None,
    aggregation: Annotated[str, typer.Option(help="fedatt, fedavg or cosine.")] = "fedatt",
    protection: Annotated[str, typer.Option(help="ckks (encrypted) or plain.")] = "ckks",
    protocol: Annotated[str, typer.Option(help="client-scored, or server-scored (FedAtt on squared norms, preset deep).")] = "client-scored",
    preset: Annotated[str, typer.Option(help="CKKS preset.")] = secagg.DEFAULT_PRESET,
    partition_scheme: Annotated[str, typer.Option("--partition", help="iid or dirichlet.")] = "dirichlet",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration (smaller: more skewed).")] = 0.5,
    local_epochs: Annotated[int, typer.Option(min=1)] = 1,
    lr: Annotated[float, typer.Option(help="Local learning rate.")] = 0.1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    optimizer: Annotated[str, typer.Option(help="sgd or adam.")] = "sgd",
    dropout: Annotated[float, typer.Option(help="Probability that a sampled client drops out before uploading.")] = 0.0,
    dp: Annotated[str | None, typer.Option(help="Differential privacy: sample (DP-SGD) or client (clipped, noised updates).")] = None,
    noise_multiplier: Annotated[float, typer.Option(help="DP noise multiplier.")] = 1.0,
    clip_norm: Annotated[float, typer.Option(help="DP clipping bound.")] = 1.0,
    delta: Annotated[float, typer.Option(help="DP delta.")] = 1e-5,
    seed: Annotated[int, typer.Option(help="Seed of everything.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write train.json here.")] = None,
) -> None:
    """Run a federated training in one process and print a per-round table."""
    import json

    from rich.progress import Progress

    from fedattn.errors import FedAttnError
    from fedattn.privacy import DPConfig
    from fedattn.simulation import SimulationConfig, run_simulation

    try:
        dp_config = DPConfig(mode=dp, noise_multiplier=noise_multiplier, clip_norm=clip_norm, delta=delta) if dp else None
        options: dict[str, Any] = {"equal_weights": True} if dp == "client" and aggregation == "fedavg" else {}
        if protocol == "server-scored":
            options["score"] = "l2_squared"
            preset = "deep"
        config = SimulationConfig(dataset=dataset, model=model, clients=clients, rounds=rounds,
                                  clients_per_round=clients_per_round, partition=partition_scheme, alpha=alpha,
                                  local_epochs=local_epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                                  aggregation=aggregation, rule_options=options, protection=protection,
                                  protocol=protocol, preset=preset, dropout=dropout, dp=dp_config, seed=seed)
        if out is not None:
            _ensure_writable(out)
    except (FedAttnError, secagg.SecAggError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror}")
    table = Table(title=f"{aggregation} on {dataset}, {clients} clients, protection {protection}")
    for col in ("round", "acc", "loss", "eps", "in", "out", "bytes up", "enc s", "agg s", "dec s"):
        table.add_column(col, justify="right")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training", total=rounds)

        def on_round(r) -> None:
            table.add_row(str(r.round), f"{r.accuracy:.4f}", f"{r.loss:.4f}", "-" if r.epsilon is None else f"{r.epsilon:.3g}",
                          str(len(r.participants)), str(len(r.dropped) + len(r.rejected)), f"{r.bytes_sent:,}",
                          f"{r.seconds_encrypt:.3f}", f"{r.seconds_aggregate:.3f}", f"{r.seconds_decrypt:.3f}")
            progress.advance(task)

        try:
            result = run_simulation(config, on_round=on_round)
        except (FedAttnError, secagg.SecAggError) as exc:
            _fail(str(exc))
    console.print(table)
    if out is not None:
        (out / "train.json").write_text(json.dumps(result.to_dict(), indent=2))
        console.print(f"wrote {out / 'train.json'}")


@app.command()
def audit(
    out: Annotated[Path, typer.Option(help="Directory for report.json, report.html and figures/.")] = Path("audit-report"),
    config: Annotated[Path | None, typer.Option("--config", help="TOML file with any audit option ([audit] table or top level).")] = None,
    dataset: Annotated[str | None, typer.Option(help="digits (default), mnist, breast_cancer or credit.")] = None,
    clients: Annotated[int | None, typer.Option(min=1, help="Clients in the federation (default 10).")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, help="Federated rounds (default 5).")] = None,
    protections: Annotated[str | None, typer.Option(help="Comma-separated: plain, ckks, ckks+dp, ckks+dpsgd "
                                                         "(default all).")] = None,
    attacks: Annotated[str | None, typer.Option(help="Comma-separated: inversion, membership, dp-audit "
                                                     "(default all).")] = None,
    seed: Annotated[int | None, typer.Option(help="First seed (default 0); the others follow it.")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Seeds to average over (default 3).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Attack every round of the run, not the first, middle and "
                                                      "last.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="One seed, fewer rounds and iterations: a smoke run, not "
                                                        "an audit.")] = False,
) -> None:
    """The privacy audit: train under each protection, attack what the server sees, write a report."""
    from attacks.audit import AuditConfig, run_audit
    from attacks.report import summary_rows, write_report
    from fedattn.errors import FedAttnError

    overrides = {"dataset": dataset, "clients": clients, "rounds": rounds, "seed": seed, "seeds": seeds,
                 "protections": protections.split(",") if protections else None,
                 "attacks": attacks.split(",") if attacks else None, "quick": quick or None, "full": full or None}
    try:
        if config is not None:
            cfg = AuditConfig.from_toml(config, **overrides)
        else:
            cfg = AuditConfig.from_mapping({k: v for k, v in overrides.items() if v is not None})
        _ensure_writable(out)
    except (FedAttnError, secagg.SecAggError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror}")
    with _spinner() as step:
        try:
            report = run_audit(cfg, progress=step)
        except (FedAttnError, secagg.SecAggError) as exc:
            _fail(str(exc))
    paths = write_report(report, out)
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
    console.print(f"report: {paths['html']}  (canonical: {paths['json']})")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="A small grid (up to 1M parameters, 1 repetition): about a minute.")] = False,
    out: Annotated[Path, typer.Option(help="Directory for bench.json and the PNG plots.")] = Path("bench-out"),
    markdown: Annotated[Path | None, typer.Option(help="Rewrite this file's <!-- bench:start/end --> block (README.md).")] = None,
    methods: Annotated[str | None, typer.Option(help="Comma-separated subset of: plaintext, secagg-compact, secagg-strict, secagg-threshold, flare-tenseal, flower-secagg+.")] = None,
    sizes: Annotated[str | None, typer.Option(hidden=True, help="Comma-separated update sizes (tests).")] = None,
    clients: Annotated[str | None, typer.Option(hidden=True, help="Comma-separated client counts (tests).")] = None,
    rounds: Annotated[bool, typer.Option("--rounds/--no-rounds", hidden=True, help="Measure federated rounds.")] = True,
) -> None:
    """Measure what encryption costs next to plaintext, NVIDIA FLARE's TenSEAL usage and Flower SecAgg+,
    in one run: seconds, bytes, peak memory, error, scaling slopes; write bench.json and plots."""

    from secfl.bench import cells as b
    from secfl.bench import report

    args = [f"--{k} {v}" for k, v in (("out", out), ("markdown", markdown), ("methods", methods), ("sizes", sizes),
                                       ("clients", clients)) if v is not None]
    command = " ".join(["secfl bench", *(["--quick"] if quick else []), *args, *([] if rounds else ["--no-rounds"])])
    try:
        ints = lambda text: [int(v) for v in text.split(",")] if text else None  # noqa: E731
        config = b.config_for(quick=quick, command=command, sizes=ints(sizes), clients=ints(clients),
                              methods=methods.split(",") if methods else None, rounds=rounds)
        _ensure_writable(out)
        if markdown is not None:
            report.check_block(markdown)  # before the long run, not after it
    except ValueError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot use {exc.filename or out}: {exc.strerror}")
    with _spinner() as step:
        result = b.run_bench(config, progress=step)
    paths = report.write_outputs(result, out)
    table = Table(title=f"secfl bench ({result['seconds']:.0f} s): best of the repetitions, same run")
    for col in report.CELL_COLUMNS:
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in report.cell_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(report.targets_text(result))
    if markdown is not None:
        report.replace_block(markdown, report.markdown(result, json_path=str(paths["json"])))
        console.print(f"rewrote the bench block of {markdown}")
    console.print(f"wrote {paths['json']} and {', '.join(p.name for k, p in paths.items() if k != 'json')}")


if __name__ == "__main__":  # pragma: no cover
    app()

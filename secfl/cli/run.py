"""``secfl demo`` and ``secfl train``: one aggregation on synthetic updates, a federated training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

import secagg

from ._app import app
from ._common import check_target, console, err, fail, print_json, written

#: SimulationConfig fields with a flag of the same name (errors name the flag)
TRAIN_FLAGS = {"clients_per_round", "local_epochs", "batch_size", "noise_multiplier", "clip_norm", "rule_options",
               "holders", "threshold", "keys", "clients", "rounds", "lr", "alpha", "dropout", "preset", "protocol",
               "protection", "aggregation", "model", "dataset"}


@app.command()
def demo(
    clients: Annotated[int, typer.Option(min=1, max=10_000, help="Number of simulated clients.")] = 10,
    params: Annotated[int, typer.Option(min=1, max=50_000_000, help="Parameters per update.")] = 100_000,
    preset: Annotated[str | None, typer.Option(help="Parameter preset (default strict; with --keys, the keys'.")]
        = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic updates.")] = 0,
    keys_dir: Annotated[Path | None, typer.Option("--keys", help="Use the key set in this directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Encrypt synthetic client updates, aggregate them with the public context only, release
    the sum, and report bytes, seconds and error against numpy."""
    try:
        if keys_dir is not None:
            secret = secagg.load_secret_context(keys_dir / "client.key")
            public = secagg.load_public_context(keys_dir / "server.ctx")
        else:
            keys = secagg.generate_keys(preset=preset or secagg.DEFAULT_PRESET)
            secret, public = keys.secret, keys.public
    except (secagg.SecAggError, OSError) as exc:
        fail(str(exc))
    if keys_dir is not None and preset is not None and preset != secret.preset.name:
        fail(f"--preset {preset} contradicts the keys in {keys_dir} (preset {secret.preset.name!r}); drop --preset or "
             "generate keys of that preset")
    if keys_dir is not None and secret.fingerprint != public.fingerprint:
        fail(f"{keys_dir / 'client.key'} and {keys_dir / 'server.ctx'} belong to different key sets; use the two "
              "files one `secfl keys generate` wrote")
    try:
        figures = _demo_round(secret, public, clients=clients, params=params, seed=seed)
    except secagg.SecAggError as exc:
        fail(str(exc))
    bytes_up, t_encrypt, t_aggregate, t_decrypt, error = figures
    if as_json:
        print_json({"clients": clients, "params": params, "preset": secret.preset.name, "bytes_per_client": bytes_up,
                    "seconds_encrypt_per_client": t_encrypt / clients, "seconds_server": t_aggregate,
                    "seconds_key_holder": t_decrypt, "max_error": error})
        return
    table = Table(title=f"{clients} clients x {params:,} parameters, preset {secret.preset.name!r}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("bytes per client (x float32)", f"{bytes_up:,} ({bytes_up / (4 * params):.2f}x)")
    table.add_row("encrypt + serialise, per client", f"{t_encrypt / clients:.3f} s")
    table.add_row("server: verify + sum (public context only)", f"{t_aggregate:.3f} s")
    table.add_row("key holder: verify + rebuild + decrypt + release", f"{t_decrypt:.3f} s")
    table.add_row("max |released sum - numpy sum|", f"{error:.2e}")
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
    dataset: Annotated[str, typer.Option(help="digits, mnist, breast_cancer, credit (synthetic) or pydoc-topics (text: next-word prediction; use --model lstm or transformer, --partition natural).")] = "digits",
    model: Annotated[str, typer.Option(help="mlp, cnn, lstm or transformer (text), or your own as package.module:factory (called with "
                                                 "input_shape and n_classes).")] = "mlp",
    clients: Annotated[int, typer.Option(min=1, help="Number of clients.")] = 10,
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 10,
    clients_per_round: Annotated[int | None, typer.Option(min=1, help="Clients sampled per round (default: all).")] = None,
    aggregation: Annotated[str, typer.Option(help="fedatt, fedavg or cosine.")] = "fedatt",
    protection: Annotated[str, typer.Option(help="ckks (encrypted) or plain.")] = "ckks",
    protocol: Annotated[str, typer.Option(help="client-scored, or server-scored (FedAtt on squared norms, preset deep).")] = "client-scored",
    preset: Annotated[str | None, typer.Option(help="CKKS preset (default strict; deep for server-scored).")] = None,
    partition_scheme: Annotated[str, typer.Option("--partition", help="iid, dirichlet or natural (whole topics of a text corpus per client).")] = "dirichlet",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration (smaller: more skewed).")] = 0.5,
    local_epochs: Annotated[int, typer.Option(min=1)] = 1,
    lr: Annotated[float, typer.Option(help="Local learning rate.")] = 0.1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    optimizer: Annotated[str, typer.Option(help="sgd or adam.")] = "sgd",
    dropout: Annotated[float, typer.Option(help="Probability that a sampled client drops out before uploading.")] = 0.0,
    drop: Annotated[list[str] | None, typer.Option("--drop", help="A scripted dropout, CLIENT@ROUND:STAGE (stages: "
                                                                   "before_upload, during_upload, after_upload, "
                                                                   "during_signing, during_decryption); repeatable.")]
        = None,
    keys: Annotated[str, typer.Option("--keys", help="shared (one key set for all clients) or threshold (each "
                                                     "client's own key; a committee releases).")] = "shared",
    holders: Annotated[int, typer.Option("--holders", min=1, help="Threshold keys: committee members (the first "
                                                                  "clients).")] = 5,
    threshold: Annotated[int, typer.Option("--threshold", min=1, help="Threshold keys: members a release needs.")]
        = 3,
    dp: Annotated[str | None, typer.Option(help="Differential privacy: sample (DP-SGD) or client (clipped, noised updates).")] = None,
    noise_multiplier: Annotated[float, typer.Option(help="DP noise multiplier.")] = 1.0,
    clip_norm: Annotated[float, typer.Option(help="DP clipping bound.")] = 1.0,
    delta: Annotated[float, typer.Option(help="DP delta.")] = 1e-5,
    seed: Annotated[int, typer.Option(help="Seed of everything.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Directory to write train.json into (created; see --force).")]
        = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")] = False,
) -> None:
    """Run a federated training in one process and print a per-round table."""
    import json

    from rich.progress import Progress

    from fedattn.errors import FedAttnError
    from fedattn.privacy import DPConfig
    from fedattn.simulation import SimulationConfig, run_simulation

    if protocol == "server-scored" and protection == "plain":
        fail("--protocol server-scored encrypts; it contradicts --protection plain")
    if protocol == "server-scored" and preset not in (None, "deep"):
        fail(f"--protocol server-scored needs the deep preset; it contradicts --preset {preset}")
    if dp == "client" and aggregation != "fedavg":
        fail("--dp client is accounted for equal client weights: use --aggregation fedavg (its weights are then equal)")
    if keys == "threshold" and protection == "plain":
        fail("--keys threshold encrypts; it contradicts --protection plain")
    if out is not None:
        check_target(out, force=force)
    try:
        dp_config = DPConfig(mode=dp, noise_multiplier=noise_multiplier, clip_norm=clip_norm, delta=delta) if dp else None
        options: dict[str, Any] = {"equal_weights": True} if dp == "client" and aggregation == "fedavg" else {}
        if protocol == "server-scored":
            options["score"] = "l2_squared"
            preset = "deep"
        preset = preset or secagg.DEFAULT_PRESET
        config = SimulationConfig(dataset=dataset, model=model, clients=clients, rounds=rounds,
                                  clients_per_round=clients_per_round, partition=partition_scheme, alpha=alpha,
                                  local_epochs=local_epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                                  aggregation=aggregation, rule_options=options, protection=protection,
                                  protocol=protocol, preset=preset, dropout=dropout, dp=dp_config, seed=seed,
                                  dropouts=[_dropout(d) for d in drop or []], keys=keys, holders=holders,
                                  threshold=threshold)
    except (FedAttnError, secagg.SecAggError) as exc:
        fail(str(exc), names=TRAIN_FLAGS)
    table = Table(title=f"{aggregation} on {dataset}, {clients} clients, protection {protection}")
    for col in ("round", "acc", "loss", "eps", "in", "out", "bytes up", "enc s", "agg s", "dec s"):
        table.add_column(col, justify="right")
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("training", total=rounds)

        def on_round(r) -> None:
            table.add_row(str(r.round), f"{r.accuracy:.4f}", f"{r.loss:.4f}", "-" if r.epsilon is None else f"{r.epsilon:.3g}",
                          str(len(r.participants)), str(len(r.dropped) + len(r.rejected)), f"{r.bytes_sent:,}",
                          f"{r.seconds_encrypt:.3f}", f"{r.seconds_aggregate:.3f}", f"{r.seconds_decrypt:.3f}")
            progress.advance(task)

        try:
            result = run_simulation(config, on_round=on_round)
        except (FedAttnError, secagg.SecAggError) as exc:
            fail(str(exc), names=TRAIN_FLAGS)
    if out is not None:
        with written(out, force=force) as tmp:
            (tmp / "train.json").write_text(json.dumps(result.to_dict(), indent=2))
        err.print(f"wrote {out / 'train.json'}")
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(table)


def _dropout(text: str) -> dict[str, Any]:
    """``client-3@2:during_decryption`` as a scripted dropout."""
    who, _, rest = text.partition("@")
    rnd, _, stage = rest.partition(":")
    if not (who and rnd.isdigit() and stage):
        fail(f"--drop {text!r}: write CLIENT@ROUND:STAGE, e.g. client-3@2:during_decryption")
    return {"client": who, "round": int(rnd), "stage": stage}

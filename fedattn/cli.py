"""The ``secfl`` command line."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import secagg

app = typer.Typer(name="secfl", help="Secure federated learning that measures what it protects.",
                  no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Create and inspect CKKS key sets.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
log = logging.getLogger("secfl")


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
) -> None:
    """Act as the key dealer: write the clients' secret key file and the server's public context."""
    try:
        p = secagg.get_preset(preset)
    except secagg.UnknownPresetError as exc:
        _fail(str(exc))
    targets = [out / "client.key", out / "server.ctx"]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        _fail(f"{', '.join(existing)} already exist; pass --force to replace them (old ciphertexts become undecryptable)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with console.status(f"generating a {p.name!r} key set"):
            keys = secagg.generate_keys(preset=p)
            paths = keys.save(out)
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
    console.print(table)


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
    rng = np.random.default_rng(seed)
    n_hidden = max(1, params // 100)
    shapes = {"layer1.weight": (n_hidden, (params - n_hidden) // n_hidden), "layer1.bias": (n_hidden,)}
    rest = params - sum(int(np.prod(s)) for s in shapes.values())
    if rest:
        shapes["layer2.weight"] = (rest,)
    magnitudes = 10.0 ** rng.uniform(-4, -1, size=clients)
    t0 = time.perf_counter()
    wire = []
    for k in range(clients):
        update = {name: (rng.standard_normal(shape) * magnitudes[k]).clip(-1, 1).astype(np.float32) for name, shape in shapes.items()}
        if k == 0:
            reference = {n: a.astype(np.float64) for n, a in update.items()}
        else:
            for n, a in update.items():
                reference[n] += a
        wire.append(secagg.encrypt_update(update, secret, round=0, client_id=f"client-{k}").to_bytes())
    t_encrypt = time.perf_counter() - t0
    t0 = time.perf_counter()
    received = [secagg.EncryptedUpdate.from_bytes(b, public, expected_round=0) for b in wire]
    total = secagg.aggregate(received, public)
    agg_bytes = total.to_bytes()
    t_aggregate = time.perf_counter() - t0
    t0 = time.perf_counter()
    released = secagg.decrypt(secagg.EncryptedUpdate.from_bytes(agg_bytes, secret), secret)
    t_decrypt = time.perf_counter() - t0
    err = max(float(np.max(np.abs(released[n] - reference[n]))) for n in reference)
    table = Table(title=f"{clients} clients x {params:,} parameters, preset {secret.preset.name!r}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("bytes per client (x float32)", f"{len(wire[0]):,} ({len(wire[0]) / (4 * params):.2f}x)")
    table.add_row("encrypt + serialise, per client", f"{t_encrypt / clients:.3f} s")
    table.add_row("server: deserialise + validate + sum", f"{t_aggregate:.3f} s")
    table.add_row("key holder: decrypt + release", f"{t_decrypt:.3f} s")
    table.add_row("max |released sum - numpy sum|", f"{err:.2e}")
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()

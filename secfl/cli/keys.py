"""``secfl presets`` and ``secfl keys``: the parameter presets, the key dealer, the ceremony."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import secagg

from ._app import app, keys_app
from ._common import console, err, fail, print_json


@app.command()
def presets(as_json: Annotated[bool, typer.Option("--json", help="Print the presets as JSON.")] = False,
            members: Annotated[int | None, typer.Option(
                "--members", min=1, max=10**12,
                help="Show each additive preset sized for sums of this many members (<preset>-for-<members>).")]
            = None) -> None:
    """List the CKKS parameter presets with their security, depth, cost and precision."""
    shown = list(secagg.PRESETS.values())
    if members is not None:
        sized: dict[tuple, secagg.Preset] = {}  # one row per distinct parameter set (a lean preset sizes like its parent)
        for p in shown:
            if p.depth or p.eval_keys:
                continue  # a circuit preset keeps its modulus
            try:
                q = secagg.sized_preset(p, members=members)
            except secagg.InvalidParametersError as exc:  # too small for the sum
                err.print(f"{p.name}: {exc}")
                continue
            sized.setdefault((q.poly_modulus_degree, q.coeff_modulus_bits, q.scale_bits, q.max_abs, q.flood_bits), q)
        shown = list(sized.values())
    if as_json:
        print_json([p.to_dict() | {"noise_std": p.noise_std(), "default": p.name == secagg.DEFAULT_PRESET,
                                   "bytes_per_float32": p.bytes_per_float32} for p in shown])
        return
    table = Table(title="secagg presets (128-bit security by the HE standard)")
    for col in ("name", "N", "modulus bits", "scale", "depth", "max |x|", "noise std", "flood bits", "× float32",
                "server keys"):
        table.add_column(col)
    for p in shown:
        table.add_row(p.name + ("*" if p.name == secagg.DEFAULT_PRESET else ""), str(p.poly_modulus_degree),
                      "+".join(map(str, p.coeff_modulus_bits)), f"2^{p.scale_bits}", str(p.depth), f"{p.max_abs:g}",
                      f"{p.noise_std():.1e}", str(p.flood_bits), f"{p.bytes_per_float32:.3g}",
                      "+".join(p.eval_keys) or "pk")
    console.print(table)
    console.print("* default.  " + "  ".join(f"{p.name}: {p.description}." for p in shown))
    if members is None:
        console.print("Any additive preset sized for a federation: <preset>-for-<members> (see --members).")


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
    except (secagg.UnknownPresetError, secagg.InvalidParametersError) as exc:
        fail(str(exc))
    targets = [out / "client.key", out / "server.ctx"]
    if clients:
        targets += [out / "roster.json"] + [out / f"client-{i}.id" for i in range(clients)]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        fail(f"{shown} already exist; pass --force to replace them (old ciphertexts become undecryptable)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with err.status(f"generating a {p.name!r} key set"):
            keys = secagg.generate_keys(preset=p)
            paths = keys.save(out, overwrite=force)
            if clients:
                from secagg.signing import deal_identities

                deal_identities((f"client-{i}" for i in range(clients)), out, group_size=min(group_size, clients),
                                overwrite=force)
    except secagg.KeyFileError as exc:  # a file or a link planted meanwhile, or one that cannot be written
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror}")
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
        with err.status(f"ceremony: {clients} clients deal to a committee of {committee} (threshold {threshold})"):
            done = run_local_ceremony(out, clients=clients, committee=committee, threshold=threshold,
                                      group_size=group_size, force=force)
    except (secagg.CeremonyError, secagg.KeyFileError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror}")
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
    fail(errors[-1] if "holds a" not in errors[0] else errors[1])



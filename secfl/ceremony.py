"""``secfl keys ceremony``: every party's step of a threshold key ceremony, run on one machine.

A simulation of the ceremony for trying threshold keys out and for local runs: each party's own
files go into its own folder, as they would on its own machine; nothing secret is written twice
or outside its owner's folder. In a deployment each party runs its own step with the library
(:func:`secagg.committee.deal`, :meth:`secagg.epoch.HolderShares.accept` and ``test_partials``,
:func:`secagg.epoch.check_ceremony`) and only public files travel: the roster, the committee, the
dealings (their shares are sealed), the test partials and the epoch.

Layout of ``out``::

    roster.json, committee.json, epoch.json     public (pin the committee's fingerprint out of band)
    client-<i>/client.key                       client i's own CKKS key (0600)
    client-<i>/client-<i>.id                    its Ed25519 identity (0600)
    client-<i>/holder.key, holder.shares        a committee member's X25519 key and shares (0600)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import secagg
from secagg.committee import Committee, HolderKeys, deal
from secagg.epoch import HolderShares, check_ceremony

__all__ = ["run_local_ceremony"]


def _targets(out: Path, clients: int, committee: int) -> list[Path]:
    paths = [out / "roster.json", out / "committee.json", out / "epoch.json"]
    for i in range(clients):
        folder = out / f"client-{i}"
        paths += [folder / "client.key", folder / f"client-{i}.id"]
        if i < committee:
            paths += [folder / "holder.key", folder / "holder.shares"]
    return paths


def run_local_ceremony(out: Path, *, clients: int, committee: int, threshold: int, group_size: int,
                       preset: str = "strict", force: bool = False) -> dict[str, Any]:
    """Run the ceremony for ``clients`` clients, the first ``committee`` of them the committee.

    Raises:
        secagg.KeyFileError: a file exists (without ``force``) or cannot be written.
        secagg.CeremonyError: a committee the ceremony cannot serve (threshold, preset).
    """
    if not 1 <= committee <= clients:
        raise secagg.CeremonyError(f"the committee ({committee}) is drawn from the clients ({clients})")
    existing = [str(p) for p in _targets(out, clients, committee) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise secagg.KeyFileError(f"{existing[0]} (and {len(existing) - 1} more) already exist; pass --force to "
                                  "replace them")
    names = [f"client-{i}" for i in range(clients)]
    members = names[:committee]
    ids, roster = secagg.generate_identities(names, group_size=min(group_size, clients))  # each party's own, here
    keys = {c: secagg.generate_keys(preset=preset).secret for c in names}
    holder_keys = {m: HolderKeys.generate() for m in members}
    record = Committee.of(preset=preset, threshold=threshold, members=[(m, holder_keys[m]) for m in members])
    dealings = {c: deal(keys[c], ids[c], record) for c in names}
    shares = {m: HolderShares(record, m) for m in members}
    for m in members:
        for d in dealings.values():
            shares[m].accept(d, keys=holder_keys[m], roster=roster)
    epoch = check_ceremony(record, dealings, {m: s.test_partials() for m, s in shares.items()})
    out.mkdir(parents=True, exist_ok=True)
    roster.save(out / "roster.json", overwrite=force)
    record.save(out / "committee.json", overwrite=force)
    epoch.save(out / "epoch.json", overwrite=force)
    for c in names:
        folder = out / c
        folder.mkdir(exist_ok=True)
        keys[c].save(folder / "client.key", overwrite=force)
        ids[c].save(folder / f"{c}.id", overwrite=force)
        if c in members:
            holder_keys[c].save(folder / "holder.key", overwrite=force)
            shares[c].save(folder / "holder.shares", overwrite=force)
    return {"committee": record.fingerprint, "epoch": epoch.id, "members": members, "threshold": threshold,
            "dealing_bytes": len(next(iter(dealings.values())).to_bytes())}

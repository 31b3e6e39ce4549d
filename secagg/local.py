"""A whole encrypted round in one process, every party played by its own object: for demos,
measurements and the audit's views, never for a deployment (one process holds every secret).

Example:
    >>> import numpy as np, secagg
    >>> keys = secagg.generate_keys(preset="compact")
    >>> out = local_round(keys, {f"c{k}": {"w": np.full(3, 0.1 * k, np.float32)} for k in range(4)}, weights=1.0,
    ...                   release_seed=0)
    >>> out.contributors, np.round(out.values["w"].astype(float), 3).tolist()   # the mean of 0, .1, .2, .3
    (('c0', 'c1', 'c2', 'c3'), [0.15, 0.15, 0.15])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .keys import KeySet
from .ledger import MemoryLedger
from .packing import Layout
from .roles import DEFAULT_MIN_CONTRIBUTORS, WEIGHTS_ENTRY, Aggregator, KeyHolder, Release, Uploader
from .signing import generate_identities, round_commitment

__all__ = ["local_round"]


def local_round(keys: KeySet, updates: Mapping[str, Mapping[str, Any]], *, weights: float | Mapping[str, float] | None = None,
                min_contributors: int = DEFAULT_MIN_CONTRIBUTORS, group_size: int | None = None,
                release_seed: int | None = None) -> Release:
    """Encrypt each client's update, aggregate with the public context only, have every client sign
    the set and the first one release it (verified, flooded) - the protocol of
    :mod:`secagg.roles`, end to end.

    ``weights``: one weight for all layers or one per layer, the same for every client; given, the
    release is the ratio form's ``sum_k w_k x_k / sum_k w_k`` per layer, else the sum.
    """
    ids, roster = generate_identities(updates, group_size=group_size or max(min_contributors, 1))
    run, rnd = os.urandom(8).hex(), 0
    first = next(iter(updates.values()))
    model = {n: np.zeros(np.shape(a), np.asarray(a).dtype) for n, a in first.items()}
    commitment = round_commitment(rnd, model, {"run": run})
    ledgers = {c: MemoryLedger() for c in ids}
    clients = {c: Uploader(keys.secret, identity=ids[c], ledger=ledgers[c], roster=roster,
                           min_contributors=min_contributors) for c in ids}
    layout_arrays: dict[str, Any] = dict(model)
    if weights is not None:
        layout_arrays[WEIGHTS_ENTRY] = np.zeros(len(model))
    server = Aggregator(keys.public, roster=roster).open_round(run=run, round=rnd, layout=Layout.of(layout_arrays))
    for c, update in updates.items():
        server.receive(clients[c].upload(update, run=run, round=rnd, commitment=commitment, weights=weights))
    holder_id = next(iter(ids))
    cset = server.contributor_set(key_holder=holder_id)
    request = server.request(cset, {m: clients[m].sign_set(cset) for m in cset.members})
    holder = KeyHolder(keys.secret, identity=ids[holder_id], roster=roster, ledger=ledgers[holder_id],
                       min_contributors=min_contributors, release_seed=release_seed)
    return holder.release(request)

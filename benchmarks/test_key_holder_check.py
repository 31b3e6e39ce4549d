"""What the key holder's own check costs: bytes and CPU time per round, 1M parameters x 10 clients.

Run:  python -m pytest benchmarks/test_key_holder_check.py -s

A key holder verifies every member's receipt and set signature, rebuilds the summed second half
from the members' signed seeds and only then decrypts. The alternative it replaces - decrypting
a full ciphertext ``(c0, c1)`` the server sends - needs neither step but lets the server choose
``c1`` (and learn the secret key). Per round this prints, measured side by side with repetitions
interleaved (CPU time, this process): the request's bytes (the summed first halves, receipts and
signatures) against the full ciphertexts it replaces, and the time of verifying, rebuilding and
decrypting. The target: the check (verify + rebuild) costs at most 3x the decryption itself.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import secagg
from secagg.holder import seed_label as _seed_label
from secagg.messages import decode_request
from secagg.ring import Ring, second_half

PARAMS, CLIENTS, REPEATS = 1_000_000, 10, 3


def _round(preset: str):
    keys = secagg.generate_keys(preset=preset)
    ids, roster = secagg.generate_identities([f"c{k}" for k in range(CLIENTS)], group_size=CLIENTS)
    rng = np.random.default_rng(0)
    commitment = secagg.round_commitment(0, {}, {"bench": preset})
    model = {"w": np.zeros(PARAMS, np.float32)}
    ledgers = {c: secagg.MemoryLedger() for c in ids}
    uploads = {c: secagg.Uploader(keys.secret, identity=ids[c], ledger=ledgers[c], roster=roster).upload(
        {"w": rng.uniform(-0.05, 0.05, PARAMS).astype(np.float32)}, run="bench", round=0, commitment=commitment)
        for c in ids}
    state = secagg.Aggregator(keys.public, roster=roster).open_round(run="bench", round=0,
                                                                     layout=secagg.Layout.of(model))
    for blob in uploads.values():
        state.receive(blob)
    cset = state.contributor_set(key_holder="c0")
    request = state.request(cset, {m: cset.sign(ids[m]) for m in cset.members})
    holder = secagg.KeyHolder(keys.secret, identity=ids["c0"], roster=roster, ledger=ledgers["c0"])
    return keys, holder, request


def _steps(keys, holder, request) -> dict[str, float]:
    ring = Ring(keys.secret.preset)
    out = {}
    t = time.process_time()
    req = decode_request(request, max_members=CLIENTS)
    receipts = holder._verify(req)
    out["verify"] = time.process_time() - t
    chunks = req.layout.chunks(ring.n)
    t = time.process_time()
    halves = []
    for j in range(chunks):
        a = ring.zeros()
        for r in receipts:
            a = ring.add(a, ring.uniform(second_half(bytes.fromhex(r.seed), chunk=j, preset=ring.preset,
                                                     label=_seed_label(r.client_id))))
        halves.append(a)
    out["rebuild"] = time.process_time() - t
    size = ring.residue_bytes
    t = time.process_time()
    for j in range(chunks):
        ring.decrypt(ring.unpack(req.body[j * size:(j + 1) * size], what="sum"), halves[j], keys.secret)
    out["decrypt"] = time.process_time() - t
    return out


@pytest.mark.parametrize("preset", ["compact", "strict"])
def test_key_holder_check_cost(preset, capsys):
    keys, holder, request = _round(preset)
    req = decode_request(request, max_members=CLIENTS)
    runs = [_steps(keys, holder, request) for _ in range(REPEATS)]  # each run times the three steps in turn
    med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    full = 2 * len(req.body)  # what decrypting the server's (c0, c1) would have taken
    with capsys.disabled():
        print(f"\n{preset}, {PARAMS:,} parameters x {CLIENTS} clients, {math.ceil(PARAMS / keys.secret.preset.poly_modulus_degree)} "
              f"ciphertexts: request {len(request):,} B (first halves {len(req.body):,} B, receipts and signatures "
              f"{len(request) - len(req.body):,} B) vs full ciphertexts {full:,} B; CPU s (median of {REPEATS}): "
              + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    assert med["verify"] + med["rebuild"] <= 3 * med["decrypt"]

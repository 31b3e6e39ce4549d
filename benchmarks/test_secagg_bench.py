"""Cost of secagg's primitives per 1M parameters, next to NVIDIA FLARE's TenSEAL usage, in one run.

Run:  pytest benchmarks/test_secagg_bench.py --benchmark-columns=mean,min,max,rounds

Baseline ("flare-tenseal"): what NVIDIA FLARE's HE filters do: a TenSEAL context with N=8192,
coefficient modulus [60, 40, 40], scale 2^40 and Galois keys; one ``CKKSVector`` per layer,
serialised without the context; the server deserialises each client's vectors and adds them.
"""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from conftest import N_CLIENTS, record

import secagg

ROUNDS = 3


@pytest.fixture(scope="module", params=["compact", "strict"])
def keys(request):
    return secagg.generate_keys(preset=request.param)


def test_ours(benchmark, keys, client_updates):
    name = f"secagg-{keys.secret.preset.name}"
    n_values = sum(a.size for a in client_updates[0].values())

    def encrypt():
        return secagg.encrypt_update(client_updates[0], keys.secret, round=0, client_id="c0").to_bytes()

    wire0 = benchmark.pedantic(encrypt, rounds=ROUNDS, iterations=1)
    encrypt_s = benchmark.stats.stats.mean
    wire = [wire0] + [secagg.encrypt_update(u, keys.secret, round=0, client_id=f"c{k}").to_bytes()
                      for k, u in enumerate(client_updates[1:], 1)]
    server_s, total = _time(lambda: secagg.aggregate(
        [secagg.EncryptedUpdate.from_bytes(b, keys.public, expected_round=0) for b in wire], keys.public).to_bytes())
    decrypt_s, out = _time(lambda: secagg.decrypt(secagg.EncryptedUpdate.from_bytes(total, keys.secret), keys.secret))
    ref = {n: sum(u[n].astype(np.float64) for u in client_updates) for n in client_updates[0]}
    err = max(float(np.max(np.abs(out[n] - ref[n]))) for n in ref)
    record(name, encrypt_s=encrypt_s, bytes_x_float32=len(wire0) / (4 * n_values), server_s=server_s,
           decrypt_s=decrypt_s, max_abs_error=err)
    benchmark.extra_info.update(RESULTS_OF(name))
    assert len(wire0) / (4 * n_values) < 4.0


def test_flare_tenseal_baseline(benchmark, client_updates):
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40])
    ctx.global_scale = 2**40
    ctx.generate_galois_keys()
    n_values = sum(a.size for a in client_updates[0].values())

    def encrypt(update):
        return {n: ts.ckks_vector(ctx, a.ravel().tolist()).serialize() for n, a in update.items()}

    wire0 = benchmark.pedantic(lambda: encrypt(client_updates[0]), rounds=ROUNDS, iterations=1)
    encrypt_s = benchmark.stats.stats.mean
    wire = [wire0] + [encrypt(u) for u in client_updates[1:]]

    def server():
        total = {}
        for w in wire:
            for n, b in w.items():
                v = ts.ckks_vector_from(ctx, b)
                total[n] = v if n not in total else total[n] + v
        return {n: v.serialize() for n, v in total.items()}

    server_s, agg = _time(server)
    decrypt_s, out = _time(lambda: {n: np.array(ts.ckks_vector_from(ctx, b).decrypt()) for n, b in agg.items()})
    ref = {n: sum(u[n].astype(np.float64) for u in client_updates).ravel() for n in client_updates[0]}
    err = max(float(np.max(np.abs(out[n] - ref[n]))) for n in ref)
    nbytes = sum(len(b) for b in wire0.values())
    record("flare-tenseal", encrypt_s=encrypt_s, bytes_x_float32=nbytes / (4 * n_values), server_s=server_s,
           decrypt_s=decrypt_s, max_abs_error=err)
    benchmark.extra_info.update(RESULTS_OF("flare-tenseal"))


def _time(fn):
    import time

    best, out = float("inf"), None
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def RESULTS_OF(name):  # noqa: N802 - reads like a constant lookup
    from conftest import RESULTS

    return dict(RESULTS[name], clients=N_CLIENTS)

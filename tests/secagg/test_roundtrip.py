"""Round trips and aggregates against numpy, within each preset's documented tolerance."""

import numpy as np
import pytest
from helpers import random_update, released_tolerance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secagg
from secagg.unsafe import decrypt_raw

shapes_st = st.dictionaries(
    keys=st.text(alphabet="abcdefgh.", min_size=1, max_size=8),
    values=st.lists(st.integers(1, 40), min_size=0, max_size=3).map(tuple),
    min_size=1, max_size=4,
).filter(lambda d: sum(int(np.prod(s)) for s in d.values()) > 0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=shapes_st, log_mag=st.floats(-4, 0.5), dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_roundtrip_random_models(keys, shapes, log_mag, dtype, seed):
    rng = np.random.default_rng(seed)
    update = {n: rng.uniform(-1, 1, s).astype(dtype) * 10.0**log_mag for n, s in shapes.items()}
    enc = secagg.encrypt_update(update, keys.secret, round=2, client_id="c0")
    received = secagg.EncryptedUpdate.from_bytes(enc.to_bytes(), keys.public, expected_round=2)
    raw = decrypt_raw(received, keys.secret)
    flat = np.concatenate([np.asarray(update[n], np.float64).ravel() for n in update])
    assert np.max(np.abs(raw - flat)) < 20 * keys.secret.preset.noise_std() + 1e-14
    out = secagg.decrypt(received, keys.secret, seed=seed)
    assert list(out) == list(update)
    for name, arr in update.items():
        assert out[name].shape == arr.shape and out[name].dtype == arr.dtype
        np.testing.assert_allclose(out[name], arr, atol=released_tolerance(keys.secret.preset, 1))


def test_relative_error_at_update_magnitudes(keys):
    """Realistic update magnitudes 1e-4..1e-1: the raw error is the preset's noise, whatever the magnitude."""
    rng = np.random.default_rng(7)
    for mag in (1e-4, 1e-3, 1e-2, 1e-1):
        x = rng.uniform(-mag, mag, 20_000)
        raw = decrypt_raw(secagg.encrypt_update({"x": x}, keys.secret, round=0, client_id="c"), keys.secret)
        assert np.max(np.abs(raw - x)) < 6 * keys.secret.preset.noise_std() + 1e-14 * mag  # float64 FFT floor


def test_serialisation_is_stable(keys, rng):
    enc = secagg.encrypt_update(random_update(rng), keys.secret, round=1, client_id="c")
    data = enc.to_bytes()
    again = secagg.EncryptedUpdate.from_bytes(data, keys.public).to_bytes()
    assert again == data
    total = secagg.aggregate([secagg.EncryptedUpdate.from_bytes(data, keys.public)], keys.public)
    agg = total.to_bytes()
    assert secagg.EncryptedUpdate.from_bytes(agg, keys.public).to_bytes() == agg


def test_dense_packing_uses_full_ciphertexts(keys):
    per = keys.secret.preset.values_per_ciphertext
    update = {f"l{i}": np.full(per // 3 + i, 0.01) for i in range(7)}  # 7 layers, ~2.3 ciphertexts
    enc = secagg.encrypt_update(update, keys.secret, round=0, client_id="c")
    assert len(enc.terms) == -(-sum(a.size for a in update.values()) // per) == 3
    assert enc.layout["l3"].offset == sum(update[f"l{i}"].size for i in range(3))


@pytest.mark.parametrize("n_clients", [1, 3, 10])
def test_sum_equals_numpy(keys, rng, n_clients):
    ups = [random_update(rng) for _ in range(n_clients)]
    encs = [secagg.encrypt_update(u, keys.secret, round=5, client_id=f"c{k}") for k, u in enumerate(ups)]
    received = [secagg.EncryptedUpdate.from_bytes(e.to_bytes(), keys.public, expected_round=5) for e in encs]
    total = secagg.aggregate(received, keys.public, expected_round=5)
    assert total.contributors == tuple(f"c{k}" for k in range(n_clients))
    out = secagg.decrypt(secagg.EncryptedUpdate.from_bytes(total.to_bytes(), keys.secret), keys.secret, seed=0)
    for name in ups[0]:
        ref = sum(u[name].astype(np.float64) for u in ups)
        np.testing.assert_allclose(out[name], ref, atol=released_tolerance(keys.secret.preset, n_clients))


def test_weighted_sum_per_client_and_per_layer(keys, rng):
    ups = [random_update(rng) for _ in range(4)]
    encs = [secagg.encrypt_update(u, keys.secret, round=0, client_id=f"c{k}") for k, u in enumerate(ups)]
    w = [0.1, 0.4, 0.3, 0.2]
    out = secagg.decrypt(secagg.aggregate(encs, keys.public, weights=w), keys.secret, seed=1)
    tol = released_tolerance(keys.secret.preset, 4) + 2.0**-20
    for name in ups[0]:
        np.testing.assert_allclose(out[name], sum(wk * u[name].astype(np.float64) for wk, u in zip(w, ups)), atol=tol)
    per_layer = [{n: wk * (i + 1) for i, n in enumerate(ups[0])} for wk in w]
    agg = secagg.aggregate(encs, keys.public, weights=per_layer)
    assert len(agg.terms) > len(encs[0].terms)  # a ciphertext spanning layers got one term per layer run
    out = secagg.decrypt(secagg.EncryptedUpdate.from_bytes(agg.to_bytes(), keys.public), keys.secret, seed=2)
    for i, name in enumerate(ups[0]):
        ref = sum(wk * (i + 1) * u[name].astype(np.float64) for wk, u in zip(w, ups))
        np.testing.assert_allclose(out[name], ref, atol=4 * tol)


def test_integer_weights_are_exact(keys, rng):
    """FedAvg sample counts multiply exactly (no quantisation)."""
    ups = [random_update(rng, 0.01) for _ in range(3)]
    encs = [secagg.encrypt_update(u, keys.secret, round=0, client_id=f"c{k}") for k, u in enumerate(ups)]
    counts = [120, 37, 301]
    agg = secagg.aggregate(encs, keys.public, weights=counts)
    assert agg.scale_bits == keys.secret.preset.scale_bits
    raw = agg.layout.unpack(decrypt_raw(agg, keys.secret))
    for name in ups[0]:
        ref = sum(c * u[name].astype(np.float64) for c, u in zip(counts, ups))
        np.testing.assert_allclose(raw[name], ref, atol=1e-6, rtol=1e-6)


def test_ratio_form_matches_attention_reference(keys, rng):
    """sum_k w_kl x_kl / sum_k w_kl per layer (BRIEF section 2), with softmax-style weights."""
    ups = [random_update(rng) for _ in range(5)]
    scores = rng.uniform(0, 1, (5, len(ups[0])))
    weights = np.exp(scores - scores.max())
    encs = [secagg.encrypt_update(u, keys.secret, round=0, client_id=f"c{k}",
                                  weights={n: weights[k, i] for i, n in enumerate(u)}) for k, u in enumerate(ups)]
    out = secagg.decrypt_ratio(secagg.aggregate(encs, keys.public), keys.secret, seed=3)
    for i, name in enumerate(ups[0]):
        ref = sum(weights[k, i] * ups[k][name].astype(np.float64) for k in range(5)) / weights[:, i].sum()
        np.testing.assert_allclose(out[name], ref, atol=released_tolerance(keys.secret.preset, 5))


def test_public_key_encryption_path(compact_keys, rng):
    """A party holding only the public context can still contribute (twice the bytes)."""
    u = random_update(rng)
    sym = secagg.encrypt_update(u, compact_keys.secret, round=0, client_id="a")
    pub = secagg.encrypt_update(u, compact_keys.public, round=0, client_id="b")
    assert pub.encryption == "public" and 1.8 < pub.nbytes / sym.nbytes < 2.2
    out = secagg.decrypt(secagg.aggregate([sym, pub], compact_keys.public), compact_keys.secret, seed=0)
    tol = 8 * 2.0**12 * compact_keys.secret.preset.noise_std(public_key=True) * np.sqrt(2)
    for name in u:
        np.testing.assert_allclose(out[name], 2 * u[name].astype(np.float64), atol=tol)


def test_bytes_per_value(keys):
    """Full ciphertexts: compact ~2x float32, strict under 4x."""
    n = 4 * keys.secret.preset.values_per_ciphertext
    enc = secagg.encrypt_update({"x": np.full(n, 0.01, np.float32)}, keys.secret, round=0, client_id="c")
    ratio = len(enc.to_bytes()) / (4 * n)
    assert ratio < {"compact": 2.05, "strict": 3.9}[keys.secret.preset.name]


def test_release_floods_and_rounds(compact_keys):
    x = np.full(50_000, 0.125)
    enc = secagg.encrypt_update({"x": x}, compact_keys.secret, round=0, client_id="c")
    a = secagg.decrypt(enc, compact_keys.secret)["x"].astype(np.float64)
    b = secagg.decrypt(enc, compact_keys.secret)["x"].astype(np.float64)
    raw = decrypt_raw(enc, compact_keys.secret)
    sigma = 2.0**12 * compact_keys.secret.preset.noise_std()
    assert not np.array_equal(a, b)  # fresh CSPRNG noise each release
    assert 0.8 < np.std(a - raw) / sigma < 1.2  # flooded at the documented level
    step = 2.0 ** np.floor(np.log2(sigma))
    assert np.allclose(np.round(a / step) * step, a, atol=sigma * 1e-3)  # float32 cast keeps the grid


def test_parallel_matches_serial(strict_keys):
    x = np.random.default_rng(0).uniform(-0.1, 0.1, 5 * strict_keys.secret.preset.values_per_ciphertext)
    serial = secagg.encrypt_update({"x": x}, strict_keys.secret, round=0, client_id="c", workers=1)
    par = secagg.encrypt_update({"x": x}, strict_keys.secret, round=0, client_id="c", workers=2)
    assert len(par.blobs) == len(serial.blobs)
    a = decrypt_raw(par, strict_keys.secret)
    b = decrypt_raw(serial, strict_keys.secret)
    np.testing.assert_allclose(a, x, atol=1e-12)
    np.testing.assert_allclose(b, x, atol=1e-12)

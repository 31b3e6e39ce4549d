"""Round trips and aggregates against numpy, within each preset's documented tolerance."""

import numpy as np
import pytest
from helpers import random_update, released_tolerance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secagg
from secagg.ring import Ring, second_half

shapes_st = st.dictionaries(
    keys=st.text(alphabet="abcdefgh.", min_size=1, max_size=8),
    values=st.lists(st.integers(1, 40), min_size=0, max_size=3).map(tuple),
    min_size=1, max_size=4,
).filter(lambda d: sum(int(np.prod(s)) for s in d.values()) > 0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=shapes_st, log_mag=st.floats(-4, 0.5), dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_sum_of_random_models(keys, shapes, log_mag, dtype, seed):
    rng = np.random.default_rng(seed)
    ups = {f"c{k}": {n: rng.uniform(-1, 1, s).astype(dtype) * 10.0**log_mag for n, s in shapes.items()} for k in range(2)}
    out = secagg.local_round(keys, ups, release_seed=seed)
    assert list(out.values) == list(ups["c0"]) and out.contributors == ("c0", "c1")
    for name, arr in ups["c0"].items():
        assert out.values[name].shape == arr.shape and out.values[name].dtype == arr.dtype
        ref = sum(np.asarray(u[name], np.float64) for u in ups.values())
        np.testing.assert_allclose(out.values[name], ref, atol=released_tolerance(keys.secret.preset, 2))


def test_raw_error_is_the_presets_noise_at_update_magnitudes(keys):
    """Realistic update magnitudes 1e-4..1e-1: the raw error is the preset's noise, whatever the magnitude."""
    ring = Ring(keys.secret.preset)
    rng = np.random.default_rng(7)
    a = ring.uniform(second_half(b"s" * 32, chunk=0, preset=ring.preset))
    for mag in (1e-4, 1e-3, 1e-2, 1e-1):
        x = rng.uniform(-mag, mag, ring.n)
        raw = ring.decrypt(ring.encrypt(x, keys.secret, a), a, keys.secret)
        assert np.max(np.abs(raw - x)) < 8 * keys.secret.preset.noise_std() + 1e-14 * mag  # float64 FFT floor


@pytest.mark.parametrize("count", [1, 17])
def test_a_batch_encrypts_each_message_under_its_own_half_with_its_own_error(keys, count):
    """SEAL transforms up to 15 messages as one ciphertext's polynomials (17: two batches; 1: a
    batch of one): each ``c0_k`` must be ``m_k + e_k - a_k*s`` with a fresh
    centred-binomial ``e_k`` (|e| <= 21, std 3.24), never another message's half or error."""
    from helpers.attacker import centred, from_ntt

    ring = Ring(keys.secret.preset)
    messages = ring.encode_coeff(np.random.default_rng(count).uniform(-1, 1, (count, ring.n)))
    a = np.stack([ring.uniform(second_half(b"b" * 32, chunk=k, preset=ring.preset)) for k in range(count)])
    c0 = ring.encrypt_many(messages, ring.key_factor(keys.secret), a)
    s = ring.secret_ntt(keys.secret)
    errors = [(centred(ring, from_ntt(ring, ring.add(c0[k], ring.mul(a[k], s)))) - centred(ring, messages[k]))
              .astype(np.int64) for k in range(count)]
    for e in errors:
        assert np.abs(e).max() <= 21 and 2.9 < e.std() < 3.6
    assert len({e.tobytes() for e in errors}) == count


def test_second_halves_are_uniform_and_bound_to_their_place(keys):
    ring = Ring(keys.secret.preset)
    a = ring.uniform(second_half(b"s" * 32, chunk=0, preset=ring.preset))
    assert np.all(a < ring.q) and a.shape == (ring.limbs, ring.n)
    for i, q in enumerate(ring.primes):  # the top bit of a uniform residue is set about (q - 2^(b-1)) / q of the time
        mean = float(np.mean(a[i].astype(np.float64))) / q
        assert abs(mean - 0.5) < 0.02
    other_chunk = ring.uniform(second_half(b"s" * 32, chunk=1, preset=ring.preset))
    other_label = ring.uniform(second_half(b"s" * 32, chunk=0, preset=ring.preset, label=b"shared:x"))
    assert not np.array_equal(a, other_chunk) and not np.array_equal(a, other_label)
    assert np.array_equal(a, ring.uniform(second_half(b"s" * 32, chunk=0, preset=ring.preset)))


@pytest.mark.parametrize("bound", [2**21, 2**62])
def test_signed_integers_become_the_same_residues_as_pythons_modulo(keys, bound):
    """The fast path (every value below every prime) and the general one agree with ``%``."""
    ring = Ring(keys.secret.preset)
    e = np.random.default_rng(bound).integers(-bound, bound, ring.n)
    e[:3] = (0, -1, 1)
    expected = np.array([[int(x) % q for x in e] for q in ring.primes], dtype=np.uint64)
    assert np.array_equal(ring.residues_of(e), expected)
    x, y = ring.residues_of(e), ring.residues_of(-e // 3)
    assert np.array_equal(ring.add(x, y), np.array([[(int(u) + int(-u // 3)) % q for u in e]
                                                    for q in ring.primes], dtype=np.uint64))
    assert np.array_equal(ring.neg(x), ring.residues_of(-e))
    extreme = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0], dtype=np.int64)
    assert np.array_equal(ring.residues_of(extreme), np.array([[int(v) % q for v in extreme] for q in ring.primes],
                                                              dtype=np.uint64))


@pytest.mark.parametrize("count", [1, 17])
@pytest.mark.parametrize("negate", [False, True])
def test_batches_transform_each_x_and_multiply_each_y_by_the_factor(keys, count, negate):
    """``NTT(x_k) +- y_k * f``, 15 polynomials per SEAL call: exactly the one-at-a-time transform
    and product, each ``y_k`` with its own ``x_k`` (the ``y_k`` never transformed); a zero ``x``
    (SEAL refuses a ciphertext of zeros) included."""
    ring = Ring(keys.secret.preset)
    x = np.stack([ring.error() for _ in range(count)])
    x[-1] = 0
    y = np.stack([ring.uniform(second_half(b"l" * 32, chunk=k, preset=ring.preset)) for k in range(count)])
    f = ring.uniform(second_half(b"f" * 32, chunk=0, preset=ring.preset))
    got = ring.ntt_plus_products(x, y, ring.factor(f), negate=negate)
    for k in range(count):
        product = ring.mul(y[k], f)
        assert np.array_equal(got[k], ring.add(ring.ntt(x[k]), ring.neg(product) if negate else product))


@pytest.mark.parametrize("count", [1, 15, 16])
@pytest.mark.parametrize("path", ["in place", "files"])
def test_only_public_polynomials_leave_seal(keys, monkeypatch, count, path):
    """What a batch leaves in SEAL's objects (in place) or writes out of SEAL (the scratch file, then a
    Python buffer) is the constant 1, the ``c0`` themselves and zeros: never a product of a constant
    with the key (``1 - s`` is the key), never a product ``a*s`` or ``m + e``."""
    from secagg import ring as ring_module
    from secagg import sealmem

    ring = Ring(keys.secret.preset)
    messages = ring.encode_coeff(np.random.default_rng(count).uniform(-1, 1, (count, ring.n)))
    a = np.stack([ring.uniform(second_half(b"p" * 32, chunk=k, preset=ring.preset)) for k in range(count)])
    key = ring.key_factor(keys.secret)
    seen = []
    if path == "files":
        monkeypatch.setattr(sealmem, "_state", False)
        real = ring_module.sealio.dump_own
        monkeypatch.setattr(ring_module.sealio, "dump_own", lambda obj, **kw: seen.append(real(obj, **kw)) or seen[-1])
    else:
        real = sealmem.new_ciphertext
        monkeypatch.setattr(sealmem, "new_ciphertext", lambda *a, **kw: seen.append(real(*a, **kw)) or seen[-1])
    c0 = ring.encrypt_many(messages, key, a)
    polys = []
    poly = 8 * ring.limbs * ring.n
    for obj in seen:  # a dump: the object's header, then its polynomials; in place: the objects, kept alive here
        polys.extend(np.frombuffer(obj, dtype="<u8", offset=len(obj) % poly).reshape(-1, ring.limbs, ring.n)
                     if path == "files" else sealmem.read(obj))
    batches = -(-count // ring_module.BATCH)
    assert len(seen) == batches * (1 if path == "files" else 2)
    ones = np.ones((ring.limbs, ring.n), dtype=np.uint64)
    assert sum(np.array_equal(p, ones) for p in polys) == batches
    zeros = sum(not p.any() for p in polys)
    assert zeros == (0 if path == "files" else count + batches)  # the products, wiped
    assert sum(any(np.array_equal(p, c) for c in c0) for p in polys) == count
    assert len(polys) == count + batches + zeros


@pytest.mark.parametrize("count", [1, 15])
def test_batched_decryption_is_each_ciphertexts_and_leaves_nothing_in_seal(keys, monkeypatch, count):
    """``decrypt_many`` (the key holder's) gives each ciphertext's own decryption, and every SEAL object it
    made holds zeros at the end: a raw, unflooded sum must not outlive the call in SEAL's pool."""
    from secagg import sealmem

    ring = Ring(keys.secret.preset)
    values = np.random.default_rng(count).uniform(-1, 1, (count, ring.n))
    a = np.stack([ring.uniform(second_half(b"r" * 32, chunk=k, preset=ring.preset)) for k in range(count)])
    c0 = ring.encrypt_many(ring.encode_coeff(values), ring.key_factor(keys.secret), a)
    made = []
    real = sealmem.new_ciphertext
    monkeypatch.setattr(sealmem, "new_ciphertext", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    got = ring.decrypt_many(c0, a, ring.key_factor(keys.secret))
    assert made and not any(sealmem.read(ct).any() for ct in made)
    for k in range(count):
        one = ring.decrypt(c0[k], a[k], keys.secret)
        assert np.abs(got[k] - one).max() <= 1e-12 * np.abs(one).max()
    assert np.abs(got - values).max() < 1e-4
    x = np.stack([ring.ntt(p) for p in ring.encode_coeff(values)])  # a combiner's sums, NTT form
    decoded = ring.decode_many(x)
    assert np.abs(decoded - np.stack([ring.decode_ntt(p) for p in x])).max() <= 1e-12 * np.abs(values).max()


def test_batches_of_zeros_come_back_as_zeros(keys):
    """A batch whose every result is zero is one SEAL computes and then refuses to return (no constant
    trails the batch to prevent it): each step takes the zeros as they are."""
    ring = Ring(keys.secret.preset)
    zeros = np.zeros((2, ring.limbs, ring.n), dtype=np.uint64)
    assert not ring.decode_many(zeros).any()
    assert not ring.ntt_plus_products(zeros, zeros, ring.factor(ring.zeros())).any()
    y = np.stack([ring.uniform(second_half(b"0" * 32, chunk=k, preset=ring.preset)) for k in range(2)])
    one = ring.zeros() + np.uint64(1)  # f = 1 and x = -y (NTT form): every x + y * f is zero
    x = np.stack([ring.neg(p) for p in y])
    assert not ring._batches(x, y, ring.factor(one), negate=False, secret=True, x_ntt=True, out_ntt=False).any()


def test_a_preset_with_more_primes_decodes_through_seal():
    """``deep`` has eight data primes, more than the numpy decoder composes: SEAL decodes, to the same values."""
    ring = Ring(secagg.get_preset("deep"))
    values = np.random.default_rng(8).uniform(-1, 1, (2, ring.n))
    x = np.stack([ring.ntt(p) for p in ring.encode_coeff(values)])
    got = ring.decode_many(x)
    assert np.array_equal(got, np.stack([ring.decode_ntt(p) for p in x]))
    assert np.abs(got - values).max() < 1e-6


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("which", ["zero factor", "factor -1", "zero y"])
def test_degenerate_factors_and_halves_give_their_exact_products(keys, which, count):
    """A zero product (a key share of zeros, all-zero halves) is refused by SEAL as a "transparent"
    ciphertext; a factor of -1 once cancelled a constant: each must still give ``NTT(x) + y * f``."""
    ring = Ring(keys.secret.preset)
    x = np.stack([ring.error() for _ in range(count)])
    y = np.stack([ring.uniform(second_half(b"d" * 32, chunk=k, preset=ring.preset)) for k in range(count)])
    f = ring.zeros() if which == "zero factor" else ring.q - np.uint64(1) + ring.zeros()
    if which == "zero y":
        y[:] = 0
    got = ring.ntt_plus_products(x, y, ring.factor(f))
    for k in range(count):
        assert np.array_equal(got[k], ring.add(ring.ntt(x[k]), ring.mul(y[k], f)))


def test_a_secret_contexts_key_factor_is_zeroed_when_the_context_goes():
    import gc

    keys = secagg.generate_keys(preset="compact")
    key = Ring(keys.secret.preset).key_factor(keys.secret)
    assert not key.is_zero()
    del keys
    gc.collect()
    assert key.is_zero()


@pytest.mark.parametrize("path", ["in place", "files"])
def test_wiping_a_ciphertext_leaves_zeros(monkeypatch, path):
    from secagg import sealio, sealmem

    ring = Ring(secagg.get_preset("compact"))
    if path == "files":
        monkeypatch.setattr(sealmem, "_state", False)
    a = ring.uniform(second_half(b"w" * 32, chunk=0, preset=ring.preset))
    ct = ring.ciphertext(a, a)
    ring._wipe(ct)
    raw = sealio.dump_own(ct, max_inflated=4 * 8 * ring.limbs * ring.n)
    assert not np.frombuffer(raw, dtype="<u8", offset=len(raw) - 16 * ring.limbs * ring.n).any()


@pytest.mark.parametrize("n_clients", [2, 3, 10])
def test_sum_equals_numpy(keys, rng, n_clients):
    ups = {f"c{k}": random_update(rng) for k in range(n_clients)}
    out = secagg.local_round(keys, ups, release_seed=0)
    for name in ups["c0"]:
        ref = sum(u[name].astype(np.float64) for u in ups.values())
        np.testing.assert_allclose(out.values[name], ref, atol=released_tolerance(keys.secret.preset, n_clients))


def test_ratio_form_matches_attention_reference(keys, rng):
    """sum_k w_kl x_kl / sum_k w_kl per layer, with softmax-style weights (each client's own)."""
    ups = [random_update(rng) for _ in range(5)]
    names = list(ups[0])
    scores = rng.uniform(0, 1, (5, len(names)))
    weights = np.exp(scores - scores.max())
    ids, roster = secagg.generate_identities([f"c{k}" for k in range(5)], group_size=5)
    ledgers = {c: secagg.MemoryLedger() for c in ids}
    commit = secagg.round_commitment(0, {}, {"run": "r"})
    layout = secagg.Layout.of({**{n: np.zeros(a.shape, a.dtype) for n, a in ups[0].items()},
                               secagg.WEIGHTS_ENTRY: np.zeros(len(names))})
    server = secagg.Aggregator(keys.public, roster=roster).open_round(run="r", round=0, layout=layout)
    clients = {c: secagg.Uploader(keys.secret, identity=ids[c], ledger=ledgers[c], roster=roster) for c in ids}
    for k, c in enumerate(ids):
        server.receive(clients[c].upload(ups[k], run="r", round=0, commitment=commit,
                                         weights={n: weights[k, i] for i, n in enumerate(names)}))
    cset = server.contributor_set(key_holder="c3")
    out = secagg.KeyHolder(keys.secret, identity=ids["c3"], roster=roster, ledger=ledgers["c3"], release_seed=3).release(
        server.request(cset, {c: clients[c].sign_set(cset) for c in cset.members}))
    for i, name in enumerate(names):
        ref = sum(weights[k, i] * ups[k][name].astype(np.float64) for k in range(5)) / weights[:, i].sum()
        np.testing.assert_allclose(out.values[name], ref, atol=released_tolerance(keys.secret.preset, 5))


def test_bytes_per_value(keys):
    """Every residue in its prime's bits, the first halves only: compact 60/32 = 1.875x float32,
    strict 112/32 = 3.5x, plus the signed header."""
    from secagg.messages import decode_upload

    n = 4 * keys.secret.preset.values_per_ciphertext
    ids, roster = secagg.generate_identities(["c"])
    wire = secagg.Uploader(keys.secret, identity=ids["c"]).upload({"x": np.full(n, 0.01, np.float32)}, run="r", round=0,
                                                                    commitment="ab" * 32)
    bits = {"compact": 60, "strict": 112}[keys.secret.preset.name]
    assert len(decode_upload(wire)[1]) == n * bits // 8
    assert len(wire) / (4 * n) < bits / 32 + 0.01
    assert len(wire) <= secagg.max_payload_bytes(keys.secret.preset, n)


def test_release_floods_and_rounds(compact_keys):
    ups = {f"c{k}": {"x": np.full(50_000, 0.125)} for k in range(2)}
    a = secagg.local_round(compact_keys, ups).values["x"]
    b = secagg.local_round(compact_keys, ups).values["x"]
    sigma = 2.0**12 * compact_keys.secret.preset.noise_std() * np.sqrt(2)
    assert not np.array_equal(a, b)  # fresh CSPRNG noise each release
    assert 0.8 < np.std(a - 0.25) / sigma < 1.2  # flooded at the documented level
    step = 2.0 ** np.floor(np.log2(sigma))
    assert np.allclose(np.round(a / step) * step, a, atol=sigma * 1e-3)  # rounded to the flooding grid


def test_parallel_matches_serial(strict_keys):
    from secagg import parallel

    x = np.random.default_rng(0).uniform(-0.1, 0.1, 5 * strict_keys.secret.preset.values_per_ciphertext)
    ring = Ring(strict_keys.secret.preset)
    par = parallel.encrypt(x, strict_keys.secret, seed=b"s" * 32, label=b"shared:c", workers=2)
    serial = parallel.encrypt(x, strict_keys.secret, seed=b"s" * 32, label=b"shared:c", workers=1)
    assert len(par) == len(serial) == 5 * ring.residue_bytes
    for body in (par, serial):
        for j in range(5):
            c0 = ring.unpack(body[j * ring.residue_bytes:(j + 1) * ring.residue_bytes], what="c0")
            a = ring.uniform(second_half(b"s" * 32, chunk=j, preset=ring.preset, label=b"shared:c"))
            np.testing.assert_allclose(ring.decrypt(c0, a, strict_keys.secret), x[j * ring.n:(j + 1) * ring.n], atol=1e-12)


def test_the_server_adds_lazily_and_reduces_before_a_sum_could_overflow(compact_keys, rng):
    """Compact's 60-bit prime lets 16 residues share a uint64: 40 uploads in one group force two
    reductions at the server and at the key holder's rebuilt second half (a sum of 40 random residues
    overflows 64 bits), and the release must be the exact sum."""
    ring = Ring(compact_keys.secret.preset)
    assert ring.lazy_terms == 16 and Ring(secagg.get_preset("strict")).lazy_terms == 256
    worst = np.array([[q - 1] * ring.n for q in ring.primes], np.uint64)  # the largest residues there are
    acc = worst.copy()
    for _ in range(ring.lazy_terms - 1):
        ring.add_lazy(acc, worst)
    expected = [(ring.lazy_terms * (q - 1)) % q for q in ring.primes]
    assert [int(v) for v in ring.reduce(acc)[:, 0]] == expected  # 16 terms: no overflow before reducing
    updates = {f"c{k}": {"w": rng.uniform(-1, 1, 300).astype(np.float32)} for k in range(40)}
    out = secagg.local_round(compact_keys, updates, group_size=40)
    np.testing.assert_allclose(out.values["w"], np.sum([u["w"] for u in updates.values()], axis=0), atol=1e-3)

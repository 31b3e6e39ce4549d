"""SEAL's buffers read and written in place: the same residues as SEAL's own files, the same
results as the file path, and nothing but SEAL objects read as SEAL's."""

import gc

import numpy as np
import pytest
import tenseal.sealapi as sealapi

import secagg
from secagg import sealio, sealmem
from secagg.ring import Ring, second_half


def _serialised(ring: Ring, obj) -> np.ndarray:
    raw = sealio.dump_own(obj, max_inflated=10**8)
    return np.frombuffer(raw, dtype="<u8", offset=len(raw) % (8 * ring.limbs * ring.n))


def test_the_pinned_build_passes_the_self_check():
    assert sealmem.available()


@pytest.mark.parametrize("size", [2, 3, 16])
@pytest.mark.parametrize("ntt", [True, False])
def test_objects_written_in_place_are_the_objects_seal_loads(keys, monkeypatch, size, ntt):
    """Residues, sizes, scale, NTT flag, parameters: SEAL serialises an object written in place to the
    very bytes of the same object loaded from a file (a batch at scale 1, a pair at the preset's scale)."""
    ring = Ring(keys.secret.preset)
    polys = np.stack([ring.uniform(second_half(b"v" * 32, chunk=k, preset=ring.preset)) for k in range(size)])
    unit = size != 2 or ntt  # pairs in coefficient form exist only at the preset's scale (Ring.ntt)
    in_place = ring._ciphertext_of(*polys, ntt=ntt, unit=unit)
    plain_in_place = ring._plaintext_of(polys[0], unit=True)
    assert np.array_equal(sealmem.read(in_place), polys) and np.array_equal(sealmem.read(plain_in_place), polys[0].ravel())
    monkeypatch.setattr(sealmem, "_state", False)
    loaded = ring._ciphertext_of(*polys, ntt=ntt, unit=unit)
    plain_loaded = ring._plaintext_of(polys[0], unit=True)
    assert sealio.dump_own(in_place, max_inflated=10**8) == sealio.dump_own(loaded, max_inflated=10**8)
    assert sealio.dump_own(plain_in_place, max_inflated=10**8) == sealio.dump_own(plain_loaded, max_inflated=10**8)


def test_seal_computes_on_objects_written_in_place_as_on_loaded_ones(keys, monkeypatch):
    """Every ring operation that goes through SEAL gives the file path's result, bit for bit."""
    ring = Ring(keys.secret.preset)
    x = np.stack([ring.error() for _ in range(17)])
    y = np.stack([ring.uniform(second_half(b"s" * 32, chunk=k, preset=ring.preset)) for k in range(17)])
    f = ring.uniform(second_half(b"f" * 32, chunk=0, preset=ring.preset))

    def run():
        return [ring.ntt_plus_products(x, y, ring.factor(f), negate=True), ring.ntt(x[0]), ring.mul(y[0], f),
                ring.secret_ntt(keys.secret), ring.decrypt(y[1], y[2], keys.secret), ring.decode_ntt(y[3]),
                ring.decrypt_many(y[:16], y[1:], ring.factor(f)), ring.decode_many(y)]

    in_place = run()
    monkeypatch.setattr(sealmem, "_state", False)
    through_files = run()
    for a, b in zip(in_place, through_files, strict=True):
        assert np.array_equal(a, b)


def test_a_view_keeps_its_object_alive(keys):
    ring = Ring(keys.secret.preset)
    c0 = ring.uniform(second_half(b"k" * 32, chunk=0, preset=ring.preset))
    view = sealmem._ciphertext_view(ring.ciphertext(c0, ring.zeros()))  # the ciphertext has no other reference
    gc.collect()
    ring.ciphertext(ring.zeros(), ring.zeros())  # would reuse the freed buffer
    assert np.array_equal(view[0], c0)


@pytest.mark.parametrize("thing", [object(), b"\x00" * 200, sealapi.Plaintext(), None])
def test_only_seal_objects_are_read_as_seal_objects(thing):
    with pytest.raises(RuntimeError, match="not reachable"):
        sealmem._ciphertext_view(thing)
    with pytest.raises(RuntimeError, match="not reachable"):
        sealmem._plaintext_view(sealapi.Ciphertext() if isinstance(thing, sealapi.Plaintext) else thing)


# each field the checks read, pointed at a neighbour whose value differs
_MISREAD = [("_CT_N", "_CT_PRIMES"), ("_CT_SIZE", "_CT_N"), ("_CT_PRIMES", "_CT_N"), ("_CT_LEN", "_CT_N"),
            ("_CT_CAP", "_CT_PRIMES"), ("_CT_SCALE", "_CT_N"), ("_CT_NTT", "_CT_SIZE"), ("_CT_DATA", 120),
            ("_PT_COUNT", "_PT_SCALE"), ("_PT_LEN", "_PT_SCALE"), ("_PT_SCALE", "_PT_COUNT"), ("_PT_DATA", 88)]


@pytest.mark.parametrize(("field", "instead"), _MISREAD)
def test_a_misread_field_fails_the_self_check_and_stops_every_access(keys, monkeypatch, field, instead):
    """Were SEAL's layout other than the one this module knows, nothing is read as residues: the
    self-check fails (the file path is taken), and an access that skipped it is refused."""
    ring = Ring(keys.secret.preset)
    ct = ring.ciphertext(ring.zeros() + np.uint64(1), ring.zeros() + np.uint64(1), ntt=False)
    plain = ring._plaintext_of(ring.zeros() + np.uint64(1), unit=True)
    monkeypatch.setattr(sealmem, field, getattr(sealmem, instead) if isinstance(instead, str) else instead)
    monkeypatch.setattr(sealmem, "_state", None)
    assert not sealmem.available()
    monkeypatch.setattr(sealmem, "_state", True)
    if field.startswith("_CT_"):
        if field == "_CT_DATA":  # a pointer beside the data pointer: the checks cannot see it, the self-check does
            return
        with pytest.raises(RuntimeError):
            sealmem.read(ct)
        if field not in ("_CT_NTT", "_CT_SCALE"):  # new_ciphertext writes these two: a misread one would be a miswrite
            with pytest.raises(RuntimeError):
                sealmem.new_ciphertext(ring.seal, ring.parms_id, [ring.zeros()] * 2, ntt=True, scale=1.0)
    elif field != "_PT_DATA":
        with pytest.raises(RuntimeError):
            sealmem.read(plain)


def test_an_untested_tenseal_takes_the_file_path(monkeypatch):
    monkeypatch.setattr(sealmem, "_state", None)
    monkeypatch.setattr(sealmem.tenseal, "__version__", "0.3.19")
    assert not sealmem.available()
    ring = Ring(secagg.get_preset("compact"))
    a = ring.uniform(second_half(b"t" * 32, chunk=0, preset=ring.preset))
    assert np.array_equal(ring.ntt(ring.error() * 0), ring.zeros()) and ring.ntt(a).shape == a.shape
    monkeypatch.setattr(sealmem, "_state", None)
    monkeypatch.undo()
    assert sealmem.available()


def test_a_self_check_that_cannot_run_takes_the_file_path(monkeypatch):
    def broken():
        raise RuntimeError("a SEAL build without these constructors")

    monkeypatch.setattr(sealmem, "_self_check", broken)
    monkeypatch.setattr(sealmem, "_state", None)
    assert not sealmem.available()


def test_secret_plaintexts_are_zeroed_in_seal(keys, monkeypatch):
    """A key's residues read out of SEAL (a dealer's) and a raw decryption or sum (a key holder's, a
    combiner's) do not stay in SEAL's objects, whose memory its pool keeps when they are freed."""
    ring = Ring(keys.secret.preset)
    plain = ring.decrypt_plain(ring.zeros(), ring._ones, keys.secret)
    assert not plain.is_zero()
    ring.plaintext_array(plain, secret=True)
    assert plain.is_zero()
    made = []
    for name in ("new_ciphertext", "new_plaintext"):
        real = getattr(sealmem, name)
        monkeypatch.setattr(sealmem, name, lambda *a, _real=real, **kw: made.append(_real(*a, **kw)) or made[-1])
    a = ring.uniform(second_half(b"z" * 32, chunk=0, preset=ring.preset))
    c0 = ring.encrypt(np.full(ring.n, 0.3125), keys.secret, a)
    x = ring.ntt(ring.encode_coeff(np.full(ring.n, 0.25)))
    ring.key_factor(keys.secret)  # kept in the secret context, beside the key, for the next decryption
    made.clear()
    assert np.allclose(ring.decrypt(c0, a, keys.secret), 0.3125, atol=1e-4)
    assert np.allclose(ring.decode_ntt(x), 0.25, atol=1e-6)
    assert made and not any(sealmem.read(obj).any() for obj in made)


def test_nothing_secret_is_left_in_seals_pool(keys):
    """SEAL's pool hands a freed block to the next allocation of its size without clearing it: after a
    batch of encryptions, blocks of the batch's sizes hold no product ``a*s`` and no ``m + e`` (NTT
    form, ``c0 + a*s``). Read as an attacker in the process would, from unzeroed reservations."""
    import ctypes

    ring = Ring(keys.secret.preset)
    count = 15  # one batch: a ciphertext of 16 polynomials, products of 16
    values = np.random.default_rng(5).uniform(-1, 1, (count, ring.n))
    a = np.stack([ring.uniform(second_half(b"q" * 32, chunk=k, preset=ring.preset)) for k in range(count)])
    c0 = ring.encrypt_many(ring.encode_coeff(values), ring.key_factor(keys.secret), a)
    s = ring.secret_ntt(keys.secret)
    secrets = [ring.mul(a[k], s) for k in range(count)] + [ring.add(c0[k], ring.mul(a[k], s)) for k in range(count)]
    poly = ring.limbs * ring.n
    for size in (16, 16):  # the batch's two blocks
        block = sealapi.Ciphertext(ring.seal, ring.parms_id, size)  # capacity only: not zero-filled
        p = sealmem._address(block)
        assert sealmem._u64(p + sealmem._CT_CAP) == size * poly
        raw = np.ctypeslib.as_array((ctypes.c_uint64 * (size * poly)).from_address(sealmem._u64(p + sealmem._CT_DATA)))
        held = raw.reshape(size, ring.limbs, ring.n)
        assert not any(np.array_equal(h, x) for h in held for x in secrets)


@pytest.mark.parametrize("path", ["in place", "files"])
def test_residues_beyond_their_prime_never_reach_seal(keys, monkeypatch, path):
    """SEAL's loading refuses a residue at or beyond its prime; written in place, the ring's own check
    must, at every entry that takes polynomials from a caller."""
    from secagg.errors import PayloadError

    ring = Ring(keys.secret.preset)
    if path == "files":
        monkeypatch.setattr(sealmem, "_state", False)
    good, bad = ring.zeros(), ring.zeros()
    bad[-1, -1] = ring.primes[-1]
    key = ring.key_factor(keys.secret)
    calls = [lambda: ring.ciphertext(bad, good), lambda: ring.ciphertext(good, bad), lambda: ring.plaintext(bad),
             lambda: ring.decrypt(bad, good, keys.secret), lambda: ring.decrypt(good, bad, keys.secret),
             lambda: ring.decode_ntt(bad), lambda: ring.mul(good + np.uint64(1), bad),
             lambda: ring.decrypt_many(bad[None], good[None], key), lambda: ring.decode_many(bad[None])]
    for call in calls:
        with pytest.raises(PayloadError, match="beyond its prime"):
            call()
    with pytest.raises(ValueError, match="uint64 polynomials"):
        ring.ciphertext(good[0], good)
    with pytest.raises(ValueError, match="uint64 polynomials"):
        ring.plaintext(good.astype(np.int64))

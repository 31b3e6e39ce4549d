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
def test_a_view_is_the_residues_seal_saves(keys, size, ntt):
    ring = Ring(keys.secret.preset)
    polys = np.stack([ring.uniform(second_half(b"v" * 32, chunk=k, preset=ring.preset)) for k in range(size)])
    ct = sealmem.new_ciphertext(ring.seal, ring.parms_id, size, ntt=ntt, scale=ring.scale)
    assert (ct.size(), ct.is_ntt_form(), ct.scale, list(ct.parms_id())) == (size, ntt, ring.scale, ring.parms_id)
    assert not sealmem.ciphertext_view(ct).any()  # zero-filled, whatever the pool held before
    sealmem.ciphertext_view(ct)[:] = polys
    assert np.array_equal(_serialised(ring, ct), polys.reshape(-1))
    plain = sealmem.new_plaintext(ring.parms_id, ring.limbs * ring.n, scale=1.0)
    sealmem.plaintext_view(plain)[:] = polys[0].reshape(-1)
    assert plain.is_ntt_form() and plain.scale == 1.0
    assert np.array_equal(_serialised(ring, plain), polys[0].reshape(-1))


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
    view = sealmem.ciphertext_view(ring.ciphertext(c0, ring.zeros()))  # the ciphertext has no other reference
    gc.collect()
    ring.ciphertext(ring.zeros(), ring.zeros())  # would reuse the freed buffer
    assert np.array_equal(view[0], c0)


@pytest.mark.parametrize("thing", [object(), b"\x00" * 200, sealapi.Plaintext(), None])
def test_only_seal_objects_are_read_as_seal_objects(thing):
    with pytest.raises(RuntimeError, match="not reachable"):
        sealmem.ciphertext_view(thing)
    with pytest.raises(RuntimeError, match="not reachable"):
        sealmem.plaintext_view(sealapi.Ciphertext() if isinstance(thing, sealapi.Plaintext) else thing)


def test_a_field_that_disagrees_with_the_bindings_stops_the_view(keys, monkeypatch):
    """The layout is checked per view: read one word off, and nothing is read as residues."""
    ring = Ring(keys.secret.preset)
    ct = ring.ciphertext(ring.zeros(), ring.zeros())
    monkeypatch.setattr(sealmem, "_CT_N", sealmem._CT_PRIMES)
    with pytest.raises(RuntimeError, match="not reachable"):
        sealmem.ciphertext_view(ct)


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


def test_secret_plaintexts_are_zeroed_in_seal(keys):
    """A key's residues read out of SEAL (a dealer's) and a raw decryption (a key holder's) do not stay
    in SEAL's objects, whose memory its pool keeps when they are freed."""
    ring = Ring(keys.secret.preset)
    plain = ring.decrypt_plain(ring.zeros(), ring._ones, keys.secret)
    assert not plain.is_zero()
    ring.plaintext_array(plain, secret=True)
    assert plain.is_zero()

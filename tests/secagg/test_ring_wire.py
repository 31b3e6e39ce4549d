"""The residues' wire layout: each prime's residues as one little-endian bit string of the prime's
bits, checked against a plain-integer reading of the bytes, for every prime size SEAL offers."""

import numpy as np
import pytest

from secagg.errors import PayloadError
from secagg.presets import Preset
from secagg.ring import Ring


def ring_of(*bits: int) -> Ring:
    # N = 4096 keeps SEAL's contexts small where the primes allow it; a scale of 2^20 and a tiny
    # max_abs fit any prime of 21+ bits
    n = 4096 if sum(bits) <= 109 else 8192
    return Ring(Preset(name=f"wire-{'-'.join(map(str, bits))}", poly_modulus_degree=n, coeff_modulus_bits=bits,
                       scale_bits=20, max_abs=2.0**-4, flood_bits=12))


def residues(ring: Ring, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    polys = np.stack([np.stack([rng.integers(0, q, ring.n, dtype=np.uint64) for q in ring.primes])
                      for _ in range(count)])
    polys[0, :, :3] = (ring.q - 1)  # the largest residues and zeros beside random ones
    polys[-1, :, -3:] = 0
    return polys


@pytest.mark.parametrize("bits", list(range(21, 61)))
def test_residues_are_packed_to_their_primes_bits(bits):
    """Residue k of a prime of w bits sits at bits k*w .. k*w + w - 1 of its limb's bytes (59 bits:
    a whole 8 bytes, since one 8-byte read from a byte boundary could not hold every residue)."""
    ring = ring_of(bits)
    w = 64 if bits == 59 else bits
    assert ring.widths == [w] and ring.residue_bytes == ring.n * w // 8
    polys = residues(ring, 3, seed=bits)
    blob = ring.pack_many(polys)
    assert len(blob) == 3 * ring.residue_bytes
    for c in range(3):
        as_int = int.from_bytes(blob[c * ring.residue_bytes:(c + 1) * ring.residue_bytes], "little")
        assert as_int == sum(int(r) << (k * w) for k, r in enumerate(polys[c, 0]))
    np.testing.assert_array_equal(ring.unpack_many(blob, 3, what="x"), polys)
    framed = b"\x07" * 5 + blob + b"\xff" * 3  # inside a larger buffer, and its last bytes at the very end
    np.testing.assert_array_equal(ring.unpack_many(framed, 3, what="x", start=5), polys)
    np.testing.assert_array_equal(ring.unpack(ring.pack(polys[1]), what="x"), polys[1])


@pytest.mark.parametrize("bits", [(56, 23), (40, 39), (47, 60)])
def test_limbs_follow_each_other_in_their_own_widths(bits):
    ring = ring_of(*bits, 60)  # the last prime is the special one, not on the wire
    polys = residues(ring, 2, seed=1)
    blob = ring.pack_many(polys)
    offset = 0
    for i, w in enumerate(bits):
        part = blob[offset:offset + ring.n * w // 8]
        assert int.from_bytes(part, "little") == sum(int(r) << (k * w) for k, r in enumerate(polys[0, i]))
        offset += ring.n * w // 8
    np.testing.assert_array_equal(ring.unpack_many(blob, 2, what="x"), polys)


@pytest.mark.parametrize("bits", [47, 56, 60])
@pytest.mark.parametrize("place", [0, 1, 7, 4095])
def test_a_residue_at_or_above_its_prime_is_refused_wherever_it_sits(bits, place):
    """No spare bits: every w-bit pattern at or above the prime is a foreign ciphertext half."""
    ring = ring_of(bits)
    polys = residues(ring, 2, seed=2)
    for bad in (ring.primes[0], (1 << bits) - 1):
        polys[1, 0, place] = bad
        blob = bytearray(ring.pack_many(np.zeros_like(polys)))
        tampered = sum(int(r) << (k * bits) for k, r in enumerate(polys[1, 0]))
        blob[ring.residue_bytes:] = tampered.to_bytes(ring.residue_bytes, "little")
        with pytest.raises(PayloadError, match="beyond its prime"):
            ring.unpack_many(bytes(blob), 2, what="x")


def test_no_polynomials_pack_to_no_bytes():
    ring = ring_of(47)
    assert ring.pack_many(np.zeros((0, 1, ring.n), np.uint64)) == b""
    assert ring.unpack_many(b"", 0, what="x").shape == (0, 1, ring.n)

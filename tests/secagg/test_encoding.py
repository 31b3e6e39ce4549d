"""CKKS encoding in numpy: SEAL's slots, and exact residues of integers up to 2^75."""

import numpy as np
import pytest

import secagg
from secagg import encoding
from secagg.ring import Ring


def _rounded(values, scale):
    """The integers the encoder reduces (its own FFT, recomputed here for an exact reference)."""
    k1, k2, twist = encoding._slots(values.size)
    v = np.empty(values.size, complex)
    v[k1], v[k2] = values[0::2] + 1j * values[1::2], (values[0::2] + 1j * values[1::2]).conj()
    return np.rint((np.fft.fft(v) * twist).real * scale)


@pytest.mark.parametrize("preset", ["compact", "strict"])
def test_residues_are_the_exact_integers_modulo_each_prime(preset):
    """strict's scale 2^72 makes integers beyond every prime (the split path); compact's stay below (the direct one)."""
    ring = Ring(secagg.get_preset(preset))
    values = np.random.default_rng(0).uniform(-4, 4, ring.n)
    out = encoding.encode_coeff(values, scale=ring.scale, primes=ring.primes)
    exact = [int(x) for x in _rounded(values, ring.scale)]
    assert (max(abs(x) for x in exact) > min(ring.primes)) == (preset == "strict")
    for i, q in enumerate(ring.primes):
        assert [int(r) for r in out[i]] == [x % q for x in exact]


@pytest.mark.parametrize("preset", ["compact", "strict"])
def test_the_encoding_is_seals(preset):
    """SEAL decodes our polynomial to the values, as close as it decodes its own encoding."""
    ring = Ring(secagg.get_preset(preset))
    values = np.random.default_rng(1).uniform(-4, 4, ring.n)
    ours = ring.decode(ring.plaintext(ring.ntt(encoding.encode_coeff(values, scale=ring.scale, primes=ring.primes))))
    seals = ring.decode(ring.encode(values))
    assert np.abs(ours - seals).max() <= 4 / ring.scale + 1e-14 * np.abs(values).max()
    assert np.abs(ours - values).max() < 1e-9


def test_a_coefficient_beyond_the_bound_is_refused():
    with pytest.raises(ValueError, match="beyond 2\\^75"):
        encoding.encode_coeff(np.full(16, 1.0), scale=2.0**80, primes=[(1 << 55) - 55])
    with pytest.raises(ValueError, match="not finite"):
        encoding.encode_coeff(np.array([np.nan] + [0.0] * 15), scale=2.0**40, primes=[(1 << 55) - 55])

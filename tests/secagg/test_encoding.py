"""numpy's share of a ciphertext: CKKS encoding (SEAL's slots, exact residues of integers up to
2^75), the expansion of a second half from its key, and smudging noise."""

import numpy as np
import pytest

import secagg
from secagg import encoding
from secagg.ring import Ring
from secagg.sampling import _aes_stream


def _rounded(values, scale):
    """The integers the encoder reduces (its own FFT, for an exact reference of the reduction)."""
    return encoding.coefficients(values[None], scale)[0]


def _by_definition(values):
    """The coefficients from all ``N`` points ``zeta^(2k+1)``: slot ``j`` at ``zeta^(3^j)``, its
    conjugate at ``zeta^(-3^j)``, and ``m_t zeta^t = (1/N) sum_k m(zeta^(2k+1)) exp(-2 pi i t k / N)``."""
    n = values.size
    powers = [pow(3, j, 2 * n) for j in range(n // 2)]
    v = np.empty(n, complex)
    z = values[0::2] + 1j * values[1::2]
    v[[(p - 1) // 2 for p in powers]] = z
    v[[(2 * n - p - 1) // 2 for p in powers]] = z.conj()
    m = np.fft.fft(v) * np.exp(-1j * np.pi * np.arange(n) / n) / n
    assert np.abs(m.imag).max() < 1e-12  # a real polynomial
    return m.real


def test_the_half_size_fft_gives_the_coefficients_of_the_definition():
    values = np.random.default_rng(3).uniform(-4, 4, (3, 8192))
    got = encoding.coefficients(values, 2.0**30)
    for row, v in zip(got, values):
        assert np.abs(row - np.rint(_by_definition(v) * 2.0**30)).max() <= 1  # a rare coefficient rounds the other way
        assert np.abs(row / 2.0**30 - _by_definition(v)).max() < 1e-9


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


@pytest.mark.parametrize("q", [72057594037370881, 72057594037616641, 1099510890497, 4294967291, 1048573])
def test_the_split_reduction_is_exact_where_the_float_quotient_overshoots(q):
    """Values of ``hi`` whose ``hi * (2^32 mod q)`` lies just below a multiple of ``q``: the float64
    quotient rounds up to that multiple and the remainder goes negative before its correction."""
    r = (1 << 32) % q
    inverse = pow(r, -1, q)
    hard = [h for t in range(1, 300_000) if (h := (-t * inverse) % q) < 1 << 44][:64]
    hi = np.array(hard + list(range(64)), dtype=np.uint64)
    quotient = np.floor(hi.astype(np.float64) * (r / q)).astype(np.uint64)
    if q > 1 << 32:  # strict's and strict-lean's primes; below 2^32 the product is exact in float64
        assert sum(int(e) > int(h) * r // q for e, h in zip(quotient, hi)) >= 1, "no overshooting case was built"
    lo = np.random.default_rng(q % 1000).integers(0, 1 << 32, hi.size, dtype=np.uint64)
    lo[:len(hard) // 2] = 0  # so that the remainder stays negative until it is corrected
    got = encoding._reduce_split(hi, lo, q)
    assert [int(g) for g in got] == [(int(h) * (1 << 32) + int(l_)) % q for h, l_ in zip(hi, lo)]


@pytest.mark.parametrize("preset", ["compact", "strict"])
def test_the_encoding_is_seals(preset):
    """SEAL decodes our polynomial to the values, as close as it decodes its own encoding."""
    ring = Ring(secagg.get_preset(preset))
    values = np.random.default_rng(1).uniform(-4, 4, ring.n)
    ours = ring.decode(ring.plaintext(ring.ntt(encoding.encode_coeff(values, scale=ring.scale, primes=ring.primes))))
    seals = ring.decode(ring.encode(values))
    assert np.abs(ours - seals).max() <= 4 / ring.scale + 1e-14 * np.abs(values).max()
    assert np.abs(ours - values).max() < 1e-9


def test_primes_below_2_to_the_32_get_reduced_residues_too():
    """A custom preset may have 20- to 60-bit primes: the low 32 bits of a large integer exceed them."""
    values = np.random.default_rng(2).uniform(-4, 4, 1024)
    primes = [2**30 - 35, 2**30 - 107]
    out = encoding.encode_coeff(values, scale=2.0**40, primes=primes)
    exact = [int(x) for x in _rounded(values, 2.0**40)]
    for i, q in enumerate(primes):
        assert [int(r) for r in out[i]] == [x % q for x in exact]


def test_a_coefficient_beyond_the_bound_is_refused():
    with pytest.raises(ValueError, match="beyond 2\\^75"):
        encoding.encode_coeff(np.full(16, 1.0), scale=2.0**80, primes=[(1 << 55) - 55])
    with pytest.raises(ValueError, match="not finite"):
        encoding.encode_coeff(np.array([np.nan] + [0.0] * 15), scale=2.0**40, primes=[(1 << 55) - 55])


@pytest.mark.parametrize("q", [(1 << 56) - 27, (1 << 57) - 111, 8388593, 3])
def test_the_constant_product_is_exact_where_the_float_quotient_is_furthest_off(q):
    rng = np.random.default_rng(q % 997)
    a = np.concatenate([rng.integers(0, q, 4000, dtype=np.uint64), np.array([0, 1, q - 1, q // 2], dtype=np.uint64)])
    for b in (1, q - 1, q // 2, int(rng.integers(0, q))):
        assert [int(x) for x in encoding._mulmod(a, b, q)] == [int(x) * b % q for x in a]


def _residues_of_integers(ring, xs):
    """Python integers as a ``(1, limbs, N)`` uint64 array of their residues."""
    return np.array([[[x % q for x in xs] for q in ring.primes]], dtype=np.uint64)


@pytest.mark.parametrize("preset", ["compact", "strict", "strict-for-10", "compact-for-10", "strict-lean"])
@pytest.mark.parametrize("magnitude", ["values", "near the wrap"])
def test_the_decoding_is_seals(preset, magnitude):
    """Our decoder gives SEAL's values, to float64 precision relative to the largest, for encoded values
    and for integers up to 2^-8 of the modulus below its half (a sum of members at the headroom's edge),
    both signs, where two primes' residues must be composed."""
    ring = Ring(secagg.get_preset(preset))
    rng = np.random.default_rng(ring.n + len(ring.primes))
    if magnitude == "values":
        residues = encoding.encode_coeff(rng.uniform(-4, 4, (1, ring.n)), scale=ring.scale, primes=ring.primes)
    else:
        modulus = int(np.prod([int(q) for q in ring.primes], dtype=object))
        top = modulus // 2 - (modulus >> 8)
        xs = [int(rng.integers(-(1 << 62), 1 << 62)) * top // (1 << 62) for _ in range(ring.n)]
        xs[:4] = [top, -top, 0, -1]
        residues = _residues_of_integers(ring, xs)
    ours = encoding.decode_coeff(residues, scale=ring.scale, primes=ring.primes)[0]
    seals = ring.decode(ring.plaintext(ring.ntt(residues[0])))
    assert np.abs(ours - seals).max() <= 1e-12 * np.abs(seals).max()


def test_more_primes_than_the_decoder_composes_are_refused():
    with pytest.raises(ValueError, match="one prime or two"):
        encoding.decode_coeff(np.zeros((1, 3, 16), dtype=np.uint64), scale=2.0**40, primes=[97, 193, 257])
    with pytest.raises(ValueError, match="one prime or two"):
        encoding.decode_coeff(np.zeros((1, 2, 16), dtype=np.uint64), scale=2.0**40, primes=[97, (1 << 58) + 1])


def _first_accepted(ring, key):
    """The definition: per prime, the first N words of the key's AES-CTR streams (masked to the
    prime's bits) that lie below the prime, refilling with the next counter block."""
    out = ring.zeros()
    for i, (q, bits) in enumerate(zip(ring.primes, ring.bits)):
        accepted, refill = [], 0
        while len(accepted) < ring.n:
            words = _aes_stream(key, (i << 96) | (refill << 64), 8 * (ring.n - len(accepted) + 64)) & np.uint64((1 << bits) - 1)
            accepted += [w for w in words.tolist() if w < q][:ring.n - len(accepted)]
            refill += 1
        out[i] = accepted
    return out


def test_the_second_half_is_the_first_accepted_words_with_or_without_rejections():
    """deep's 40-bit primes reject one word in ~170,000: over 40 keys some polynomial needs the
    rejection path, the rest take the direct one; both must give the definition's words."""
    ring = Ring(secagg.get_preset("deep"))
    rejected = 0
    for k in range(40):
        key = bytes([k]) * 32
        rejected += any(int((_aes_stream(key, i << 96, 8 * ring.n) & np.uint64((1 << b) - 1)).max()) >= q
                        for i, (q, b) in enumerate(zip(ring.primes, ring.bits)))
        assert np.array_equal(ring.uniform(key), _first_accepted(ring, key))
    assert 0 < rejected < 40


def test_smudging_noise_is_gaussian_of_its_std_in_both_halves(monkeypatch):
    """Box-Muller's cosine half and sine half: each the right spread, and not tied to the other
    (the OS randomness replaced by a seeded stream, so the test is deterministic)."""
    from types import SimpleNamespace

    from secagg import sampling

    rng = np.random.default_rng(5)
    monkeypatch.setattr(sampling, "os", SimpleNamespace(urandom=lambda n: rng.bytes(n)))
    ring = Ring(secagg.get_preset("strict"))
    std = 2.0**20
    e = np.concatenate([ring.gaussian(std)[0].astype(np.int64) for _ in range(8)])  # 56-bit prime: residues of e
    q = ring.primes[0]
    e = np.where(e > q // 2, e - q, e).astype(np.float64).reshape(8, 2, ring.n // 2)
    for half in (e[:, 0], e[:, 1]):
        assert abs(half.std() / std - 1) < 0.02 and abs(half.mean()) < 0.02 * std
        assert abs(np.mean(np.abs(half) < std) - 0.6827) < 0.01
    assert abs(np.corrcoef(e[:, 0].ravel(), e[:, 1].ravel())[0, 1]) < 0.02

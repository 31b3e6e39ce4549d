import numpy as np
import pytest

import secagg
from secagg.errors import InvalidParametersError, UnknownPresetError
from secagg.keys import seal_context
from secagg.presets import MAX_MODULUS_BITS_128, Preset


def make(**overrides) -> Preset:
    base = dict(name="t", poly_modulus_degree=8192, coeff_modulus_bits=(60,), scale_bits=40, max_abs=4.0, flood_bits=12)
    return Preset(**{**base, **overrides})


@pytest.mark.parametrize("name", sorted(secagg.PRESETS))
def test_builtin_presets_are_secure_and_accepted_by_seal(name):
    preset = secagg.get_preset(name)
    assert preset.total_modulus_bits <= MAX_MODULUS_BITS_128[preset.poly_modulus_degree]
    assert seal_context(preset).parameters_set()
    assert preset.headroom_bits >= (4.5 if name.endswith("-lean") else 16)  # the lean ones trade headroom for bytes


def test_preset_figures():
    assert secagg.get_preset("compact").depth == 0
    assert secagg.get_preset("strict").depth == 0  # its second prime is headroom, not depth
    assert secagg.get_preset("deep").depth == 7
    assert secagg.get_preset("compact").values_per_ciphertext == 8192
    assert secagg.DEFAULT_PRESET == "strict"


def test_insecure_modulus_is_rejected():
    with pytest.raises(InvalidParametersError, match="128-bit security bound"):
        make(poly_modulus_degree=4096, coeff_modulus_bits=(60, 60))


@pytest.mark.parametrize("overrides, message", [
    ({"poly_modulus_degree": 5000}, "must be one of"),
    ({"coeff_modulus_bits": (61,)}, "20..60"),
    ({"coeff_modulus_bits": ()}, "20..60"),
    ({"scale_bits": 58}, "does not fit"),
    ({"scale_bits": 10}, "no precision"),
    ({"max_abs": float("nan")}, "max_abs"),
    ({"max_abs": -1.0}, "max_abs"),
    ({"flood_bits": 99}, "flood_bits"),
    ({"eval_keys": ("rotate",)}, "unknown eval_keys"),
    ({"eval_keys": ("relin",)}, "special prime"),
])
def test_invalid_parameters_are_rejected(overrides, message):
    with pytest.raises(InvalidParametersError, match=message):
        make(**overrides)


def test_unknown_preset_names_the_choices():
    with pytest.raises(UnknownPresetError, match="compact"):
        secagg.get_preset("fast")


def test_registry_refuses_silent_replacement():
    secagg.register_preset(make(name="test-reg"))
    with pytest.raises(InvalidParametersError, match="already registered"):
        secagg.register_preset(make(name="test-reg", scale_bits=41))
    secagg.register_preset(make(name="test-reg", scale_bits=41), overwrite=True)
    assert secagg.get_preset("test-reg").scale_bits == 41


def test_preset_dict_roundtrip_and_malformed_input():
    for p in secagg.PRESETS.values():
        assert Preset.from_dict(p.to_dict()) == p
    with pytest.raises(InvalidParametersError):
        Preset.from_dict({"name": "x"})
    with pytest.raises(InvalidParametersError):
        Preset.from_dict({**make().to_dict(), "poly_modulus_degree": "big"})


@pytest.mark.parametrize("name", ["compact", "deep", "compact-lean"])
def test_analytic_noise_matches_measured_noise(name):
    """The release flooding is sized from noise_std(): it must not underestimate real noise."""
    preset = secagg.get_preset(name)
    keys = secagg.generate_keys(preset=preset) if name != "deep" else None
    if keys is None:  # deep keys carry ~115 MB of galois keys: measure with a bare SEAL context
        import tenseal.sealapi as sealapi

        from secagg.keys import SecretContext
        ctx = seal_context(preset)
        kg = sealapi.KeyGenerator(ctx)
        pk = sealapi.PublicKey()
        kg.create_public_key(pk)
        secret = SecretContext(preset, {"public_key": secagg.sealio.dump(pk), "secret_key": secagg.sealio.dump(kg.secret_key())})
    else:
        secret = keys.secret
    from secagg.ring import Ring, second_half

    ring = Ring(preset)
    values = np.random.default_rng(0).uniform(-1, 1, 3 * preset.values_per_ciphertext)
    raw = []
    for j in range(3):
        a = ring.uniform(second_half(b"n" * 32, chunk=j, preset=preset))
        chunk = values[j * ring.n:(j + 1) * ring.n]
        raw.append(ring.decrypt(ring.encrypt(chunk, secret, a), a, secret))
    err = np.concatenate(raw) - values
    assert 0.7 < err.std() / preset.noise_std() < 1.3


def _like_parent_in_fewer_bytes(name, parent, *, inside, holds, extreme, data_bits, seeds):
    """``inside`` clients get, with the release seeded, the very values ``parent`` releases; ``holds``
    clients all at ``extreme`` get their sum back, not its wrap-around; an upload of one ciphertext
    is ``data_bits / 32`` bytes per float32 byte; one member more than ``holds`` is refused. Returns
    the seeded releases and the updates."""
    from secagg.messages import decode_upload

    rng = np.random.default_rng(seeds[0])
    updates = {f"c{k}": {"w": (rng.uniform(-1, 1, 500) * 0.1).astype(np.float32)} for k in range(holds + 1)}
    members = dict(list(updates.items())[:inside])
    outs = {p: secagg.local_round(secagg.generate_keys(preset=p), members, group_size=inside, release_seed=seeds[1])
            for p in (name, parent)}
    np.testing.assert_array_equal(outs[name].values["w"], outs[parent].values["w"])
    keys = secagg.generate_keys(preset=name)
    at_max = {c: {"w": np.full(64, extreme, np.float32)} for c in list(updates)[:holds]}
    np.testing.assert_allclose(secagg.local_round(keys, at_max, group_size=holds).values["w"], extreme * holds,
                               atol=1e-3)
    ids, _ = secagg.generate_identities(["x"])
    upload = secagg.Uploader(keys.secret, identity=ids["x"]).upload({"w": np.zeros(8192, np.float32)}, run="r",
                                                                     round=0, commitment="ab" * 32)
    assert len(decode_upload(upload)[1]) == data_bits / 32 * 4 * 8192
    with pytest.raises(secagg.HeadroomError, match=f"{holds + 1} clients"):
        secagg.local_round(keys, updates, group_size=holds + 1)
    return outs, members


@pytest.mark.parametrize(("lean", "parent", "bytes_per_float32"), [("compact-lean", "compact", 1.5),
                                                                 ("strict-lean", "strict", 2.5)])
def test_a_lean_preset_releases_its_parents_values_in_fewer_bytes_for_at_most_22_members(lean, parent,
                                                                                      bytes_per_float32):
    """The same scale and flooding in a modulus for 22 members of max_abs 4 (a coefficient reaches
    sqrt(2) * 4 * scale per member, the sum must stay below half the primes' product): with the
    release seeded, 22 clients get the very values the parent preset releases, in 1.5 (2.5) bytes
    per float32 byte; 22 clients all at max_abs get their sum back, not its wrap-around; a 23rd
    member is refused."""
    from secagg.holder import max_members

    assert max_members(secagg.get_preset(lean)) == 22
    outs, inside = _like_parent_in_fewer_bytes(lean, parent, inside=22, holds=22, extreme=4.0,
                                               data_bits=32 * bytes_per_float32, seeds=(3, 4))
    reference = sum(u["w"].astype(np.float64) for u in inside.values())
    assert np.abs(outs[lean].values["w"] - reference).max() < 1e-3


@pytest.mark.parametrize(("name", "parent", "bits", "holds"), [("compact-for-10", "compact", (47,), 11),
                                                               ("strict-for-10", "strict", (56, 23, 60), 11)])
def test_a_preset_sized_for_ten_members_releases_its_parents_values_in_the_fewest_bits(name, parent, bits, holds):
    """<preset>-for-<members>: the parent's scale and flooding in the smallest data modulus SEAL's
    primes give that holds the members' sum (one bit fewer holds fewer than 10); with the release
    seeded, 10 clients get the very values the parent releases, in (data bits) / 32 bytes per
    float32 byte; 11 clients all at max_abs get their sum back, not its wrap-around; a 12th member
    is refused."""
    from dataclasses import replace

    from secagg.holder import max_members
    from secagg.presets import _shrink

    preset = secagg.get_preset(name)
    assert preset.coeff_modulus_bits == bits and max_members(preset) == holds
    data = bits if len(bits) == 1 else bits[:-1]
    one_fewer = _shrink(data, 1) + bits[len(data):]
    assert max_members(replace(preset, name="fewer", coeff_modulus_bits=one_fewer)) < 10
    _like_parent_in_fewer_bytes(name, parent, inside=10, holds=holds, extreme=-4.0, data_bits=sum(data), seeds=(5, 6))


def test_sized_presets_are_named_and_refused_precisely():
    assert secagg.get_preset("compact-for-22").coeff_modulus_bits == secagg.get_preset("compact-lean").coeff_modulus_bits
    assert secagg.get_preset("strict-for-22").coeff_modulus_bits == secagg.get_preset("strict-lean").coeff_modulus_bits
    assert secagg.get_preset("compact-for-10") is secagg.sized_preset("compact", members=10)  # built once
    assert "compact-for-10" not in secagg.PRESETS  # a name anyone can write does not grow the registry
    with pytest.raises(InvalidParametersError, match="evaluates circuits"):
        secagg.get_preset("deep-for-10")
    with pytest.raises(InvalidParametersError, match="at most 92681 members"):
        secagg.get_preset("compact-for-92682")
    for name in ("nope-for-3", "compact-for-0", "compact-for-x", "compact-for-10-for-3", "compact-for-" + "9" * 13):
        with pytest.raises(UnknownPresetError, match="<preset>-for-<members>"):
            secagg.get_preset(name)
    for members in (0, True, 2.5):
        with pytest.raises(InvalidParametersError, match="members must be a positive integer"):
            secagg.sized_preset("compact", members=members)


def test_sizing_never_costs_more_bytes_than_a_larger_prime_and_stays_minimal_for_custom_presets():
    """A 59-bit prime travels in 64 bits, so compact sized for 30,000 members takes the 60-bit prime
    (1.875x), not 59 bits (2x); sizing tries every candidate SEAL and validation accept, so a base
    with max_abs 5 gets the 45 bits that hold 2 members, and a ring degree with few small primes
    gives a preset or a library error, never SEAL's."""
    from secagg.holder import max_members

    wide = secagg.get_preset("compact-for-30000")
    assert wide.coeff_modulus_bits == (60,) and wide.bytes_per_float32 == 60 / 32 and "1.88x" in wide.description
    five = make(name="five", max_abs=5.0, coeff_modulus_bits=(60,))
    assert secagg.sized_preset(five, members=2).coeff_modulus_bits == (45,)
    big = make(name="big", poly_modulus_degree=32768, coeff_modulus_bits=(60, 60, 60))
    sized = secagg.sized_preset(big, members=1)
    assert max_members(sized) >= 1 and sized.depth == 0


def test_a_sized_name_cannot_be_registered_for_other_primes():
    with pytest.raises(InvalidParametersError, match="is taken"):
        secagg.register_preset(make(name="compact-for-10", coeff_modulus_bits=(52,)))
    assert secagg.get_preset("compact-for-10").coeff_modulus_bits == (47,)

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
    from secagg.messages import decode_upload

    assert max_members(secagg.get_preset(lean)) == 22
    rng = np.random.default_rng(3)
    updates = {f"c{k}": {"w": (rng.uniform(-1, 1, 500) * 0.1).astype(np.float32)} for k in range(23)}
    inside = dict(list(updates.items())[:22])
    outs = {name: secagg.local_round(secagg.generate_keys(preset=name), inside, group_size=22, release_seed=4)
            for name in (lean, parent)}
    np.testing.assert_array_equal(outs[lean].values["w"], outs[parent].values["w"])
    reference = sum(u["w"].astype(np.float64) for u in inside.values())
    assert np.abs(outs[lean].values["w"] - reference).max() < 1e-3
    keys = secagg.generate_keys(preset=lean)
    extreme = {c: {"w": np.full(64, 4.0, np.float32)} for c in inside}
    np.testing.assert_allclose(secagg.local_round(keys, extreme, group_size=22).values["w"], 88.0, atol=1e-3)
    ids, _ = secagg.generate_identities(["x"])
    upload = secagg.Uploader(keys.secret, identity=ids["x"]).upload({"w": np.zeros(8192, np.float32)}, run="r",
                                                                     round=0, commitment="ab" * 32)
    assert len(decode_upload(upload)[1]) == bytes_per_float32 * 4 * 8192
    with pytest.raises(secagg.HeadroomError, match="23 clients"):
        secagg.local_round(keys, updates, group_size=23)

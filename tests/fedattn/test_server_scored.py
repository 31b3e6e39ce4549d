"""Server-scored attention on ciphertexts (preset deep) against the plaintext reference."""

import numpy as np
import pytest
from helpers import SmallFederation

import secagg
from fedattn.errors import InvalidConfigError
from fedattn.protocols import PlainProtocol, make_protocol
from fedattn.protocols.server_scored import ServerScoredProtocol, clip_layer_norms, weight_polynomial
from fedattn.round import ClientRole, ServerRole, run_round
from fedattn.rules import FedAtt
from fedattn.simulation import SimulationConfig


@pytest.fixture(scope="module")
def deep_keys():
    return secagg.generate_keys(preset="deep")


def test_weight_polynomial_precision_as_documented():
    _, abs_err, rel_err = weight_polynomial(4.0, 1.0)
    assert rel_err < 1e-3
    t = np.linspace(0, 1, 20001)  # the paper's L2 score: exp(sqrt) has a cusp a degree-7 fit cannot follow
    from numpy.polynomial import chebyshev
    g = np.exp(4 * (np.sqrt(t) - 1))
    fit = chebyshev.chebval(2 * t - 1, chebyshev.chebfit(2 * t - 1, g, 7))
    assert np.max(np.abs(fit - g) / g) > 0.2


def test_clip_layer_norms():
    out = clip_layer_norms({"a": np.full(4, 2.0, np.float32), "b": np.full(4, 0.1, np.float32)}, 4.0)
    assert np.isclose(np.sum(out["a"].astype(np.float64) ** 2), 4.0, rtol=1e-6) and out["a"].dtype == np.float32
    np.testing.assert_array_equal(out["b"], np.full(4, 0.1, np.float32))


def test_matches_plaintext_fedatt_including_split_slots(deep_keys):
    rng = np.random.default_rng(5)
    shapes = {"w1": (7, 9), "b1": (7,), "w2": (3, 7), "b2": (3,)}  # odd sizes: boundaries inside complex slots
    ups = [{n: (rng.standard_normal(s) * 10 ** rng.uniform(-1.5, -0.5)).astype(np.float32) for n, s in shapes.items()}
           for _ in range(3)]
    rule = FedAtt(score="l2_squared", score_range=(0.0, 4.0), temperature=1.0)
    fed = SmallFederation(deep_keys, ["c0", "c1", "c2"], rule=rule, protocol="server-scored")
    enc = fed.round([fed.message(f"c{k}", u, num_samples=1, round=2) for k, u in enumerate(ups)], round=2)
    plain = PlainProtocol(rule)
    ref = run_round([ClientRole(plain, client_id=f"c{k}").message(u, num_samples=1, reference=None, run="r", round=2,
                                                                 commitment="")
                     for k, u in enumerate(ups)], server=ServerRole(plain), clients=None, run="r", round=2,
                    reference=None, model=ups[0])
    # stated tolerance: polynomial (<0.1 % of each weight, so <0.2 % of the ratio's range) + release flooding
    for n in shapes:
        scale = np.max(np.abs(np.stack([u[n] for u in ups])))
        np.testing.assert_allclose(enc.aggregate[n], ref.aggregate[n], atol=3e-3 * scale + 1e-3)
    assert enc.contributors == ("c0", "c1", "c2")


def test_configuration_errors(deep_keys, compact_keys):
    rule = FedAtt(score="l2_squared")
    ids, roster = secagg.generate_identities(["c"])
    with pytest.raises(InvalidConfigError, match="deep"):
        ServerRole(ServerScoredProtocol(rule), aggregator=secagg.Aggregator(compact_keys.public, roster=roster))
    with pytest.raises(InvalidConfigError, match="l2_squared"):
        ServerScoredProtocol(FedAtt())
    with pytest.raises(InvalidConfigError, match="server-scored protocol"):
        SimulationConfig(protocol="server-scored")
    assert make_protocol("server-scored", rule).name == "server-scored"
    # each party holds one half of the key set: a client the secret one only
    uploader = secagg.Uploader(deep_keys.secret, identity=ids["c"])
    msg = ClientRole(ServerScoredProtocol(rule), client_id="c", uploader=uploader).message(
        {"w": np.full(3, 0.1, np.float32)}, num_samples=1, reference=None, run="r", round=0, commitment="ab" * 32)
    assert msg.payload
    with pytest.raises(InvalidConfigError, match="deep"):
        ClientRole(ServerScoredProtocol(rule), client_id="c", uploader=secagg.Uploader(compact_keys.secret,
                                                                                          identity=ids["c"]))
    assert ServerScoredProtocol(rule).key_holder_options()["trust_server_circuit"] is True


def _slot_algebra(ups, layout, per_ct, f):
    """The circuit's slot operations on plain complex vectors (a rotation left by ``s`` is
    ``np.roll(x, -s)``), then the key holders' :func:`ratio_vector`: the geometry of the layer plans
    (windows, shifts, packs of clients, folds) without the encryption."""
    from secagg.circuit import _pairs, layer_plans, ratio_vector

    slots, chunks = per_ct // 2, layout.chunks(per_ct)
    plans, pairs = layer_plans(layout, per_ct, clients=len(ups)), _pairs(layout, per_ct)
    cut = []
    for up in ups:
        v = np.zeros(chunks * per_ct)
        v[:layout.total] = layout.pack(up)
        z = v[0::2].reshape(chunks, slots) + 1j * v[1::2].reshape(chunks, slots)
        parts, squares = {}, [np.zeros(slots) for _ in plans]
        for j, layer in pairs:
            m = np.zeros(per_ct)
            lo, hi_idx = max(j * per_ct, layout.layers[layer].offset), min((j + 1) * per_ct, layout.layers[layer].stop)
            m[lo - j * per_ct:hi_idx - j * per_ct] = 1.0
            parts[(j, layer)] = m[0::2] * z[j].real + 1j * m[1::2] * z[j].imag
            squares[layer] += m[0::2] * z[j].real ** 2 + m[1::2] * z[j].imag ** 2
        cut.append((parts, squares))

    def pack(items, unit):
        return sum(np.roll(x, -i * unit) for i, x in enumerate(items))

    def fold(x, unit, count):
        return sum(np.roll(x, -d * unit) for d in range(count))

    nums, weights = {pair: np.zeros(slots, complex) for pair in pairs}, []
    for layer, plan in enumerate(plans):
        unit, weight = 1 << plan.steps, np.zeros(slots, complex)
        for first in range(0, len(cut), plan.pack):
            group = cut[first:first + plan.pack]
            t = pack([sq[layer] for _, sq in group], unit)
            for i in range(plan.steps):
                t = t + np.roll(t, -(1 << i))
            omega = f(t)
            for j, lay in pairs:
                if lay == layer:
                    nums[(j, lay)] += omega * np.roll(pack([p[(j, lay)] for p, _ in group], unit), -plan.shift)
            where = np.zeros(slots, complex)
            where[(plan.start - unit * np.arange(len(group))) % slots] = 1 + 1j
            weight += omega * where
        for j, lay in pairs:
            if lay == layer:
                nums[(j, lay)] = fold(nums[(j, lay)], unit, plan.pack)
        weights.append(fold(weight, unit, plan.pack))
    decoded = [np.column_stack([c.real, c.imag]).reshape(-1) for c in [nums[p] for p in pairs] + weights]
    return ratio_vector(decoded, layout, per_ct, clients=len(ups))


@pytest.mark.parametrize("sizes", [
    [4096, 64, 640, 10],  # the digits MLP: slot-aligned layers, one chunk
    [7 * 9, 7, 21, 3],  # odd sizes: layers share complex slots
    [300, 1500, 5, 900, 2],  # a layer across two chunks (a cyclic arc) and one across three (every slot)
    [1, 1, 2, 7, 40],  # single slots (no rotation at all) beside a shifted layer
])
@pytest.mark.parametrize("clients", [1, 3, 10])
def test_the_layer_plans_give_every_layer_its_own_weight(sizes, clients):
    from secagg.circuit import layer_plans

    per_ct = 64 if sum(sizes) < 3000 and sizes[0] != 4096 else 1024
    rng = np.random.default_rng(sum(sizes))
    ups = [{f"l{i}": rng.standard_normal(n) for i, n in enumerate(sizes)} for _ in range(clients)]
    layout = secagg.Layout.of(ups[0])
    got = _slot_algebra(ups, layout, per_ct, f=lambda t: 1.0 + t)
    weights = [[1.0 + float(np.sum(u[f"l{i}"] ** 2)) for i in range(len(sizes))] for u in ups]
    want = np.concatenate([np.concatenate([sum(w[i] * u[f"l{i}"] for w, u in zip(weights, ups))
                                           for i in range(len(sizes))]),
                           np.sum(weights, axis=0)])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    plans = layer_plans(layout, per_ct, clients=clients)
    assert any(p.shift for p in plans) and any(p.steps < (per_ct // 2).bit_length() - 1 for p in plans)
    assert any(p.pack > 1 for p in plans) == (clients > 1)

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

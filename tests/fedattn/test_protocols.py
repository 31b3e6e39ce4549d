"""Encrypted protocols equal the plaintext reference within the preset's tolerance."""

import numpy as np
import pytest
from helpers import SmallFederation

import secagg
from fedattn.protocols import ClientScoredProtocol, PlainProtocol
from fedattn.round import ClientRole, ServerRole, run_round
from fedattn.rules import CosineAttention, FedAtt, FedAvg

IDS = [f"c{k}" for k in range(6)]


def _updates(rng, k=6):
    shapes = {"l1.weight": (16, 64), "l1.bias": (16,), "l2.weight": (10, 16), "l2.bias": (10,)}
    return [{n: (rng.standard_normal(s) * 10 ** rng.uniform(-3, -1)).astype(np.float32) for n, s in shapes.items()}
            for _ in range(k)]


def _plain(rule, updates, counts, reference, rnd=3):
    proto = PlainProtocol(rule)
    msgs = [ClientRole(proto, client_id=f"c{k}").message(u, num_samples=n, reference=reference, run="r", round=rnd,
                                                         commitment="")
            for k, (u, n) in enumerate(zip(updates, counts))]
    return run_round(msgs, server=ServerRole(proto), clients=None, run="r", round=rnd, reference=reference,
                     model=updates[0])


def _encrypted(keys, rule, updates, counts, reference, rnd=3):
    fed = SmallFederation(keys, IDS[:len(updates)], rule=rule)
    msgs = [fed.message(f"c{k}", u, num_samples=n, reference=reference, round=rnd)
            for k, (u, n) in enumerate(zip(updates, counts))]
    return fed.round(msgs, round=rnd), fed.protocol


@pytest.mark.parametrize("preset", ["compact", "strict"])
@pytest.mark.parametrize("rule", [FedAtt(temperature=0.5, score_range=(0.0, 4.0)), FedAvg(max_samples=500),
                                  CosineAttention()], ids=["fedatt", "fedavg", "cosine"])
def test_client_scored_matches_plaintext(preset, rule, compact_keys, strict_keys):
    keys = {"compact": compact_keys, "strict": strict_keys}[preset]
    rng = np.random.default_rng(11)
    updates = _updates(rng)
    counts = rng.integers(20, 400, len(updates)).tolist()
    reference = {n: rng.standard_normal(a.shape) for n, a in updates[0].items()}
    plain = _plain(rule, updates, counts, reference)
    enc, proto = _encrypted(keys, rule, updates, counts, reference)
    # stated tolerance: numerator and denominator carry flooding noise sigma_f = 2^flood * noise * sqrt(k);
    # the ratio's error is sigma_f * (1 + |aggregate|) / sum_k omega_k (6 sigma here)
    p = keys.secret.preset
    sigma_f = 2.0**p.flood_bits * p.noise_std() * np.sqrt(len(updates))
    omegas = np.array([list(proto.client_weights(u, num_samples=c, reference=reference).values())
                       for u, c in zip(updates, counts)])
    for i, n in enumerate(updates[0]):
        tol = 6 * sigma_f * (1 + np.abs(plain.aggregate[n])) / omegas[:, i].sum()
        assert np.all(np.abs(enc.aggregate[n] - plain.aggregate[n]) <= tol)
    assert enc.contributors == plain.contributors
    assert enc.client_updates is None and plain.client_updates is not None  # hidden from the server


def test_server_drops_bad_payloads_and_keeps_the_round(compact_keys):
    rng = np.random.default_rng(0)
    updates = _updates(rng, 5)
    rule = FedAtt()
    fed = SmallFederation(compact_keys, IDS[:5], rule=rule, group_size=1, min_contributors=1)
    msgs = [fed.message(f"c{k}", u, round=1) for k, u in enumerate(updates)]
    msgs[1].payload = msgs[1].payload[:-7]  # truncated
    other = SmallFederation(secagg.generate_keys(preset="compact"), IDS[:5], rule=rule, identities=(
        fed.identities, fed.roster))
    msgs[2] = other.message("c2", updates[2], round=1)
    msgs[3] = fed.message("c3", updates[3], round=0, fresh=True)  # stale
    out = fed.round(msgs, round=1)
    assert out.contributors == ("c0", "c4")
    errors = {r.client_id: type(r.error) for r in out.rejections}
    assert errors == {"c1": secagg.PayloadError, "c2": secagg.KeyMismatchError, "c3": secagg.ReplayError}
    proto = fed.protocol
    w = [proto.client_weights(updates[k], num_samples=10, reference=None)["l1.bias"] for k in (0, 4)]
    expect = (w[0] * updates[0]["l1.bias"] + w[1] * updates[4]["l1.bias"]) / (w[0] + w[1])
    sigma_f = 2.0**12 * compact_keys.secret.preset.noise_std() * np.sqrt(2)
    np.testing.assert_allclose(out.aggregate["l1.bias"], expect, atol=6 * sigma_f * 1.2 / (w[0] + w[1]))
    with pytest.raises(secagg.EmptyAggregationError, match="no valid upload"):
        fed.serve([msgs[1], msgs[2], msgs[3]], round=1)


def test_a_key_holder_refuses_a_sum_of_one_client(compact_keys):
    """The one release policy (secagg.KeyHolder): min_contributors is 2 unless configured otherwise."""
    rng = np.random.default_rng(1)
    fed = SmallFederation(compact_keys, IDS[:2], rule=FedAtt(), group_size=1, min_contributors=1)
    served = fed.serve([fed.message("c0", _updates(rng, 1)[0])])
    cset = served.state.contributor_set(key_holder="c0")
    request = served.state.request(cset, {"c0": fed.uploader("c0").sign_set(cset)})
    strict = secagg.KeyHolder(compact_keys.secret, identity=fed.identities["c0"], roster=fed.roster,
                              ledger=fed.ledgers["c0"])
    assert strict.min_contributors == 2  # the default, everywhere
    with pytest.raises(secagg.ReleaseRefusedError, match="at least 2"):
        strict.release(request)


def test_server_side_holds_no_secret(compact_keys):
    fed = SmallFederation(compact_keys, IDS[:2])
    aggregator = fed.server.aggregator
    assert type(aggregator.public) is secagg.PublicContext and not hasattr(aggregator.public, "secret_key")
    assert all(not isinstance(v, secagg.SecretContext) for v in vars(aggregator).values())
    with pytest.raises(secagg.KeyMismatchError):
        secagg.Aggregator(compact_keys.secret, roster=fed.roster)
    assert ClientScoredProtocol(FedAtt()).encrypted

"""Encrypted protocols equal the plaintext reference within the preset's tolerance."""

import numpy as np
import pytest

import secagg
from fedattn.protocols import ClientScoredProtocol, PlainProtocol
from fedattn.rules import CosineAttention, FedAtt, FedAvg


def _updates(rng, k=6):
    shapes = {"l1.weight": (16, 64), "l1.bias": (16,), "l2.weight": (10, 16), "l2.bias": (10,)}
    return [{n: (rng.standard_normal(s) * 10 ** rng.uniform(-3, -1)).astype(np.float32) for n, s in shapes.items()}
            for _ in range(k)]


def _run(protocol, rule, updates, counts, reference, rnd=3):
    msgs = [protocol.client_message(u, rule=rule, num_samples=n, reference=reference, round=rnd, client_id=f"c{k}")
            for k, (u, n) in enumerate(zip(updates, counts))]
    return protocol.aggregate(msgs, rule=rule, reference=reference, round=rnd)


@pytest.mark.parametrize("preset", ["compact", "strict"])
@pytest.mark.parametrize("rule", [FedAtt(temperature=0.5, score_range=(0.0, 4.0)), FedAvg(max_samples=500),
                                  CosineAttention()], ids=["fedatt", "fedavg", "cosine"])
def test_client_scored_matches_plaintext(preset, rule, compact_keys, strict_keys):
    keys = {"compact": compact_keys, "strict": strict_keys}[preset]
    rng = np.random.default_rng(11)
    updates = _updates(rng)
    counts = rng.integers(20, 400, len(updates)).tolist()
    reference = {n: rng.standard_normal(a.shape) for n, a in updates[0].items()}
    plain = _run(PlainProtocol(), rule, updates, counts, reference)
    enc = _run(ClientScoredProtocol(keys), rule, updates, counts, reference)
    # stated tolerance: numerator and denominator carry flooding noise sigma_f = 2^flood * noise * sqrt(k);
    # the ratio's error is sigma_f * (1 + |aggregate|) / sum_k omega_k (6 sigma here)
    p = keys.secret.preset
    sigma_f = 2.0**p.flood_bits * p.noise_std() * np.sqrt(len(updates))
    omegas = np.array([list(ClientScoredProtocol.client_weights(u, rule=rule, num_samples=c, reference=reference).values())
                       for u, c in zip(updates, counts)])
    for i, n in enumerate(updates[0]):
        tol = 6 * sigma_f * (1 + np.abs(plain.aggregate[n])) / omegas[:, i].sum()
        assert np.all(np.abs(enc.aggregate[n] - plain.aggregate[n]) <= tol)
    assert enc.contributors == plain.contributors
    assert "client_updates" not in enc.server_view and "client_updates" in plain.server_view


def test_server_drops_bad_payloads_and_keeps_the_round(compact_keys):
    rng = np.random.default_rng(0)
    updates = _updates(rng, 4)
    proto = ClientScoredProtocol(compact_keys)
    rule = FedAtt()
    msgs = [proto.client_message(u, rule=rule, num_samples=10, reference=None, round=1, client_id=f"c{k}")
            for k, u in enumerate(updates)]
    msgs[1].payload = msgs[1].payload[:-7]  # truncated
    other = ClientScoredProtocol(secagg.generate_keys(preset="compact"))
    msgs[2] = other.client_message(updates[2], rule=rule, num_samples=10, reference=None, round=1, client_id="c2")
    stale = proto.client_message(updates[3], rule=rule, num_samples=10, reference=None, round=0, client_id="c3")
    msgs[3] = stale
    out = proto.aggregate(msgs, rule=rule, reference=None, round=1)
    assert out.contributors == ("c0",)
    assert "PayloadError" in out.rejected["c1"] and "KeyMismatchError" in out.rejected["c2"]
    assert "RoundMismatchError" in out.rejected["c3"]
    omega = ClientScoredProtocol.client_weights(updates[0], rule=rule, num_samples=10, reference=None)["l1.bias"]
    sigma_f = 2.0**12 * compact_keys.secret.preset.noise_std()
    np.testing.assert_allclose(out.aggregate["l1.bias"], updates[0]["l1.bias"], atol=6 * sigma_f * 1.2 / omega)
    with pytest.raises(secagg.EmptyAggregationError, match="no valid upload"):
        proto.aggregate(msgs[1:], rule=rule, reference=None, round=1)


def test_server_side_holds_no_secret(compact_keys):
    proto = ClientScoredProtocol(compact_keys)
    assert proto.keys.public.__class__ is secagg.PublicContext
    assert not hasattr(proto.keys.public, "secret_key")

"""Plaintext rules against small hand-computed cases."""

import math

import numpy as np
import pytest

from fedattn.errors import InvalidConfigError, ScoreOutOfRangeError
from fedattn.rules import CosineAttention, FedAtt, FedAvg, make_rule


def test_fedavg_weights_by_sample_count():
    ups = [{"w": np.array([1.0, 0.0])}, {"w": np.array([0.0, 1.0])}]
    agg = FedAvg().combine(ups, num_samples=[3, 1], reference=None)
    np.testing.assert_allclose(agg["w"], [0.75, 0.25])
    eq = FedAvg(equal_weights=True).combine(ups, num_samples=[3, 1], reference=None)
    np.testing.assert_allclose(eq["w"], [0.5, 0.5])


def test_fedatt_softmax_of_layer_norms():
    # client 0: layer norms (3, 0); client 1: (0, 4); tau = 2
    ups = [{"a": np.array([3.0, 0.0]), "b": np.zeros(1)}, {"a": np.zeros(2), "b": np.array([4.0])}]
    rule = FedAtt(temperature=2.0, step=1.2, score_range=(0.0, 10.0))
    alpha = rule.weights(ups, num_samples=[1, 1], reference=None)
    e = math.exp(1.5)
    np.testing.assert_allclose(alpha[:, 0], [e / (e + 1), 1 / (e + 1)])
    e = math.exp(2.0)
    np.testing.assert_allclose(alpha[:, 1], [1 / (1 + e), e / (1 + e)])
    agg = rule.combine(ups, num_samples=[1, 1], reference=None)
    new = rule.apply({"a": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)}, agg)
    np.testing.assert_allclose(new["a"], 1.2 * np.array([3 * alpha[0, 0], 0]), rtol=1e-6)
    assert new["a"].dtype == np.float32


def test_fedatt_server_noise_is_seeded():
    rule = FedAtt(noise_std=0.001)
    agg = {"w": np.zeros(1000)}
    a = rule.apply({"w": np.zeros(1000)}, agg, rng=np.random.default_rng(0))
    b = rule.apply({"w": np.zeros(1000)}, agg, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a["w"], b["w"])
    assert 0.0008 < a["w"].std() < 0.0012
    with pytest.raises(InvalidConfigError, match="rng"):
        rule.apply({"w": np.zeros(3)}, {"w": np.zeros(3)})


def test_cosine_attention_uses_previous_step():
    ref = {"w": np.array([1.0, 0.0])}
    ups = [{"w": np.array([2.0, 0.0])}, {"w": np.array([0.0, 5.0])}, {"w": np.array([-1.0, 0.0])}]
    rule = CosineAttention(temperature=0.5)
    np.testing.assert_allclose(rule.scores(ups, ref)[:, 0], [1.0, 0.0, -1.0])
    alpha = rule.weights(ups, num_samples=[1, 1, 1], reference=ref)[:, 0]
    expected = np.exp(np.array([1.0, 0.0, -1.0]) / 0.5)
    np.testing.assert_allclose(alpha, expected / expected.sum())
    first_round = rule.weights(ups, num_samples=[1, 1, 1], reference=None)[:, 0]
    np.testing.assert_allclose(first_round, [1 / 3] * 3)


def test_scores_outside_public_range_are_clipped_or_refused():
    ups = [{"w": np.array([30.0])}, {"w": np.array([1.0])}]
    clipped = FedAtt(score_range=(0.0, 5.0)).weights(ups, num_samples=[1, 1], reference=None)[:, 0]
    np.testing.assert_allclose(clipped[0] / clipped[1], math.exp(4.0))  # 30 counted as 5
    with pytest.raises(ScoreOutOfRangeError, match="outside the public range"):
        FedAtt(score_range=(0.0, 5.0), on_out_of_range="raise").weights(ups, num_samples=[1, 1], reference=None)


@pytest.mark.parametrize("options, message", [
    ({"temperature": 0.0}, "temperature"),
    ({"score_range": (1.0, 1.0)}, "lo < hi"),
    ({"score_range": (0.0, 100.0), "temperature": 1.0}, "e\\^60"),
    ({"step": -1.0}, "step"),
    ({"noise_std": -0.1}, "noise_std"),
    ({"on_out_of_range": "ignore"}, "clip"),
])
def test_bad_rule_options(options, message):
    with pytest.raises(InvalidConfigError, match=message):
        FedAtt(**options)


def test_make_rule():
    assert make_rule("fedatt", temperature=2.0).temperature == 2.0
    with pytest.raises(InvalidConfigError, match="choose one of"):
        make_rule("krum")
    with pytest.raises(InvalidConfigError, match="bad option"):
        make_rule("fedavg", temperature=1.0)

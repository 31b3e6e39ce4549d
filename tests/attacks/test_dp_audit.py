"""The one-run DP audit: a bound above zero where nothing protects the canaries, never above the
accountant's epsilon where DP-SGD does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.dp_audit import audit_one_run, make_canaries
from attacks.membership import train_model
from fedattn.data import load_dataset
from fedattn.models import MLP
from fedattn.privacy import DPConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setting():
    data = load_dataset("digits", seed=0)
    canaries = make_canaries(data.x_test, data.y_test, m=200, n_classes=10, rng=np.random.default_rng(0))
    return data, canaries


def _trainer(data, dp, accountant):
    def train(x_extra, y_extra):
        model, eps = train_model(lambda: MLP(data.input_shape, data.n_classes, hidden=256),
                                 np.concatenate([data.x_train[:300], x_extra]),
                                 np.concatenate([data.y_train[:300], y_extra]), epochs=40, lr=0.5, batch_size=16,
                                 seed=1, dp=dp)
        accountant["epsilon"] = eps
        return model
    return train


def test_canaries_are_wrongly_labelled_and_included_at_random(setting):
    data, canaries = setting
    assert len(canaries.y) == 200 and 70 < canaries.included.sum() < 130
    flat_test = data.x_test.reshape(len(data.x_test), -1)
    for x, y in zip(canaries.x.reshape(200, -1), canaries.y):
        rows = np.flatnonzero(np.all(flat_test == x, axis=1))
        assert rows.size and np.all(data.y_test[rows] != y)  # a held-out example with a wrong label


def test_an_overfit_model_without_dp_gives_a_positive_lower_bound(setting):
    data, canaries = setting
    result = audit_one_run(_trainer(data, None, {}), canaries, delta=1e-5, guesses=40)
    assert result.epsilon_lower_bound > 0.5 and result.correct >= 35


def test_dp_sgd_stays_under_its_accountants_epsilon(setting):
    data, canaries = setting
    seen = {}
    dp = DPConfig(mode="sample", noise_multiplier=1.0, clip_norm=1.0, delta=1e-5)
    result = audit_one_run(_trainer(data, dp, seen), canaries, delta=1e-5, guesses=40)
    assert seen["epsilon"] > 0 and result.epsilon_lower_bound <= seen["epsilon"]

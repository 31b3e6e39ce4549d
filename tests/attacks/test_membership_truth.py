"""Membership results that mean what they say: label skew is not membership; online LiRA and RMIA
find members of an overfit model over several seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.membership import label_matched, lira, loss_attack, rmia, train_model, train_shadow_models
from attacks.metrics import membership_metrics
from fedattn.data import load_dataset
from fedattn.models import MLP

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_label_skew_is_not_membership(digits):
    """A model that never saw the "members": trained on other examples of the same few classes, as a
    Dirichlet shard's label skew makes a federation's model. Against the whole test set the shard
    looks like members; against label-matched non-members it does not."""
    rng = np.random.default_rng(0)
    heavy = np.isin(digits.y_train, [0, 1, 2])
    idx = np.flatnonzero(heavy)
    rng.shuffle(idx)
    train, shard = idx[:300], idx[300:450]  # disjoint: the shard is never trained on
    shard = np.concatenate([shard, rng.choice(np.flatnonzero(~heavy), 15, replace=False)])  # a little of the rest
    factory = lambda: MLP(digits.input_shape, digits.n_classes, hidden=64)  # noqa: E731
    model, _ = train_model(factory, digits.x_train[train], digits.y_train[train], epochs=30, lr=0.1, seed=1)
    s_shard = loss_attack(model, digits.x_train[shard], digits.y_train[shard])
    s_test = loss_attack(model, digits.x_test, digits.y_test)
    unmatched = membership_metrics(np.r_[s_shard, s_test], np.r_[np.ones(len(shard), bool), np.zeros(len(s_test), bool)],
                                   fprs=(), seed=0)["auc"]
    assert unmatched.value >= 0.6
    keep_m, keep_n = label_matched(digits.y_train[shard], digits.y_test, np.random.default_rng(1))
    matched = membership_metrics(np.r_[s_shard[keep_m], s_test[keep_n]],
                                 np.r_[np.ones(len(keep_m), bool), np.zeros(len(keep_n), bool)], fprs=(), seed=0)["auc"]
    assert matched.low <= 0.5 <= matched.high
    assert np.array_equal(np.bincount(digits.y_train[shard][keep_m], minlength=10),
                          np.bincount(digits.y_test[keep_n], minlength=10))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_online_lira_and_rmia_find_the_members_of_an_overfit_model(digits, seed):
    """200 members at 100 % training accuracy, 200 non-members, 8 reference models on random halves."""
    rng = np.random.default_rng(seed)
    pool = rng.choice(len(digits.y_train), 400, replace=False)
    x, y = digits.x_train[pool], digits.y_train[pool]
    member = rng.permutation(400) < 200
    factory = lambda: MLP(digits.input_shape, digits.n_classes, hidden=256)  # noqa: E731
    recipe = dict(epochs=60, lr=0.5, batch_size=16)
    target, _ = train_model(factory, x[member], y[member], seed=10 + seed, **recipe)
    with torch.no_grad():
        accuracy = (target(torch.as_tensor(x[member])).argmax(-1).numpy() == y[member]).mean()
    assert accuracy == 1.0
    refs = train_shadow_models(factory, x, y, n_models=8, seed=20 + seed, **recipe)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(member, lira(target, x, y, refs, online=True)) >= 0.65
    population = np.flatnonzero(~member)
    assert roc_auc_score(member, rmia(target, x, y, refs, population=population)) >= 0.65

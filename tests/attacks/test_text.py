"""Bag-of-words recovery from the embedding rows an update moved, on real client updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.text import bag_of_words_scores, tokens_from_update, used_tokens
from fedattn.data import load_dataset, partition
from fedattn.models import float_state, make_model
from fedattn.training import Recipe, train_epochs


@pytest.fixture(scope="module")
def updates():
    torch.set_num_threads(1)
    ds = load_dataset("pydoc-topics")
    shards = partition(ds.y_train, 10, scheme="natural", groups=ds.groups, seed=0)[:3]
    start = float_state(make_model("lstm", input_shape=ds.input_shape, n_classes=ds.n_classes, seed=0))
    out = []
    for k, idx in enumerate(shards):
        idx = idx[:1500]  # a slice of each client's text keeps the test fast
        model = make_model("lstm", input_shape=ds.input_shape, n_classes=ds.n_classes, seed=0)
        train_epochs(model, ds.x_train[idx], ds.y_train[idx], recipe=Recipe(), seed=k)
        out.append(({n: v - start[n] for n, v in float_state(model).items()}, used_tokens(ds.x_train[idx])))
    return out


def test_one_clients_update_names_exactly_the_tokens_it_used(updates):
    for update, used in updates:
        assert bag_of_words_scores(tokens_from_update(update), used) == (1.0, 1.0)


def test_an_aggregate_names_the_union_with_every_clients_words_in_it(updates):
    aggregate = {n: np.mean([u[n] for u, _ in updates], axis=0) for n in updates[0][0]}
    union = np.unique(np.concatenate([used for _, used in updates]))
    recovered = tokens_from_update(aggregate)
    assert bag_of_words_scores(recovered, union) == (1.0, 1.0)
    for _, used in updates:
        precision, recall = bag_of_words_scores(recovered, used)
        assert recall == 1.0 and precision < 0.9  # hidden among the others' words, not removed


def test_bad_input_is_refused_with_the_argument_named():
    with pytest.raises(KeyError, match="embedding"):
        tokens_from_update({"w": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="finite"):
        tokens_from_update({"embedding.weight": np.full((3, 2), np.nan)})
    with pytest.raises(ValueError, match="threshold"):
        tokens_from_update({"embedding.weight": np.zeros((3, 2))}, threshold=0.0)
    with pytest.raises(ValueError, match="used is empty"):
        bag_of_words_scores(np.array([1]), np.array([], dtype=int))


def test_the_image_and_table_audits_refuse_text_before_any_training():
    from attacks.audit import AuditConfig
    from attacks.malicious_audit import ThreatConfig
    from fedattn.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="is text"):
        AuditConfig(dataset="pydoc-topics")
    with pytest.raises(InvalidConfigError, match="is text"):
        ThreatConfig(dataset="pydoc-topics")


def test_a_memorised_canary_is_exposed_and_an_unseen_one_is_not():
    from attacks.text import canary_windows, exposure

    torch.set_num_threads(1)
    prefix, secret, alphabet = np.array([3, 4, 5]), np.array([12, 17, 12, 15]), np.arange(10, 20)
    x, y = canary_windows(prefix, secret, context=8, repeats=50)
    assert x.shape == (200, 8) and y[:4].tolist() == secret.tolist() and x[0, -3:].tolist() == prefix.tolist()
    model = make_model("lstm", input_shape=(8,), n_classes=40, seed=0)
    before = exposure(model, prefix, secret, alphabet, context=8)
    train_epochs(model, x, y, recipe=Recipe(epochs=20, lr=0.5), seed=0)
    after = exposure(model, prefix, secret, alphabet, context=8)
    assert after == pytest.approx(np.log2(10**4)) and before < 8  # ranked first of 10^4 once memorised
    with pytest.raises(ValueError, match="alphabet"):
        exposure(model, prefix, np.array([1, 2, 3, 4]), alphabet, context=8)

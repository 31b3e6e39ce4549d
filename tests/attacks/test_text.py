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

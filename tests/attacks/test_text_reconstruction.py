"""Sentence reconstruction from a language model's gradient, and its ROUGE scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks import text_reconstruction as tr
from attacks.inversion import gradient_of
from fedattn.data import load_dataset
from fedattn.models import make_model
from fedattn.text import public_windows


@pytest.fixture(scope="module")
def case():
    torch.set_num_threads(1)
    ds = load_dataset("pydoc-topics")
    idx = np.random.default_rng(3).choice(len(ds.y_train), 4, replace=False)
    x, y = ds.x_train[idx], ds.y_train[idx]
    model = make_model("transformer", input_shape=ds.input_shape, n_classes=ds.n_classes, seed=0)
    return model, x, y, np.concatenate([x.astype(np.int64), y[:, None]], axis=1)


def test_rouge_counts_clipped_ngrams():
    assert tr.rouge_n([1, 2, 3], [1, 2, 3], 1) == tr.rouge_n([1, 2, 3], [1, 2, 3], 2) == 1.0
    assert tr.rouge_n([1, 2, 3], [4, 5, 6], 1) == 0.0
    assert tr.rouge_n([1, 1, 1], [1], 1) == pytest.approx(0.5)  # one hit, not three: precision 1/3, recall 1
    assert tr.rouge_n([3, 2, 1], [1, 2, 3], 1) == 1.0 and tr.rouge_n([3, 2, 1], [1, 2, 3], 2) == 0.0  # order matters
    assert tr.rouge_n([1], [1], 2) == 0.0  # no bigram at all


def test_scores_assign_reconstructions_one_to_one():
    originals = np.array([[1, 2, 3], [4, 5, 6]])
    assert tr.score_reconstruction(originals[::-1], originals) == {"rouge1": 1.0, "rouge2": 1.0}
    # one good guess cannot be counted for both originals
    assert tr.score_reconstruction(np.array([[1, 2, 3], [7, 8, 9]]), originals)["rouge1"] == pytest.approx(0.5)


def test_one_windows_gradient_gives_the_window_back_far_above_chance(case):
    model, x, y, originals = case
    guesses = np.concatenate([tr.reconstruct_windows(model, gradient_of(model, x[i:i + 1], y[i:i + 1]), batch_size=1,
                                                  context=8, seed=i) for i in range(len(y))])
    scores = tr.score_reconstruction(guesses, originals)
    chance = tr.chance_rouge(originals, public_windows()[0][:, 0].astype(np.int64))
    assert scores["rouge1"] >= 0.8 and scores["rouge2"] >= 0.4, scores
    assert chance["rouge1"] < 0.3 and chance["rouge2"] < 0.1, chance
    assert (guesses[:, -1] == y).all()  # the next word, from the output bias gradient


def test_a_mean_of_windows_still_gives_their_words(case):
    model, x, y, originals = case
    guesses = tr.reconstruct_windows(model, gradient_of(model, x, y), batch_size=len(y), context=8, seed=0)
    assert guesses.shape == originals.shape
    assert sorted(guesses[:, -1]) == sorted(y)  # the batch's next words, counted from the bias gradient
    assert tr.score_reconstruction(guesses, originals)["rouge1"] >= 0.5


def test_bad_input_is_refused_with_the_problem_named(case):
    model, x, y, _ = case
    observed = gradient_of(model, x[:1], y[:1])
    with pytest.raises(ValueError, match="forward_embedded"):
        tr.reconstruct_windows(make_model("mlp", input_shape=(8,), n_classes=1413, seed=0), observed, batch_size=1,
                            context=8)
    with pytest.raises(ValueError, match="embedding.weight"):
        tr.reconstruct_windows(model, {k: v for k, v in observed.items() if k != "embedding.weight"}, batch_size=1,
                            context=8)
    with pytest.raises(ValueError, match="batch_size"):
        tr.reconstruct_windows(model, observed, batch_size=0, context=8)

"""Gradient inversion on the digits MLP: exact recovery where the theory says so, and each attacker
configuration error."""

import numpy as np
import pytest
import torch

import secagg
from attacks.inversion import (
    AttackerKnowledge,
    InversionError,
    analytic_first_layer,
    dlg,
    fedavg_update,
    gradient_of,
    invert_fedavg_update,
    inverting_gradients,
    recover_labels,
)
from attacks.metrics import label_accuracy, match_reconstructions
from attacks.views import client_observations, dp_noised_mean, released_mean
from fedattn.data import load_dataset
from fedattn.models import make_model


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    model = make_model("mlp", input_shape=data.input_shape, n_classes=10, seed=0)
    return data, model


def test_one_example_is_recovered_exactly(setup):
    data, model = setup
    x, y = data.x_train[:1], data.y_train[:1]
    g = gradient_of(model, x, y)
    result = analytic_first_layer(model, g, input_shape=data.input_shape)
    match = match_reconstructions(x, result.reconstructions)
    assert match.psnr[0] >= 40 and result.seconds < 1
    assert recover_labels(model, g, batch_size=1, input_shape=data.input_shape).tolist() == y.tolist()
    found = dlg(model, g, knowledge=AttackerKnowledge(batch_size=1), input_shape=data.input_shape, iterations=30)
    assert match_reconstructions(x, found.reconstructions).psnr[0] >= 30 and found.labels.tolist() == y.tolist()


def test_batch_labels_and_inverting_gradients_on_a_mean(setup):
    data, model = setup
    x, y = data.x_train[:4], data.y_train[:4]
    mean = {n: np.mean(v, 0) for n, v in _stack(client_observations(model, x, y, n_clients=4, batch_size=1)).items()}
    labels = recover_labels(model, mean, batch_size=4, input_shape=data.input_shape)
    assert label_accuracy(labels, y) == 1.0
    result = inverting_gradients(model, mean, knowledge=AttackerKnowledge(batch_size=4, labels=tuple(y.tolist())),
                                 input_shape=data.input_shape, iterations=600, seed=0)
    assert match_reconstructions(x, result.reconstructions).fraction_above(20.0) >= 0.75


def test_unrolled_attack_beats_the_naive_one_on_fedavg(setup):
    data, model = setup
    x, y = data.x_train[:4], data.y_train[:4]
    update = fedavg_update(model, x, y, steps=5, lr=0.1)
    knowledge = AttackerKnowledge(batch_size=4, labels=tuple(y.tolist()), local_steps=5, local_lr=0.1)
    naive = inverting_gradients(model, {n: -u for n, u in update.items()}, knowledge=knowledge,
                                input_shape=data.input_shape, iterations=600)
    unrolled = invert_fedavg_update(model, update, knowledge=knowledge, input_shape=data.input_shape, iterations=600)
    assert (match_reconstructions(x, unrolled.reconstructions).psnr.mean()
            > match_reconstructions(x, naive.reconstructions).psnr.mean() + 3)


def test_views_released_mean_is_the_encrypted_mean_and_dp_noise_hides(setup):
    data, model = setup
    x, y = data.x_train[:3], data.y_train[:3]
    obs = client_observations(model, x, y, n_clients=3, batch_size=1)
    mean = released_mean(obs, keys=secagg.generate_keys(preset="strict"), seed=0)
    for n, v in _stack(obs).items():
        np.testing.assert_allclose(mean[n], v.mean(0), atol=1e-6)
    noised = dp_noised_mean(obs, clip_norm=0.1, noise_multiplier=5.0, rng=np.random.default_rng(0))
    result = analytic_first_layer(model, noised, input_shape=data.input_shape)
    assert match_reconstructions(x, result.reconstructions).fraction_above(20.0) == 0.0


def test_bad_attacker_inputs(setup):
    data, model = setup
    g = gradient_of(model, data.x_train[:1], data.y_train[:1])
    with pytest.raises(InversionError, match="does not belong"):
        inverting_gradients(model, {"other": np.zeros(3)}, knowledge=AttackerKnowledge(), input_shape=data.input_shape)
    wrong = dict(g, **{"net.1.weight": np.zeros((3, 3))})
    with pytest.raises(InversionError, match="shape"):
        dlg(model, wrong, knowledge=AttackerKnowledge(), input_shape=data.input_shape)
    with pytest.raises(InversionError, match="labels given"):
        AttackerKnowledge(batch_size=2, labels=(1,))
    with pytest.raises(InversionError, match="need 20 examples"):
        client_observations(model, data.x_train[:5], data.y_train[:5], n_clients=4, batch_size=5)
    with pytest.raises(InversionError, match="NaN"):
        inverting_gradients(model, dict(g, **{"net.1.bias": np.full(64, np.nan)}), knowledge=AttackerKnowledge(),
                            input_shape=data.input_shape)
    cnn = make_model("cnn", input_shape=data.input_shape, n_classes=10, seed=0)
    with pytest.raises(InversionError, match="raw input"):
        analytic_first_layer(cnn, gradient_of(cnn, data.x_train[:1], data.y_train[:1]), input_shape=data.input_shape)


def _stack(observations):
    return {n: np.stack([o[n] for o in observations]) for n in observations[0]}

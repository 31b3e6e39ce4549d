"""Gradient inversion on exactly what the server sees, digits MLP (untrained), CPU.

Run:  python -m pytest -q -s -p no:cacheprovider benchmarks/test_inversion_bench.py

Rows: one client's plaintext gradient (batch 1); the released mean of 10 / 20 / 50 clients'
single-example gradients after real CKKS aggregation (preset strict); the same mean under
client-level DP; a FedAvg update after 5 local steps (batch 8), naive vs unrolled attack.
Columns: share of the clients' images reconstructed at >= 20 dB PSNR (Hungarian-matched), mean
matched PSNR, identifiability (the reconstruction's nearest training image is the true one), label
accuracy where labels are recovered, seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import secagg
from attacks.inversion import (
    AttackerKnowledge,
    analytic_first_layer,
    dlg,
    fedavg_update,
    gradient_of,
    invert_fedavg_update,
    inverting_gradients,
)
from attacks.metrics import identifiability, label_accuracy, match_reconstructions
from attacks.views import client_observations, dp_noised_mean, released_mean
from fedattn.data import load_dataset
from fedattn.models import make_model

ROWS: list[tuple] = []


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    model = make_model("mlp", input_shape=data.input_shape, n_classes=10, seed=0)
    yield data, model, secagg.generate_keys(preset="strict")
    print("\n\nview                                 attack                      >=20dB   PSNR   ident.  labels  seconds")
    for row in ROWS:
        print("{:<36} {:<26} {:>6.0%} {:>6.1f} {:>7.0%} {:>7} {:>8.1f}".format(*row))


def _row(view, attack, data, idx, result, labels_true=None):
    x = data.x_train[idx]
    match = match_reconstructions(x, result.reconstructions)
    recs = np.stack([result.reconstructions[j] for _, j in match.pairs])
    ident = identifiability(recs, np.array([idx[i] for i, _ in match.pairs]), data.x_train)
    lab = "-" if labels_true is None or result.labels is None or result.labels_known else f"{label_accuracy(result.labels, labels_true):.0%}"
    ROWS.append((view, attack, match.fraction_above(20.0), float(np.mean(match.psnr)), ident, lab, result.seconds))


def test_one_client_plaintext_gradient(setup):
    data, model, _ = setup
    idx = np.array([0])
    g = gradient_of(model, data.x_train[idx], data.y_train[idx])
    _row("1 client, batch 1, plaintext", "analytic", data, idx, analytic_first_layer(model, g, input_shape=data.input_shape))
    _row("1 client, batch 1, plaintext", "DLG, labels recovered", data, idx,
         dlg(model, g, knowledge=AttackerKnowledge(batch_size=1), input_shape=data.input_shape, iterations=30),
         data.y_train[idx])


@pytest.mark.parametrize("clients", [10, 20, 50])
def test_released_mean_of_clients(setup, clients):
    data, model, keys = setup
    idx = np.arange(clients)
    x, y = data.x_train[idx], data.y_train[idx]
    mean = released_mean(client_observations(model, x, y, n_clients=clients, batch_size=1), keys=keys, seed=0)
    view = f"CKKS released mean of {clients} clients"
    _row(view, "analytic", data, idx, analytic_first_layer(model, mean, input_shape=data.input_shape))
    known = AttackerKnowledge(batch_size=clients, labels=tuple(y.tolist()))
    _row(view, "IG, labels known", data, idx,
         inverting_gradients(model, mean, knowledge=known, input_shape=data.input_shape, iterations=2000, patience=400))
    guess = AttackerKnowledge(batch_size=clients, labels=None)  # labels recovered from the bias gradient
    result = inverting_gradients(model, mean, knowledge=guess, input_shape=data.input_shape, iterations=2000, patience=400)
    _row(view, "IG, labels recovered", data, idx, result, y)


def test_client_level_dp_mean(setup):
    data, model, _ = setup
    idx = np.arange(10)
    obs = client_observations(model, data.x_train[idx], data.y_train[idx], n_clients=10, batch_size=1)
    mean = dp_noised_mean(obs, clip_norm=1.0, noise_multiplier=1.0, rng=np.random.default_rng(0))
    view = "DP mean of 10 (clip 1, sigma 1)"
    _row(view, "analytic", data, idx, analytic_first_layer(model, mean, input_shape=data.input_shape))
    known = AttackerKnowledge(batch_size=10, labels=tuple(data.y_train[idx].tolist()))
    _row(view, "IG, labels known", data, idx,
         inverting_gradients(model, mean, knowledge=known, input_shape=data.input_shape, iterations=2000, patience=400))


def test_fedavg_five_local_steps(setup):
    data, model, _ = setup
    idx = np.arange(8)
    update = fedavg_update(model, data.x_train[idx], data.y_train[idx], steps=5, lr=0.1)
    knowledge = AttackerKnowledge(batch_size=8, labels=tuple(data.y_train[idx].tolist()), local_steps=5, local_lr=0.1)
    view = "FedAvg update, 5 steps, batch 8"
    _row(view, "IG naive (update as gradient)", data, idx,
         inverting_gradients(model, {n: -u for n, u in update.items()}, knowledge=knowledge,
                             input_shape=data.input_shape, iterations=2000, patience=400))
    _row(view, "IG unrolled over 5 steps", data, idx,
         invert_fedavg_update(model, update, knowledge=knowledge, input_shape=data.input_shape, iterations=2000, patience=400))

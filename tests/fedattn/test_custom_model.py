"""A model the user wrote, larger than the built-in ones, end to end: plain and encrypted, through
the Python API (by name or as clients of their own) and the command line."""

from __future__ import annotations

import pytest
import torch
from helpers.custom_model import wide_cnn
from typer.testing import CliRunner

from fedattn.data import load_dataset, partition
from fedattn.models import make_model
from fedattn.simulation import Client, SimulationConfig, run_simulation
from secfl.cli import app

torch.set_num_threads(1)
NAME = "helpers.custom_model:wide_cnn"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.mark.parametrize("protection", ["plain", "ckks"])
def test_a_custom_model_by_name_trains_plain_and_encrypted(digits, protection):
    config = SimulationConfig(model=NAME, clients=3, rounds=2, protection=protection, seed=0)
    result = run_simulation(config, dataset=digits)
    params = sum(p.numel() for p in make_model(NAME, input_shape=(1, 8, 8), n_classes=10, seed=0).parameters())
    assert params > 10 * sum(p.numel() for p in make_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=0).parameters())
    assert len(result.rounds) == 2 and all(len(r.participants) == 3 for r in result.rounds)
    assert set(result.final_state) == set(result.views[0].model_sent) and "features.0.weight" in result.final_state
    if protection == "ckks":
        assert result.rounds[0].bytes_sent / 3 > 4 * params  # the whole model went encrypted, nothing refused


def test_clients_of_their_own_give_the_server_its_model(digits):
    """Before, the server built config.model (the MLP) and refused every custom client's upload."""
    shards = partition(digits.y_train, 3, scheme="iid", seed=0)
    config = SimulationConfig(clients=3, rounds=1, protection="ckks", seed=0)
    clients = [Client(f"client-{i}", digits.x_train[idx], digits.y_train[idx],
                      model_factory=lambda: wide_cnn((1, 8, 8), 10), config=config) for i, idx in enumerate(shards)]
    result = run_simulation(config, dataset=digits, clients=clients)
    assert len(result.rounds[0].participants) == 3 and not result.rounds[0].rejected
    assert "head.2.weight" in result.final_state


def test_the_command_line_trains_a_custom_model(tmp_path):
    result = CliRunner().invoke(app, ["train", "--model", NAME, "--clients", "3", "--rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(app, ["train", "--model", "helpers.custom_model:nothing", "--rounds", "1"])
    assert bad.exit_code == 2 and "has no 'nothing'" in bad.output


def test_clients_of_their_own_with_dp_sgd_are_counted_in_the_runs_epsilon(digits):
    """Before, the run counted a DP-SGD accountant of its own that the given clients never used: ε 0."""
    from fedattn.errors import InvalidConfigError
    from fedattn.privacy import DPConfig, SampleLevelDP

    shards = partition(digits.y_train, 2, scheme="iid", seed=0)
    dp = DPConfig(mode="sample", noise_multiplier=1.0, clip_norm=1.0)
    config = SimulationConfig(clients=2, rounds=1, protection="plain", aggregation="fedavg", seed=0, dp=dp)

    def clients(*accountants):
        return [Client(f"client-{i}", digits.x_train[idx], digits.y_train[idx], model_factory=lambda: make_model(
            "mlp", input_shape=(1, 8, 8), n_classes=10, seed=0), config=config, sample_dp=a)
            for i, (idx, a) in enumerate(zip(shards, accountants))]

    shared = SampleLevelDP(dp)
    assert run_simulation(config, dataset=digits, clients=clients(shared, shared)).epsilon() > 0.1
    with pytest.raises(InvalidConfigError, match="same SampleLevelDP"):
        run_simulation(config, dataset=digits, clients=clients(None, None))  # would claim a DP nobody trains with
    with pytest.raises(InvalidConfigError, match="same SampleLevelDP"):
        run_simulation(config, dataset=digits, clients=clients(shared, SampleLevelDP(dp)))
    with pytest.raises(InvalidConfigError, match="other than config.dp"):
        other = SampleLevelDP(DPConfig(mode="sample", noise_multiplier=1.0, clip_norm=1.0, delta=1e-3))
        run_simulation(config, dataset=digits, clients=clients(other, other))
    no_dp = SimulationConfig(clients=2, rounds=1, protection="plain", aggregation="fedavg", seed=0)
    with pytest.raises(InvalidConfigError, match="config.dp is not sample-level"):
        run_simulation(no_dp, dataset=digits, clients=clients(shared, shared))

"""Threshold keys in training: the committee releases each round like the single key would, tolerates
members dropping during decryption down to the threshold, and aborts cleanly below it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedattn.data import load_dataset
from fedattn.simulation import SimulationConfig, run_simulation
from secfl.cli import app

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _run(digits, *, keys, dropouts=()):
    config = SimulationConfig(clients=10, rounds=5, keys=keys, holders=5, threshold=3, seed=0, dropouts=list(dropouts))
    return run_simulation(config, dataset=digits)


@pytest.fixture(scope="module")
def single_key(digits):
    return _run(digits, keys="shared")


def test_two_members_dropped_during_a_decryption_change_nothing(digits, single_key):
    dropped = [{"round": 2, "client": c, "stage": "during_decryption"} for c in ("client-3", "client-4")]
    result = _run(digits, keys="threshold", dropouts=dropped)
    assert not any(r.aborted for r in result.rounds)
    gap = max(float(np.max(np.abs(result.final_state[n] - single_key.final_state[n]))) for n in result.final_state)
    assert gap < 1e-4
    assert result.views[0].key_holder in {f"client-{i}" for i in range(5)}  # a committee member combined


def test_three_members_dropped_abort_the_round_and_keep_the_model(digits):
    dropped = [{"round": 2, "client": c, "stage": "during_decryption"} for c in ("client-0", "client-1", "client-3")]
    result = _run(digits, keys="threshold", dropouts=dropped)
    view = result.views[2]
    assert view.aborted and "needs 3" in view.aborted and view.aggregate is None
    for name in view.model_sent:
        np.testing.assert_array_equal(view.model_after[name], view.model_sent[name])
    assert not result.views[3].aborted  # the next round goes on


def test_the_command_line_trains_with_threshold_keys():
    result = CliRunner().invoke(app, ["train", "--keys", "threshold", "--holders", "5", "--threshold", "3",
                                      "--clients", "10", "--rounds", "2", "--drop", "client-1@1:during_decryption",
                                      "--json"])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(app, ["train", "--keys", "threshold", "--holders", "2", "--threshold", "3"])
    assert bad.exit_code == 2 and "--threshold" in bad.output

"""One federated round, plaintext vs encrypted, on the digits MLP and CNN, measured in the same run.

Run:  pytest benchmarks/test_round_bench.py
Target (issue 3): the client-scored protocol costs at most 1.5x the wall time of a plaintext round.
"""

from __future__ import annotations

import time

import pytest
from conftest import record

import secagg
from fedattn.data import load_dataset
from fedattn.simulation import SimulationConfig, run_simulation

ROUNDS = 3


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _round_seconds(config: SimulationConfig, digits, keys) -> float:
    run_simulation(config, dataset=digits, keys=keys)  # warm-up: imports, allocator, first keys
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        run_simulation(config, dataset=digits, keys=keys)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("preset", ["strict", "compact"])
def test_round_overhead(benchmark, digits, model, preset):
    keys = secagg.generate_keys(preset=preset)
    common = dict(dataset="digits", model=model, clients=10, rounds=1, aggregation="fedatt", seed=0)
    plain = _round_seconds(SimulationConfig(**common, protection="plain"), digits, None)
    enc_cfg = SimulationConfig(**common, protection="ckks", preset=preset)
    encrypted = benchmark.pedantic(lambda: run_simulation(enc_cfg, dataset=digits, keys=keys), rounds=ROUNDS, iterations=1)
    enc = benchmark.stats.stats.min
    ratio = enc / plain
    benchmark.extra_info.update(plain_round_s=plain, encrypted_round_s=enc, ratio=ratio,
                                bytes_per_client=encrypted.rounds[0].bytes_sent / 10)
    record(f"round {model} client-scored/{preset}", round_plain_s=plain, round_encrypted_s=enc, round_ratio=ratio)


def test_round_overhead_server_scored(benchmark, digits):
    """The server computes the weights on ciphertexts: deep circuit, rotations, relinearisation."""
    keys = secagg.generate_keys(preset="deep")
    common = dict(dataset="digits", model="mlp", clients=10, rounds=1, aggregation="fedatt",
                  rule_options={"score": "l2_squared"}, seed=0)
    plain = _round_seconds(SimulationConfig(**common, protection="plain"), digits, None)
    cfg = SimulationConfig(**common, protection="ckks", protocol="server-scored", preset="deep")
    benchmark.pedantic(lambda: run_simulation(cfg, dataset=digits, keys=keys), rounds=1, iterations=1)
    enc = benchmark.stats.stats.min
    benchmark.extra_info.update(plain_round_s=plain, encrypted_round_s=enc, ratio=enc / plain)
    record("round mlp server-scored/deep", round_plain_s=plain, round_encrypted_s=enc, round_ratio=enc / plain)

"""One federated round, plaintext vs encrypted, on the digits MLP and CNN, measured in the same run.

Run:  pytest benchmarks/test_round_bench.py
Targets: a client-scored round costs at most 1.7x a plaintext round's wall time on the MLP and 1.15x on
the CNN; a server-scored round at most 100x. These times are one-round simulations (the federation's
set-up included); ``secfl bench`` also reports the rounds after the first of several-round runs.
The configurations and the timing are :mod:`secfl.bench.rounds`'s, which ``secfl bench`` reports too.
"""

from __future__ import annotations

import pytest
from benchkit import ROUNDS

import secagg
from fedattn.data import load_dataset
from fedattn.simulation import run_simulation
from secfl.bench.rounds import RoundSpec, round_configs, round_row, time_round

REPEATS = 3
CLIENTS = 10


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.mark.parametrize(("model", "protocol", "preset"), [
    ("mlp", "client-scored", "strict"), ("mlp", "client-scored", "compact"),
    ("cnn", "client-scored", "strict"), ("cnn", "client-scored", "compact"),
    ("mlp", "server-scored", "deep"),  # the server computes the weights on ciphertexts: deep circuit, rotations
])
def test_round_overhead(benchmark, digits, model, protocol, preset):
    spec = RoundSpec(model, protocol, preset)
    keys = secagg.generate_keys(preset=preset)
    plain_cfg, enc_cfg = round_configs(spec, clients=CLIENTS)
    plain, _ = time_round(plain_cfg, dataset=digits, keys=None, repeats=REPEATS)
    deep = protocol == "server-scored"  # ~25 s a round: one, without warm-up
    result = benchmark.pedantic(lambda: run_simulation(enc_cfg, dataset=digits, keys=keys),
                                rounds=1 if deep else REPEATS, iterations=1, warmup_rounds=0 if deep else 1)
    enc = benchmark.stats.stats.min
    row = round_row(spec, plain_s=plain, encrypted_s=enc, result=result)
    benchmark.extra_info.update(row)
    ROUNDS.append(row)

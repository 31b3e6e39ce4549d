"""Client-side DP noise no other party can know: a server that knows the noise seed subtracts it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fedattn.privacy import DPConfig, SampleLevelDP

LR, CLIP, SIGMA, N = 0.5, 1.0, 1.0, 32


def _one_step(noise_multiplier: float, noise_seed: int | None) -> np.ndarray:
    """One full-batch DP-SGD step of a tiny model, as :class:`fedattn.simulation.Client` takes it."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    gen = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(N, 6, generator=gen), torch.randint(0, 3, (N,), generator=gen))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    dp = SampleLevelDP(DPConfig(noise_multiplier=noise_multiplier, clip_norm=CLIP))
    model, optimizer, loader = dp.make_private("c", noise_seed=noise_seed)(model, optimizer,
                                                                          DataLoader(data, batch_size=N))
    x, y = next(iter(loader))  # Poisson sampling at rate 1: every sample
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    return (torch.cat([p.detach().flatten() for p in model.parameters()]) - before).numpy()


def _noise_of(seed: int) -> np.ndarray:
    """What a server that knows the seed computes: Opacus' draws, parameter by parameter."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 6), (3,)]
    draws = [torch.normal(0.0, SIGMA * CLIP, size=s, generator=gen).flatten() for s in shapes]
    return (-LR * torch.cat(draws) / N).numpy()  # the step's share of the noise


@pytest.mark.parametrize("seeded", [True, False])
def test_a_server_that_knows_the_noise_seed_removes_the_noise(seeded):
    clean = _one_step(1e-12, 0)
    seed = 1234  # e.g. the run config's "seed", which the server wrote
    noisy = _one_step(SIGMA, seed if seeded else None)
    recovered = noisy - _noise_of(seed)
    noise = np.linalg.norm(noisy - clean)
    if seeded:  # defence off: the client seeded its DP noise with a value the server knows
        assert np.linalg.norm(recovered - clean) < 1e-6 * noise
    else:  # the noise comes from the operating system: subtracting a guess only adds noise
        assert np.linalg.norm(recovered - clean) > 0.5 * noise


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_client_level_epsilon_has_no_sampling_amplification_the_server_can_see_through(accountant):
    """3 of 10 clients per round, 5 rounds: the server sees who uploaded, so a client in every round
    is protected by 5 Gaussian mechanisms at rate 1 - an independent accountant's figure."""
    from opacus.accountants import create_accountant

    from fedattn.data import load_dataset
    from fedattn.privacy import DPConfig
    from fedattn.simulation import SimulationConfig, run_simulation

    torch.set_num_threads(1)
    dp = DPConfig(mode="client", noise_multiplier=1.0, clip_norm=1.0, delta=1e-5, accountant=accountant)
    config = SimulationConfig(dataset="digits", clients=10, clients_per_round=3, rounds=5, protection="plain",
                              aggregation="fedavg", rule_options={"equal_weights": True}, dp=dp, seed=0)
    result = run_simulation(config, dataset=load_dataset("digits", seed=0))
    independent = create_accountant(accountant)
    for _ in range(5):
        independent.step(noise_multiplier=1.0, sample_rate=1.0)
    assert result.rounds[-1].epsilon == pytest.approx(independent.get_epsilon(1e-5), rel=1e-9)
    amplified = create_accountant(accountant)
    for _ in range(5):
        amplified.step(noise_multiplier=1.0, sample_rate=0.3)
    assert result.rounds[-1].epsilon > 1.5 * amplified.get_epsilon(1e-5)

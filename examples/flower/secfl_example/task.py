"""The plaintext part of the app: settings, data partitions, local training, evaluation.

Training reuses :class:`fedattn.simulation.Client` with the standalone simulation's seeds
(``SeedSequence([seed, round, partition, 2])``, the round counted from 0), so a Flower run and
``secfl train`` with the same settings train identically; only the CKKS noise differs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch

from fedattn.data import Dataset, load_dataset, partition
from fedattn.models import float_state, load_float_state, make_model
from fedattn.privacy import DPConfig
from fedattn.simulation import Client, SimulationConfig


def show_secfl_logs(level: int = logging.INFO) -> None:
    """Print secfl's log lines (dropped clients, releases) next to Flower's."""
    logger = logging.getLogger("fedattn")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


@dataclass(frozen=True)
class Settings:
    """Run-config keys (kebab-case in pyproject.toml) with the standalone simulation's defaults."""

    dataset: str = "digits"
    model: str = "mlp"
    partition: str = "dirichlet"
    alpha: float = 0.5
    local_epochs: int = 1
    lr: float = 0.1
    batch_size: int = 32
    seed: int = 0
    dp: str = "none"  # "none" or "sample" (DP-SGD, epsilon composed across rounds in context.state)
    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    delta: float = 1e-5

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> Settings:
        values = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key in run_config:
                values[f.name] = type(f.default)(run_config[key])
        return cls(**values)

    def dp_config(self) -> DPConfig | None:
        if self.dp == "none":
            return None
        return DPConfig(mode=self.dp, noise_multiplier=self.noise_multiplier, clip_norm=self.clip_norm, delta=self.delta)

    def simulation_config(self, clients: int) -> SimulationConfig:
        return SimulationConfig(dataset=self.dataset, model=self.model, clients=clients, partition=self.partition,
                                alpha=self.alpha, local_epochs=self.local_epochs, lr=self.lr,
                                batch_size=self.batch_size, seed=self.seed, dp=self.dp_config())


def dataset(settings: Settings) -> Dataset:
    return load_dataset(settings.dataset, seed=settings.seed)


def model_factory(settings: Settings, data: Dataset):
    return lambda: make_model(settings.model, input_shape=data.input_shape, n_classes=data.n_classes, seed=settings.seed)


def initial_state(settings: Settings) -> dict[str, np.ndarray]:
    """The global model before round 1 (the same initial weights as the standalone simulation)."""
    data = dataset(settings)
    return float_state(model_factory(settings, data)())


def local_client(settings: Settings, *, partition_id: int, num_partitions: int, sample_dp=None) -> Client:
    data = dataset(settings)
    shards = partition(data.y_train, num_partitions, scheme=settings.partition, alpha=settings.alpha, seed=settings.seed)
    idx = shards[partition_id]
    return Client(f"client-{partition_id}", data.x_train[idx], data.y_train[idx],
                  model_factory=model_factory(settings, data), config=settings.simulation_config(num_partitions),
                  sample_dp=sample_dp)


def train_seed(settings: Settings, *, server_round: int, partition_id: int) -> int:
    """The standalone simulation's seed for this client and round (its rounds count from 0)."""
    return int(np.random.SeedSequence([settings.seed, server_round - 1, partition_id, 2]).generate_state(1)[0])


def local_train(client: Client, global_state: dict[str, np.ndarray], *, settings: Settings,
                server_round: int, partition_id: int) -> dict[str, np.ndarray]:
    """Train from the global model; return the trained model (the mod computes the update)."""
    torch.set_num_threads(1)  # tiny model: threads only add noise to timings (and to float sums)
    update = client.train(global_state, seed=train_seed(settings, server_round=server_round, partition_id=partition_id))
    return {n: global_state[n] + update[n] for n in global_state}


def evaluate(settings: Settings, state: dict[str, np.ndarray]) -> tuple[float, float]:
    """Accuracy and loss of ``state`` on the held-out split (the server's central evaluation)."""
    data = dataset(settings)
    model = model_factory(settings, data)()
    load_float_state(model, state)
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(data.x_test))
        target = torch.as_tensor(data.y_test)
        loss = torch.nn.functional.cross_entropy(logits, target).item()
        accuracy = (logits.argmax(1) == target).float().mean().item()
    return accuracy, loss

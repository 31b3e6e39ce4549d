"""The plaintext part of the app: settings, data partitions, local training, evaluation.

Training reuses :class:`fedattn.simulation.Client` with the standalone simulation's seeds
(``SeedSequence([seed, round, partition, 2])``, the round counted from 0), so a Flower run and
``secfl train`` with the same settings train identically; only the CKKS noise differs.

What protects a client is the client's own to set, in its node config, never the server's run
config: differential privacy (``dp``, ``noise-multiplier``, ``clip-norm``, ``delta``; the run
config may only ask for more noise, a tighter clip or a smaller delta) and the source of the DP
noise: the operating system, unless the node is labelled a seeded simulation
(``secfl-seeded-simulation=true``, or ``SECFL_SEEDED_SIMULATION=1`` for simulated nodes), where
it is seeded so that a run reproduces. A DP seed the server chose would let it subtract the noise.
"""

from __future__ import annotations

import logging
import os
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

    def with_client_dp(self, node_config: Mapping[str, object]) -> Settings:
        """These settings with the node's own DP: the node's, or the server's where it asks for more."""
        node = Settings.from_run_config(node_config).dp_config() if node_config.get("dp", "none") != "none" else None
        asked = self.dp_config()
        if node is None and asked is None:
            return self
        if node is None or asked is None:
            chosen = node or asked
        else:
            chosen = DPConfig(mode="sample", noise_multiplier=max(node.noise_multiplier, asked.noise_multiplier),
                              clip_norm=min(node.clip_norm, asked.clip_norm), delta=min(node.delta, asked.delta))
        assert chosen is not None
        return Settings(**{**{f.name: getattr(self, f.name) for f in fields(self)}, "dp": chosen.mode,
                           "noise_multiplier": chosen.noise_multiplier, "clip_norm": chosen.clip_norm,
                           "delta": chosen.delta})

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


def seeded_simulation(node_config: Mapping[str, object]) -> bool:
    """Whether this node is labelled a seeded simulation (then its DP noise is seeded to reproduce)."""
    return str(node_config.get("secfl-seeded-simulation", os.environ.get("SECFL_SEEDED_SIMULATION", ""))).lower() in (
        "1", "true", "yes")


def local_train(client: Client, global_state: dict[str, np.ndarray], *, settings: Settings,
                server_round: int, partition_id: int, seeded: bool = False) -> dict[str, np.ndarray]:
    """Train from the global model; return the trained model (the mod computes the update). The DP
    noise is seeded only in a seeded simulation; otherwise it comes from the operating system."""
    torch.set_num_threads(1)  # tiny model: threads only add noise to timings (and to float sums)
    seed = train_seed(settings, server_round=server_round, partition_id=partition_id)
    update = client.train(global_state, seed=seed, noise_seed=seed + 1 if seeded else None)
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

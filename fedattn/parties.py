"""The parties of a simulated federation, each with only its own objects, and what a round records.

:class:`Client` (a data shard, local training), :class:`Server` (the global model and the rule),
:class:`Party` (a client with its protocol role, key holder or committee seat, and what it fixed
at enrolment), :class:`Federation` (every party of a run), :class:`RoundRecord` (one row of the
per-round table). :mod:`fedattn.simulation` builds them and plays the rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

import secagg

from .config import SimulationConfig
from .data import Dataset
from .defences import Provenance
from .errors import EmptyClientError, ModelMismatchError
from .models import float_state, load_float_state
from .privacy import ClientLevelDP, SampleLevelDP
from .round import ClientRole, ServerRole
from .rules import AggregationRule
from .training import train_epochs

if TYPE_CHECKING:
    from .config import SimulationConfig
    from .protocols import Protocol

__all__ = ["Client", "Server", "Party", "Federation", "RoundRecord", "ModelFactory", "derive_seed"]

ModelFactory = Callable[[], nn.Module]


def derive_seed(*parts: int) -> int:
    """One seed from a tuple (the run's seed, the round, the party, the purpose)."""
    return int(np.random.SeedSequence([*parts]).generate_state(1)[0])


@dataclass
class RoundRecord:
    """One row of the per-round table (and of ``train.json``)."""

    round: int
    accuracy: float
    loss: float
    epsilon: float | None
    participants: list[str]
    dropped: list[str]
    rejected: dict[str, str]
    bytes_sent: int
    seconds_train: float
    seconds_encrypt: float
    seconds_aggregate: float
    seconds_decrypt: float
    aborted: str | None = None


class Client:
    """Holds a data shard and trains the global model locally; returns its update."""

    def __init__(self, client_id: str, x: np.ndarray, y: np.ndarray, *, model_factory: ModelFactory,
                 config: SimulationConfig, sample_dp: SampleLevelDP | None = None) -> None:
        if len(y) == 0:
            raise EmptyClientError(f"client {client_id!r} holds no training sample; give it data or leave it out")
        self.client_id = client_id
        self.x = np.asarray(x, np.float32)
        self.y = np.asarray(y, np.int64)
        self.model_factory = model_factory
        self.config = config
        self.sample_dp = sample_dp

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def train(self, global_state: Mapping[str, np.ndarray], *, seed: int, noise_seed: int | None | str = "derived",
              factory: ModelFactory | None = None) -> dict[str, np.ndarray]:
        """Local training from ``global_state``; returns the update ``w_local - w_global``.

        ``seed`` orders the batches. DP-SGD's noise is seeded with ``seed + 1`` by default (a seeded
        simulation); ``noise_seed=None`` draws it from the operating system, as a deployment must.
        ``factory`` trains another architecture than the client's own (served by the server, when
        the architecture is not pinned).
        """
        model = (factory or self.model_factory)()
        torch.manual_seed(seed)
        try:
            load_float_state(model, dict(global_state))
        except (RuntimeError, KeyError) as exc:
            raise ModelMismatchError(f"client {self.client_id!r}: its model cannot load the global model ({exc})") from None
        dp_seed = seed + 1 if noise_seed == "derived" else noise_seed
        assert dp_seed is None or isinstance(dp_seed, int)
        private = self.sample_dp.make_private(self.client_id, noise_seed=dp_seed) if self.sample_dp else None
        train_epochs(model, self.x, self.y, recipe=self.config.recipe, seed=seed, make_private=private)
        local = float_state(model)
        return {n: local[n] - global_state[n] for n in global_state}


class Server:
    """Holds the global model and the rule; applies each round's aggregate."""

    def __init__(self, model: nn.Module, rule: AggregationRule, protocol: Protocol) -> None:
        self.model = model
        self.rule = rule
        self.protocol = protocol
        self.state = float_state(model)
        self.previous_step: dict[str, np.ndarray] | None = None

    def round_config(self, round: int) -> dict[str, Any]:
        """The public instructions sent with the model; part of the round commitment."""
        return {"round": round, "rule": type(self.rule).__name__, "protocol": self.protocol.name}

    def apply(self, aggregate: Mapping[str, np.ndarray], rng: np.random.Generator) -> None:
        new = self.rule.apply(self.state, aggregate, rng=rng)
        self.previous_step = {n: new[n].astype(np.float64) - self.state[n] for n in new}
        self.state = new  # replaced, never mutated: a RoundView keeps the model it was sent
        load_float_state(self.model, new)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        self.model.eval()
        with torch.no_grad():
            logits = self.model(torch.as_tensor(x, dtype=torch.float32))
            target = torch.as_tensor(y, dtype=torch.long)
            loss = nn.functional.cross_entropy(logits, target).item()
            acc = (logits.argmax(1) == target).float().mean().item()
        return acc, loss


@dataclass
class Party:
    """One client and what it holds: its data, its protocol role (uploader) and its key holder."""

    client: Client
    role: ClientRole
    key_holder: secagg.KeyHolder | None
    member: Any = None  # a secagg.threshold.CommitteeMember with threshold keys
    architecture: str = ""  # pinned at enrolment: the fingerprint of the client's own model
    provenance: Provenance | None = None


@dataclass
class Federation:
    """Every party of a run, each with only its own objects."""

    config: SimulationConfig
    data: Dataset
    run_id: str
    server: Server
    server_role: ServerRole
    parties: list[Party]
    sample_dp: SampleLevelDP | None
    client_dp: ClientLevelDP | None
    groups: tuple[tuple[int, ...], ...] = ()

"""Federated training in one process: clients, a server, rounds, dropouts, DP, determinism.

Everything random derives from ``config.seed``: partitions, initial weights, client sampling,
dropouts, batches, DP noise, server noise and the release flooding. Plaintext runs reproduce bit
for bit. Encrypted runs reproduce up to the CKKS noise: SEAL draws each ciphertext's randomness
from the operating system, deliberately (a seeded encryption would be insecure), so two runs agree
within one step of the release grid (~1e-6).

Example:
    >>> from fedattn.simulation import SimulationConfig, run_simulation
    >>> result = run_simulation(SimulationConfig(clients=3, rounds=1, protection="plain"))
    >>> len(result.rounds), 0.0 <= result.rounds[-1].accuracy <= 1.0
    (1, True)
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import secagg
from secagg.signing import generate_identities, round_commitment

from .data import Dataset, load_dataset, partition
from .errors import (
    AllClientsDroppedError,
    DecryptionAbortedError,
    EmptyClientError,
    InvalidConfigError,
    ModelMismatchError,
)
from .models import float_state, load_float_state, make_model
from .privacy import ClientLevelDP, DPConfig, SampleLevelDP
from .protocols import EncryptedProtocol, Protocol, RoundAggregate, make_protocol
from .rules import AggregationRule, FedAvg, make_rule

__all__ = ["SimulationConfig", "RoundRecord", "SimulationResult", "Client", "Server", "run_simulation", "PROTECTIONS"]
log = logging.getLogger(__name__)

PROTECTIONS = ("plain", "ckks")
DROPOUT_STAGES = ("before_upload", "during_upload", "after_upload", "during_decryption")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class SimulationConfig:
    """Everything a run depends on (validated); see the module docstring for what reproduces."""

    dataset: str = "digits"
    model: str = "mlp"
    clients: int = 10
    rounds: int = 10
    clients_per_round: int | None = None
    partition: str = "dirichlet"
    alpha: float = 0.5
    local_epochs: int = 1
    lr: float = 0.1
    batch_size: int = 32
    optimizer: str = "sgd"
    momentum: float = 0.0
    aggregation: str = "fedatt"
    rule_options: dict = field(default_factory=dict)
    protection: str = "ckks"
    protocol: str = "client-scored"
    preset: str = secagg.DEFAULT_PRESET
    dropout: float = 0.0
    dropouts: list = field(default_factory=list)
    sign_uploads: bool = True
    min_contributors: int = 1
    dp: DPConfig | None = None
    seed: int = 0
    torch_threads: int | None = 1

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(f"{name} must be a positive integer, got {value!r}")

        for name in ("clients", "rounds", "local_epochs", "batch_size"):
            positive_int(name)
        if self.clients_per_round is not None:
            positive_int("clients_per_round")
            if self.clients_per_round > self.clients:
                raise InvalidConfigError(f"clients_per_round={self.clients_per_round} exceeds clients={self.clients}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidConfigError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise InvalidConfigError(f"dropout is a probability in [0, 1), got {self.dropout}")
        self.dropouts = [ScriptedDropout.parse(d) for d in self.dropouts]
        positive_int("min_contributors")
        if self.protection not in PROTECTIONS:
            raise InvalidConfigError(f"protection must be one of {PROTECTIONS}, got {self.protection!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InvalidConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if isinstance(self.dp, dict):
            self.dp = DPConfig(**self.dp)
        if self.dp is not None and self.dp.mode == "client":
            if self.aggregation != "fedavg" or not self.rule_options.get("equal_weights", False):
                raise InvalidConfigError(
                    "client-level DP is accounted for equal client weights: use aggregation='fedavg' with "
                    "rule_options={'equal_weights': True}"
                )
        secagg.get_preset(self.preset)
        if self.protection == "ckks" and self.protocol == "server-scored" and (
                self.aggregation != "fedatt" or self.rule_options.get("score") != "l2_squared" or self.preset != "deep"):
            raise InvalidConfigError(
                "the server-scored protocol computes FedAtt with squared-L2 scores on the 'deep' preset: use "
                "aggregation='fedatt', rule_options={'score': 'l2_squared'}, preset='deep'"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dp"] = asdict(self.dp) if self.dp is not None else None
        return d


@dataclass(frozen=True)
class ScriptedDropout:
    """Client ``client`` leaves in round ``round`` at ``stage``:

    * ``before_upload`` - it never sends (the round goes on with the others);
    * ``during_upload`` - its upload arrives cut in half (rejected as malformed; the others count);
    * ``after_upload`` - its complete upload counts, but it is gone before decryption;
    * ``during_decryption`` - asked to decrypt as a key holder, it vanishes; the next key holder
      is asked, and if none is left the round is aborted with the global model unchanged.
    """

    round: int
    client: str
    stage: str

    @classmethod
    def parse(cls, raw: ScriptedDropout | dict) -> ScriptedDropout:
        if isinstance(raw, ScriptedDropout):
            return raw
        if not isinstance(raw, dict) or set(raw) != {"round", "client", "stage"}:
            raise InvalidConfigError(f"a scripted dropout is {{'round': int, 'client': str, 'stage': str}}, got {raw!r}")
        if raw["stage"] not in DROPOUT_STAGES:
            raise InvalidConfigError(f"dropout stage must be one of {DROPOUT_STAGES}, got {raw['stage']!r}")
        if isinstance(raw["round"], bool) or not isinstance(raw["round"], int) or raw["round"] < 0:
            raise InvalidConfigError(f"dropout round must be a non-negative integer, got {raw['round']!r}")
        return cls(raw["round"], str(raw["client"]), raw["stage"])


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


@dataclass
class SimulationResult:
    config: SimulationConfig
    rounds: list[RoundRecord]
    final_state: dict[str, np.ndarray] = field(repr=False)
    server_views: list[dict] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "rounds": [asdict(r) for r in self.rounds]}


class Client:
    """Holds a data shard and trains the global model locally; returns its update."""

    def __init__(self, client_id: str, x: np.ndarray, y: np.ndarray, *, model_factory: Callable[[], nn.Module],
                 config: SimulationConfig, sample_dp: SampleLevelDP | None = None) -> None:
        if len(y) == 0:
            raise EmptyClientError(f"client {client_id!r} holds no training sample; give it data or leave it out")
        self.client_id = client_id
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.long)
        self.model_factory = model_factory
        self.config = config
        self.sample_dp = sample_dp

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def train(self, global_state: dict[str, np.ndarray], *, seed: int) -> dict[str, np.ndarray]:
        """Local training from ``global_state``; returns the update ``w_local - w_global``."""
        cfg = self.config
        model = self.model_factory()
        torch.manual_seed(seed)
        try:
            load_float_state(model, global_state)
        except (RuntimeError, KeyError) as exc:
            raise ModelMismatchError(f"client {self.client_id!r}: its model cannot load the global model ({exc})") from None
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
               else torch.optim.Adam(params, lr=cfg.lr))
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y),
                                             batch_size=min(cfg.batch_size, self.num_samples), shuffle=True, generator=gen)
        trained = model
        if self.sample_dp is not None:
            trained, opt, loader = self.sample_dp.make_private(self.client_id, model, opt, loader, noise_seed=seed + 1)
        loss_fn = nn.CrossEntropyLoss()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")  # Opacus hooks on Sequential
            for _ in range(cfg.local_epochs):
                for xb, yb in loader:
                    if len(yb) == 0:  # Poisson sampling can draw an empty batch
                        continue
                    opt.zero_grad()
                    loss_fn(trained(xb), yb).backward()
                    opt.step()
        local = float_state(model)
        return {n: local[n] - global_state[n] for n in global_state}


class Server:
    """Holds the global model and the rule; runs rounds over a protocol."""

    def __init__(self, model: nn.Module, rule: AggregationRule, protocol: Protocol) -> None:
        self.model = model
        self.rule = rule
        self.protocol = protocol
        self.state = float_state(model)
        self.previous_step: dict[str, np.ndarray] | None = None

    def round_config(self, round: int) -> dict:
        """The public instructions sent with the model; part of the round commitment."""
        return {"round": round, "rule": type(self.rule).__name__, "protocol": self.protocol.name}

    def model_for(self, client_id: str, round: int) -> dict[str, np.ndarray]:
        """The global model as sent to ``client_id``. An honest server sends everyone the same one;
        a malicious server may not, which the round commitment exposes (override to simulate it)."""
        return self.state

    def check_update(self, client_id: str, update: dict[str, np.ndarray]) -> None:
        if list(update) != list(self.state) or any(update[n].shape != self.state[n].shape for n in self.state):
            raise ModelMismatchError(f"client {client_id!r} sent an update for another architecture; it was dropped")

    def apply(self, aggregate: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        new = self.rule.apply(self.state, aggregate, rng=rng)
        self.previous_step = {n: new[n].astype(np.float64) - self.state[n] for n in new}
        self.state = new
        load_float_state(self.model, new)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        self.model.eval()
        with torch.no_grad():
            logits = self.model(torch.as_tensor(x, dtype=torch.float32))
            target = torch.as_tensor(y, dtype=torch.long)
            loss = nn.functional.cross_entropy(logits, target).item()
            acc = (logits.argmax(1) == target).float().mean().item()
        return acc, loss


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([*parts]).generate_state(1)[0])


def run_simulation(config: SimulationConfig, *, dataset: Dataset | None = None, keys: secagg.KeySet | None = None,
                   on_round: Callable[[RoundRecord], None] | None = None, keep_server_views: bool = False,
                   clients: Sequence[Client] | None = None,
                   server_factory: Callable[..., Server] | None = None) -> SimulationResult:
    """Train a federation as ``config`` says and return one record per round."""
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    data = dataset or load_dataset(config.dataset, seed=config.seed)

    def factory() -> nn.Module:
        return make_model(config.model, input_shape=data.input_shape, n_classes=data.n_classes, seed=config.seed)

    rule = make_rule(config.aggregation, **config.rule_options)
    sample_dp = SampleLevelDP(config.dp) if config.dp is not None and config.dp.mode == "sample" else None
    client_dp = ClientLevelDP(config.dp, n_clients=config.clients) if config.dp is not None and config.dp.mode == "client" else None
    if clients is None:
        shards = partition(data.y_train, config.clients, scheme=config.partition, alpha=config.alpha, seed=config.seed)
        clients = [Client(f"client-{i}", data.x_train[idx], data.y_train[idx], model_factory=factory, config=config,
                          sample_dp=sample_dp) for i, idx in enumerate(shards)]
    options: dict[str, Any] = {}
    if config.protection == "ckks":
        options["min_contributors"] = config.min_contributors
        shapes = factory().state_dict()
        options["max_payload_bytes"] = secagg.max_payload_bytes(
            secagg.get_preset("deep" if config.protocol == "server-scored" else config.preset),
            sum(t.numel() for t in shapes.values()), len(shapes))
        if config.sign_uploads:
            options["identities"], options["roster"] = generate_identities(c.client_id for c in clients)
    # the release flooding is seeded too, so a simulation reproduces; deployments use OS randomness
    protocol = make_protocol("plain" if config.protection == "plain" else config.protocol, keys=keys,
                             preset=config.preset, release_seed=config.seed, **options)
    if isinstance(rule, FedAvg) and rule.max_samples is None:
        rule.max_samples = max(c.num_samples for c in clients)
    server = (server_factory or Server)(factory(), rule, protocol)
    scripted = {(d.round, d.client): d.stage for d in config.dropouts}
    per_round = config.clients_per_round or len(clients)
    records: list[RoundRecord] = []
    views: list[dict[str, Any]] = []
    for rnd in range(config.rounds):
        rng = np.random.default_rng(_seed(config.seed, rnd, 1))
        sampled = sorted(rng.choice(len(clients), size=per_round, replace=False).tolist())
        dropped, messages, t_train = [], [], 0.0
        rejected: dict[str, str] = {}
        commitments: dict[str, str] = {}
        config_sent = server.round_config(rnd)
        for i in sampled:
            client = clients[i]
            stage = scripted.get((rnd, client.client_id))
            if (config.dropout and rng.random() < config.dropout) or stage == "before_upload":
                dropped.append(client.client_id)
                continue
            t0 = time.perf_counter()
            received = server.model_for(client.client_id, rnd)
            commitments[client.client_id] = round_commitment(rnd, received, config_sent)
            try:
                update = client.train(received, seed=_seed(config.seed, rnd, i, 2))
                server.check_update(client.client_id, update)  # the server repeats this check on what it receives
            except ModelMismatchError as exc:
                rejected[client.client_id] = str(exc)
                log.warning("round %d: %s", rnd, exc)
                continue
            if client_dp is not None:
                update, _ = client_dp.privatise(update, sampled=len(sampled), rng=np.random.default_rng(_seed(config.seed, rnd, i, 3)))
            t_train += time.perf_counter() - t0
            message = protocol.client_message(update, rule=rule, num_samples=client.num_samples, reference=server.previous_step,
                                              round=rnd, client_id=client.client_id, commitment=commitments[client.client_id])
            if stage == "during_upload":
                message.payload = message.payload[:len(message.payload) // 2]
                dropped.append(client.client_id)
            elif stage == "after_upload":
                dropped.append(client.client_id)
            messages.append(message)
        if not messages:
            raise AllClientsDroppedError(
                f"round {rnd}: all {len(sampled)} sampled clients dropped out or were rejected; nothing to aggregate. "
                "Lower the dropout rate or sample more clients per round"
            )
        gone = set(dropped)
        key_holders = [clients[i].client_id for i in sampled if clients[i].client_id in commitments
                       and clients[i].client_id not in gone]
        result, aborted = _aggregate_round(protocol, messages, rule=rule, reference=server.previous_step, rnd=rnd,
                                           key_holders=key_holders, commitments=commitments, scripted=scripted)
        if result is None:
            acc, loss = server.evaluate(data.x_test, data.y_test)
            record = RoundRecord(rnd, acc, loss, records[-1].epsilon if records else None, [], dropped, rejected,
                                 sum(len(m.payload) for m in messages), t_train,
                                 sum(m.seconds_encrypt for m in messages), 0.0, 0.0, aborted=aborted)
        else:
            rejected.update(result.rejected)
            if client_dp is not None:
                client_dp.account_round(sampled=len(sampled), survivors=len(result.contributors))
            server.apply(result.aggregate, np.random.default_rng(_seed(config.seed, rnd, 4)))
            acc, loss = server.evaluate(data.x_test, data.y_test)
            eps = sample_dp.epsilon() if sample_dp else client_dp.epsilon() if client_dp else None
            record = RoundRecord(rnd, acc, loss, eps, list(result.contributors), dropped, rejected,
                                 sum(len(m.payload) for m in messages), t_train,
                                 sum(m.seconds_encrypt for m in messages), result.seconds_aggregate, result.seconds_decrypt)
            if keep_server_views:
                views.append(result.server_view)
        records.append(record)
        if on_round:
            on_round(record)
    return SimulationResult(config, records, server.state, views)


def _aggregate_round(protocol: Protocol, messages, *, rule, reference, rnd: int, key_holders: list[str],
                     commitments: dict[str, str], scripted: dict) -> tuple[RoundAggregate | None, str | None]:
    """Server step, then ask key holders in turn to release; ``(None, reason)`` if none could."""
    if not isinstance(protocol, EncryptedProtocol):
        return protocol.aggregate(messages, rule=rule, reference=reference, round=rnd), None
    served = protocol.serve(messages, rule=rule, round=rnd)
    for holder in key_holders:
        if scripted.get((rnd, holder)) == "during_decryption":
            log.warning("round %d: key holder %s dropped out during decryption; asking the next one", rnd, holder)
            continue
        t0 = time.perf_counter()
        # raises ModelInconsistencyError: a server that gave clients different models must not go on
        agg = protocol.release(served, expected_commitment=commitments[holder])
        return RoundAggregate({n: a.astype(np.float64) for n, a in agg.items()}, served.contributors, served.rejected,
                              served.seconds, time.perf_counter() - t0,
                              server_view={"released_aggregate": agg, "aggregate_bytes": len(served.wire)}), None
    reason = (f"round {rnd}: no key holder completed the decryption ({len(key_holders)} asked); the round was "
              "aborted and the global model left unchanged")
    log.warning(reason)
    return None, f"{DecryptionAbortedError.__name__}: {reason}"

"""Federated training in one process: clients, a server, rounds, dropouts, DP, determinism.

A run is a sequence of named steps: :func:`build_federation` gives every party its own objects
(each client a :class:`fedattn.round.ClientRole` with its :class:`secagg.Uploader` and a
:class:`secagg.KeyHolder` sharing its ledger; the server a :class:`fedattn.round.ServerRole` with
the public context only), then each round samples clients, trains them locally, runs
:func:`fedattn.round.run_round` and applies the result. :func:`run_simulation` returns one
:class:`RoundRecord` (metrics) and one :class:`fedattn.round.RoundView` (the server's view, as
data) per round.

Everything random derives from ``config.seed``: partitions, initial weights, client sampling,
dropouts, batches, DP noise, server noise and the release flooding (a *seeded simulation*;
deployments draw protective noise from the operating system). Plaintext runs reproduce bit for
bit. Encrypted runs draw each ciphertext's randomness from the operating system, deliberately (a
seeded encryption would be insecure); the released values are rounded to the flooding grid, so
with the ``strict`` preset two runs agree bit for bit in practice, and with ``compact`` within one
step of the grid.

Example:
    >>> from fedattn.simulation import SimulationConfig, run_simulation
    >>> result = run_simulation(SimulationConfig(clients=3, rounds=1, protection="plain"))
    >>> len(result.rounds), 0.0 <= result.rounds[-1].accuracy <= 1.0, result.views[0].contributors
    (1, True, ('client-0', 'client-1', 'client-2'))
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import secagg
from secagg.signing import default_groups

from ._validation import non_negative_int, one_of, positive_float, positive_int, probability
from .data import Dataset, load_dataset, partition
from .errors import (
    AllClientsDroppedError,
    ClientUnreachableError,
    EmptyClientError,
    InvalidConfigError,
    ModelMismatchError,
)
from .models import float_state, load_float_state, make_model
from .privacy import ClientLevelDP, DPConfig, SampleLevelDP
from .protocols import EncryptedProtocol, Protocol, make_protocol
from .round import (
    ClientMessage,
    ClientRole,
    Rejection,
    RoundOutcome,
    RoundView,
    ServerRole,
    UploadSeen,
    run_round,
)
from .rules import AggregationRule, FedAvg, make_rule
from .training import OPTIMIZERS, Recipe, train_epochs

__all__ = ["SimulationConfig", "ScriptedDropout", "RoundRecord", "SimulationResult", "Client", "Server",
           "ServerAdversary", "Federation", "build_federation", "run_simulation", "PROTECTIONS"]
log = logging.getLogger(__name__)

PROTECTIONS = ("plain", "ckks")
DROPOUT_STAGES = ("before_upload", "during_upload", "after_upload", "during_signing", "during_decryption")

ModelFactory = Callable[[], nn.Module]


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
    rule_options: dict[str, Any] = field(default_factory=dict)
    protection: str = "ckks"
    protocol: str = "client-scored"
    preset: str = secagg.DEFAULT_PRESET
    dropout: float = 0.0
    dropouts: list[Any] = field(default_factory=list)
    min_contributors: int = secagg.DEFAULT_MIN_CONTRIBUTORS
    group_size: int | None = None
    dp: DPConfig | None = None
    #: account epsilon after every round (shown per round), or only after the last (PRV costs ~0.3 s a client)
    epsilon_every_round: bool = True
    seed: int = 0
    torch_threads: int | None = 1
    #: "shared" (one key set, as NVIDIA FLARE) or "threshold" (each client's own key, a committee)
    keys: str = "shared"
    #: threshold keys: the committee (the first ``holders`` clients) and the members a release needs
    holders: int = 5
    threshold: int = 3

    def __post_init__(self) -> None:
        for name in ("clients", "rounds", "local_epochs", "batch_size", "min_contributors"):
            positive_int(name, getattr(self, name))
        if self.group_size is not None:
            positive_int("group_size", self.group_size)
            if self.group_size < self.min_contributors:
                raise InvalidConfigError(f"group_size={self.group_size} is below min_contributors="
                                         f"{self.min_contributors}: key holders release whole groups of at least that many")
        if self.clients_per_round is not None:
            positive_int("clients_per_round", self.clients_per_round)
            if self.clients_per_round > self.clients:
                raise InvalidConfigError(f"clients_per_round={self.clients_per_round} exceeds clients={self.clients}")
        positive_float("lr", self.lr)
        probability("dropout", self.dropout)
        self.dropouts = [ScriptedDropout.parse(d) for d in self.dropouts]
        one_of("protection", self.protection, PROTECTIONS)
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        if isinstance(self.dp, dict):
            self.dp = DPConfig(**self.dp)
        if self.dp is not None and self.dp.mode == "client":
            if self.aggregation != "fedavg" or not self.rule_options.get("equal_weights", False):
                raise InvalidConfigError(
                    "client-level DP is accounted for equal client weights: use aggregation='fedavg' with "
                    "rule_options={'equal_weights': True}"
                )
        secagg.get_preset(self.preset)
        one_of("keys", self.keys, ("shared", "threshold"))
        if self.keys == "threshold":
            if self.protection != "ckks" or self.protocol != "client-scored":
                raise InvalidConfigError("threshold keys serve the encrypted client-scored protocol: use protection="
                                         "'ckks', protocol='client-scored'")
            if not 1 <= self.threshold <= self.holders <= self.clients:
                raise InvalidConfigError(f"threshold={self.threshold} of holders={self.holders} among clients="
                                         f"{self.clients}: need 1 <= threshold <= holders <= clients")
            if secagg.get_preset(self.preset).flood_bits < 40:
                raise InvalidConfigError(f"threshold keys need the strict preset's smudging, not {self.preset!r}")
        if self.protection == "ckks" and self.protocol == "server-scored" and (
                self.aggregation != "fedatt" or self.rule_options.get("score") != "l2_squared" or self.preset != "deep"):
            raise InvalidConfigError(
                "the server-scored protocol computes FedAtt with squared-L2 scores on the 'deep' preset: use "
                "aggregation='fedatt', rule_options={'score': 'l2_squared'}, preset='deep'"
            )

    @property
    def groups_of(self) -> int:
        """Enrolment group size: ``group_size``, else ``min_contributors``."""
        return self.group_size or self.min_contributors

    @property
    def recipe(self) -> Recipe:
        return Recipe(epochs=self.local_epochs, lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer,
                      momentum=self.momentum)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dp"] = asdict(self.dp) if self.dp is not None else None
        d["dropouts"] = [asdict(x) for x in self.dropouts]
        return d


@dataclass(frozen=True)
class ScriptedDropout:
    """Client ``client`` leaves in round ``round`` at ``stage``:

    * ``before_upload`` - it never sends;
    * ``during_upload`` - its upload arrives cut in half (rejected as malformed);
    * ``after_upload`` - its upload arrived, but it is gone before the contributor set is formed;
    * ``during_signing`` - asked to sign the round's contributor set, it vanishes;
    * ``during_decryption`` - chosen as the round's key holder, it vanishes.

    In the first three cases its enrolment group sits the round out and the others go on; in the
    last two the set can no longer be completed or released, and the round is aborted with the
    global model unchanged (the set names its members and its one key holder, and none signs a
    second set for the round).
    """

    round: int
    client: str
    stage: str

    @classmethod
    def parse(cls, raw: ScriptedDropout | dict[str, Any]) -> ScriptedDropout:
        if isinstance(raw, ScriptedDropout):
            return raw
        if not isinstance(raw, dict) or set(raw) != {"round", "client", "stage"}:
            raise InvalidConfigError(f"a scripted dropout is {{'round': int, 'client': str, 'stage': str}}, got {raw!r}")
        one_of("dropout stage", raw["stage"], DROPOUT_STAGES)
        non_negative_int("dropout round", raw["round"])
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
    views: tuple[RoundView, ...] = field(default=(), repr=False)
    run_id: str = ""
    privacy: Any = field(default=None, repr=False)  # the run's SampleLevelDP or ClientLevelDP, if any

    def epsilon(self, *, relation: str = "add-remove") -> float | None:
        """The run's epsilon at its delta (largest over clients), for ``relation`` (see fedattn.privacy)."""
        return None if self.privacy is None else float(self.privacy.epsilon(relation=relation))

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "run_id": self.run_id, "rounds": [asdict(r) for r in self.rounds]}


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

    def train(self, global_state: Mapping[str, np.ndarray], *, seed: int, noise_seed: int | None | str = "derived"
              ) -> dict[str, np.ndarray]:
        """Local training from ``global_state``; returns the update ``w_local - w_global``.

        ``seed`` orders the batches. DP-SGD's noise is seeded with ``seed + 1`` by default (a seeded
        simulation); ``noise_seed=None`` draws it from the operating system, as a deployment must.
        """
        model = self.model_factory()
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


class ServerAdversary:
    """How a server may deviate from the protocol; the default is honest. Subclass to simulate an
    attack (``model_for`` sending one client a crafted model is the model-inconsistency attack).

    An honest server refuses uploads that commit to another model than the one it sent; a server
    that attacks skips its own checks (``honest_checks = False``), leaving the key holder's.
    """

    honest_checks: bool = True

    def model_for(self, client_id: str, round: int, state: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """The global model as sent to ``client_id`` in ``round``."""
        return state


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


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([*parts]).generate_state(1)[0])


def build_federation(config: SimulationConfig, *, dataset: Dataset | None = None, keys: secagg.KeySet | None = None,
                     clients: Sequence[Client] | None = None, model_factory: ModelFactory | None = None) -> Federation:
    """Give every party its objects: data shards, models, keys, identities, ledgers, roles."""
    data = dataset or load_dataset(config.dataset, seed=config.seed)

    def default_factory() -> nn.Module:
        return make_model(config.model, input_shape=data.input_shape, n_classes=data.n_classes, seed=config.seed)

    # the server's model (and so the layout and the upload limit) is the model actually trained: the
    # given factory, else the given clients', else config.model
    factory = model_factory or (clients[0].model_factory if clients else None) or default_factory
    dp = config.dp
    sample_dp = SampleLevelDP(dp) if dp is not None and dp.mode == "sample" else None
    client_dp = ClientLevelDP(dp, n_clients=config.clients) if dp is not None and dp.mode == "client" else None
    if clients is None:
        shards = partition(data.y_train, config.clients, scheme=config.partition, alpha=config.alpha, seed=config.seed)
        clients = [Client(f"client-{i}", data.x_train[idx], data.y_train[idx], model_factory=factory, config=config,
                          sample_dp=sample_dp) for i, idx in enumerate(shards)]
    rule = make_rule(config.aggregation, **config.rule_options)
    if isinstance(rule, FedAvg) and rule.max_samples is None:
        rule.max_samples = max(c.num_samples for c in clients)
    protocol = make_protocol("plain" if config.protection == "plain" else config.protocol, rule)
    server = Server(factory(), rule, protocol)
    if isinstance(protocol, EncryptedProtocol):
        server_role, parties = _encrypted_parties(config, protocol, clients, server, keys)
    else:
        server_role = ServerRole(protocol)
        parties = [Party(c, ClientRole(protocol, client_id=c.client_id), None) for c in clients]
    ids = [c.client_id for c in clients]
    groups = tuple(tuple(ids.index(c) for c in g) for g in default_groups(ids, config.groups_of))
    return Federation(config, data, secrets.token_hex(8), server, server_role, parties, sample_dp, client_dp, groups)


def _encrypted_parties(config: SimulationConfig, protocol: EncryptedProtocol, clients: Sequence[Client], server: Server,
                       keys: secagg.KeySet | None) -> tuple[ServerRole, list[Party]]:
    """The key dealer's work (keys, identities, roster), then each party's own objects."""
    identities, roster = secagg.generate_identities((c.client_id for c in clients), group_size=config.groups_of)
    if config.keys == "threshold":
        return _threshold_parties(config, protocol, clients, server, identities, roster)
    keys = keys or secagg.generate_keys(preset="deep" if config.protocol == "server-scored" else config.preset)
    limit = secagg.max_payload_bytes(keys.public.preset, sum(a.size for a in server.state.values()), len(server.state))
    aggregator = secagg.Aggregator(keys.public, roster=roster, max_payload_bytes=limit)
    options = protocol.key_holder_options()
    if options.get("trust_server_circuit"):
        log.warning("the %s protocol's key holders decrypt a circuit output they cannot check: this simulation "
                    "assumes an honest-but-curious server", protocol.name)
    parties = []
    for c in clients:
        ledger = secagg.MemoryLedger()
        identity = identities[c.client_id]
        uploader = secagg.Uploader(keys.secret, identity=identity, ledger=ledger, roster=roster,
                                   min_contributors=config.min_contributors)
        # the release flooding is seeded too, so a simulation reproduces; deployments use OS randomness
        holder = secagg.KeyHolder(keys.secret, identity=identity, roster=roster, ledger=ledger,
                                  min_contributors=config.min_contributors, release_seed=config.seed, **options)
        parties.append(Party(c, ClientRole(protocol, client_id=c.client_id, uploader=uploader), holder))
    return ServerRole(protocol, aggregator=aggregator), parties


def _threshold_parties(config: SimulationConfig, protocol: EncryptedProtocol, clients: Sequence[Client],
                       server: Server, identities: Mapping[str, secagg.ClientIdentity],
                       roster: secagg.Roster) -> tuple[ServerRole, list[Party]]:
    """Each client's own key and the committee's shares (a ceremony in this process, every party's
    secrets in its own objects); the server holds the public epoch only."""
    from secagg.threshold import CommitteeMember

    from .threshold_keys import simulated_ceremony

    cer = simulated_ceremony(identities, roster, holders=config.holders, threshold=config.threshold,
                             preset=config.preset)
    limit = secagg.max_payload_bytes(cer.epoch.preset, sum(a.size for a in server.state.values()), len(server.state))
    aggregator = secagg.Aggregator(cer.epoch, roster=roster, max_payload_bytes=limit)
    parties = []
    for c in clients:
        ledger = secagg.MemoryLedger()
        uploader = secagg.Uploader(cer.secrets[c.client_id], identity=identities[c.client_id], ledger=ledger,
                                   roster=roster, min_contributors=config.min_contributors, epoch=cer.epoch)
        member = None
        if c.client_id in cer.members:
            shares, keys = cer.members[c.client_id]
            member = CommitteeMember(shares=shares, keys=keys, identity=identities[c.client_id], epoch=cer.epoch,
                                     roster=roster, ledger=ledger, min_contributors=config.min_contributors,
                                     release_seed=config.seed, **protocol.key_holder_options())
        parties.append(Party(c, ClientRole(protocol, client_id=c.client_id, uploader=uploader), None, member))
    return ServerRole(protocol, aggregator=aggregator), parties


def run_simulation(config: SimulationConfig, *, dataset: Dataset | None = None, keys: secagg.KeySet | None = None,
                   on_round: Callable[[RoundRecord], None] | None = None, clients: Sequence[Client] | None = None,
                   model_factory: ModelFactory | None = None,
                   adversary: ServerAdversary | None = None) -> SimulationResult:
    """Train a federation as ``config`` says; one record and one server view per round.

    ``clients`` replaces the built-in clients (any ``torch.nn.Module`` through their factories);
    ``model_factory`` builds the server's model (and sizes the upload limit) when it is not
    ``config.model``. ``adversary`` makes the server deviate (tests of the defences).
    """
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    fed = build_federation(config, dataset=dataset, keys=keys, clients=clients, model_factory=model_factory)
    adversary = adversary or ServerAdversary()
    records: list[RoundRecord] = []
    views: list[RoundView] = []
    for rnd in range(config.rounds):
        record, view = play_round(fed, rnd, adversary=adversary, previous=records[-1] if records else None)
        records.append(record)
        views.append(view)
        if on_round:
            on_round(record)
    return SimulationResult(config, records, fed.server.state, tuple(views), fed.run_id,
                            privacy=fed.sample_dp or fed.client_dp)


@dataclass
class _LocalRound:
    """The clients' half of a round: what they sent and what happened to the others."""

    sampled: list[Party]
    messages: list[ClientMessage]
    dropped: list[str]
    rejections: list[Rejection]
    commitments: dict[str, str]
    seconds_train: float
    config_sent: dict[str, Any] = field(default_factory=dict)


def _sample(fed: Federation, rnd: int) -> tuple[list[Party], np.random.Generator]:
    """Whole enrolment groups, in random order, until ``clients_per_round`` clients (all by default)."""
    rng = np.random.default_rng(_seed(fed.config.seed, rnd, 1))
    per_round = fed.config.clients_per_round or len(fed.parties)
    chosen: list[int] = []
    for g in rng.permutation(len(fed.groups)).tolist():
        if len(chosen) >= per_round:
            break
        chosen.extend(fed.groups[g])
    return [fed.parties[i] for i in sorted(chosen)], rng


def _train_clients(fed: Federation, rnd: int, adversary: ServerAdversary) -> _LocalRound:
    """Sample, send the model, train locally, upload; scripted dropouts happen here."""
    cfg, server = fed.config, fed.server
    sampled, rng = _sample(fed, rnd)
    scripted = {(d.round, d.client): d.stage for d in cfg.dropouts}
    config_sent = {**server.round_config(rnd), "run": fed.run_id}
    local = _LocalRound(sampled, [], [], [], {}, 0.0, config_sent)
    for party in sampled:
        cid = party.client.client_id
        i = fed.parties.index(party)
        stage = scripted.get((rnd, cid))
        if (cfg.dropout and rng.random() < cfg.dropout) or stage == "before_upload":
            local.dropped.append(cid)
            continue
        t0 = time.perf_counter()
        received = adversary.model_for(cid, rnd, server.state)
        local.commitments[cid] = secagg.round_commitment(rnd, received, config_sent)
        try:
            update = party.client.train(received, seed=_seed(cfg.seed, rnd, i, 2))
        except ModelMismatchError as exc:
            local.rejections.append(Rejection(client_id=cid, error=exc))
            log.warning("round %d: %s", rnd, exc)
            continue
        if fed.client_dp is not None:
            update, _ = fed.client_dp.privatise(update, sampled=len(sampled),
                                                rng=np.random.default_rng(_seed(cfg.seed, rnd, i, 3)))
        local.seconds_train += time.perf_counter() - t0
        message = party.role.message(update, num_samples=party.client.num_samples, reference=server.previous_step,
                                     run=fed.run_id, round=rnd, commitment=local.commitments[cid])
        if stage == "during_upload":
            message.payload = message.payload[:len(message.payload) // 2]
            local.dropped.append(cid)
        elif stage == "after_upload":
            local.dropped.append(cid)
        local.messages.append(message)
    return local


class _Gateway:
    """The server's reach to the round's clients: their own objects, with the scripted dropouts."""

    def __init__(self, fed: Federation, rnd: int, local: _LocalRound) -> None:
        self.rnd = rnd
        self.parties = {p.client.client_id: p for p in local.sampled}
        self.stage = {d.client: d.stage for d in fed.config.dropouts if d.round == rnd}
        self.gone = set(local.dropped)
        self.members = {p.client.client_id: p.member for p in fed.parties if p.member is not None}
        self.threshold = fed.config.threshold

    def online(self, senders: Mapping[str, str]) -> list[str]:
        return [c for c in senders if c not in self.gone]

    def key_holders(self, contributors: Sequence[str]) -> list[str]:
        """Who may be named to release: the contributors, or with threshold keys the committee."""
        return sorted(self.members) if self.members else list(contributors)

    def sign(self, client_id: str, cset: secagg.ContributorSet) -> str:
        if self.stage.get(client_id) == "during_signing":
            raise ClientUnreachableError(f"round {self.rnd}: {client_id} left before signing the contributor set")
        return self.parties[client_id].role.sign(cset)

    def release(self, key_holder: str, request: bytes) -> secagg.Release:
        if self.members:  # threshold keys: a quorum of the members still there
            from .threshold_keys import quorum_release

            available = [m for m in sorted(self.members) if self.stage.get(m) != "during_decryption"]
            return quorum_release(self.members, request, combiner=key_holder, available=available,
                                  threshold=self.threshold)
        if self.stage.get(key_holder) == "during_decryption":
            raise ClientUnreachableError(f"round {self.rnd}: the key holder {key_holder} left during decryption")
        holder = self.parties[key_holder].key_holder
        assert holder is not None
        return holder.release(request)


def play_round(fed: Federation, rnd: int, *, adversary: ServerAdversary,
               previous: RoundRecord | None = None) -> tuple[RoundRecord, RoundView]:
    """One round end to end: local training, :func:`fedattn.round.run_round`, the server step."""
    cfg, server = fed.config, fed.server
    local = _train_clients(fed, rnd, adversary)
    if not local.messages:
        raise AllClientsDroppedError(
            f"round {rnd}: all {len(local.sampled)} sampled clients dropped out or were rejected; nothing to aggregate. "
            "Lower the dropout rate or sample more clients per round"
        )
    sent, reference = server.state, server.previous_step
    expected = secagg.round_commitment(rnd, sent, local.config_sent) if adversary.honest_checks else None
    outcome = run_round(local.messages, server=fed.server_role, clients=_Gateway(fed, rnd, local), run=fed.run_id,
                        round=rnd, reference=reference, model=sent, commitment=expected)
    if outcome.aborted:
        log.warning("round %d: %s", rnd, outcome.aborted)
    epsilon = previous.epsilon if previous else None
    if outcome.aggregate is not None:
        if fed.client_dp is not None:
            fed.client_dp.account_round(sampled=len(local.sampled), survivors=len(outcome.contributors))
        server.apply(outcome.aggregate, np.random.default_rng(_seed(cfg.seed, rnd, 4)))
        if cfg.epsilon_every_round or rnd == cfg.rounds - 1:
            epsilon = (fed.sample_dp.epsilon() if fed.sample_dp else fed.client_dp.epsilon() if fed.client_dp else None)
    acc, loss = server.evaluate(fed.data.x_test, fed.data.y_test)
    rejections = (*local.rejections, *outcome.rejections)
    seconds = {"train": local.seconds_train, "encrypt": sum(m.seconds_encrypt for m in local.messages),
               "aggregate": outcome.seconds_aggregate, "decrypt": outcome.seconds_decrypt}
    record = RoundRecord(rnd, acc, loss, epsilon, list(outcome.contributors), local.dropped,
                         {r.client_id: r.describe() for r in rejections}, sum(len(m.payload) for m in local.messages),
                         seconds["train"], seconds["encrypt"], seconds["aggregate"], seconds["decrypt"],
                         aborted=outcome.aborted)
    return record, _view(fed, rnd, local, outcome, sent=sent, reference=reference, seconds=seconds,
                         rejections=rejections)


def _view(fed: Federation, rnd: int, local: _LocalRound, outcome: RoundOutcome, *, sent: Mapping[str, np.ndarray],
          reference: Mapping[str, np.ndarray] | None, seconds: Mapping[str, float],
          rejections: Sequence[Rejection]) -> RoundView:
    plain = not fed.server_role.protocol.encrypted
    return RoundView(
        round=rnd, model_sent=sent, config_sent=fed.server.round_config(rnd), reference=reference,
        sampled=tuple(p.client.client_id for p in local.sampled), dropped=tuple(local.dropped),
        uploads=tuple(UploadSeen(client_id=m.client_id, bytes=len(m.payload)) for m in local.messages),
        rejections=tuple(rejections), contributors=outcome.contributors, client_updates=outcome.client_updates,
        num_samples={m.client_id: m.num_samples for m in local.messages} if plain else None,
        aggregate=outcome.aggregate, model_after=fed.server.state, key_holder=outcome.key_holder,
        aborted=outcome.aborted, seconds=dict(seconds))

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import secagg
from secagg.signing import default_groups

from ._play import play_round
from .config import PROTECTIONS, ScriptedDropout, SimulationConfig
from .data import Dataset, load_dataset, partition
from .defences import Provenance, ServerAdversary, architecture_fingerprint
from .errors import InvalidConfigError
from .models import float_state, make_model
from .parties import Client, Federation, ModelFactory, Party, RoundRecord, Server
from .parties import derive_seed as _seed
from .privacy import ClientLevelDP, SampleLevelDP
from .protocols import EncryptedProtocol, make_protocol
from .round import ClientRole, RoundView, ServerRole
from .rules import FedAvg, make_rule

__all__ = ["SimulationConfig", "ScriptedDropout", "RoundRecord", "SimulationResult", "Client", "Server",
           "ServerAdversary", "Federation", "build_federation", "run_simulation", "play_round", "PROTECTIONS"]
log = logging.getLogger(__name__)

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
    sample_dp = _given_sample_dp(config, clients) if clients else None
    sample_dp = sample_dp or (SampleLevelDP(dp) if dp is not None and dp.mode == "sample" else None)
    client_dp = ClientLevelDP(dp, n_clients=config.clients) if dp is not None and dp.mode == "client" else None
    if clients is None:
        shards = partition(data.y_train, config.clients, scheme=config.partition, alpha=config.alpha, seed=config.seed,
                           groups=data.groups)
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
    fed = Federation(config, data, secrets.token_hex(8), server, server_role, parties, sample_dp, client_dp, groups)
    _enrol(fed)
    return fed


def _given_sample_dp(config: SimulationConfig, clients: Sequence[Client]) -> SampleLevelDP | None:
    """The given clients' DP-SGD, which the run's epsilon must count: one object shared by all of
    them, present exactly when ``config.dp`` is sample-level (else the run would claim a DP its
    clients do not train with, or train with one it does not count)."""
    given = {id(c.sample_dp): c.sample_dp for c in clients if c.sample_dp is not None}
    wanted = config.dp is not None and config.dp.mode == "sample"
    if wanted and (len(given) != 1 or any(c.sample_dp is None for c in clients)):
        raise InvalidConfigError("config.dp is sample-level: give every client the same SampleLevelDP(config.dp) "
                                 "as sample_dp, so that the run's epsilon counts their steps")
    if given and not wanted:
        raise InvalidConfigError("clients train with DP-SGD but config.dp is not sample-level: set config.dp to "
                                 "their DPConfig, so that the run reports its epsilon")
    shared = next(iter(given.values()), None)
    if shared is not None and shared.config != config.dp:
        raise InvalidConfigError("the clients' SampleLevelDP has a DPConfig other than config.dp: the run's epsilon "
                                 "would be labelled with the wrong noise, delta or accountant; build it from config.dp")
    return shared


def _enrol(fed: Federation) -> None:
    """What each client fixes at enrolment, from its own code and the public configuration: its
    architecture's fingerprint and, with the provenance defence, its own copy of the global model."""
    cfg = fed.config
    for party in fed.parties:
        own = party.client.model_factory()
        party.architecture = architecture_fingerprint(own)
        roster = party.role.uploader.roster if party.role.uploader is not None else None
        if "provenance" in cfg.defences and roster is not None:
            party.provenance = Provenance(float_state(own), rule=make_rule(cfg.aggregation, **cfg.rule_options),
                                          roster=roster, run=fed.run_id,
                                          server_rng=lambda rnd: np.random.default_rng(_seed(cfg.seed, rnd, 4)))


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
    adversary.setup(fed)
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

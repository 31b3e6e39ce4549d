"""fedattn: attention-weighted federated aggregation, in plaintext and on CKKS ciphertexts.

The whole flow - rule, protocol, each party's role, a round - in a few lines::

    >>> import numpy as np, secagg, fedattn
    >>> keys = secagg.generate_keys(preset="compact")                      # the key dealer
    >>> ids, roster = secagg.generate_identities(["a", "b", "c"], group_size=3)
    >>> protocol = fedattn.make_protocol("client-scored", fedattn.FedAtt())   # agreed by every party
    >>> ledgers = {c: secagg.MemoryLedger() for c in ids}
    >>> clients = {c: fedattn.ClientRole(protocol, client_id=c, uploader=secagg.Uploader(
    ...     keys.secret, identity=ids[c], ledger=ledgers[c], roster=roster)) for c in ids}
    >>> server = fedattn.ServerRole(protocol, aggregator=secagg.Aggregator(keys.public, roster=roster))
    >>> model = {"w": np.zeros(4, np.float32)}                              # the global model sent
    >>> commitment = secagg.round_commitment(0, model, {"run": "run-1", "rule": "fedatt"})
    >>> msgs = [role.message({"w": np.full(4, 0.1 * (k + 1), np.float32)}, num_samples=10, reference=None,
    ...                      run="run-1", round=0, commitment=commitment) for k, role in enumerate(clients.values())]
    >>> class Reach:                                     # how the server reaches them (Flower: messages)
    ...     def online(self, senders): return list(senders)
    ...     def sign(self, c, cset): return clients[c].sign(cset)
    ...     def release(self, holder, request): return secagg.KeyHolder(
    ...         keys.secret, identity=ids[holder], roster=roster, ledger=ledgers[holder]).release(request)
    >>> out = fedattn.run_round(msgs, server=server, clients=Reach(), run="run-1", round=0, reference=None,
    ...                         model=model, commitment=commitment)
    >>> out.contributors, out.client_updates is None, bool(0.2 < out.aggregate["w"][0] < 0.3)
    (('a', 'b', 'c'), True, True)

One-process federations with data, local training, dropouts and DP: :func:`run_simulation`;
on Flower: :mod:`fedattn.flower`.
"""

from .data import Dataset, load_dataset, partition
from .errors import *  # noqa: F403 - the exception hierarchy is part of the public API
from .errors import __all__ as _errors_all
from .models import float_state, load_float_state, make_model
from .privacy import ClientLevelDP, DPConfig, SampleLevelDP, clip_update
from .protocols import (
    PROTOCOLS,
    ClientScoredProtocol,
    EncryptedProtocol,
    PlainProtocol,
    Protocol,
    ServerScoredProtocol,
    make_protocol,
)
from .round import ClientGateway, ClientMessage, ClientRole, Rejection, RoundOutcome, RoundView, ServerRole, run_round
from .rules import AggregationRule, CosineAttention, FedAtt, FedAvg, make_rule
from .simulation import Client, ServerAdversary, SimulationConfig, SimulationResult, run_simulation
from .training import Recipe, train_epochs

__all__ = [
    "Dataset", "load_dataset", "partition", "float_state", "load_float_state", "make_model", "ClientLevelDP", "DPConfig",
    "SampleLevelDP", "clip_update", "PROTOCOLS", "ClientScoredProtocol", "EncryptedProtocol", "PlainProtocol", "Protocol",
    "ServerScoredProtocol", "make_protocol", "ClientMessage", "ClientRole", "Rejection", "RoundOutcome", "RoundView",
    "ServerRole", "ClientGateway", "run_round", "AggregationRule", "CosineAttention", "FedAtt", "FedAvg", "make_rule", "Client",
    "ServerAdversary", "SimulationConfig", "SimulationResult", "run_simulation", "Recipe", "train_epochs", *_errors_all,
]
__version__ = "0.1.0"

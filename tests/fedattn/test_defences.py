"""The clients' checks of the model a server sends: each a switch, each tried with a server that
lies, off (the lie goes through) and on (it is refused)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import secagg
from fedattn.defences import Provenance, ServedModel, ServerAdversary, architecture_fingerprint
from fedattn.errors import AllClientsDroppedError, InvalidConfigError, ModelInconsistencyError
from fedattn.models import MLP
from fedattn.rules import FedAvg
from fedattn.simulation import SimulationConfig, run_simulation

torch.set_num_threads(1)


def _config(**kw):
    base = dict(clients=4, rounds=1, preset="compact", aggregation="fedavg", rule_options={"equal_weights": True},
                seed=5)
    return SimulationConfig(**{**base, **kw})


class _Wider(ServerAdversary):
    """Serves its own code: an MLP with a wider hidden layer (an added or grown layer, as an imprint
    attack needs)."""

    honest_checks = False

    def round_model(self, round, state):
        return self.state

    def setup(self, federation):
        federation.server_role.aggregator.max_payload_bytes = None
        self.factory = lambda: MLP((1, 8, 8), 10, hidden=96)
        self.state = {n: t.detach().numpy().copy() for n, t in self.factory().state_dict().items()}

    def model_for(self, client_id, round, state):
        return ServedModel(state=self.state, factory=self.factory)

    def apply(self, server, aggregate, rng):
        self.released = aggregate


class _Nudged(ServerAdversary):
    """Sends every client the same weights, one of them changed: a crafted weight inside the agreed
    architecture (trap weights)."""

    honest_checks = False

    def model_for(self, client_id, round, state):
        return {n: (a + np.float32(0.25) if n.endswith("1.bias") else a) for n, a in state.items()}


class _Split(ServerAdversary):
    """Client-0 trains other weights than everyone else (model inconsistency)."""

    honest_checks = False

    def model_for(self, client_id, round, state):
        return state if client_id != "client-0" else {n: a * np.float32(2) for n, a in state.items()}


def test_the_fingerprint_names_the_architecture_not_the_weights():
    torch.manual_seed(0)
    a, b = MLP((1, 8, 8), 10), MLP((1, 8, 8), 10)
    assert architecture_fingerprint(a) == architecture_fingerprint(b)
    assert architecture_fingerprint(a) != architecture_fingerprint(MLP((1, 8, 8), 10, hidden=65))
    added = nn.Sequential(nn.Linear(64, 64), MLP((64,), 10))
    assert architecture_fingerprint(added) != architecture_fingerprint(MLP((64,), 10))


def test_a_served_architecture_is_trained_unless_the_architecture_is_pinned():
    liar = _Wider()
    res = run_simulation(_config(defences=("commitments",)), adversary=liar)
    assert res.rounds[0].aborted is None and liar.released["net.1.weight"].shape == (96, 64)
    with pytest.raises(AllClientsDroppedError):
        run_simulation(_config(), adversary=_Wider())  # the default pins it
    res = run_simulation(_config(clients=4, dropouts=[]), adversary=ServerAdversary())
    assert res.rounds[0].aborted is None  # the honest server is not affected


def test_pinned_clients_say_why_they_refuse(caplog):
    with pytest.raises(AllClientsDroppedError), caplog.at_level("WARNING"):
        run_simulation(_config(), adversary=_Wider())
    assert "ArchitectureMismatchError" in caplog.text or "another architecture" in caplog.text


def test_crafted_weights_are_refused_with_provenance_only():
    res = run_simulation(_config(), adversary=_Nudged())
    assert res.rounds[0].aborted is None and len(res.rounds[0].participants) == 4
    with pytest.raises(AllClientsDroppedError):
        run_simulation(_config(defences=("commitments", "architecture", "provenance")), adversary=_Nudged())


def test_provenance_follows_an_honest_server_through_every_round():
    """Five rounds, FedAtt with server noise from the public seed and a dropout that aborts a
    round: every client's own copy equals the server's model, so no client refuses anything."""
    cfg = _config(rounds=5, aggregation="fedatt", rule_options={"noise_std": 1e-3}, clients=6, preset="strict",
                  defences=("commitments", "architecture", "provenance"),
                  dropouts=[{"round": 2, "client": "client-1", "stage": "during_decryption"},
                            {"round": 2, "client": "client-0", "stage": "during_decryption"},
                            {"round": 2, "client": "client-2", "stage": "during_decryption"},
                            {"round": 2, "client": "client-3", "stage": "during_decryption"},
                            {"round": 2, "client": "client-4", "stage": "during_decryption"},
                            {"round": 2, "client": "client-5", "stage": "during_decryption"}])
    res = run_simulation(cfg)
    assert res.rounds[2].aborted and all(not r.rejected for r in res.rounds)
    assert [len(r.participants) for r in res.rounds] == [6, 6, 0, 6, 6]


def test_inconsistent_models_pass_only_when_receipts_do_not_bind_the_model():
    res = run_simulation(_config(defences=()), adversary=_Split())
    assert res.rounds[0].aborted is None
    with pytest.raises(ModelInconsistencyError):
        run_simulation(_config(), adversary=_Split())


def test_a_release_binds_its_values_run_and_round(compact_keys):
    ids, roster = secagg.generate_identities(["a", "b"], group_size=2)
    cset = secagg.ContributorSet(run="r", round=3, key_holder="a", members=("a", "b"),
                                 receipts=("0" * 64, "1" * 64))
    release = secagg.Release.signed({"w": np.arange(3.0)}, cset, ids["a"])
    release.verify(roster, run="r", round=3)
    with pytest.raises(secagg.ReplayError):
        release.verify(roster, run="r", round=4)
    forged = secagg.Release(values={"w": np.arange(3.0) + 1e-9}, contributors=release.contributors,
                            contributor_set=cset, signature=release.signature)
    with pytest.raises(secagg.SignatureError):
        forged.verify(roster, run="r", round=3)
    with pytest.raises(secagg.AuthenticationError):
        secagg.Release(values={"w": np.arange(3.0)}, contributors=("a", "b")).verify(roster, run="r", round=3)


def test_provenance_refuses_an_unsigned_release_and_then_any_model():
    ids, roster = secagg.generate_identities(["a", "b"], group_size=2)
    initial = {"w": np.zeros(3, np.float32)}
    prov = Provenance(initial, rule=FedAvg(), roster=roster, run="r", server_rng=np.random.default_rng)
    prov.check(initial)
    with pytest.raises(secagg.AuthenticationError):
        prov.advance(0, secagg.Release(values={"w": np.ones(3)}, contributors=("a", "b")))
    prov.check(initial)  # still the committed model: an unverified release moved nothing


def test_provenance_needs_signed_releases():
    with pytest.raises(InvalidConfigError, match="provenance"):
        _config(protection="plain", defences=("provenance",))
    with pytest.raises(InvalidConfigError, match="defences"):
        _config(defences=("firewall",))

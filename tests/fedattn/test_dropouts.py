"""Dropouts at every stage of a round leave the survivors' aggregate or a clear abort, never a wrong
model; a server that sends clients different models is caught before anything is released."""

from __future__ import annotations

import numpy as np
import pytest

from fedattn.data import load_dataset
from fedattn.errors import InvalidConfigError, ModelInconsistencyError
from fedattn.models import float_state, make_model
from fedattn.simulation import ServerAdversary, SimulationConfig, run_simulation


def _config(**kw):
    base = dict(clients=4, rounds=1, protection="ckks", preset="compact", aggregation="fedavg",
                rule_options={"equal_weights": True}, seed=3, min_contributors=2)
    return SimulationConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def keys():
    import secagg

    return secagg.generate_keys(preset="compact")


@pytest.fixture(scope="module")
def reference(keys):
    """Plaintext runs with exactly the given survivors, to compare with."""
    cache = {}

    def run(survivors: tuple[str, ...]):
        if survivors not in cache:
            gone = [{"round": 0, "client": f"client-{i}", "stage": "before_upload"} for i in range(4)
                    if f"client-{i}" not in survivors]
            cache[survivors] = run_simulation(_config(protection="plain", dropouts=gone))
        return cache[survivors]

    return run


def _close(a, b, tol=1e-4):
    return all(np.max(np.abs(a[n] - b[n])) < tol for n in a)


@pytest.mark.parametrize("stage", ["before_upload", "during_upload", "after_upload"])
def test_a_client_leaving_before_the_set_takes_its_group_out(keys, reference, stage):
    """Groups of 2 (client-0, client-1 | client-2, client-3): client-1 leaves, so its group sits the
    round out and the other group's sum is released - never a sum that differs from another
    release by less than a whole group."""
    res = run_simulation(_config(dropouts=[{"round": 0, "client": "client-1", "stage": stage}]), keys=keys)
    rec, view = res.rounds[0], res.views[0]
    assert rec.aborted is None
    assert tuple(rec.participants) == ("client-2", "client-3")
    assert "client-1" in rec.dropped
    kinds = {r.client_id: r.kind for r in view.rejections}
    if stage == "during_upload":
        assert kinds["client-1"] == "PayloadError"
    if stage != "before_upload":
        assert kinds["client-0"] == "EmptyAggregationError"  # its group was incomplete
    assert _close(res.final_state, reference(("client-2", "client-3")).final_state)


@pytest.mark.parametrize("stage", ["during_signing", "during_decryption"])
def test_a_client_leaving_after_the_set_was_proposed_aborts_the_round(keys, stage):
    """The set names its members and its one key holder, and no member signs a second set for the
    round: with a shared key, a member or the key holder leaving at that point aborts the round and
    the model stays as it was (the threshold committee is what tolerates key-holder dropouts)."""
    holder = "client-0"  # round 0 asks the first of the online contributors
    res = run_simulation(_config(dropouts=[{"round": 0, "client": holder, "stage": stage}]), keys=keys)
    rec = res.rounds[0]
    assert rec.aborted and "ClientUnreachableError" in rec.aborted and rec.participants == []
    data = load_dataset("digits", seed=3)
    initial = float_state(make_model("mlp", input_shape=data.input_shape, n_classes=data.n_classes, seed=3))
    assert all(np.array_equal(res.final_state[n], initial[n]) for n in initial)
    two = run_simulation(_config(rounds=2, dropouts=[{"round": 0, "client": holder, "stage": stage}]), keys=keys)
    assert two.rounds[1].aborted is None and len(two.rounds[1].participants) == 4


class _TargetingServer(ServerAdversary):
    """Sends client-2 a crafted model (the model-inconsistency attack of Pasquini et al., CCS 2022),
    and skips its own commitment check, as an attacking server would."""

    honest_checks = False

    def model_for(self, client_id, round, state):
        if client_id != "client-2":
            return state
        return {n: a + 0.5 for n, a in state.items()}


def test_model_inconsistency_is_detected_before_release(keys):
    with pytest.raises(ModelInconsistencyError, match="different global models"):
        run_simulation(_config(), keys=keys, adversary=_TargetingServer())


def test_an_honest_server_drops_an_upload_committed_to_another_model(keys):
    """The honest server checks commitments too: a client committing to another model is dropped with
    its group, instead of making the key holder refuse the whole round."""
    class _OneLiar(ServerAdversary):
        def model_for(self, client_id, round, state):  # client-2 trains on another model; the server checks
            return state if client_id != "client-2" else {n: a + 0.5 for n, a in state.items()}

    res = run_simulation(_config(), keys=keys, adversary=_OneLiar())
    rec, view = res.rounds[0], res.views[0]
    assert rec.aborted is None and tuple(rec.participants) == ("client-0", "client-1")
    assert {r.client_id: r.kind for r in view.rejections}["client-2"] == "ModelInconsistencyError"


@pytest.mark.parametrize("bad", [{"round": 0, "client": "client-0", "stage": "lunch"},
                                 {"round": -1, "client": "c", "stage": "after_upload"},
                                 {"client": "c", "stage": "after_upload"}])
def test_bad_scripted_dropout(bad):
    with pytest.raises(InvalidConfigError, match="dropout"):
        _config(dropouts=[bad])

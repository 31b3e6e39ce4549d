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
                rule_options={"equal_weights": True}, seed=3)
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


@pytest.mark.parametrize("stage,counts", [("before_upload", False), ("during_upload", False), ("after_upload", True)])
def test_a_client_leaving_at_each_stage(keys, reference, stage, counts):
    res = run_simulation(_config(dropouts=[{"round": 0, "client": "client-1", "stage": stage}]), keys=keys)
    rec = res.rounds[0]
    assert rec.aborted is None
    survivors = ("client-0", "client-1", "client-2", "client-3") if counts else ("client-0", "client-2", "client-3")
    assert tuple(rec.participants) == survivors
    assert "client-1" in rec.dropped
    if stage == "during_upload":
        view = res.views[0]
        assert [(r.client_id, r.kind) for r in view.rejections] == [("client-1", "PayloadError")]
    assert _close(res.final_state, reference(survivors).final_state)


def test_a_key_holder_leaving_during_decryption_hands_over(keys, reference):
    res = run_simulation(_config(dropouts=[{"round": 0, "client": "client-0", "stage": "during_decryption"}]), keys=keys)
    rec = res.rounds[0]
    assert rec.aborted is None and len(rec.participants) == 4
    assert _close(res.final_state, reference(("client-0", "client-1", "client-2", "client-3")).final_state)


def test_no_key_holder_left_aborts_the_round_and_keeps_the_model(keys):
    gone = [{"round": 0, "client": f"client-{i}", "stage": "during_decryption"} for i in range(3)]
    gone.append({"round": 0, "client": "client-3", "stage": "after_upload"})  # uploaded, then unreachable
    one = run_simulation(_config(dropouts=gone), keys=keys)
    assert one.rounds[0].aborted and "DecryptionAbortedError" in one.rounds[0].aborted
    assert one.rounds[0].participants == []
    data = load_dataset("digits", seed=3)
    initial = float_state(make_model("mlp", input_shape=data.input_shape, n_classes=data.n_classes, seed=3))
    assert all(np.array_equal(one.final_state[n], initial[n]) for n in initial)
    two = run_simulation(_config(rounds=2, dropouts=gone), keys=keys)
    assert two.rounds[1].aborted is None and len(two.rounds[1].participants) == 4


class _TargetingServer(ServerAdversary):
    """Sends client-2 a crafted model (the model-inconsistency attack of Pasquini et al., CCS 2022)."""

    def model_for(self, client_id, round, state):
        if client_id != "client-2":
            return state
        return {n: a + 0.5 for n, a in state.items()}


def test_model_inconsistency_is_detected_before_release(keys):
    with pytest.raises(ModelInconsistencyError, match="different global models"):
        run_simulation(_config(), keys=keys, adversary=_TargetingServer())


def test_unsigned_simulation_cannot_detect_it(keys):
    """Without signed commitments the attack goes through: the check is what stops it."""
    res = run_simulation(_config(sign_uploads=False), keys=keys, adversary=_TargetingServer())
    assert res.rounds[0].aborted is None


@pytest.mark.parametrize("bad", [{"round": 0, "client": "client-0", "stage": "lunch"}, {"round": -1, "client": "c", "stage": "after_upload"},
                                 {"client": "c", "stage": "after_upload"}])
def test_bad_scripted_dropout(bad):
    with pytest.raises(InvalidConfigError, match="dropout"):
        _config(dropouts=[bad])

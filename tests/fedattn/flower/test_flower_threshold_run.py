"""Threshold keys in a real Flower run (Ray simulation engine, in-process ServerApp): six clients
with their own keys from `secfl keys ceremony`, a committee of five, any three release.

Round 2 loses two members during decryption and still releases; round 3 loses three and aborts,
leaving the model as it was. The final model must equal the standalone single-key run of two
rounds with the same seeds within 1e-4 (the release noise of two different key modes)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Error, Message  # noqa: E402
from helpers.flower_sim import apps, example_task, simulate  # noqa: E402

from fedattn.flower import records as R  # noqa: E402
from fedattn.simulation import SimulationConfig, run_simulation  # noqa: E402
from secfl.ceremony import run_local_ceremony  # noqa: E402

CLIENTS, COMMITTEE, THRESHOLD, ROUNDS = 6, 5, 3, 3
GONE = {2: {3, 4}, 3: {0, 1, 3}}  # round -> partitions whose nodes stop answering during decryption


def _drop(msg, context, call_next):
    """A committee member that is gone when the server looks for a quorum: no answer but an error."""
    if msg.metadata.message_type == R.READY_MESSAGE_TYPE:
        rnd = int(msg.content[R.RELEASE_CONFIG][R.CONFIG_ROUND])
        if int(context.node_config["partition-id"]) in GONE.get(rnd, ()):
            return Message(Error(code=0, reason="the node left during decryption"), reply_to=msg)
    return call_next(msg, context)


@pytest.fixture(scope="module")
def threshold_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("flower-threshold")
    keys = base / "ceremony"
    run_local_ceremony(keys, clients=CLIENTS, committee=COMMITTEE, threshold=THRESHOLD, group_size=CLIENTS)
    task = example_task()
    folder = lambda ctx: str(keys)  # noqa: E731 - the ceremony's layout: each node takes its own folder
    built = apps(task, task.Settings(), locate=folder, server_ctx=None, nodes=CLIENTS, rounds=ROUNDS,
                 partitions=CLIENTS, locate_identity=folder, locate_roster=lambda ctx: str(keys / "roster.json"),
                 key_holder_options={"locate_epoch": lambda ctx: str(keys / "epoch.json"),
                                     "locate_holder_key": folder, "locate_holder_shares": folder},
                 outer_mods=(_drop,), epoch=keys / "epoch.json", roster=keys / "roster.json")
    return simulate(base, *built, nodes=CLIENTS)


def test_two_members_lost_release_three_lost_abort_and_the_model_matches_single_key(threshold_run):
    history = threshold_run["strategy"].history
    assert [h.aborted is None for h in history] == [True, True, False]
    assert "only 2 committee member(s) reachable; a release needs 3" in history[2].aborted
    assert all(sorted(h.contributors) == [f"client-{i}" for i in range(CLIENTS)] for h in history[:2])
    sent = threshold_run["grid"].sent
    partials = [m for m in sent if m.metadata.message_type == R.PARTIAL_MESSAGE_TYPE]
    assert len(partials) == 2 * THRESHOLD  # rounds 1 and 2; nothing was asked in round 3
    assert not [m for m in sent if m.metadata.message_type == R.RELEASE_MESSAGE_TYPE]  # nobody releases alone
    # the same federation with one shared key set, two rounds: round 3's abort left the model unchanged
    single = run_simulation(SimulationConfig(clients=CLIENTS, rounds=2, aggregation="fedatt", preset="strict",
                                             seed=0, protection="ckks"))
    final = threshold_run["result"].arrays.to_numpy_ndarrays()
    diff = max(float(np.abs(a - single.final_state[n]).max()) for a, n in zip(final, single.final_state))
    assert diff <= 1e-4
    assert threshold_run["left"] == [] and threshold_run["created"] == []
    print(f"\nFlower threshold run vs standalone single key: final model max |diff| {diff:.2e}; "
          f"{threshold_run['seconds']:.1f} s")

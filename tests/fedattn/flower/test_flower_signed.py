"""A malicious server on Flower: the key holders' and contributors' checks, on real Flower Messages
and ClientApps without a simulation engine (the Ray run of tests/fedattn/flower/test_flower.py goes
through the same code). The server here is malicious where a test says so: it crafts models, sets a
node's run config, replays uploads of another run, forges uploads, asks for a second set."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import RecordDict  # noqa: E402
from helpers.flower import (  # noqa: E402
    SHAPES,
    LocalGrid,
    client_app,
    deal,
    make_message,
    party,
    reply_from,
    server_process,  # noqa: F401 - a fixture
    train_message,
    zeros_model,
)

import secagg  # noqa: E402
from fedattn.flower import SecAggFedAvg  # noqa: E402
from fedattn.flower import records as R  # noqa: E402

pytestmark = pytest.mark.usefixtures("server_process")
STEPS = (0.5, -0.1, 0.2)


@pytest.fixture(scope="module")
def dealer(tmp_path_factory, compact_keys):
    """`secfl keys generate --clients 3`: one enrolment group of three."""
    return deal(tmp_path_factory.mktemp("dealer"), compact_keys, clients=3)


@pytest.fixture
def ledgers(tmp_path):
    folder = tmp_path / "ledgers"
    folder.mkdir()
    return folder


def _nodes(dealer, ledgers, run: int = 1, run_configs=None) -> dict:
    return {n: (client_app(step=STEPS[n - 1])[0],
                party(dealer, n, partition=n - 1, ledgers=ledgers, run=run, run_config=(run_configs or {}).get(n)))
            for n in (1, 2, 3)}


def _strategy(dealer, nodes, **options) -> SecAggFedAvg:
    strategy = SecAggFedAvg(public_context=dealer.server_ctx, roster=dealer.roster, rule="fedavg",
                            rule_options={"equal_weights": True}, **options)
    strategy._global, strategy._grid = zeros_model(), LocalGrid(nodes)  # what configure_train sets
    return strategy


def _train(nodes, strategy, rnd=1, models=None) -> dict:
    return {n: app(train_message(strategy, node=n, rnd=rnd, run=ctx.run_id, model=(models or {}).get(n)), ctx)
            for n, (app, ctx) in nodes.items()}


def test_a_round_releases_after_every_member_signed_the_set(dealer, ledgers):
    nodes = _nodes(dealer, ledgers)
    strategy = _strategy(dealer, nodes)
    replies = _train(nodes, strategy)
    assert all(R.payload_of(r.content, who="t").startswith(b"SECFLUP2") for r in replies.values())
    arrays, _ = strategy.aggregate_train(1, list(replies.values()))
    entry = strategy.history[-1]
    assert arrays is not None and not entry.rejected and entry.aborted is None
    assert sorted(r.client_id for r in entry.receipts) == ["client-0", "client-1", "client-2"]
    asked = strategy._grid.asked
    assert sorted(n for n, t in asked if t == R.SIGN_MESSAGE_TYPE) == [1, 2, 3]
    assert [n for n, t in asked if t == R.RELEASE_MESSAGE_TYPE] == [entry.key_holder]
    for name in SHAPES:
        np.testing.assert_allclose(entry.released[name], np.mean(STEPS), atol=1e-3)


def test_a_server_that_sends_one_client_another_model_gets_no_release(dealer, ledgers, caplog):
    nodes = _nodes(dealer, ledgers)
    strategy = _strategy(dealer, nodes)
    crafted = zeros_model()
    crafted["fc.weight"][0, 0] = 3.0  # e.g. Pasquini et al.'s model that makes one client's update stand out
    replies = _train(nodes, strategy, models={3: crafted})
    assert strategy.aggregate_train(1, list(replies.values())) == (None, None)  # skipped, the model kept
    assert "ModelInconsistencyError" in caplog.text and "different global models" in caplog.text


def test_the_run_config_is_part_of_the_commitment(dealer, ledgers, caplog, monkeypatch):
    """The SuperLink gives two nodes lr=1e-30 through the run config, which the ClientApp reads: their
    updates are zero and the 'mean of three' is a third of node 3's update. With the run config left
    out of the commitment, that is released; with it in, the commitments differ and nothing is."""
    bypass = {1: {"lr": 1e-30}, 2: {"lr": 1e-30}, 3: {"lr": 0.1}}
    commit = R.train_commitment
    with monkeypatch.context() as off:
        off.setattr(R, "train_commitment", lambda *a, run_config=None, **k: commit(*a, **k))
        nodes = _nodes(dealer, ledgers, run=1, run_configs=bypass)
        strategy = _strategy(dealer, nodes)
        assert strategy.aggregate_train(1, list(_train(nodes, strategy).values()))[0] is not None
        node_3 = 3 * strategy.history[-1].released["fc.bias"]
        np.testing.assert_allclose(node_3, STEPS[2] * 0.1, atol=1e-4)  # node 3's update, isolated

    nodes = _nodes(dealer, ledgers, run=2, run_configs=bypass)
    strategy = _strategy(dealer, nodes)
    assert strategy.aggregate_train(1, list(_train(nodes, strategy).values())) == (None, None)
    assert "ModelInconsistencyError" in caplog.text


def test_uploads_of_another_run_are_not_released(dealer, ledgers, caplog):
    """A server replays run 1's round-1 uploads of clients 0 and 1 in run 2, to subtract their sum
    from run 1's release. The nodes keep their ledgers across the runs, as a SuperNode does."""
    old_nodes = _nodes(dealer, ledgers, run=1)
    old_strategy = _strategy(dealer, old_nodes)
    old = _train(old_nodes, old_strategy)
    assert old_strategy.aggregate_train(1, list(old.values()))[0] is not None  # run 1 released {0, 1, 2}
    nodes = _nodes(dealer, ledgers, run=2)
    strategy = _strategy(dealer, nodes)
    _train(nodes, strategy)  # run 2, round 1: the same global model and configuration as in run 1
    assert strategy.aggregate_train(1, [old[1], old[2]]) == (None, None)
    # refused twice over: the receipts name run 1, and {client-0, client-1} is not a whole group
    assert any(words in caplog.text for words in ("ReplayError", "another run", "no enrolment group"))
    state = strategy.server_role.aggregator.open_round(run="2", round=1, layout=strategy.protocol.upload_layout(
        zeros_model()))
    with pytest.raises(secagg.ReplayError):
        state.receive(R.payload_of(old[1].content, who="t"))


def test_forged_unknown_and_replayed_uploads_are_dropped(dealer, ledgers, compact_keys, tmp_path):
    # not the dealer's: client-2 with a key it never issued, client-9 whom the roster does not know
    impostors = deal(tmp_path / "impostors", compact_keys, clients=10)
    nodes = _nodes(dealer, ledgers)
    strategy = _strategy(dealer, nodes)
    stale = _train({3: nodes[3]}, strategy, rnd=1)[3]  # client-2's round-1 upload, replayed in round 2
    replies = [r for r in _train(nodes, strategy, rnd=2).values()]
    app, _ = client_app()
    replies.append(app(train_message(strategy, node=5, rnd=2), party(impostors, 5, partition=2, ledgers=tmp_path)))
    replies.append(app(train_message(strategy, node=6, rnd=2), party(impostors, 6, partition=9, ledgers=tmp_path)))
    replies.append(reply_from(stale.content, node=7))
    arrays, _ = strategy.aggregate_train(2, replies)
    entry = strategy.history[-1]
    assert arrays is not None and sorted(entry.contributors) == ["client-0", "client-1", "client-2"]
    rejected = entry.rejected
    assert "SignatureError" in rejected["node-5"] and "does not verify" in rejected["node-5"]
    assert "UnknownClientError" in rejected["node-6"]
    assert "ReplayError" in rejected["node-7"] or "DuplicateUploadError" in rejected["node-7"]


def test_a_contributor_signs_one_set_per_round(dealer, ledgers):
    """Two sets of one round - {0, 1, 2} and {1, 2}, say - released by two key holders would give
    client 0's update by difference: each node signs one set per round."""
    nodes = _nodes(dealer, ledgers)
    strategy = _strategy(dealer, nodes)
    replies = _train(nodes, strategy)
    state = strategy.server_role.aggregator.open_round(run="1", round=1, layout=strategy.protocol.upload_layout(
        zeros_model()))
    for reply in replies.values():
        state.receive(R.payload_of(reply.content, who="t"))
    sets = [state.contributor_set(key_holder="client-0"), state.contributor_set(key_holder="client-1")]
    app, ctx = nodes[2]
    answers = [app(make_message(R.set_query(s), message_type=R.SIGN_MESSAGE_TYPE, node=2), ctx) for s in sets]
    assert not answers[0].has_error() and len(R.signature_of(answers[0].content)) == 128
    assert answers[1].has_error() and "another contributor set" in answers[1].error.reason
    again = app(make_message(R.set_query(sets[0]), message_type=R.SIGN_MESSAGE_TYPE, node=2), ctx)
    assert not again.has_error()  # the same set again: the same signature, nothing new


def test_the_ledger_is_atomic_across_concurrent_tasks_and_keyed_by_run(tmp_path):
    """A SuperNode may run two ClientApp tasks at once: exactly one may upload for a round, sign a set,
    or release it."""
    from concurrent.futures import ThreadPoolExecutor

    from fedattn.flower.ledger import FileLedger

    path = tmp_path / "client-0.ledger"
    FileLedger(path)
    assert (path.stat().st_mode & 0o777) == 0o600

    def attempt(call):
        try:
            call()
            return "ok"
        except (secagg.ReplayError, secagg.ReleaseRefusedError) as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(8) as pool:  # one connection per attempt, as separate processes have
        signed = list(pool.map(lambda i: attempt(lambda: FileLedger(path).claim_round("7", 3, f"c{i}")), range(8)))
        sets = list(pool.map(lambda i: attempt(lambda: FileLedger(path).claim_set("7", 3, f"s{i}")), range(8)))
        released = list(pool.map(lambda i: attempt(lambda: FileLedger(path).claim_release("7", 3)), range(8)))
    assert sorted(signed) == ["ReplayError"] * 7 + ["ok"]
    assert sorted(sets) == ["ReleaseRefusedError"] * 7 + ["ok"]
    assert sorted(released) == ["ReleaseRefusedError"] * 7 + ["ok"]
    winner = FileLedger(path).commitment("7", 3)
    assert winner in {f"c{i}" for i in range(8)}
    ledger = FileLedger(path)
    run = str(2**64 - 1)  # Flower's run ids are unsigned 64-bit
    ledger.claim_round(run, 1, "next run")  # another run starts again at round 1
    assert ledger.commitment(run, 1) == "next run" and ledger.commitment(run, 2) is None and ledger.last_round(run) == 1
    with pytest.raises(secagg.ReplayError):
        ledger.claim_round(run, 1, "again")
    ledger.claim_release(run, 1)
    with pytest.raises(secagg.ReleaseRefusedError):
        ledger.claim_release(run, 1)
    assert FileLedger(path).commitment("7", 3) == winner  # a record is never overwritten


def test_a_ledger_that_cannot_be_written_is_a_clear_refusal(dealer, ledgers, tmp_path):
    from fedattn.flower.errors import LedgerError
    from fedattn.flower.ledger import FileLedger

    with pytest.raises(LedgerError, match="secfl-ledger"):
        FileLedger(tmp_path / "no" / "such" / "dir" / "client-0.ledger")
    app, calls = client_app()
    ctx = party(dealer, 1, partition=0, ledgers=ledgers, **{"secfl-ledger": str(tmp_path / "missing-dir" / "x.ledger")})
    reply = app(train_message(_strategy(dealer, {}), node=1), ctx)
    assert reply.has_error() and "LedgerError" in reply.error.reason and calls == []  # nothing trained or sent


def test_release_queries_for_another_run_or_from_non_members_are_refused(dealer, ledgers):
    nodes = _nodes(dealer, ledgers)
    strategy = _strategy(dealer, nodes)
    replies = _train(nodes, strategy)
    state = strategy.server_role.aggregator.open_round(run="1", round=1, layout=strategy.protocol.upload_layout(
        zeros_model()))
    for reply in replies.values():
        state.receive(R.payload_of(reply.content, who="t"))
    cset = state.contributor_set(key_holder="client-0")
    request = state.request(cset, {})  # no member signed it
    app, ctx = nodes[1]
    query = R.release_query(request, round=1, fingerprint=secagg.load_public_context(dealer.server_ctx).fingerprint)
    reply = app(make_message(query, message_type=R.RELEASE_MESSAGE_TYPE, node=1), ctx)
    assert reply.has_error() and "every member must sign" in reply.error.reason
    other_run = make_message(query, message_type=R.RELEASE_MESSAGE_TYPE, node=1, run=9)
    reply = app(other_run, party(dealer, 1, partition=0, ledgers=ledgers, run=9))
    assert reply.has_error() and "another run" in reply.error.reason
    assert RecordDict  # (imported for the queries above)

"""Signed uploads on Flower: the strategy's checks and the key holders' receipt checks, on real
Flower Messages and ClientApps without a simulation engine (the Ray run of tests/fedattn/flower/test_flower.py is
signed as well). The server here is malicious where a test says so: it crafts models, replays
uploads of another run, forges uploads."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, RecordDict  # noqa: E402
from helpers.flower import (  # noqa: E402
    SHAPES,
    LocalGrid,
    client_app,
    make_message,
    node_context,
    reply_from,
    server_process,  # noqa: F401 - a fixture
    train_message,
    zeros_model,
)

import secagg  # noqa: E402
from fedattn.flower import SecAggFedAvg, make_secagg_mod  # noqa: E402
from fedattn.flower import records as R  # noqa: E402
from secagg.signing import deal_identities  # noqa: E402

pytestmark = pytest.mark.usefixtures("server_process")
STEPS = (0.5, -0.1, 0.2)


@pytest.fixture(autouse=True)
def ledgers(tmp_path, monkeypatch):
    """Each test's nodes keep their ledgers (what they signed and released) in a fresh folder."""
    folder = tmp_path / "ledgers"
    folder.mkdir()
    monkeypatch.setenv("SECFL_LEDGER", str(folder))
    return folder


@pytest.fixture(scope="module")
def key_files(tmp_path_factory, compact_keys):
    return compact_keys.save(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def dealer(tmp_path_factory):
    """`secfl keys generate --clients 3`'s identities and roster."""
    out = tmp_path_factory.mktemp("identities")
    deal_identities((f"client-{i}" for i in range(3)), out)
    return out


def _node(key_files, dealer, node: int, *, step: float = 0.5, identity_dir=None, run: int = 1, partition=None,
          **node_config):
    """Node ``node`` (client-<node - 1>): its identity from the folder, the roster for releasing."""
    identity = identity_dir or dealer
    secure = make_secagg_mod(locate_key=lambda ctx: key_files["client"], locate_identity=lambda ctx: str(identity))
    app, calls = client_app([secure], key_files["client"], step=step, roster=dealer / "roster.json", identity=identity)
    pid = node - 1 if partition is None else partition
    return app, node_context(node=node, run=run, **{"partition-id": pid}, **node_config), calls


def _nodes(key_files, dealer, run: int = 1) -> dict:
    return {n: _node(key_files, dealer, n, step=STEPS[n - 1], run=run)[:2] for n in (1, 2, 3)}


def _strategy(key_files, dealer, nodes, **options) -> SecAggFedAvg:
    strategy = SecAggFedAvg(public_context=key_files["server"], roster=dealer / "roster.json", rule="fedavg",
                            rule_options={"equal_weights": True}, **options)
    strategy._global, strategy._grid = zeros_model(), LocalGrid(nodes)  # what configure_train sets
    return strategy


def _train(nodes, strategy, rnd=1, models=None) -> dict:
    return {n: app(train_message(strategy, node=n, rnd=rnd, run=ctx.run_id, model=(models or {}).get(n)), ctx)
            for n, (app, ctx) in nodes.items()}


def test_signed_round_releases_after_the_key_holder_checks_receipts(key_files, dealer):
    nodes = _nodes(key_files, dealer)
    strategy = _strategy(key_files, dealer, nodes)
    replies = _train(nodes, strategy)
    assert all(R.payload_of(r.content, who="t").startswith(b"SFLSIGN1") for r in replies.values())
    arrays, _ = strategy.aggregate_train(1, list(replies.values()))
    entry = strategy.history[-1]
    assert arrays is not None and not entry.rejected
    assert sorted(r.client_id for r in entry.receipts) == ["client-0", "client-1", "client-2"]
    for name in SHAPES:
        np.testing.assert_allclose(entry.released[name], np.mean(STEPS), atol=1e-3)


def test_a_server_that_sends_one_client_another_model_gets_no_release(key_files, dealer, caplog):
    nodes = _nodes(key_files, dealer)
    strategy = _strategy(key_files, dealer, nodes)
    crafted = zeros_model()
    crafted["fc.weight"][0, 0] = 3.0  # e.g. Pasquini et al.'s model that makes one client's update stand out
    replies = _train(nodes, strategy, models={3: crafted})
    assert strategy.aggregate_train(1, list(replies.values())) == (None, None)  # skipped, the model kept
    assert sorted(strategy._grid.asked) == [1, 2, 3]  # every key holder was asked, and each refused
    assert caplog.text.count("ModelInconsistencyError") >= 3 and "different global models" in caplog.text


def test_a_key_holder_compares_the_receipts_with_its_own_round(key_files, dealer, caplog, tmp_path):
    nodes = _nodes(key_files, dealer)
    # a key holder that did not train this round (client-0's keys on another machine, its own ledger)
    nodes[4] = _node(key_files, dealer, 4, partition=0, **{"secfl-ledger": str(tmp_path)})[:2]
    strategy = _strategy(key_files, dealer, nodes, key_holders=[4, 1])
    crafted = {n: a + 1.0 for n, a in zeros_model().items()}
    replies = _train({n: nodes[n] for n in (1, 2, 3)}, strategy, models={2: crafted, 3: crafted})
    arrays, _ = strategy.aggregate_train(1, [replies[2], replies[3]])  # the server leaves node 1 out
    # node 4 has no view of the round; node 1 was given another model than the two contributors
    # agree on; node 2, a contributor, releases what it and node 3 were given
    assert strategy._grid.asked == [4, 1, 2] and strategy.history[-1].key_holder == 2 and arrays is not None
    assert "releases only rounds of this run it uploaded for itself" in caplog.text
    assert "ModelInconsistencyError" in caplog.text and "(the key holder)" in caplog.text


def test_uploads_of_another_run_are_not_released(key_files, dealer, caplog):
    """A server replays run 1's round-1 uploads of clients 0 and 1 in run 2, where the key holder
    has not released round 1 yet, to subtract their sum from run 1's full aggregate. The nodes keep
    their ledgers across the runs, as a SuperNode does (and Flower may hand run 2 run 1's state)."""
    old_nodes = _nodes(key_files, dealer, run=1)
    old = _train(old_nodes, _strategy(key_files, dealer, old_nodes))
    nodes = _nodes(key_files, dealer, run=2)
    strategy = _strategy(key_files, dealer, nodes)
    _train(nodes, strategy)  # run 2, round 1: the same global model and configuration as in run 1
    assert strategy.aggregate_train(1, [old[1], old[2]]) == (None, None)
    assert sorted(strategy._grid.asked) == [1, 2]
    assert caplog.text.count("ModelInconsistencyError") >= 2


def test_unsigned_forged_unknown_and_replayed_uploads_are_dropped(key_files, dealer, compact_keys, tmp_path):
    # not the dealer's: client-2 with a key it never issued, client-9 whom the roster does not know
    deal_identities(["client-2", "client-9"], tmp_path)
    nodes = _nodes(key_files, dealer)
    strategy = _strategy(key_files, dealer, nodes)
    stale = _train({3: nodes[3]}, strategy, rnd=1)[3]  # client-2's round-1 upload, replayed in round 2
    replies = [r for r in _train({n: nodes[n] for n in (1, 2)}, strategy, rnd=2).values()]
    app, ctx, _ = _node(key_files, dealer, 5, identity_dir=tmp_path, partition=2)
    replies.append(app(train_message(strategy, node=5, rnd=2), ctx))
    app, ctx, _ = _node(key_files, dealer, 6, identity_dir=tmp_path, partition=9)
    replies.append(app(train_message(strategy, node=6, rnd=2), ctx))
    unsigned = secagg.encrypt_update(zeros_model(), compact_keys.secret, round=2, client_id="client-2",
                                     weights={n: 1.0 for n in SHAPES})
    replies.append(reply_from(RecordDict({"arrays": R.payload_record(unsigned.to_bytes())}), node=7))
    replies.append(reply_from(stale.content, node=3))
    arrays, _ = strategy.aggregate_train(2, replies)
    entry = strategy.history[-1]
    assert arrays is not None and sorted(entry.contributors) == ["client-0", "client-1"]
    rejected = entry.rejected
    assert "SignatureError" in rejected["node-5"] and "does not verify" in rejected["node-5"]
    assert "UnknownClientError" in rejected["node-6"]
    assert "SignatureError" in rejected["node-7"] and "not a signed envelope" in rejected["node-7"]
    assert "ReplayError" in rejected["node-3"] and "round 1" in rejected["node-3"]


def test_signing_refusals_come_before_training(key_files, dealer):
    signed = _strategy(key_files, dealer, {})
    unsigned = SecAggFedAvg(public_context=key_files["server"])
    for strategy, identity, error in [
        (signed, None, "MissingIdentityError"),  # no identity configured, SECFL_CLIENT_IDENTITY unset
        (unsigned, str(dealer), "UnsignedRoundError"),  # the server would not check signatures
    ]:
        mod = make_secagg_mod(locate_key=lambda ctx: key_files["client"], locate_identity=lambda ctx, p=identity: p)
        app, calls = client_app([mod], key_files["client"])
        reply = app(train_message(strategy), node_context())
        assert reply.has_error() and error in reply.error.reason, reply.error.reason
        assert calls == []
    # one signed update per round: a second train message for this or an earlier round is refused
    app, ctx, calls = _node(key_files, dealer, 1)
    assert not app(train_message(signed, node=1, rnd=2), ctx).has_error()
    for rnd in (2, 1):
        again = app(train_message(signed, node=1, rnd=rnd, model={n: a + 1 for n, a in zeros_model().items()}), ctx)
        assert again.has_error() and "ReplayError" in again.error.reason
    assert len(calls) == 1


def test_key_holders_that_cannot_check_receipts_refuse(key_files, dealer, compact_keys):
    ups = [secagg.encrypt_update({"w": np.ones(3, np.float32)}, compact_keys.secret, round=1, client_id=f"client-{k}",
                                 weights={"w": 1.0}) for k in range(2)]
    wire = secagg.aggregate(ups, compact_keys.public).to_bytes()

    def query(**extra):
        return make_message(RecordDict({
            R.AGGREGATE_RECORD: R.payload_record(wire, name="aggregate", stype=R.AGGREGATE_STYPE),
            R.RELEASE_CONFIG: ConfigRecord({R.CONFIG_ROUND: 1, R.CONFIG_FINGERPRINT: compact_keys.public.fingerprint,
                                            **extra}),
        }), message_type=R.RELEASE_MESSAGE_TYPE)

    cases = [
        (dict(roster=dealer / "roster.json"), {}, "sent no receipts"),
        (dict(identity=dealer), {}, "holds no roster"),  # it signs, so it must check
        (dict(), {R.RELEASE_RECEIPTS: ["{}"]}, "holds no roster"),  # receipts it cannot check
    ]
    for options, extra, words in cases:
        app, _ = client_app([], key_files["client"], **options)
        reply = app(query(**extra), node_context())
        assert reply.has_error() and "ReleaseRefusedError" in reply.error.reason and words in reply.error.reason
    app, _ = client_app([], key_files["client"])  # unsigned deployments release as before
    assert not app(query(), node_context()).has_error()


def test_the_ledger_is_atomic_across_concurrent_tasks_and_keyed_by_run(tmp_path):
    """A SuperNode may run two ClientApp tasks at once: exactly one may sign a round, or release it."""
    from concurrent.futures import ThreadPoolExecutor

    from fedattn.errors import ReplayError
    from fedattn.flower.errors import ReleaseRefusedError
    from fedattn.flower.ledger import FileLedger, StateLedger

    path = tmp_path / "client-0.ledger"
    FileLedger(path)
    assert (path.stat().st_mode & 0o777) == 0o600

    def attempt(call):
        try:
            call()
            return "ok"
        except (ReplayError, ReleaseRefusedError) as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(8) as pool:  # one connection per attempt, as separate processes have
        signed = list(pool.map(lambda i: attempt(lambda: FileLedger(path).claim_round(7, 3, f"c{i}")), range(8)))
        released = list(pool.map(lambda i: attempt(lambda: FileLedger(path).claim_release(7, 3)), range(8)))
    assert sorted(signed) == ["ReplayError"] * 7 + ["ok"]
    assert sorted(released) == ["ReleaseRefusedError"] * 7 + ["ok"]
    winner = FileLedger(path).commitment(7, 3)
    assert winner in {f"c{i}" for i in range(8)}
    for ledger in (FileLedger(path), StateLedger(node_context())):
        run = 2**64 - 1  # Flower's run ids are unsigned 64-bit
        ledger.claim_round(run, 1, "next run")  # another run starts again at round 1
        assert ledger.commitment(run, 1) == "next run" and ledger.commitment(run, 2) is None
        with pytest.raises(ReplayError):
            ledger.claim_round(run, 1, "again")
        ledger.claim_release(run, 1)
        with pytest.raises(ReleaseRefusedError):
            ledger.claim_release(run, 1)
    assert FileLedger(path).commitment(7, 3) == winner  # a record is never overwritten


def test_a_ledger_that_cannot_be_written_is_a_clear_refusal(key_files, dealer, tmp_path):
    from fedattn.flower.errors import LedgerError
    from fedattn.flower.ledger import FileLedger

    with pytest.raises(LedgerError, match="secfl-ledger"):
        FileLedger(tmp_path / "no" / "such" / "dir" / "client-0.ledger")
    app, ctx, calls = _node(key_files, dealer, 1, **{"secfl-ledger": str(tmp_path / "missing-dir" / "x.ledger")})
    reply = app(train_message(_strategy(key_files, dealer, {}), node=1), ctx)
    assert reply.has_error() and "LedgerError" in reply.error.reason and calls == []  # nothing trained or sent

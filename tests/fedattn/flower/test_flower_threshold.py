"""Threshold keys on Flower: the committee as nodes, on real Flower Messages and ClientApps without a
simulation engine (the Ray run in tests/fedattn/flower/test_flower.py goes through the same code).

Five clients, each with its own key from `secfl keys ceremony`, all five on the committee, any three
release. Members drop by not answering; the server lies where a test says so."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Message, RecordDict  # noqa: E402
from helpers.flower import (  # noqa: E402
    SHAPES,
    LocalGrid,
    client_app,
    make_message,
    node_context,
    server_process,  # noqa: F401 - a fixture
    train_message,
    zeros_model,
)

import secagg  # noqa: E402
from fedattn.flower import SecAggFedAvg  # noqa: E402
from fedattn.flower import records as R  # noqa: E402
from secfl.ceremony import run_local_ceremony  # noqa: E402

pytestmark = pytest.mark.usefixtures("server_process")
STEPS = (0.5, -0.1, 0.2, 0.3, -0.4)
NODES = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory):
    out = tmp_path_factory.mktemp("ceremony")
    run_local_ceremony(out, clients=5, committee=5, threshold=3, group_size=5)
    return out


class DroppingGrid(LocalGrid):
    """A grid where some nodes stop answering some queries: ``gone[message_type]`` is a set of nodes;
    ``tamper`` rewrites a query's content before it is delivered (a malicious server)."""

    def __init__(self, nodes, gone=None, tamper=None) -> None:
        super().__init__(nodes)
        self.gone, self.tamper = gone or {}, tamper

    def send_and_receive(self, messages, *, timeout=None):
        live = [m for m in messages if m.metadata.dst_node_id not in self.gone.get(m.metadata.message_type, ())]
        if self.tamper is not None:
            for m in live:
                self.tamper(m)
        return super().send_and_receive(live, timeout=timeout)


def _nodes(ceremony, tmp_path, **overrides) -> dict:
    ledgers = tmp_path / "ledgers"
    ledgers.mkdir(exist_ok=True)
    config = {"secret-key": str(ceremony), "identity": str(ceremony), "roster": str(ceremony / "roster.json"),
              "secfl-ledger": str(ledgers), "epoch": str(ceremony / "epoch.json"), "holder-key": str(ceremony),
              "holder-shares": str(ceremony), **overrides}
    config = {k: v for k, v in config.items() if v is not None}
    return {n: (client_app(step=STEPS[n - 1])[0], node_context(n, **{**config, "partition-id": n - 1})) for n in NODES}


def _strategy(ceremony, nodes, grid=None, **options) -> SecAggFedAvg:
    strategy = SecAggFedAvg(epoch=ceremony / "epoch.json", roster=ceremony / "roster.json", rule="fedavg",
                            rule_options={"equal_weights": True}, **options)
    strategy._global, strategy._grid = zeros_model(), grid or LocalGrid(nodes)
    return strategy


def _round(strategy, nodes, rnd=1):
    replies = [app(train_message(strategy, node=n, rnd=rnd, run=ctx.run_id), ctx) for n, (app, ctx) in nodes.items()]
    return strategy.aggregate_train(rnd, replies)


def test_a_quorum_of_the_committee_releases_the_sum_of_own_key_uploads(ceremony, tmp_path):
    nodes = _nodes(ceremony, tmp_path)
    strategy = _strategy(ceremony, nodes)
    arrays, _ = _round(strategy, nodes)
    entry, asked = strategy.history[-1], strategy._grid.asked
    assert arrays is not None and entry.aborted is None and not entry.rejected
    assert sorted(n for n, t in asked if t == R.READY_MESSAGE_TYPE) == list(NODES)
    partials = [n for n, t in asked if t == R.PARTIAL_MESSAGE_TYPE]
    assert len(partials) == 3 and entry.key_holder in partials
    assert [n for n, t in asked if t == R.COMBINE_MESSAGE_TYPE] == [entry.key_holder]
    assert not [t for _, t in asked if t == R.RELEASE_MESSAGE_TYPE]  # no node releases alone
    for name in SHAPES:
        np.testing.assert_allclose(entry.released[name], np.mean(STEPS), atol=1e-4)


def test_two_members_gone_still_release_three_abort_and_keep_the_model(ceremony, tmp_path, caplog):
    nodes = _nodes(ceremony, tmp_path)
    grid = DroppingGrid(nodes, gone={R.READY_MESSAGE_TYPE: {4, 5}})
    strategy = _strategy(ceremony, nodes, grid)
    arrays, _ = _round(strategy, nodes, rnd=1)
    assert arrays is not None and strategy.history[-1].key_holder in (1, 2, 3)
    assert not {n for n, t in grid.asked if t == R.PARTIAL_MESSAGE_TYPE} & {4, 5}
    grid.gone, before = {R.READY_MESSAGE_TYPE: {1, 2, 4}}, len(grid.asked)
    assert _round(strategy, nodes, rnd=2) == (None, None)  # Flower keeps the global model
    aborted = strategy.history[-1].aborted
    assert aborted.startswith("DecryptionAbortedError") and "only 2 committee member(s) reachable" in aborted
    assert not [n for n, t in grid.asked[before:] if t == R.PARTIAL_MESSAGE_TYPE]  # nothing was asked of anyone
    grid.gone = {}
    assert _round(strategy, nodes, rnd=3)[0] is not None  # the next round goes on


def test_a_member_lost_after_the_quorum_was_asked_aborts_the_round(ceremony, tmp_path):
    nodes = _nodes(ceremony, tmp_path)
    grid = DroppingGrid(nodes)
    strategy = _strategy(ceremony, nodes, grid)
    combiner_of_round_1 = sorted(f"client-{n - 1}" for n in NODES)[1 % 5]  # the rotation of fedattn.round
    others = {n for n in NODES if f"client-{n - 1}" != combiner_of_round_1}
    grid.gone = {R.PARTIAL_MESSAGE_TYPE: others}  # everyone but the combiner is gone once asked
    assert _round(strategy, nodes) == (None, None)
    assert "lost after the quorum was asked" in strategy.history[-1].aborted
    assert not [t for _, t in grid.asked if t == R.COMBINE_MESSAGE_TYPE]


def test_the_combiner_refuses_a_partial_the_server_altered(ceremony, tmp_path):
    def flip(message):
        if message.metadata.message_type == R.COMBINE_MESSAGE_TYPE:
            record = message.content[R.PARTIAL_RECORD]
            name = next(iter(record))
            data = bytearray(record[name].data)
            data[-1] ^= 1
            record[name] = R.Array(dtype="uint8", shape=(len(data),), stype=R.PARTIAL_STYPE, data=bytes(data))

    nodes = _nodes(ceremony, tmp_path)
    strategy = _strategy(ceremony, nodes, DroppingGrid(nodes, tamper=flip))
    assert _round(strategy, nodes) == (None, None)
    assert "refused the combination" in strategy.history[-1].aborted
    assert "AuthenticationError" in strategy.history[-1].aborted


@pytest.mark.parametrize("query", ["ready", "partial", "release"])
def test_members_check_what_the_server_names(ceremony, tmp_path, query):
    nodes = _nodes(ceremony, tmp_path)
    strategy = _strategy(ceremony, nodes)
    app, ctx = nodes[1]
    if query == "ready":  # another epoch than the member's own
        content, kind = R.ready_query(round=1, epoch="0" * 32), R.READY_MESSAGE_TYPE
    elif query == "partial":
        content = R.quorum_query(b"SECFLRQ", round=1, epoch="0" * 32, quorum=["client-0", "client-1", "client-2"])
        kind = R.PARTIAL_MESSAGE_TYPE
    else:  # a single-key release of a threshold node's ciphertexts
        content, kind = R.release_query(b"SECFLRQ", round=1, fingerprint=strategy.public_context.fingerprint), \
            R.RELEASE_MESSAGE_TYPE
    reply = app(make_message(content, message_type=kind, node=1), ctx)
    assert reply.has_error()
    expected = "ReleaseRefusedError" if query == "release" else "KeyMismatchError"
    assert expected in reply.error.reason


def test_a_node_without_a_seat_is_not_ready_and_the_server_needs_no_secret(ceremony, tmp_path):
    nodes = _nodes(ceremony, tmp_path, **{"holder-key": None, "holder-shares": None})
    app, ctx = nodes[1]
    reply = app(make_message(R.ready_query(round=1, epoch=secagg.epoch.Epoch.load(ceremony / "epoch.json").id),
                             message_type=R.READY_MESSAGE_TYPE, node=1), ctx)
    assert reply.has_error() and "is not on a committee" in reply.error.reason
    with pytest.raises(Exception, match="not both"):
        SecAggFedAvg(epoch=ceremony / "epoch.json", public_context=ceremony / "roster.json",
                     roster=ceremony / "roster.json")
    with pytest.raises(Exception, match="client-scored"):
        SecAggFedAvg(epoch=ceremony / "epoch.json", roster=ceremony / "roster.json", protocol="server-scored",
                     rule_options={"score": "l2_squared"})


def test_a_member_that_uploaded_nothing_is_found_by_asking_the_nodes_the_server_cannot_place(tmp_path):
    ceremony = tmp_path / "ceremony"  # enrolment groups of three: client-0..2 release without client-3, -4
    run_local_ceremony(ceremony, clients=6, committee=5, threshold=3, group_size=3)
    nodes = _nodes(ceremony, tmp_path)
    strategy = _strategy(ceremony, nodes, DroppingGrid(nodes, gone={R.READY_MESSAGE_TYPE: {1, 2}}))
    # client-3 and client-4's nodes are not sampled this round: the server has no upload from them
    uploads = [app(train_message(strategy, node=n, rnd=1, run=ctx.run_id), ctx) for n, (app, ctx) in nodes.items()
               if n <= 3]
    arrays, _ = strategy.aggregate_train(1, uploads)
    assert arrays is not None, strategy.history[-1].aborted
    assert strategy.nodes["client-3"] == 4 and strategy.nodes["client-4"] == 5  # found through their answers
    assert strategy.history[-1].key_holder in (3, 4, 5)
    for name in SHAPES:
        np.testing.assert_allclose(strategy.history[-1].released[name], np.mean(STEPS[:3]), atol=1e-4)


@pytest.mark.parametrize("step", [R.PARTIAL_MESSAGE_TYPE, R.COMBINE_MESSAGE_TYPE])
def test_a_malformed_answer_aborts_the_round_instead_of_stopping_the_server(ceremony, tmp_path, step):
    nodes = _nodes(ceremony, tmp_path)

    class Garbling(DroppingGrid):
        def send_and_receive(self, messages, *, timeout=None):
            replies = super().send_and_receive(messages, timeout=timeout)
            if messages and messages[0].metadata.message_type == step:
                for r in replies:  # a node that answers with something else than asked
                    r.content = RecordDict({R.RELEASE_CONFIG: R.ConfigRecord({"x": 1})})
            return replies

    strategy = _strategy(ceremony, nodes, Garbling(nodes))
    assert _round(strategy, nodes) == (None, None)
    assert strategy.history[-1].aborted.split(":")[0] in ("DecryptionAbortedError", "ClientUnreachableError")


def test_a_node_that_claims_a_seat_without_the_members_signature_is_never_asked(tmp_path):
    from flwr.clientapp import ClientApp

    ceremony = tmp_path / "ceremony"
    run_local_ceremony(ceremony, clients=6, committee=5, threshold=3, group_size=3)
    nodes = _nodes(ceremony, tmp_path)
    impostor = ClientApp()

    @impostor.query(R.READY_ACTION)
    def ready(msg, context):  # claims client-3's seat; it cannot sign as client-3
        return Message(R.ready_reply("client-3", bytes(64)), reply_to=msg)

    @impostor.query(R.COMBINE_ACTION)
    def combine(msg, context):  # would release anything it likes
        forged = secagg.Release(values={n: np.full(s, 100.0) for n, s in SHAPES.items()}, contributors=())
        return Message(R.released_reply(forged), reply_to=msg)

    del nodes[4], nodes[5]  # client-3's and client-4's real nodes are not connected
    nodes[99] = (impostor, node_context(99))
    strategy = _strategy(ceremony, nodes)
    uploads = [app(train_message(strategy, node=n, rnd=r, run=ctx.run_id), ctx) for r in (1, 2, 3)
               for n, (app, ctx) in nodes.items() if n <= 3]
    for r in (1, 2, 3):  # the rotation would name client-3 as combiner in round 3 were it ready
        arrays, _ = strategy.aggregate_train(r, [u for u in uploads[(r - 1) * 3:r * 3]])
        assert arrays is not None, strategy.history[-1].aborted
        np.testing.assert_allclose(strategy.history[-1].released["fc.bias"], np.mean(STEPS[:3]), atol=1e-4)
    assert 99 not in strategy.nodes.values()
    assert not [t for n, t in strategy._grid.asked if n == 99 and t != R.READY_MESSAGE_TYPE]


@pytest.mark.parametrize("case", ["ready-says-model-inconsistency", "short-set-signature", "unsigned-release"])
def test_what_a_node_answers_cannot_stop_the_server_or_pass_unsigned_values(ceremony, tmp_path, case):
    from flwr.app import Error

    nodes = _nodes(ceremony, tmp_path)

    class Lying(DroppingGrid):
        def send_and_receive(self, messages, *, timeout=None):
            replies = super().send_and_receive(messages, timeout=timeout)
            kind = messages[0].metadata.message_type if messages else ""
            for r in replies:
                if case == "ready-says-model-inconsistency" and kind == R.READY_MESSAGE_TYPE \
                        and r.metadata.src_node_id == 5:
                    r.__init__(Error(code=0, reason="ModelInconsistencyError: made up"), reply_to=messages[-1])
                if case == "short-set-signature" and kind == R.SIGN_MESSAGE_TYPE:
                    r.content = RecordDict({R.RELEASE_CONFIG: R.ConfigRecord({R.SIGNATURE_KEY: "ab"})})
                if case == "unsigned-release" and kind == R.COMBINE_MESSAGE_TYPE:
                    r.content[R.RELEASE_CONFIG][R.SIGNATURE_KEY] = ""
            return replies

    strategy = _strategy(ceremony, nodes, Lying(nodes))
    arrays, _ = _round(strategy, nodes)
    if case == "ready-says-model-inconsistency":  # one member's refusal is "not available", not an attack
        assert arrays is not None
    else:
        assert arrays is None and strategy.history[-1].aborted.startswith("ClientUnreachableError")

"""The Flower adapter's parts on real Flower objects, without starting a simulation engine.

A ClientApp is called directly with a Message and a Context, as a SuperNode would call it; the
strategy's aggregate_train gets reply Messages and reaches the nodes through an in-process grid.
Ray-backed end-to-end checks: tests/fedattn/flower/test_flower.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.clientapp.mod import fixedclipping_mod  # noqa: E402
from helpers.flower import (  # noqa: E402
    SHAPES,
    LocalGrid,
    client_app,
    deal,
    make_message,
    node_context,
    party,
    reply_from,
    server_process,  # noqa: F401 - a fixture
    train_message,
    zeros_model,
)

import secagg  # noqa: E402
from fedattn.errors import InvalidConfigError, PrivacyConfigError  # noqa: E402
from fedattn.flower import (  # noqa: E402
    MissingPublicContextError,
    SecAggFedAvg,
    enable_release,
    make_secagg_mod,
    sample_dp_from_state,
    save_sample_dp,
)
from fedattn.flower import records as R  # noqa: E402
from fedattn.privacy import DPConfig  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flower"
pytestmark = pytest.mark.usefixtures("server_process")


@pytest.fixture(scope="module")
def dealer(tmp_path_factory, compact_keys):
    return deal(tmp_path_factory.mktemp("dealer"), compact_keys, clients=2)


@pytest.fixture
def ledgers(tmp_path):
    return tmp_path


def _strategy(dealer, nodes=None, **options) -> SecAggFedAvg:
    strategy = SecAggFedAvg(public_context=dealer.server_ctx, roster=dealer.roster, **options)
    strategy._global, strategy._grid = zeros_model(), LocalGrid(nodes or {})  # what configure_train sets
    return strategy


def test_clipping_mod_inside_secagg_mod_clips_before_encryption(dealer, ledgers):
    nodes = {n: (client_app([make_secagg_mod(), fixedclipping_mod], step=0.5)[0],
                 party(dealer, n, partition=n - 1, ledgers=ledgers)) for n in (1, 2)}
    strategy = _strategy(dealer, nodes, rule="fedavg", rule_options={"equal_weights": True}, clipping_norm=0.1)
    replies = [app(train_message(strategy, node=n), ctx) for n, (app, ctx) in nodes.items()]
    assert not any(r.has_error() for r in replies)
    arrays, _ = strategy.aggregate_train(1, replies)
    released = strategy.history[-1].released
    norm = np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in released.values()))
    assert arrays is not None and norm == pytest.approx(0.1, abs=1e-4)  # sqrt(16) * 0.5 = 2 before clipping
    # the other order hands ciphertexts to the clipping mod: it errs, and nothing is sent in the clear
    app, _ = client_app([fixedclipping_mod, make_secagg_mod()])
    reply = app(train_message(strategy, node=1, rnd=2), party(dealer, 1, partition=0, ledgers=ledgers))
    assert reply.has_error() and "fixedclipping_mod" in reply.error.reason


def test_cosine_reference_reaches_the_weights_but_not_the_app(dealer, ledgers):
    from fedattn.rules import CosineAttention

    reference = {n: np.ones(s) for n, s in SHAPES.items()}
    updates, seen, nodes = [], [], {}
    for node, step in [(1, 0.5), (2, -0.2)]:
        app = ClientApp(mods=[make_secagg_mod()])

        @app.train()
        def train(msg: Message, context: Context, step=step) -> Message:
            seen.append(sorted(msg.content.array_records))
            trained = {n: a + step * np.sign(np.arange(a.size).reshape(a.shape) % 2 - 0.5 + step)
                       for n, a in R.to_numpy(msg.content["arrays"], what="global").items()}
            updates.append(trained)
            return Message(RecordDict({"arrays": R.to_record(trained)}), reply_to=msg)

        enable_release(app)
        nodes[node] = (app, party(dealer, node, partition=node - 1, ledgers=ledgers))
    strategy = _strategy(dealer, nodes, rule="cosine")
    strategy._previous_step = reference
    replies = []
    for node, (app, ctx) in nodes.items():
        msg = train_message(strategy, node=node)
        msg.content[R.REFERENCE_RECORD] = R.to_record(reference)
        replies.append(app(msg, ctx))
    assert seen == [["arrays"], ["arrays"]]  # the user's app never sees the reference record
    strategy.aggregate_train(1, replies)
    expected = CosineAttention().combine(updates, num_samples=[1, 1], reference=reference)
    for n in SHAPES:
        np.testing.assert_allclose(strategy.history[-1].released[n], expected[n], atol=1e-4)


def test_secagg_mod_refuses_before_training(dealer, ledgers, tmp_path, caplog):
    strategy = _strategy(dealer)
    other = secagg.generate_keys(preset="compact").save(tmp_path / "other")
    cases = {
        "MissingKeyError": ({"secret-key": None}, train_message(strategy)),
        "KeyMismatchError": ({"secret-key": str(other["client"])}, train_message(strategy)),
        "MissingIdentityError": ({"identity": None}, train_message(strategy)),
        "no roster": ({"roster": None}, train_message(strategy)),
        "NotSecflMessageError": ({}, make_message(RecordDict({
            "arrays": R.to_record(zeros_model()), "config": ConfigRecord({R.CONFIG_ROUND: 1})}))),
    }
    plain = train_message(strategy)
    plain.content["config"][R.CONFIG_PROTOCOL] = "plain"  # a server asking for updates in the clear
    cases["protocol 'plain'"] = ({}, plain)
    for error, (overrides, msg) in cases.items():
        app, calls = client_app()
        reply = app(msg, party(dealer, 7, partition=0, ledgers=ledgers, **overrides))
        assert reply.has_error() and error in reply.error.reason, reply.error.reason
        assert calls == []  # refused before the user's code ran: nothing trained, nothing sent
        assert error in caplog.text  # and logged on the client


def test_a_node_uploads_once_per_round_and_refuses_a_second_train_message(dealer, ledgers):
    strategy = _strategy(dealer)
    app, calls = client_app()
    ctx = party(dealer, 1, partition=0, ledgers=ledgers)
    assert not app(train_message(strategy, node=1, rnd=2), ctx).has_error()
    for rnd in (2, 1):
        again = app(train_message(strategy, node=1, rnd=rnd, model={n: a + 1 for n, a in zeros_model().items()}), ctx)
        assert again.has_error() and "ReplayError" in again.error.reason
    assert len(calls) == 1


def test_strategy_drops_bad_replies_and_skips_an_empty_round(dealer, ledgers, caplog):
    strategy = _strategy(dealer)
    app, _ = client_app()
    stale = app(train_message(strategy, node=3, rnd=1), party(dealer, 3, partition=1, ledgers=ledgers))
    replies = [
        reply_from(RecordDict({"arrays": R.to_record(zeros_model())}), node=1),  # plaintext
        reply_from(RecordDict({"arrays": R.payload_record(b"\x00" * 64)}), node=2),  # garbage bytes
        reply_from(stale.content, node=3),  # round 1's upload, replayed in round 2
        reply_from(RecordDict({"metrics": MetricRecord({"num-examples": 3})}), node=4),  # no arrays at all
    ]
    assert strategy.aggregate_train(2, replies) == (None, None)  # the round is skipped, the model kept
    rejected = strategy.history[-1].rejected
    assert "MissingCiphertextError" in rejected["node-1"] and "MissingCiphertextError" in rejected["node-4"]
    assert "no valid upload" in rejected["node-2"] and "no valid upload" in rejected["node-3"]
    for words in ("plaintext arrays", "not a secfl upload", "replayed or stale", "no valid upload"):
        assert words in caplog.text


def test_server_refuses_to_start_without_a_public_context_or_a_roster(dealer, compact_keys, caplog):
    for source, words in [
        (None, "no public context"),
        ({}, "--run-config"),  # a run config without server-context
        (compact_keys, "secret key"),
        (compact_keys.secret, "secret key"),
        (dealer.client_key, "expected 'public'"),
        (Path("/nonexistent/server.ctx"), "cannot read"),
    ]:
        with pytest.raises(MissingPublicContextError, match=words):
            SecAggFedAvg(public_context=source, roster=dealer.roster)
        assert words.strip("-") in caplog.text or words in caplog.text
    with pytest.raises(InvalidConfigError, match="signed uploads only"):
        SecAggFedAvg(public_context=dealer.server_ctx, roster=None)
    sys.path.insert(0, str(EXAMPLE))
    try:
        from secfl_example.server_app import main
    finally:
        sys.path.remove(str(EXAMPLE))
    with pytest.raises(MissingPublicContextError, match="server-context"):
        main(None, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))  # before any grid use


@pytest.mark.parametrize("options, message", [
    (dict(protocol="plain"), "plaintext"),
    (dict(protocol="server-scored"), "l2_squared"),
    (dict(protocol="server-scored", rule_options={"score": "l2_squared"}), "deep"),
    (dict(rule="fedavg"), "max_samples"),
    (dict(clipping_norm=-1.0), "clipping_norm"),
])
def test_strategy_options_that_make_no_sense(dealer, options, message):
    with pytest.raises(InvalidConfigError, match=message):
        SecAggFedAvg(public_context=dealer.server_ctx, roster=dealer.roster, **options)


def test_large_public_contexts_travel_as_fingerprint_only(dealer, compact_keys):
    small = SecAggFedAvg(public_context=dealer.server_ctx, roster=dealer.roster).secfl_config(ConfigRecord())
    big = SecAggFedAvg(public_context=dealer.server_ctx, roster=dealer.roster,
                       max_context_bytes=10).secfl_config(ConfigRecord())
    assert small[R.CONFIG_CONTEXT] == compact_keys.public.to_bytes()
    assert R.CONFIG_CONTEXT not in big and big[R.CONFIG_FINGERPRINT] == compact_keys.public.fingerprint


def test_dp_state_round_trips_and_refuses_another_accountant():
    context = node_context()
    dp = sample_dp_from_state(context, DPConfig(mode="sample"), client_id="c")
    assert dp.epsilon("c") == 0.0
    dp.restore("c", {"history": [(1.0, 0.1, 20)], "mechanism": "prv"})
    first = save_sample_dp(context, dp, client_id="c")
    again = sample_dp_from_state(context, DPConfig(mode="sample"), client_id="c")
    assert again.epsilon("c") == pytest.approx(first) and first > 0
    with pytest.raises(PrivacyConfigError, match="accountant"):
        sample_dp_from_state(context, DPConfig(mode="sample", accountant="rdp"), client_id="c")


def test_fedattn_imports_without_flower():
    code = ("import sys; sys.modules['flwr'] = None\n"
            "import fedattn, fedattn.simulation, fedattn.protocols\n"
            "try:\n    import fedattn.flower\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "secfl[flower]"' in out.stdout


def test_a_custom_model_larger_than_the_built_ins_goes_through_flower(dealer, ledgers):
    """The global model a user's own CNN (70k parameters): every array encrypted by the mod, summed
    by the strategy with the public context and released by a node."""
    from helpers.custom_model import wide_cnn

    from fedattn.models import float_state

    model = float_state(wide_cnn((1, 8, 8), 10))
    nodes = {n: (client_app(step=0.01 * n)[0], party(dealer, n, partition=n - 1, ledgers=ledgers)) for n in (1, 2)}
    strategy = SecAggFedAvg(public_context=dealer.server_ctx, roster=dealer.roster, rule="fedavg",
                            rule_options={"equal_weights": True})
    strategy._global, strategy._grid = model, LocalGrid(nodes)
    replies = [app(train_message(strategy, node=n, run=ctx.run_id, model=model), ctx) for n, (app, ctx) in nodes.items()]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    released = strategy.history[-1].released
    assert set(released) == set(model) and sum(a.size for a in released.values()) > 70_000
    for name in model:
        np.testing.assert_allclose(released[name], 0.015, atol=1e-4)

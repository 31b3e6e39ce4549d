"""The Flower adapter's parts on real Flower objects, without starting a simulation engine.

A ClientApp is called directly with a Message and a Context, as a SuperNode would call it; the
strategy's aggregate_train gets reply Messages. Ray-backed end-to-end checks: tests/fedattn/flower/test_flower.py.
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
    client_app,
    make_message,
    node_context,
    reply_from,
    train_message,
    zeros_model,
)

import secagg  # noqa: E402
from fedattn.errors import InvalidConfigError, PrivacyConfigError  # noqa: E402
from fedattn.flower import (  # noqa: E402
    MissingPublicContextError,
    SecAggFedAvg,
    make_secagg_mod,
    sample_dp_from_state,
    save_sample_dp,
)
from fedattn.flower import records as R  # noqa: E402
from fedattn.privacy import DPConfig  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flower"


@pytest.fixture(scope="module")
def key_files(tmp_path_factory, compact_keys):
    return compact_keys.save(tmp_path_factory.mktemp("keys"))


def _decrypt_single(reply: Message, secret: secagg.SecretContext) -> dict[str, np.ndarray]:
    payload = R.payload_of(reply.content, who="test")
    return secagg.decrypt_ratio(secagg.EncryptedUpdate.from_bytes(payload, secret), secret)


def test_clipping_mod_inside_secagg_mod_clips_before_encryption(key_files, compact_keys):
    strategy = SecAggFedAvg(public_context=key_files["server"], clipping_norm=0.1)
    secure = make_secagg_mod(locate_key=lambda ctx: key_files["client"])
    app, _ = client_app([secure, fixedclipping_mod], key_files["client"])
    reply = app(train_message(strategy), node_context())
    assert not reply.has_error()
    update = _decrypt_single(reply, compact_keys.secret)  # one client: the ratio is its update
    norm = np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in update.values()))
    assert norm == pytest.approx(0.1, abs=1e-4)  # sqrt(16) * 0.5 = 2 before clipping
    # the other order hands ciphertexts to the clipping mod: it errs, and nothing is sent in the clear
    app, _ = client_app([fixedclipping_mod, secure], key_files["client"])
    reply = app(train_message(strategy), node_context())
    assert reply.has_error() and "fixedclipping_mod" in reply.error.reason


def test_cosine_reference_reaches_the_weights_but_not_the_app(key_files, compact_keys):
    from fedattn.rules import CosineAttention

    strategy = SecAggFedAvg(public_context=key_files["server"], rule="cosine")
    reference = {n: np.ones(s) for n, s in SHAPES.items()}
    secure = make_secagg_mod(locate_key=lambda ctx: key_files["client"])
    payloads, updates, seen = [], [], []
    for node, step in [(1, 0.5), (2, -0.2)]:
        app = ClientApp(mods=[secure])

        @app.train()
        def train(msg: Message, context: Context, step=step) -> Message:
            seen.append(sorted(msg.content.array_records))
            trained = {n: a + step * np.sign(np.arange(a.size).reshape(a.shape) % 2 - 0.5 + step)
                       for n, a in R.to_numpy(msg.content["arrays"], what="global").items()}
            updates.append(trained)
            return Message(RecordDict({"arrays": R.to_record(trained)}), reply_to=msg)

        msg = train_message(strategy, node=node)
        msg.content[R.REFERENCE_RECORD] = R.to_record(reference)
        reply = app(msg, node_context(node=node, **{"partition-id": node}))
        payloads.append(secagg.EncryptedUpdate.from_bytes(R.payload_of(reply.content, who="t"), compact_keys.public))
    assert seen == [["arrays"], ["arrays"]]  # the user's app never sees the reference record
    released = secagg.decrypt_ratio(secagg.aggregate(payloads, compact_keys.public), compact_keys.secret)
    expected = CosineAttention().combine(updates, num_samples=[1, 1], reference=reference)
    for n in SHAPES:
        np.testing.assert_allclose(released[n], expected[n], atol=1e-4)


def test_secagg_mod_refuses_before_training(key_files, tmp_path, caplog):
    strategy = SecAggFedAvg(public_context=key_files["server"])
    other = secagg.generate_keys(preset="compact").save(tmp_path)
    cases = {
        "MissingKeyError": (None, train_message(strategy)),
        "KeyMismatchError": (other["client"], train_message(strategy)),
        "NotSecflMessageError": (key_files["client"], make_message(RecordDict({
            "arrays": R.to_record(zeros_model()), "config": ConfigRecord({R.CONFIG_ROUND: 1})}))),
    }
    plain = train_message(strategy)
    plain.content["config"][R.CONFIG_PROTOCOL] = "plain"  # a server asking for updates in the clear
    cases["protocol 'plain'"] = (key_files["client"], plain)
    for error, (path, msg) in cases.items():
        app, calls = client_app([make_secagg_mod(locate_key=lambda ctx, p=path: p)], path)
        reply = app(msg, node_context())
        assert reply.has_error() and error in reply.error.reason, reply.error.reason
        assert calls == []  # refused before the user's code ran: nothing trained, nothing sent
        assert error in caplog.text  # and logged on the client


def test_release_refuses_single_updates_and_second_releases(key_files, compact_keys):
    app, _ = client_app([], key_files["client"])
    ups = [secagg.encrypt_update({"w": np.full(3, 0.1 * (k + 1), np.float32)}, compact_keys.secret, round=2,
                                 client_id=f"c{k}", weights={"w": 1.0}) for k in range(2)]
    fp = compact_keys.public.fingerprint

    def query(update, rnd=2):
        wire = update.to_bytes()
        return make_message(RecordDict({
            R.AGGREGATE_RECORD: R.payload_record(wire, name="aggregate", stype=R.AGGREGATE_STYPE),
            R.RELEASE_CONFIG: ConfigRecord({R.CONFIG_ROUND: rnd, R.CONFIG_FINGERPRINT: fp}),
        }), message_type=R.RELEASE_MESSAGE_TYPE, rnd=rnd)

    context = node_context()
    single = app(query(ups[0]), context)
    assert single.has_error() and "ReleaseRefusedError" in single.error.reason
    total = secagg.aggregate(ups, compact_keys.public)
    ok = app(query(total), context)
    released = R.to_numpy(ok.content[R.RELEASED_RECORD], what="released")
    np.testing.assert_allclose(released["w"], 0.15, atol=1e-4)
    again = app(query(total), context)
    assert again.has_error() and "already released" in again.error.reason


def test_strategy_drops_bad_replies_and_skips_an_empty_round(key_files, compact_keys, caplog):
    strategy = SecAggFedAvg(public_context=key_files["server"])
    strategy._global = zeros_model()
    good = secagg.encrypt_update(zeros_model(), compact_keys.secret, round=1, client_id="c0", weights={n: 1.0 for n in SHAPES})
    stale = R.payload_record(good.to_bytes())  # encrypted for round 1, replayed in round 2
    replies = [
        reply_from(RecordDict({"arrays": R.to_record(zeros_model())}), node=1),  # plaintext
        reply_from(RecordDict({"arrays": R.payload_record(b"\x00" * 64)}), node=2),  # garbage bytes
        reply_from(RecordDict({"arrays": stale}), node=3),
        reply_from(RecordDict({"metrics": MetricRecord({"num-examples": 3})}), node=4),  # no arrays at all
    ]
    assert strategy.aggregate_train(2, replies) == (None, None)  # the round is skipped, the model kept
    rejected = strategy.history[-1].rejected
    assert "MissingCiphertextError" in rejected["node-1"] and "MissingCiphertextError" in rejected["node-4"]
    assert "no valid upload" in rejected["node-2"] and "no valid upload" in rejected["node-3"]
    for words in ("plaintext arrays", "not a secfl payload", "stale or replayed", "no valid upload"):
        assert words in caplog.text


def test_server_refuses_to_start_without_a_publicnode_context(key_files, compact_keys, caplog):
    for source, words in [
        (None, "no public context"),
        ({}, "--run-config"),  # a run config without server-context
        (compact_keys, "secret key"),
        (compact_keys.secret, "secret key"),
        (key_files["client"], "expected 'public'"),
        (Path("/nonexistent/server.ctx"), "cannot read"),
    ]:
        with pytest.raises(MissingPublicContextError, match=words):
            SecAggFedAvg(public_context=source)
        assert words.strip("-") in caplog.text or words in caplog.text
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
def test_strategy_options_that_make_no_sense(key_files, options, message):
    with pytest.raises(InvalidConfigError, match=message):
        SecAggFedAvg(public_context=key_files["server"], **options)


def test_large_public_contexts_travel_as_fingerprint_only(key_files, compact_keys):
    small = SecAggFedAvg(public_context=key_files["server"]).secfl_config(ConfigRecord())
    big = SecAggFedAvg(public_context=key_files["server"], max_context_bytes=10).secfl_config(ConfigRecord())
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

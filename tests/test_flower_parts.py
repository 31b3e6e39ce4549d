"""The Flower adapter's parts on real Flower objects, without starting a simulation engine.

A ClientApp is called directly with a Message and a Context, as a SuperNode would call it; the
strategy's aggregate_train gets reply Messages. Ray-backed end-to-end checks: tests/test_flower.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.clientapp.mod import fixedclipping_mod  # noqa: E402

import secagg  # noqa: E402
from fedattn.auth import generate_identities  # noqa: E402
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

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower"
SHAPES = {"fc.weight": (4, 3), "fc.bias": (4,)}


@pytest.fixture(scope="module")
def key_files(tmp_path_factory, compact_keys):
    return compact_keys.save(tmp_path_factory.mktemp("keys"))


def _context(node: int = 7, **node_config) -> Context:
    return Context(run_id=1, node_id=node, node_config={"partition-id": 0, **node_config}, state=RecordDict(),
                   run_config={})


def _message(content: RecordDict, message_type: str = "train", node: int = 7, rnd: int = 1) -> Message:
    meta = Metadata(run_id=1, message_id=f"m{node}-{rnd}", src_node_id=0, dst_node_id=node, reply_to_message_id="",
                    group_id=str(rnd), created_at=0.0, ttl=3600.0, message_type=message_type)
    return Message(content, metadata=meta)


def _global() -> dict[str, np.ndarray]:
    return {n: np.zeros(s, np.float32) for n, s in SHAPES.items()}


def _train_message(strategy: SecAggFedAvg, *, rnd: int = 1, node: int = 7) -> Message:
    config = strategy.secfl_config(ConfigRecord({R.CONFIG_ROUND: rnd}))
    return _message(RecordDict({"arrays": R.to_record(_global()), "config": config}), node=node, rnd=rnd)


def _app(mods, key_path, step: float = 0.5, roster: Path | None = None) -> tuple[ClientApp, list]:
    """A plain ClientApp whose training moves every weight by ``step``; records its calls."""
    calls = []
    app = ClientApp(mods=mods)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        calls.append(msg.metadata.message_id)
        trained = {n: a + step for n, a in R.to_numpy(msg.content["arrays"], what="global").items()}
        return Message(RecordDict({"arrays": R.to_record(trained), "metrics": MetricRecord({"num-examples": 10})}),
                       reply_to=msg)

    enable_release(app, locate_key=lambda ctx: key_path, locate_roster=lambda ctx: roster)
    return app, calls


def _decrypt_single(reply: Message, secret: secagg.SecretContext) -> dict[str, np.ndarray]:
    payload = R.payload_of(reply.content, who="test")
    return secagg.decrypt_ratio(secagg.EncryptedUpdate.from_bytes(payload, secret), secret)


def test_clipping_mod_inside_secagg_mod_clips_before_encryption(key_files, compact_keys):
    strategy = SecAggFedAvg(public_context=key_files["server"], clipping_norm=0.1)
    secure = make_secagg_mod(locate_key=lambda ctx: key_files["client"])
    app, _ = _app([secure, fixedclipping_mod], key_files["client"])
    reply = app(_train_message(strategy), _context())
    assert not reply.has_error()
    update = _decrypt_single(reply, compact_keys.secret)  # one client: the ratio is its update
    norm = np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in update.values()))
    assert norm == pytest.approx(0.1, abs=1e-4)  # sqrt(16) * 0.5 = 2 before clipping
    # the other order hands ciphertexts to the clipping mod: it errs, and nothing is sent in the clear
    app, _ = _app([fixedclipping_mod, secure], key_files["client"])
    reply = app(_train_message(strategy), _context())
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

        msg = _train_message(strategy, node=node)
        msg.content[R.REFERENCE_RECORD] = R.to_record(reference)
        reply = app(msg, _context(node=node, **{"partition-id": node}))
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
        "MissingKeyError": (None, _train_message(strategy)),
        "KeyMismatchError": (other["client"], _train_message(strategy)),
        "NotSecflMessageError": (key_files["client"], _message(RecordDict({
            "arrays": R.to_record(_global()), "config": ConfigRecord({R.CONFIG_ROUND: 1})}))),
    }
    plain = _train_message(strategy)
    plain.content["config"][R.CONFIG_PROTOCOL] = "plain"  # a server asking for updates in the clear
    cases["protocol 'plain'"] = (key_files["client"], plain)
    for error, (path, msg) in cases.items():
        app, calls = _app([make_secagg_mod(locate_key=lambda ctx, p=path: p)], path)
        reply = app(msg, _context())
        assert reply.has_error() and error in reply.error.reason, reply.error.reason
        assert calls == []  # refused before the user's code ran: nothing trained, nothing sent
        assert error in caplog.text  # and logged on the client


def test_release_refuses_single_updates_and_second_releases(key_files, compact_keys):
    app, _ = _app([], key_files["client"])
    ups = [secagg.encrypt_update({"w": np.full(3, 0.1 * (k + 1), np.float32)}, compact_keys.secret, round=2,
                                 client_id=f"c{k}", weights={"w": 1.0}) for k in range(2)]
    fp = compact_keys.public.fingerprint

    def query(update, rnd=2):
        wire = update.to_bytes()
        return _message(RecordDict({
            R.AGGREGATE_RECORD: R.payload_record(wire, name="aggregate", stype=R.AGGREGATE_STYPE),
            R.RELEASE_CONFIG: ConfigRecord({R.CONFIG_ROUND: rnd, R.CONFIG_FINGERPRINT: fp}),
        }), message_type=R.RELEASE_MESSAGE_TYPE, rnd=rnd)

    context = _context()
    single = app(query(ups[0]), context)
    assert single.has_error() and "ReleaseRefusedError" in single.error.reason
    total = secagg.aggregate(ups, compact_keys.public)
    ok = app(query(total), context)
    released = R.to_numpy(ok.content[R.RELEASED_RECORD], what="released")
    np.testing.assert_allclose(released["w"], 0.15, atol=1e-4)
    again = app(query(total), context)
    assert again.has_error() and "already released" in again.error.reason


def _reply(content: RecordDict, node: int) -> Message:
    return Message(content, reply_to=_message(RecordDict(), node=node))


def test_strategy_drops_bad_replies_and_skips_an_empty_round(key_files, compact_keys, caplog):
    strategy = SecAggFedAvg(public_context=key_files["server"])
    strategy._global = _global()
    good = secagg.encrypt_update(_global(), compact_keys.secret, round=1, client_id="c0", weights={n: 1.0 for n in SHAPES})
    stale = R.payload_record(good.to_bytes())  # encrypted for round 1, replayed in round 2
    replies = [
        _reply(RecordDict({"arrays": R.to_record(_global())}), node=1),  # plaintext
        _reply(RecordDict({"arrays": R.payload_record(b"\x00" * 64)}), node=2),  # garbage bytes
        _reply(RecordDict({"arrays": stale}), node=3),
        _reply(RecordDict({"metrics": MetricRecord({"num-examples": 3})}), node=4),  # no arrays at all
    ]
    assert strategy.aggregate_train(2, replies) == (None, None)  # the round is skipped, the model kept
    rejected = strategy.history[-1].rejected
    assert "MissingCiphertextError" in rejected["node-1"] and "MissingCiphertextError" in rejected["node-4"]
    assert "no valid upload" in rejected["node-2"] and "no valid upload" in rejected["node-3"]
    for words in ("plaintext arrays", "not a secfl payload", "stale or replayed", "no valid upload"):
        assert words in caplog.text


def test_server_refuses_to_start_without_a_public_context(key_files, compact_keys, caplog):
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
    (dict(protocol="server-scored"), "deep"),
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
    context = _context()
    dp = sample_dp_from_state(context, DPConfig(mode="sample"), client_id="c")
    assert dp.epsilon("c") == 0.0
    dp.restore("c", [(1.0, 0.1, 20)])
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


# --- signed uploads -------------------------------------------------------------------------------

class _LocalGrid:
    """Hands the strategy's release queries to ClientApps in this process, as a SuperNode would."""

    def __init__(self, nodes: dict[int, tuple[ClientApp, Context]]) -> None:
        self.nodes, self.asked = nodes, []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        replies = []
        for m in messages:
            node = m.metadata.dst_node_id
            self.asked.append(node)
            app, context = self.nodes[node]
            replies.append(app(_message(m.content, message_type=m.metadata.message_type, node=node), context))
        return replies


@pytest.fixture(autouse=True)
def _server_process(monkeypatch):
    """Flower stamps a new message with the identity of the process that sends it (a ServerApp's)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in [("_run_id", 1), ("_node_id", 0), ("_task_id", 0)]:
        monkeypatch.setattr(TaskIdentity, name, value, raising=False)


@pytest.fixture(scope="module")
def dealer(tmp_path_factory):
    """`secfl keys generate --clients 3`'s identities and roster."""
    out = tmp_path_factory.mktemp("identities")
    identities, roster = generate_identities(f"client-{i}" for i in range(3))
    for cid, identity in identities.items():
        identity.save(out / f"{cid}.id")
    roster.save(out / "roster.json")
    return out


def _signed_nodes(key_files, dealer, steps=(0.5, -0.1, 0.2), identity_dir=None):
    """Nodes 1..3 (client-0..2): the dealer's identity folder, the roster for releasing."""
    nodes = {}
    for node, step in enumerate(steps, start=1):
        secure = make_secagg_mod(locate_key=lambda ctx: key_files["client"],
                                 locate_identity=lambda ctx: str(identity_dir or dealer))
        app, _ = _app([secure], key_files["client"], step=step, roster=dealer / "roster.json")
        nodes[node] = (app, _context(node=node, **{"partition-id": node - 1}))
    return nodes


def _signed_strategy(key_files, dealer, nodes) -> SecAggFedAvg:
    strategy = SecAggFedAvg(public_context=key_files["server"], roster=dealer / "roster.json", rule="fedavg",
                            rule_options={"equal_weights": True})
    strategy._global, strategy._grid = _global(), _LocalGrid(nodes)  # what configure_train sets
    return strategy


def test_signed_round_releases_after_the_key_holder_checks_receipts(key_files, dealer):
    nodes = _signed_nodes(key_files, dealer)
    strategy = _signed_strategy(key_files, dealer, nodes)
    replies = [app(_train_message(strategy, node=n), ctx) for n, (app, ctx) in nodes.items()]
    assert all(R.payload_of(r.content, who="t").startswith(b"SFLSIGN1") for r in replies)
    arrays, _ = strategy.aggregate_train(1, replies)
    entry = strategy.history[-1]
    assert arrays is not None and not entry.rejected
    assert sorted(r.client_id for r in entry.receipts) == ["client-0", "client-1", "client-2"]
    for name in SHAPES:
        np.testing.assert_allclose(entry.released[name], (0.5 - 0.1 + 0.2) / 3, atol=1e-3)


def test_a_server_that_sends_one_client_another_model_gets_no_release(key_files, dealer, caplog):
    nodes = _signed_nodes(key_files, dealer)
    strategy = _signed_strategy(key_files, dealer, nodes)
    messages = {n: _train_message(strategy, node=n) for n in nodes}
    crafted = _global()
    crafted["fc.weight"][0, 0] = 3.0  # e.g. Pasquini et al.'s model that makes one client's update stand out
    messages[3].content["arrays"] = R.to_record(crafted)
    replies = [app(messages[n], ctx) for n, (app, ctx) in nodes.items()]
    assert strategy.aggregate_train(1, replies) == (None, None)  # the round is skipped, the model kept
    assert sorted(strategy._grid.asked) == [1, 2, 3]  # every key holder was asked, and each refused
    assert caplog.text.count("ModelInconsistencyError") >= 3 and "different global models" in caplog.text


def test_unsigned_foreign_and_forged_uploads_are_dropped_and_the_round_goes_on(key_files, dealer, compact_keys,
                                                                               tmp_path):
    impostor, _ = generate_identities(["client-2"])  # claims client-2 with a key the dealer never issued
    impostor["client-2"].save(tmp_path / "client-2.id")
    nodes = _signed_nodes(key_files, dealer)
    strategy = _signed_strategy(key_files, dealer, nodes)
    forged = _signed_nodes(key_files, dealer, identity_dir=tmp_path)[3][0]
    replies = [nodes[n][0](_train_message(strategy, node=n), nodes[n][1]) for n in (1, 2)]
    replies.append(forged(_train_message(strategy, node=3), _context(node=3, **{"partition-id": 2})))
    unsigned = secagg.encrypt_update(_global(), compact_keys.secret, round=1, client_id="client-2",
                                     weights={n: 1.0 for n in SHAPES})
    replies.append(_reply(RecordDict({"arrays": R.payload_record(unsigned.to_bytes())}), node=4))
    arrays, _ = strategy.aggregate_train(1, replies)
    entry = strategy.history[-1]
    assert arrays is not None and sorted(entry.contributors) == ["client-0", "client-1"]
    assert "SignatureError" in entry.rejected["node-3"] and "does not verify" in entry.rejected["node-3"]
    assert "SignatureError" in entry.rejected["node-4"] and "not a signed envelope" in entry.rejected["node-4"]


def test_signing_refusals_come_before_training(key_files, dealer, compact_keys):
    signed = _signed_strategy(key_files, dealer, {})
    unsigned = SecAggFedAvg(public_context=key_files["server"])
    for strategy, locate, error in [
        (signed, None, "MissingIdentityError"),  # no identity configured, SECFL_CLIENT_IDENTITY unset
        (unsigned, str(dealer), "UnsignedRoundError"),  # the server would not check signatures
    ]:
        mod = make_secagg_mod(locate_key=lambda ctx: key_files["client"], locate_identity=lambda ctx, p=locate: p)
        app, calls = _app([mod], key_files["client"])
        reply = app(_train_message(strategy), _context())
        assert reply.has_error() and error in reply.error.reason, reply.error.reason
        assert calls == []
    # a key holder with the roster refuses an aggregate that comes without receipts
    app, _ = _app([], key_files["client"], roster=dealer / "roster.json")
    ups = [secagg.encrypt_update({"w": np.ones(3, np.float32)}, compact_keys.secret, round=1, client_id=f"client-{k}",
                                 weights={"w": 1.0}) for k in range(2)]
    query = _message(RecordDict({
        R.AGGREGATE_RECORD: R.payload_record(secagg.aggregate(ups, compact_keys.public).to_bytes(), name="aggregate",
                                             stype=R.AGGREGATE_STYPE),
        R.RELEASE_CONFIG: ConfigRecord({R.CONFIG_ROUND: 1, R.CONFIG_FINGERPRINT: compact_keys.public.fingerprint}),
    }), message_type=R.RELEASE_MESSAGE_TYPE)
    reply = app(query, _context())
    assert reply.has_error() and "no receipts" in reply.error.reason

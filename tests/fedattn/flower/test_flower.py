"""A real Flower run (Ray simulation engine, in-process ServerApp) against the standalone simulation.

One simulation serves every check, because starting Ray costs more than the rounds: 3 good clients
and 3 bad ones (no key, another key set, a plaintext reply), 2 rounds, digits MLP, FedAtt,
sample-level DP-SGD, signed uploads (every node holds an Ed25519 identity; the server and the key
holders hold the roster). The good clients' decrypted aggregate must equal the standalone simulation's
(same seeds, same partitions) within the strict preset's release tolerance; the bad ones must be
dropped with a specific reason in the server's log while the round goes on; epsilon must compose
across rounds through ``context.state``; no server-side object or message may hold secret-key
bytes; Flower must write only inside a temporary directory and leave no process behind. A second,
slow-marked run covers the server-scored protocol (deep preset).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

from helpers.flower_sim import apps, example_task, simulate  # noqa: E402

import secagg  # noqa: E402
from fedattn.privacy import DPConfig  # noqa: E402
from fedattn.protocols import ClientScoredProtocol  # noqa: E402
from fedattn.rules import FedAtt  # noqa: E402
from fedattn.simulation import SimulationConfig, run_simulation  # noqa: E402
from secagg.signing import deal_identities  # noqa: E402

GOOD, NO_KEY, OTHER_KEY, PLAINTEXT = (0, 1, 2), 3, 4, 5
ROUNDS = 2
DP = DPConfig(mode="sample", noise_multiplier=1.0, clip_norm=1.0)


@pytest.fixture(scope="module")
def flower_run(tmp_path_factory, strict_keys):
    base = tmp_path_factory.mktemp("flower")
    keys_dir, other_dir = base / "keys", base / "other"
    strict_keys.save(keys_dir)
    secagg.generate_keys(preset="strict").save(other_dir)
    key_of = {**{p: str(keys_dir / "client.key") for p in GOOD}, OTHER_KEY: str(other_dir / "client.key"),
              PLAINTEXT: str(keys_dir / "client.key")}
    # the dealer's --clients 6 --group-size 3: the good clients form one enrolment group
    identities, _ = deal_identities((f"client-{p}" for p in range(6)), keys_dir, group_size=3)
    task = example_task()
    settings = task.Settings(dp="sample", noise_multiplier=DP.noise_multiplier, clip_norm=DP.clip_norm)
    built = apps(task, settings, locate=lambda ctx: key_of.get(int(ctx.node_config["partition-id"])),
                 server_ctx=keys_dir / "server.ctx", nodes=6, rounds=ROUNDS, partitions=len(GOOD),
                 plaintext_partition=PLAINTEXT, locate_identity=lambda ctx: str(keys_dir),  # the folder
                 locate_roster=lambda ctx: str(keys_dir / "roster.json"), roster=keys_dir / "roster.json")
    return dict(simulate(base, *built, nodes=6), identities=identities)


@pytest.fixture(scope="module")
def standalone(strict_keys):
    cfg = dict(clients=len(GOOD), rounds=ROUNDS, aggregation="fedatt", preset="strict", dp=DP, seed=0)
    plain = run_simulation(SimulationConfig(**cfg, protection="plain"))
    enc = run_simulation(SimulationConfig(**cfg, protection="ckks"), keys=strict_keys)
    return plain, enc


def test_flower_aggregate_equals_standalone(flower_run, standalone, strict_keys):
    plain, enc = standalone
    history = flower_run["strategy"].history
    assert [sorted(h.contributors) for h in history] == [[f"client-{p}" for p in GOOD]] * ROUNDS
    # round 1 starts from the same global model as the standalone's round 0: same updates, so the
    # released aggregate must match the plaintext reference within the stated release tolerance
    updates = list(plain.views[0].client_updates.values())
    rule = FedAtt()
    reference = rule.combine(updates, num_samples=[1] * len(updates), reference=None)
    p = strict_keys.secret.preset
    sigma_f = 2.0**p.flood_bits * p.noise_std() * np.sqrt(len(updates))
    omegas = np.array([list(ClientScoredProtocol(rule).client_weights(u, num_samples=1, reference=None).values())
                       for u in updates])
    released = history[0].released
    worst = 0.0
    for i, name in enumerate(updates[0]):
        tol = 6 * sigma_f * (1 + np.abs(reference[name])) / omegas[:, i].sum() + 1e-7  # + float32 rounding
        err = np.abs(released[name] - reference[name])
        assert np.all(err <= tol), name
        worst = max(worst, float(err.max()))
    # and the whole run: the final global model equals the standalone encrypted run's up to CKKS noise
    final = flower_run["result"].arrays.to_numpy_ndarrays()
    diff = max(float(np.abs(a - enc.final_state[n]).max()) for a, n in zip(final, enc.final_state))
    assert diff <= 1e-4
    print(f"\nFlower vs standalone: round-1 aggregate max |diff| {worst:.2e}; final model max |diff| {diff:.2e}; "
          f"Flower run {flower_run['seconds']:.1f} s")


def test_bad_clients_are_dropped_with_specific_reasons(flower_run):
    for entry in flower_run["strategy"].history:
        reasons = sorted(entry.rejected.values())
        assert len(reasons) == 3, reasons
        assert any("MissingKeyError" in r and "secret-key" in r for r in reasons)
        assert any("KeyMismatchError" in r for r in reasons)
        assert any("MissingCiphertextError" in r and "plaintext arrays" in r for r in reasons)
        assert entry.key_holder in entry.nodes
    logged = [r.getMessage() for r in flower_run["records"] if r.levelno >= logging.WARNING]
    for word in ("MissingKeyError", "KeyMismatchError", "MissingCiphertextError"):
        assert sum(word in m for m in logged) == ROUNDS, word


def test_uploads_are_signed_and_key_holders_get_the_receipts(flower_run):
    from fedattn.flower import records as R

    history = flower_run["strategy"].history
    for entry in history:
        assert sorted(r.client_id for r in entry.receipts) == sorted(entry.contributors)
        assert len({r.commitment for r in entry.receipts}) == 1  # one model and configuration for all
        assert {r.round for r in entry.receipts} == {entry.round}
    assert history[0].receipts[0].commitment != history[1].receipts[0].commitment
    sent = flower_run["grid"].sent
    signs = [m for m in sent if m.metadata.message_type == R.SIGN_MESSAGE_TYPE]
    assert len(signs) == ROUNDS * len(GOOD)  # every contributor signed its round's one set
    queries = [m for m in sent if m.metadata.message_type == R.RELEASE_MESSAGE_TYPE]
    assert len(queries) == ROUNDS  # the one key holder each set names verified it and released


def test_epsilon_composes_across_rounds_in_context_state(flower_run, standalone):
    history = flower_run["strategy"].history
    for node in history[0].nodes:
        eps = [h.metrics[node]["epsilon"] for h in history]
        assert 0 < eps[0] < eps[1]  # a fresh accountant each round would repeat eps[0]
    plain, _ = standalone
    assert max(h.metrics[n]["epsilon"] for h in history[-1:] for n in h.nodes) == pytest.approx(plain.rounds[-1].epsilon)


def test_no_secret_key_on_the_server_side(flower_run, strict_keys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from secagg.signing import ClientIdentity

    secret_file = strict_keys.secret.to_bytes()
    secret_blob = strict_keys.secret._blobs["secret_key"]
    needles = [secret_blob[i:i + 64] for i in range(0, len(secret_blob) - 64, len(secret_blob) // 8)]
    needles += [i.key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,  # signing keys
                                    serialization.NoEncryption()) for i in flower_run["identities"].values()]
    sent = flower_run["grid"].sent
    assert len(sent) >= ROUNDS * 10  # 6 train messages, 3 set signatures and one release query per round
    for msg in sent:
        for record in msg.content.values():
            for value in record.values():
                data = value.data if hasattr(value, "data") else value if isinstance(value, bytes) else b""
                assert secret_file not in data and not any(n in data for n in needles)
    strategy = flower_run["strategy"]
    seen: set[int] = set()

    def walk(obj, depth=0):
        if id(obj) in seen or depth > 6:
            return
        seen.add(id(obj))
        assert not isinstance(obj, (secagg.SecretContext, ClientIdentity, Ed25519PrivateKey))
        if isinstance(obj, (bytes, bytearray)):
            assert not any(n in obj for n in needles)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple, set)):
            for v in obj:
                walk(v, depth + 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            walk(vars(obj), depth + 1)

    walk(strategy)
    assert not hasattr(strategy.server_role.aggregator, "secret")  # the server's roles hold public material only
    with pytest.raises(secagg.MissingSecretKeyError):
        strategy.public_context.decrypt()


def test_flower_stays_in_its_temporary_directory_and_leaves_no_process(flower_run):
    assert flower_run["left"] == [], f"processes left behind: {flower_run['left']}"
    assert flower_run["created"] == [], f"written outside the temporary directory: {flower_run['created']}"
    assert flower_run["ray_sessions"], "Ray's session should live in the test's temporary directory"


@pytest.mark.slow
def test_server_scored_protocol_on_flower(tmp_path):
    """The deep preset's circuit on Flower, signed: one round of 3 clients against the plaintext reference."""
    keys = secagg.generate_keys(preset="deep")
    keys_dir = tmp_path / "keys"
    keys.save(keys_dir)
    deal_identities((f"client-{p}" for p in range(3)), keys_dir, group_size=3)
    task = example_task()
    settings = task.Settings()
    from secagg.circuit import omega_max

    built = apps(task, settings, locate=lambda ctx: str(keys_dir / "client.key"),
                 server_ctx=keys_dir / "server.ctx", nodes=3, rounds=1, partitions=3,
                 protocol="server-scored", rule_options={"score": "l2_squared"},
                 locate_identity=lambda ctx: str(keys_dir), locate_roster=lambda ctx: str(keys_dir / "roster.json"),
                 roster=keys_dir / "roster.json",
                 key_holder_options={"trust_server_circuit": True, "max_weight": omega_max(4.0, 1.0)})
    run = simulate(tmp_path, *built, nodes=3)
    assert run["left"] == [] and run["created"] == []
    assert len(run["strategy"].history[0].receipts) == 3
    entry = run["strategy"].history[0]
    assert sorted(entry.contributors) == ["client-0", "client-1", "client-2"]
    plain = run_simulation(SimulationConfig(clients=3, rounds=1, aggregation="fedatt", rule_options={"score": "l2_squared"},
                                            protection="plain"))
    updates = list(plain.views[0].client_updates.values())
    reference = FedAtt(score="l2_squared").combine(updates, num_samples=[1] * 3, reference=None)
    scale = max(float(np.abs(u[n]).max()) for u in updates for n in u)
    for name, ref in reference.items():  # tests/fedattn/test_server_scored.py's stated tolerance
        np.testing.assert_allclose(entry.released[name], ref, atol=3e-3 * scale + 1e-3)
    worst = max(float(np.abs(entry.released[n] - r).max()) for n, r in reference.items())
    print(f"\nserver-scored on Flower: max |diff| {worst:.2e} (tolerance {3e-3 * scale + 1e-3:.2e}); {run['seconds']:.1f} s")


def test_the_example_seeds_dp_noise_only_on_nodes_labelled_seeded(monkeypatch):
    """The run config (the SuperLink's) holds a "seed"; the DP noise must not follow it unless the
    node's own configuration says this is a seeded simulation."""
    task = example_task()
    monkeypatch.delenv("SECFL_SEEDED_SIMULATION", raising=False)
    assert not task.seeded_simulation({})
    assert not task.seeded_simulation({"seed": 0, "secfl-seeded-simulation": "false"})
    assert task.seeded_simulation({"secfl-seeded-simulation": "true"})
    monkeypatch.setenv("SECFL_SEEDED_SIMULATION", "1")
    assert task.seeded_simulation({})

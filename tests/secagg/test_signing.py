"""Authenticated uploads: unsigned, tampered, replayed, duplicated and foreign payloads are dropped
with their own error and the round goes on with the valid ones; the aggregate is exactly theirs."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest
from helpers import SmallFederation
from typer.testing import CliRunner

import secagg
from fedattn.errors import (
    AuthenticationError,
    DuplicateUploadError,
    ModelInconsistencyError,
    ReplayError,
    SignatureError,
    UnknownClientError,
)
from fedattn.round import ClientMessage
from secagg import signing as auth
from secagg.framing import frame, unframe
from secfl.cli import app

IDS = [f"client-{i}" for i in range(4)]


@pytest.fixture(scope="module")
def keys():
    return secagg.generate_keys(preset="compact")


@pytest.fixture(scope="module")
def ids():
    return auth.generate_identities(IDS)


@pytest.fixture(scope="module")
def updates():
    rng = np.random.default_rng(0)
    return {cid: {"w": (rng.standard_normal((3, 4)) * 0.05).astype(np.float32),
                  "b": (rng.standard_normal(4) * 0.05).astype(np.float32)} for cid in IDS}


def _protocol(keys, ids, **kw):
    return SmallFederation(keys, IDS, identities=ids, **kw)


def _message(fed, updates, cid, rnd=0, commitment="c0", fresh=True):
    return fed.message(cid, updates.get(cid, updates["client-0"]), round=rnd, commitment=commitment, fresh=fresh)


def _mean(updates, cids):
    return {n: np.mean([updates[c][n].astype(np.float64) for c in cids], axis=0) for n in updates[cids[0]]}


def _reframe(envelope: bytes, *, header_changes=None, payload=None) -> bytes:
    """An attacker who rewrites an envelope and recomputes its (unkeyed) checksum."""
    header, blobs = unframe(envelope, magic=b"SFLSIGN1", version=1, what="x")
    header = {k: v for k, v in header.items() if k != "blob_sizes"}
    header.update(header_changes or {})
    return frame(b"SFLSIGN1", 1, header, [payload if payload is not None else bytes(blobs[0])])


def _round(fed, messages, rnd=0, commitment="c0", holder="client-0"):
    fed.ledgers[holder] = fed.holders[holder].ledger = secagg.MemoryLedger()
    fed.ledgers[holder].claim_round(fed.run, rnd, commitment)  # the key holder's own view of the round
    return fed.round(messages, round=rnd, holder=holder)


def test_signed_round_equals_the_mean(keys, ids, updates):
    p = _protocol(keys, ids)
    out = _round(p, [_message(p, updates, c) for c in IDS])
    assert out.rejections == () and sorted(out.contributors) == IDS
    ref = _mean(updates, IDS)
    assert all(np.max(np.abs(out.aggregate[n] - ref[n])) < 1e-3 for n in ref)


def _bad_cases(keys, ids, updates):
    p = _protocol(keys, ids)
    good = {c: _message(p, updates, c) for c in IDS}
    unsigned = secagg.encrypt_update(updates["client-1"], keys.secret, round=0, client_id="client-1").to_bytes()
    other = _message(p, updates, "client-2")
    foreign = SmallFederation(keys, ["client-9"])
    impostor = SmallFederation(keys, ["client-3"])  # claims client-3's id with another key
    stale = _message(p, updates, "client-1", rnd=1)
    return {
        "unsigned": (ClientMessage("client-1", unsigned, 10), SignatureError),
        "tampered payload": (ClientMessage("client-2", _reframe(other.payload, payload=_flip(other.payload)), 10),
                             SignatureError),
        "tampered round": (ClientMessage("client-1", _reframe(stale.payload, header_changes={"round": 0}), 10), SignatureError),
        "replayed round": (ClientMessage("client-1", stale.payload, 10), ReplayError),
        "foreign": (_message(foreign, updates, "client-9"), UnknownClientError),
        "impostor": (_message(impostor, updates, "client-3"), SignatureError),
    }, good


def _flip(envelope: bytes) -> bytes:
    header, blobs = unframe(envelope, magic=b"SFLSIGN1", version=1, what="x")
    payload = bytearray(blobs[0])
    payload[len(payload) // 2] ^= 0x01  # one coefficient bit: the CKKS checksum alone would not notice
    return bytes(payload)


@pytest.mark.parametrize("case", ["unsigned", "tampered payload", "tampered round", "replayed round", "foreign", "impostor"])
def test_bad_upload_is_dropped_and_the_round_goes_on(keys, ids, updates, case):
    cases, good = _bad_cases(keys, ids, updates)
    bad, error = cases[case]
    p = _protocol(keys, ids)
    kept = ["client-0"] + (["client-1"] if bad.client_id != "client-1" else []) + (["client-2"] if bad.client_id != "client-2" else [])
    messages = [good[c] for c in kept] + [bad]
    out = _round(p, messages)
    assert sorted(out.contributors) == sorted(kept)
    assert [(r.client_id, type(r.error)) for r in out.rejections] == [(bad.client_id, error)]
    ref = _mean(updates, kept)
    assert all(np.max(np.abs(out.aggregate[n] - ref[n])) < 1e-3 for n in ref)


def test_each_error_is_raised_by_open_envelope(keys, ids, updates):
    cases, _ = _bad_cases(keys, ids, updates)
    _, roster = ids
    for msg, error in cases.values():
        with pytest.raises(error):
            auth.open_envelope(msg.payload, roster, expected_round=0)


def test_duplicate_upload_keeps_the_first(keys, ids, updates):
    p = _protocol(keys, ids)
    first, second = _message(p, updates, "client-0"), _message(p, updates, "client-0")
    received, rejections = p.protocol.receive([first, second, _message(p, updates, "client-1")],
                                              aggregator=p.server.aggregator, round=0)
    assert [r.update.client_id for _, r in received] == ["client-0", "client-1"]
    assert [type(r.error) for r in rejections] == [DuplicateUploadError]


def test_a_client_cannot_sign_anothers_update(keys, ids, updates):
    identities, roster = ids
    payload = secagg.encrypt_update(updates["client-1"], keys.secret, round=0, client_id="client-1").to_bytes()
    env = auth.seal(payload, identities["client-0"], round=0, commitment="c0", fingerprint=keys.public.fingerprint)
    p = _protocol(keys, ids)
    _, rejections = p.protocol.receive([ClientMessage("client-0", env, 10), _message(p, updates, "client-2")],
                                       aggregator=p.server.aggregator, round=0)
    assert [(r.client_id, type(r.error)) for r in rejections] == [("client-0", SignatureError)]


def test_oversized_upload_is_refused_before_parsing(keys, ids, updates):
    p = _protocol(keys, ids, max_payload_bytes=1000)
    msg = _message(p, updates, "client-0")
    with pytest.raises(secagg.PayloadTooLargeError):
        auth.open_envelope(msg.payload, ids[1], expected_round=0, max_bytes=1000)


def test_key_holders_refuse_a_model_inconsistent_round(keys, ids, updates):
    p = _protocol(keys, ids)
    messages = [_message(p, updates, c, commitment="A" if c != "client-3" else "B") for c in IDS]
    with pytest.raises(ModelInconsistencyError, match="different global models"):
        _round(p, messages, commitment="A")


def test_key_holders_check_receipts_against_the_contributors(keys, ids, updates):
    import dataclasses

    p = _protocol(keys, ids)
    served = p.serve([_message(p, updates, c, fresh=False) for c in IDS[:3]], round=0)
    dropped_receipt = dataclasses.replace(served, receipts=served.receipts[:2])
    with pytest.raises(AuthenticationError, match="signed receipts"):
        p.release(dropped_receipt, holder="client-0")
    forged = auth.Receipt(**{**served.receipts[0].to_dict(), "commitment": "other"})
    with pytest.raises(SignatureError):
        p.release(dataclasses.replace(served, receipts=(forged, *served.receipts[1:])), holder="client-1")
    strict = _protocol(keys, ids, min_contributors=4)
    strict.ledgers["client-2"].claim_round(strict.run, 0, "c0")
    with pytest.raises(secagg.ReleaseRefusedError, match="at least 4"):
        strict.release(served, holder="client-2")
    assert p.release(served, holder="client-2").values["w"].shape == (3, 4)
    with pytest.raises(secagg.ReleaseRefusedError, match="already released"):
        p.release(served, holder="client-2")  # once per round


def test_identity_files_are_private_and_roster_holds_no_private_key(tmp_path, ids):
    identities, roster = ids
    path = identities["client-0"].save(tmp_path / "c0.id")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = auth.ClientIdentity.load(path)
    assert loaded.public_bytes() == identities["client-0"].public_bytes()
    raw = json.loads(roster.to_json())
    assert set(raw["clients"]) == set(IDS) and "PRIVATE" not in roster.to_json()
    back = auth.Roster.load(roster.save(tmp_path / "roster.json"))
    assert back.client_ids == tuple(IDS)
    (tmp_path / "bad.id").write_text("{not json")
    with pytest.raises(AuthenticationError, match="cannot load"):
        auth.ClientIdentity.load(tmp_path / "bad.id")
    with pytest.raises(AuthenticationError, match="twice"):
        auth.generate_identities(["a", "a"])


def test_commitment_names_model_and_config():
    state = {"w": np.zeros((2, 2), np.float32)}
    c = auth.round_commitment(0, state, {"lr": 0.1})
    assert c == auth.round_commitment(0, {"w": np.zeros((2, 2), np.float64)}, {"lr": 0.1})
    assert c != auth.round_commitment(1, state, {"lr": 0.1})
    assert c != auth.round_commitment(0, {"w": np.full((2, 2), 1e-7, np.float32)}, {"lr": 0.1})
    assert c != auth.round_commitment(0, state, {"lr": 0.2})
    assert c != auth.round_commitment(0, {"w": np.zeros((4,), np.float32)}, {"lr": 0.1})


def test_keys_generate_writes_identities(tmp_path):
    res = CliRunner().invoke(app, ["keys", "generate", "--preset", "compact", "--out", str(tmp_path), "--clients", "3"])
    assert res.exit_code == 0, res.output
    assert auth.Roster.load(tmp_path / "roster.json").client_ids == ("client-0", "client-1", "client-2")
    assert stat.S_IMODE((tmp_path / "client-2.id").stat().st_mode) == 0o600
    assert "verification keys" in res.output


def test_server_size_limit_fits_real_payloads_and_little_more(keys):
    n = 20_000
    update = {"a": np.full(n - 100, 0.01, np.float32), "b": np.full(100, 0.01, np.float32)}
    payload = secagg.encrypt_update(update, keys.secret, round=0, client_id="c", weights={"a": 1.0, "b": 1.0}).to_bytes()
    limit = secagg.max_payload_bytes(keys.secret.preset, n, 2)
    assert len(payload) <= limit < 3 * len(payload)

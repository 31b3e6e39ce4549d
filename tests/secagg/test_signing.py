"""Authenticated uploads: unsigned, tampered, replayed, duplicated and foreign uploads are dropped
with their own error and the round goes on with the valid ones; identities, rosters and groups."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest
from helpers import COMMIT, SmallFederation

import secagg
from fedattn.errors import (
    AuthenticationError,
    DuplicateUploadError,
    ModelInconsistencyError,
    ReplayError,
    SignatureError,
    UnknownClientError,
)
from secagg.framing import parse_json_object
from secagg.messages import decode_upload

IDS = [f"client-{i}" for i in range(4)]


@pytest.fixture(scope="module")
def keys():
    return secagg.generate_keys(preset="compact")


@pytest.fixture(scope="module")
def ids():
    return secagg.generate_identities(IDS, group_size=1)


@pytest.fixture(scope="module")
def updates():
    rng = np.random.default_rng(0)
    return {cid: {"w": (rng.standard_normal((3, 4)) * 0.05).astype(np.float32),
                  "b": (rng.standard_normal(4) * 0.05).astype(np.float32)} for cid in IDS}


def _fed(keys, ids, **kw):
    return SmallFederation(keys, IDS, identities=ids, min_contributors=kw.pop("min_contributors", 1), **kw)


def _mean(updates, cids):
    return {n: np.mean([updates[c][n].astype(np.float64) for c in cids], axis=0) for n in updates[cids[0]]}


def test_signed_round_equals_the_mean(keys, ids, updates):
    fed = _fed(keys, ids)
    out = fed.round([fed.message(c, updates[c]) for c in IDS])
    assert out.rejections == () and sorted(out.contributors) == IDS and out.aborted is None
    ref = _mean(updates, IDS)
    assert all(np.max(np.abs(out.aggregate[n] - ref[n])) < 1e-3 for n in ref)


def _bad_cases(keys, ids, updates):
    fed = _fed(keys, ids)
    foreign = SmallFederation(keys, ["client-9"])
    impostor = SmallFederation(keys, ["client-3"])  # claims client-3's id with another key
    stale = fed.message("client-1", updates["client-1"], round=1, fresh=True)
    other_run = _fed(keys, ids, run="another-run").message("client-2", updates["client-2"], fresh=True)
    tampered = bytearray(fed.message("client-2", updates["client-2"], fresh=True).payload)
    tampered[-5] ^= 0x01  # one coefficient bit of the ciphertexts: the signed digest no longer matches
    from fedattn.round import ClientMessage

    return {
        "tampered ciphertext": (ClientMessage("client-2", bytes(tampered), 10), SignatureError),
        "replayed round": (stale, ReplayError),
        "another run": (other_run, ReplayError),
        "foreign": (foreign.message("client-9", updates["client-0"]), UnknownClientError),
        "impostor": (impostor.message("client-3", updates["client-3"]), SignatureError),
    }


@pytest.mark.parametrize("case", ["tampered ciphertext", "replayed round", "another run", "foreign", "impostor"])
def test_bad_upload_is_dropped_and_the_round_goes_on(keys, ids, updates, case):
    bad, error = _bad_cases(keys, ids, updates)[case]
    fed = _fed(keys, ids)
    kept = [c for c in ("client-0", "client-1", "client-2") if c != bad.client_id]
    out = fed.round([fed.message(c, updates[c]) for c in kept] + [bad])
    assert sorted(out.contributors) == sorted(kept)
    assert [(r.client_id, type(r.error)) for r in out.rejections] == [(bad.client_id, error)]
    ref = _mean(updates, kept)
    assert all(np.max(np.abs(out.aggregate[n] - ref[n])) < 1e-3 for n in ref)


def test_duplicate_upload_keeps_the_first(keys, ids, updates):
    fed = _fed(keys, ids)
    first = fed.message("client-0", updates["client-0"])
    second = fed.message("client-0", updates["client-1"], fresh=True)  # a second, different update for the round
    served = fed.serve([first, second, fed.message("client-1", updates["client-1"])])
    assert served.contributors == ("client-0", "client-1")
    assert [type(r.error) for r in served.rejections] == [DuplicateUploadError]
    assert decode_upload(first.payload)[0] == served.state.receipt("client-0")


def test_key_holders_refuse_a_model_inconsistent_round(keys, ids, updates):
    fed = _fed(keys, ids)
    other = secagg.round_commitment(0, {}, {"crafted": True})
    messages = [fed.message(c, updates[c], commitment=other if c == "client-3" else COMMIT) for c in IDS]
    with pytest.raises(ModelInconsistencyError, match="different global models"):
        fed.round(messages)


def test_identity_files_are_private_and_roster_holds_no_private_key(tmp_path, ids):
    identities, roster = ids
    path = identities["client-0"].save(tmp_path / "c0.id")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(secagg.KeyFileError, match="already exists"):
        identities["client-0"].save(path)
    loaded = secagg.ClientIdentity.load(path)
    assert loaded.public_bytes() == identities["client-0"].public_bytes()
    raw = json.loads(roster.to_json())
    assert set(raw["clients"]) == set(IDS) and "PRIVATE" not in roster.to_json()
    back = secagg.Roster.load(roster.save(tmp_path / "roster.json"))
    assert back.client_ids == tuple(IDS) and back.groups == roster.groups
    (tmp_path / "bad.id").write_text("{not json")
    with pytest.raises(AuthenticationError, match="cannot load"):
        secagg.ClientIdentity.load(tmp_path / "bad.id")
    with pytest.raises(AuthenticationError, match="twice"):
        secagg.generate_identities(["a", "a"])


def test_enrolment_groups():
    _, roster = secagg.generate_identities([f"c{k}" for k in range(7)], group_size=2)
    assert roster.groups == (("c0", "c1"), ("c2", "c3"), ("c4", "c5", "c6"))  # the remainder joins the last
    assert roster.complete_groups(["c0", "c1", "c2", "c4", "c5", "c6"]) == (("c0", "c1"), ("c4", "c5", "c6"))
    roster.check_whole_groups(["c0", "c1", "c4", "c5", "c6"], min_size=2)
    with pytest.raises(AuthenticationError, match="1 of the 2 members"):
        roster.check_whole_groups(["c0", "c2", "c3"], min_size=2)
    with pytest.raises(AuthenticationError, match="smaller than min_contributors"):
        roster.check_whole_groups(["c0", "c1"], min_size=3)
    with pytest.raises(UnknownClientError):
        roster.check_whole_groups(["c0", "c1", "zed"], min_size=1)
    with pytest.raises(AuthenticationError, match="partition"):
        secagg.Roster(dict.fromkeys(["a", "b"], b"\x01" * 32), groups=[["a"]])


def test_commitment_names_run_model_dtype_and_config():
    state = {"w": np.zeros((2, 2), np.float32)}
    c = secagg.round_commitment(0, state, {"run": "r", "lr": 0.1})
    assert len(c) == 64 and c == secagg.round_commitment(0, {"w": np.zeros((2, 2), np.float32)}, {"run": "r", "lr": 0.1})
    for changed in [secagg.round_commitment(1, state, {"run": "r", "lr": 0.1}),
                    secagg.round_commitment(0, {"w": np.full((2, 2), 1e-7, np.float32)}, {"run": "r", "lr": 0.1}),
                    secagg.round_commitment(0, state, {"run": "r", "lr": 0.2}),
                    secagg.round_commitment(0, state, {"run": "s", "lr": 0.1}),
                    secagg.round_commitment(0, {"w": np.zeros((2, 2), np.float64)}, {"run": "r", "lr": 0.1}),
                    secagg.round_commitment(0, {"w": np.zeros((4,), np.float32)}, {"run": "r", "lr": 0.1})]:
        assert changed != c


def test_server_size_limit_fits_real_payloads_and_little_more(keys, ids):
    n = 20_000
    update = {"a": np.full(n - 100, 0.01, np.float32), "b": np.full(100, 0.01, np.float32)}
    payload = secagg.Uploader(keys.secret, identity=ids[0]["client-0"]).upload(update, run="r", round=0,
                                                                                 commitment="ab" * 32, weights=1.0)
    limit = secagg.max_payload_bytes(keys.secret.preset, n, 2)
    assert len(payload) <= limit < 1.2 * len(payload)


def test_json_nested_too_deeply_is_a_payload_error():
    with pytest.raises(secagg.PayloadError, match="nested too deeply"):
        parse_json_object(b"[" * 100_000 + b"]" * 100_000, what="x")
    with pytest.raises(secagg.PayloadError, match="too long"):  # int() refuses > 4,300 digits with ValueError
        parse_json_object(b'{"round": ' + b"7" * 5000 + b"}", what="x")
    with pytest.raises(secagg.PayloadError, match="not valid JSON"):
        parse_json_object(b'{"round": 1e400, }', what="x")

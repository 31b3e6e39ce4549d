"""Every bad input ends in its own exception from secagg.errors, with a message that says what to do,
and a refused upload changes nothing on the server."""

import dataclasses
import json

import numpy as np
import pytest
from helpers import random_update
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secagg
from secagg import errors
from secagg.framing import frame_signed
from secagg.messages import FORMAT_VERSION, UPLOAD_MAGIC, Receipt, body_digest, decode_upload
from secagg.presets import PRESETS
from secagg.ring import Ring

RUN, COMMIT = "run-1", "ab" * 32


@pytest.fixture(scope="module")
def world(compact_keys):
    ids, roster = secagg.generate_identities(["alice", "bob"], group_size=2)
    update = random_update(np.random.default_rng(0))
    layout = secagg.Layout.of({n: np.zeros(a.shape, a.dtype) for n, a in update.items()})
    wire = secagg.Uploader(compact_keys.secret, identity=ids["alice"]).upload(update, run=RUN, round=4, commitment=COMMIT)
    return ids, roster, update, layout, wire


def _server(keys, world, **kw):
    ids, roster, update, layout, wire = world
    return secagg.Aggregator(keys.public, roster=roster, **kw).open_round(run=RUN, round=4, layout=layout)


def _resign(wire: bytes, identity, *, body=None, **changes) -> bytes:
    """What an enrolled client can send: any header it likes, validly signed with its own key."""
    receipt, old_body = decode_upload(wire)
    body = bytes(old_body) if body is None else body
    fields = {**receipt.signed_fields(), "body_digest": body_digest(body, Ring(PRESETS[receipt.preset]).residue_bytes),
              **changes}
    unsigned = Receipt(**fields)  # signed with the insider's own key, whatever the header claims
    signed = {**unsigned.to_dict(), "signature": identity.key.sign(unsigned.signed_bytes()).hex()}
    return frame_signed(UPLOAD_MAGIC, FORMAT_VERSION, signed, body)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(compact_keys, world, bad):
    x = np.zeros(10, np.float32)
    x[3] = bad
    with pytest.raises(errors.NonFiniteValueError, match="'w'.*diverged"):
        secagg.Uploader(compact_keys.secret, identity=world[0]["alice"]).upload({"w": x}, run=RUN, round=0, commitment=COMMIT)


def test_values_beyond_safe_range(compact_keys, world):
    up = secagg.Uploader(compact_keys.secret, identity=world[0]["alice"])
    with pytest.raises(errors.ValueOutOfRangeError, match="'big'.*wrap around.*Clip or scale"):
        up.upload({"ok": np.zeros(3), "big": np.array([0.0, 5.0])}, run=RUN, round=0, commitment=COMMIT)


@pytest.mark.parametrize("update, message", [
    ([1, 2], "mapping"),
    ({}, "empty"),
    ({"w": np.arange(3)}, "only float16/32/64"),
    ({"w": np.zeros(0)}, "no values"),
    ({"": np.zeros(2)}, "non-empty strings"),
    ({secagg.WEIGHTS_ENTRY: np.zeros(2)}, "reserved"),
])
def test_malformed_updates(compact_keys, world, update, message):
    with pytest.raises(errors.InvalidUpdateError, match=message):
        secagg.Uploader(compact_keys.secret, identity=world[0]["alice"]).upload(update, run=RUN, round=0, commitment=COMMIT)


@pytest.mark.parametrize("kwargs, message", [
    ({"round": -1}, "round"),
    ({"round": 1.5}, "round"),
    ({"run": "bad run with spaces"}, "run id"),
    ({"commitment": "not hex"}, "commitment"),
])
def test_bad_run_round_or_commitment(compact_keys, world, kwargs, message):
    args = {"run": RUN, "round": 0, "commitment": COMMIT, **kwargs}
    with pytest.raises(ValueError, match=message):
        secagg.Uploader(compact_keys.secret, identity=world[0]["alice"]).upload({"w": np.zeros(2)}, **args)


def test_bad_weights(compact_keys, world):
    up = secagg.Uploader(compact_keys.secret, identity=world[0]["alice"])
    for weights, message in ((-1.0, r"\[0, 1\]"), (2.0, r"\[0, 1\]"), ({"v": 1.0}, "one weight per array")):
        with pytest.raises(errors.InvalidUpdateError, match=message):
            up.upload({"w": np.zeros(2)}, run=RUN, round=0, commitment=COMMIT, weights=weights)


def test_a_client_uploads_once_per_round(compact_keys, world):
    ids = world[0]
    up = secagg.Uploader(compact_keys.secret, identity=ids["alice"])
    sent = up.upload({"w": np.zeros(2)}, run=RUN, round=3, commitment=COMMIT)
    # a retry of the round gets the same bytes: never a second encryption of another update
    assert up.upload({"w": np.ones(2) * 0.1}, run=RUN, round=3, commitment=COMMIT) == sent
    for rnd, commitment in ((3, "ee" * 32), (2, COMMIT)):
        with pytest.raises(errors.ReplayError, match="one signed update per round"):
            up.upload({"w": np.ones(2) * 0.1}, run=RUN, round=rnd, commitment=commitment)


def test_upload_from_another_key_set_or_preset(compact_keys, world):
    ids, roster, update, layout, wire = world
    other = secagg.generate_keys(preset="compact")
    foreign = secagg.Uploader(other.secret, identity=ids["bob"]).upload(update, run=RUN, round=4, commitment=COMMIT)
    server = _server(compact_keys, world)
    with pytest.raises(errors.KeyMismatchError, match="provision that client"):
        server.receive(foreign)
    assert server.contributors == ()


def test_truncated_extended_oversized_or_not_an_upload(compact_keys, world):
    wire = world[4]
    server = _server(compact_keys, world)
    for data, error, message in [
        (wire[:30], errors.PayloadError, "not valid JSON|truncated|malformed"),
        (wire[:-100], errors.PayloadError, "holds .* bytes"),
        (wire + b"\x00" * 10, errors.PayloadError, "holds .* bytes"),
        (b"GARBAGE!" + wire[8:], errors.PayloadError, "not a secfl upload"),
        ("text", errors.PayloadError, "must be bytes"),
    ]:
        with pytest.raises(error, match=message):
            server.receive(data)
    with pytest.raises(errors.PayloadTooLargeError, match="raise max_bytes"):
        _server(compact_keys, world, max_payload_bytes=len(wire) - 1).receive(wire)
    assert server.contributors == ()


def test_a_flipped_bit_anywhere_is_refused(compact_keys, world):
    wire = world[4]
    server = _server(compact_keys, world)
    for pos in (20, 200, len(wire) // 2, len(wire) - 1):
        flipped = bytearray(wire)
        flipped[pos] ^= 0x10
        with pytest.raises(errors.SecAggError):
            server.receive(bytes(flipped))
    assert server.contributors == ()
    server.receive(wire)
    assert server.contributors == ("alice",)


def test_other_format_version(compact_keys, world):
    newer = bytearray(world[4])
    newer[8] += 1
    with pytest.raises(errors.UnsupportedVersionError, match="upgrade"):
        _server(compact_keys, world).receive(bytes(newer))


def test_stale_replayed_or_foreign_run(compact_keys, world):
    ids, roster, update, layout, wire = world
    for run, rnd in ((RUN, 5), ("another-run", 4)):
        server = secagg.Aggregator(compact_keys.public, roster=roster).open_round(run=run, round=rnd, layout=layout)
        with pytest.raises(errors.ReplayError, match="replayed or stale"):
            server.receive(wire)


def test_duplicate_upload_and_duplicate_seed(compact_keys, world):
    ids, roster, update, layout, wire = world
    server = _server(compact_keys, world)
    server.receive(wire)
    with pytest.raises(errors.DuplicateUploadError, match="first one counts"):
        server.receive(wire)
    copycat = _resign(secagg.Uploader(compact_keys.secret, identity=ids["bob"]).upload(
        update, run=RUN, round=4, commitment=COMMIT), ids["bob"], seed=decode_upload(wire)[0].seed)
    with pytest.raises(errors.DuplicateUploadError, match="seed"):
        server.receive(copycat)
    assert server.contributors == ("alice",)


def test_other_architecture(compact_keys, world):
    ids, roster, update, layout, wire = world
    server = secagg.Aggregator(compact_keys.public, roster=roster).open_round(
        run=RUN, round=4, layout=secagg.Layout.of({"w": np.zeros((3, 2), np.float32)}))
    with pytest.raises(errors.LayoutMismatchError, match="another model architecture"):
        server.receive(wire)


@pytest.mark.parametrize("changes, error, message", [
    ({"client_id": "bob"}, errors.SignatureError, "does not verify"),  # signed by alice, claims bob
    ({"client_id": "mallory"}, errors.UnknownClientError, "not on the roster"),
    ({"keys": "00" * 16}, errors.KeyMismatchError, "another key set"),
    ({"preset": "strict"}, errors.KeyMismatchError, "preset"),
    ({"layout_hash": "0" * 64}, errors.LayoutMismatchError, "architecture"),
    ({"seed": ""}, errors.PayloadError, "seed"),
    ({"seed": "xyz"}, errors.PayloadError, "seed"),
    ({"round": -3}, errors.PayloadError, "round"),
    ({"round": "4"}, errors.PayloadError, "round"),
    ({"run": "a b"}, errors.PayloadError, "run id"),
    ({"body_digest": "0" * 64}, errors.SignatureError, "signed digest"),
])
def test_forged_header_fields_validly_signed_by_an_insider(compact_keys, world, changes, error, message):
    ids = world[0]
    forged = _resign(world[4], ids["alice"], **changes)
    if changes.get("body_digest"):  # keep the forged digest: the body no longer matches it
        receipt, body = decode_upload(forged)
        unsigned = Receipt(**{**receipt.signed_fields(), **changes})
        forged = frame_signed(UPLOAD_MAGIC, FORMAT_VERSION, {**unsigned.to_dict(), "signature": ids["alice"].key.sign(
            unsigned.signed_bytes()).hex()}, bytes(body))
    server = _server(compact_keys, world)
    with pytest.raises(error, match=message):
        server.receive(forged)
    assert server.contributors == ()


def test_a_residue_beyond_its_prime_is_refused(compact_keys, world):
    ids, roster, update, layout, wire = world
    receipt, body = decode_upload(wire)
    bad = bytearray(body)
    bad[:8] = b"\xff" * 8  # the first residue becomes >= q (compact's one 60-bit prime, stored in 8 bytes)
    server = _server(compact_keys, world)
    with pytest.raises(errors.PayloadError, match="beyond its prime"):
        server.receive(_resign(wire, ids["alice"], body=bytes(bad)))
    assert server.contributors == ()


def test_headers_that_attack_the_parser(compact_keys, world):
    """Nested 5,000 deep, or huge numbers: refused by the library's own checks, before any signature."""
    server = _server(compact_keys, world)
    nested = ("[" * 5000 + "]" * 5000).encode()
    head = json.dumps({"client_id": "alice"})[:-1].encode() + b', "x": ' + nested + b"}"
    for header in (head, b'{"round": 1' + b"0" * 400 + b"}", b'{"seed": 1e999}'):
        blob = UPLOAD_MAGIC + FORMAT_VERSION.to_bytes(2, "little") + len(header).to_bytes(4, "little") + header
        with pytest.raises(errors.PayloadError):
            server.receive(blob)


def test_ratio_with_zero_total_weight(compact_keys):
    ups = {f"c{k}": {"w": np.full(3, 0.1)} for k in range(2)}
    with pytest.raises(errors.EmptyAggregationError, match="indistinguishable from zero"):
        secagg.local_round(compact_keys, ups, weights=0.0)


def test_headroom_is_checked_before_decrypting(compact_keys):
    # compact: 60-bit modulus, scale 2^40, max_abs 4 -> sums of at most 2^17 clients fit
    ids, roster = secagg.generate_identities(["a"])
    holder = secagg.KeyHolder(compact_keys.secret, identity=ids["a"], roster=roster, max_weight=2.0**17)
    assert holder.max_weight == 2.0**17  # a release of 2 members at this weight would overflow: see test_verified_release


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_upload_bytes_end_in_secagg_errors(compact_keys, world, data):
    """Bit flips, truncation and extension anywhere in an upload: a specific secagg error, or (for
    bytes no check covers, none here) acceptance of exactly the original upload."""
    wire = bytearray(world[4])
    op = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if op == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(wire) - 1), min_size=1, max_size=6)):
            wire[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "truncate":
        wire = wire[:data.draw(st.integers(0, len(wire) - 1))]
    else:
        wire += data.draw(st.binary(min_size=1, max_size=64))
    server = _server(compact_keys, world)
    try:
        receipt = server.receive(bytes(wire))
    except errors.SecAggError:
        assert server.contributors == ()
        return
    assert bytes(wire) == world[4] and receipt.client_id == "alice"


def test_receipt_replace_is_refused_by_the_signature(world):
    receipt, _ = decode_upload(world[4])
    forged = dataclasses.replace(receipt, round=receipt.round + 1)
    with pytest.raises(errors.SignatureError):
        forged.verify(world[1])

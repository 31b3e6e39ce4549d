"""Every bad input ends in its own exception from secagg.errors, with a message that says what to do."""

import numpy as np
import pytest
from helpers import random_update
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secagg
from secagg import errors
from secagg.framing import frame, unframe
from secagg.unsafe import decrypt_raw
from secagg.wire import _MAGIC, FORMAT_VERSION


@pytest.fixture(scope="module")
def payload(compact_keys):
    u = random_update(np.random.default_rng(0))
    return secagg.encrypt_update(u, compact_keys.secret, round=4, client_id="alice").to_bytes()


def reframe(data: bytes, mutate_header=None, mutate_blobs=None) -> bytes:
    """Re-pack a payload with a *valid* checksum, so the checks behind the checksum are exercised."""
    header, blobs = unframe(data, magic=_MAGIC, version=FORMAT_VERSION, what="p")
    header = {k: v for k, v in header.items() if k != "blob_sizes"}
    blobs = [bytes(b) for b in blobs]
    if mutate_header:
        mutate_header(header)
    if mutate_blobs:
        blobs = mutate_blobs(blobs)
    return frame(_MAGIC, FORMAT_VERSION, header, blobs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(compact_keys, bad):
    x = np.zeros(10, np.float32)
    x[3] = bad
    with pytest.raises(errors.NonFiniteValueError, match="'w'.*diverged"):
        secagg.encrypt_update({"w": x}, compact_keys.secret, round=0, client_id="c")


def test_values_beyond_safe_range(compact_keys):
    with pytest.raises(errors.ValueOutOfRangeError, match="'big'.*wrap around.*Clip or scale"):
        secagg.encrypt_update({"ok": np.zeros(3), "big": np.array([0.0, 5.0])}, compact_keys.secret, round=0, client_id="c")
    with pytest.raises(errors.ValueOutOfRangeError):  # weights that push values out of range
        secagg.encrypt_update({"w": np.full(3, 1.0)}, compact_keys.secret, round=0, client_id="c", weights=10.0)


@pytest.mark.parametrize("update, message", [
    ([1, 2], "mapping"),
    ({}, "empty"),
    ({"w": np.arange(3)}, "only float16/32/64"),
    ({"w": np.zeros(0)}, "no values"),
    ({"": np.zeros(2)}, "non-empty strings"),
    ({secagg.WEIGHTS_ENTRY: np.zeros(2)}, "reserved"),
])
def test_malformed_updates(compact_keys, update, message):
    with pytest.raises(errors.InvalidUpdateError, match=message):
        secagg.encrypt_update(update, compact_keys.secret, round=0, client_id="c")


@pytest.mark.parametrize("kwargs, message", [
    ({"round": -1, "client_id": "c"}, "round"),
    ({"round": 1.5, "client_id": "c"}, "round"),
    ({"round": 0, "client_id": "bad id with spaces"}, "client_id"),
])
def test_bad_round_or_client_id(compact_keys, kwargs, message):
    with pytest.raises(ValueError, match=message):
        secagg.encrypt_update({"w": np.zeros(2)}, compact_keys.secret, **kwargs)


def test_bad_weights(compact_keys):
    with pytest.raises(errors.InvalidUpdateError, match="non-negative"):
        secagg.encrypt_update({"w": np.zeros(2)}, compact_keys.secret, round=0, client_id="c", weights=-1.0)
    with pytest.raises(errors.InvalidUpdateError, match="one weight per array"):
        secagg.encrypt_update({"w": np.zeros(2)}, compact_keys.secret, round=0, client_id="c", weights={"v": 1.0})


def test_layouts_that_differ(compact_keys):
    a = secagg.encrypt_update({"w": np.zeros((2, 3))}, compact_keys.secret, round=0, client_id="a")
    b = secagg.encrypt_update({"w": np.zeros((3, 2))}, compact_keys.secret, round=0, client_id="b")
    with pytest.raises(errors.LayoutMismatchError, match="same model architecture"):
        secagg.aggregate([a, b], compact_keys.public)


def test_payload_from_another_key_set(compact_keys, payload):
    other = secagg.generate_keys(preset="compact")
    with pytest.raises(errors.KeyMismatchError, match="provision that client"):
        secagg.EncryptedUpdate.from_bytes(payload, other.public)
    with pytest.raises(errors.KeyMismatchError, match="preset"):
        secagg.EncryptedUpdate.from_bytes(payload, secagg.generate_keys(preset="strict").public)
    enc = secagg.EncryptedUpdate.from_bytes(payload, compact_keys.public)
    with pytest.raises(errors.KeyMismatchError):
        secagg.aggregate([enc], other.public)
    with pytest.raises(errors.KeyMismatchError):
        secagg.decrypt(enc, other.secret)


def test_truncated_corrupted_extended_oversized(compact_keys, payload):
    pub = compact_keys.public
    with pytest.raises(errors.PayloadError, match="truncated"):
        secagg.EncryptedUpdate.from_bytes(payload[:30], pub)
    with pytest.raises(errors.PayloadError, match="checksum"):
        secagg.EncryptedUpdate.from_bytes(payload[:-100], pub)
    with pytest.raises(errors.PayloadError, match="checksum"):
        secagg.EncryptedUpdate.from_bytes(payload + b"\x00" * 10, pub)
    flipped = bytearray(payload)
    flipped[len(payload) // 2] ^= 0x10
    with pytest.raises(errors.PayloadError, match="corrupted"):
        secagg.EncryptedUpdate.from_bytes(bytes(flipped), pub)
    with pytest.raises(errors.PayloadTooLargeError, match="raise max_bytes"):
        secagg.EncryptedUpdate.from_bytes(payload, pub, max_bytes=len(payload) - 1)
    with pytest.raises(errors.PayloadError, match="not a secfl payload"):
        secagg.EncryptedUpdate.from_bytes(b"GARBAGE!" + payload[8:], pub)
    with pytest.raises(errors.PayloadError, match="must be bytes"):
        secagg.EncryptedUpdate.from_bytes("text", pub)


def test_other_format_version(compact_keys, payload):
    header, blobs = unframe(payload, magic=_MAGIC, version=FORMAT_VERSION, what="p")
    header.pop("blob_sizes")
    newer = frame(_MAGIC, FORMAT_VERSION + 1, header, [bytes(b) for b in blobs])
    with pytest.raises(errors.UnsupportedVersionError, match="upgrade"):
        secagg.EncryptedUpdate.from_bytes(newer, compact_keys.public)


def test_wrong_round(compact_keys, payload):
    with pytest.raises(errors.RoundMismatchError, match="round 4, expected round 5"):
        secagg.EncryptedUpdate.from_bytes(payload, compact_keys.public, expected_round=5)
    a = secagg.EncryptedUpdate.from_bytes(payload, compact_keys.public)
    b = secagg.encrypt_update(random_update(np.random.default_rng(1)), compact_keys.secret, round=3, client_id="bob")
    with pytest.raises(errors.RoundMismatchError, match="one round at a time"):
        secagg.aggregate([a, b], compact_keys.public)
    with pytest.raises(errors.RoundMismatchError):
        secagg.aggregate([a], compact_keys.public, expected_round=9)


def test_aggregating_nothing(compact_keys):
    with pytest.raises(errors.EmptyAggregationError, match="no update was received"):
        secagg.aggregate([], compact_keys.public)


def test_duplicate_client(compact_keys, payload):
    a = secagg.EncryptedUpdate.from_bytes(payload, compact_keys.public)
    b = secagg.EncryptedUpdate.from_bytes(payload, compact_keys.public)
    with pytest.raises(errors.DuplicateClientError, match="alice"):
        secagg.aggregate([a, b], compact_keys.public)


def test_headroom_is_checked_before_computing(compact_keys):
    # compact: 60-bit modulus, scale 2^40, max_abs 4 -> at most 2^17 clients' worth of bound
    enc = secagg.encrypt_update({"w": np.zeros(4)}, compact_keys.secret, round=0, client_id="a")
    with pytest.raises(errors.HeadroomError, match="fewer clients"):
        secagg.aggregate([enc], compact_keys.public, weights=[2.0**20 + 0.5])
    with pytest.raises(errors.HeadroomError, match="normalise the weights"):
        secagg.aggregate([enc], compact_keys.public, weights=[5000.5])


def test_weights_of_wrong_length_or_value(compact_keys):
    enc = secagg.encrypt_update({"w": np.zeros(4)}, compact_keys.secret, round=0, client_id="a")
    with pytest.raises(ValueError, match="one entry per update"):
        secagg.aggregate([enc], compact_keys.public, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        secagg.aggregate([enc], compact_keys.public, weights=[float("nan")])
    with pytest.raises(errors.LayoutMismatchError):
        secagg.aggregate([enc], compact_keys.public, weights=[{"v": 1.0}])


def test_ratio_with_zero_total_weight(compact_keys):
    encs = [secagg.encrypt_update({"w": np.full(3, 0.1)}, compact_keys.secret, round=0, client_id=f"c{k}", weights=0.0)
            for k in range(2)]
    with pytest.raises(errors.EmptyAggregationError, match="indistinguishable from zero"):
        secagg.decrypt_ratio(secagg.aggregate(encs, compact_keys.public), compact_keys.secret)
    plain = secagg.encrypt_update({"w": np.full(3, 0.1)}, compact_keys.secret, round=0, client_id="x")
    with pytest.raises(errors.PayloadError, match="ratio form"):
        secagg.decrypt_ratio(plain, compact_keys.secret)


@pytest.mark.parametrize("field, value, message", [
    ("layout_hash", "0" * 64, "layout hash"),
    ("terms", [[0, 0, 10], [1, 8192, 8200]], "overlap or leave"),
    ("terms", [[0, 0, 8192], [1, 8192, 12233]], "do not cover"),
    ("terms", [[5, 0, 10], [1, 8192, 12234]], "outside"),
    ("terms", [[0, 0, 8192]], "one \\[position"),
    ("contributors", ["a", "a"], "unique"),
    ("contributors", ["white space"], "contributors"),
    ("kind", "sum-of-squares", "kind"),
    ("round", -3, "non-negative"),
    ("round", "4", "round"),
    ("scale_bits", 1000, "do not fit"),
    ("bound", float("inf"), "JSON"),
    ("format", "other", "not a secfl"),
])
def test_forged_header_fields_with_valid_checksum(compact_keys, payload, field, value, message):
    def mutate(header):
        header[field] = value

    if isinstance(value, float) and not np.isfinite(value):
        with pytest.raises(ValueError):  # canonical JSON refuses to even write NaN/inf
            reframe(payload, mutate)
        return
    with pytest.raises(errors.PayloadError, match=message):
        secagg.EncryptedUpdate.from_bytes(reframe(payload, mutate), compact_keys.public)


def test_decompression_bomb_is_refused(compact_keys, payload):
    import struct

    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\x00" * 50_000_000)  # ~1.5 KB that inflates to 50 MB
    blob = struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 1, 2, 0, 16 + len(bomb)) + bomb
    forged = reframe(payload, mutate_blobs=lambda blobs: [blob] + blobs[1:])
    with pytest.raises(errors.PayloadError, match="inflates to|oversized"):
        secagg.EncryptedUpdate.from_bytes(forged, compact_keys.public)


def test_ciphertext_blob_that_is_not_seal(compact_keys, payload):
    forged = reframe(payload, mutate_blobs=lambda blobs: [b"\x5e\xa1" + b"\x00" * 30] + blobs[1:])
    with pytest.raises(errors.PayloadError, match="SEAL header|declares"):
        secagg.EncryptedUpdate.from_bytes(forged, compact_keys.public)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_ciphertext_bytes_never_crash_or_pass_silently(compact_keys, payload, data):
    """Bit flips, truncation and extension *behind* a valid checksum reach SEAL's parser: each must
    end in a secagg error (at parse, or at decryption's bound check), never a crash or silent garbage."""
    header, blobs = unframe(payload, magic=_MAGIC, version=FORMAT_VERSION, what="p")
    blob = bytearray(blobs[0])
    op = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if op == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=6)):
            blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    else:
        blob += data.draw(st.binary(min_size=1, max_size=64))
    forged = reframe(payload, mutate_blobs=lambda blobs: [bytes(blob)] + blobs[1:])
    try:
        enc = secagg.EncryptedUpdate.from_bytes(forged, compact_keys.public)
        out = decrypt_raw(enc, compact_keys.secret)
    except errors.SecAggError:
        return
    original = decrypt_raw(secagg.EncryptedUpdate.from_bytes(payload, compact_keys.public), compact_keys.secret)
    # a flip that SEAL cannot notice (e.g. in the zstd frame's checksum-free padding) must leave the data intact
    np.testing.assert_allclose(out, original, atol=1e-8)

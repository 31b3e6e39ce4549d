"""A bounded run of the wire fuzzer (tests/helpers/fuzz_wire.py) in CI; long runs use atheris."""

from __future__ import annotations

from functools import lru_cache

from helpers import fuzz_wire
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCRIPT = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2**32 - 1), st.integers(0, 255)), min_size=1, max_size=4)


def _encode(mode: int, ops) -> bytes:
    import struct

    return bytes([mode]) + b"".join(struct.pack("<BIB", op, pos, value) for op, pos, value in ops)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.integers(1, 3), ops=SCRIPT)
def test_edited_uploads_end_in_specific_errors(mode, ops):
    fuzz_wire.one_input(_encode(mode, ops))


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=512))
def test_raw_bytes_end_in_specific_errors(raw):
    fuzz_wire.one_input(b"\x00" + raw)


def test_each_mode_reaches_its_layer():
    """Sanity of the harness: an empty edit script is accepted in every mode that starts valid."""
    for mode in (1, 2, 3):
        fuzz_wire.one_input(bytes([mode]))


def test_an_insiders_garbage_ciphertext_is_refused_by_the_key_holder():
    """A flipped bit in an enrolled client's own ciphertext, validly re-signed: well formed, decrypts to
    garbage, and the key holder's range check on the flooded sum withholds the round."""
    assert fuzz_wire.one_input(bytes.fromhex("03000000000000")) == "refused"


@lru_cache(maxsize=1)
def _request_world():
    """A valid release request of two members, as a malicious server would start from."""
    import numpy as np
    from helpers.attacker import signed_round

    import secagg

    keys = secagg.generate_keys(preset="compact")
    ids, roster = secagg.generate_identities(["a", "b"], group_size=2)
    ledgers = {c: secagg.MemoryLedger() for c in ids}
    updates = {c: {"w": np.full(300, 0.01)} for c in ids}
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="a", weights=1.0)
    return keys, ids, roster, ledgers["a"].commitment("run", 0), rnd.request(rnd.honest_sum("c0"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=SCRIPT)
def test_edited_release_requests_end_in_specific_errors(ops):
    """A malicious server's bytes at the key holder: released (the edit changed nothing that counts)
    or refused with a secfl error; never another exception."""
    import secagg

    keys, ids, roster, commitment, request = _request_world()
    ledger = secagg.MemoryLedger()  # a fresh one per case, so that every case reaches the deep checks
    ledger.claim_round("run", 0, commitment)
    holder = secagg.KeyHolder(keys.secret, identity=ids["a"], roster=roster, ledger=ledger)
    edited = fuzz_wire._edit(request, _encode(0, ops)[1:])
    try:
        holder.release(edited)
    except secagg.SecAggError:
        pass

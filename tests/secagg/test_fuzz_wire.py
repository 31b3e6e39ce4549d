"""A bounded run of the wire fuzzer (tests/helpers/fuzz_wire.py) in CI; long runs use atheris."""

from __future__ import annotations

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


def test_regression_forged_scale_cannot_knock_out_a_valid_upload():
    """Found by atheris: an insider flipped the lowest bit of its ciphertext's scale (2^40 + 1/16).
    It passed a log2-tolerance check, was added first, and SEAL then refused the valid upload."""
    fuzz_wire.one_input(bytes.fromhex("0300240300000009"))

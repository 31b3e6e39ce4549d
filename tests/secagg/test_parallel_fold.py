"""The server's fold on threads: the same request as one thread, an upload refused in any range of
its ciphertexts adds nothing, and a streamed request is the request."""

import io

import numpy as np
import pytest

import secagg
from secagg import errors, server
from secagg.framing import frame_signed
from secagg.messages import (
    FORMAT_VERSION,
    UPLOAD_MAGIC,
    Receipt,
    body_digest,
    chunk_digests,
    decode_upload,
    root_digest,
)
from secagg.ring import Ring

RUN, COMMIT = "run-par", "cd" * 32


@pytest.fixture(scope="module")
def world(compact_keys):
    """Three clients in one enrolment group, updates of 5 ciphertexts each (threads get ranges of them)."""
    ids, roster = secagg.generate_identities(["c0", "c1", "c2"], group_size=3)
    per_ct = compact_keys.secret.preset.values_per_ciphertext
    rng = np.random.default_rng(3)
    updates = {c: {"w": rng.uniform(-1, 1, 4 * per_ct + 17).astype(np.float32), "b": rng.uniform(-1, 1, 9)}
               for c in ids}
    layout = secagg.Layout.of(updates["c0"])
    wires = {c: secagg.Uploader(compact_keys.secret, identity=ids[c], workers=1).upload(
        updates[c], run=RUN, round=0, commitment=COMMIT) for c in ids}
    assert layout.chunks(per_ct) == 5
    return ids, roster, layout, wires


def _request(keys, world, workers, extra=(), *, first="c0", stream=False):
    ids, roster, layout, wires = world
    state = secagg.Aggregator(keys.public, roster=roster, workers=workers).open_round(run=RUN, round=0, layout=layout)
    for bad, error in extra if first is None else ():  # refused as their group's first upload
        with pytest.raises(error):
            state.receive(bad)
        assert state.contributors == ()
    state.receive(wires["c0"])
    for bad, error in extra if first is not None else ():  # refused while their group's sum holds c0's upload
        with pytest.raises(error):
            state.receive(bad)
        assert state.contributors == ("c0",)
    for c in ("c1", "c2"):
        state.receive(wires[c])
    cset = state.contributor_set(key_holder="c0")
    signatures = {m: cset.sign(ids[m]) for m in cset.members}
    if not stream:
        return state.request(cset, signatures)
    sink = io.BytesIO()
    assert state.write_request(cset, signatures, sink) == len(sink.getvalue())
    return sink.getvalue()


def _resign(wire, identity, body):
    """An enrolled client signing bytes of its choice (a valid signature over a bad body)."""
    receipt, _ = decode_upload(wire)
    unsigned = Receipt(**{**receipt.signed_fields(), "body_digest": body_digest(body, len(body) // 5)})
    signed = {**unsigned.to_dict(), "signature": identity.key.sign(unsigned.signed_bytes()).hex()}
    return frame_signed(UPLOAD_MAGIC, FORMAT_VERSION, signed, body)


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_threads_fold_to_the_same_request_as_one(compact_keys, world, workers):
    assert _request(compact_keys, world, workers) == _request(compact_keys, world, 1)


def test_a_thread_count_below_one_is_refused(compact_keys, world):
    with pytest.raises(ValueError, match="workers"):
        secagg.Aggregator(compact_keys.public, roster=world[1], workers=0)


@pytest.mark.parametrize("block", [16, 1])
def test_an_upload_refused_in_its_last_range_adds_nothing(compact_keys, world, block, monkeypatch):
    """Three threads check a range of the 5 ciphertexts each; each bad upload is bad in its last
    ciphertext only: had a range that passed been added before all were checked, the group's sum
    (which holds c0's upload) and so the request would differ. With blocks of one ciphertext, the
    refusal comes after other blocks of the same range were added, and takes them back."""
    monkeypatch.setattr(server, "FOLD_BLOCK", block)
    ids, _, _, wires = world
    ring = Ring(compact_keys.secret.preset)
    _, body = decode_upload(wires["c1"])
    tampered = bytearray(wires["c1"])
    tampered[-3] ^= 0x10  # a bit of the last ciphertext, after the signature was made
    beyond = bytearray(body)
    beyond[4 * ring.residue_bytes:4 * ring.residue_bytes + 8] = b"\xff" * 8  # a residue >= its prime
    extra = [(bytes(tampered), errors.SignatureError), (_resign(wires["c1"], ids["c1"], bytes(beyond)), errors.PayloadError)]
    assert _request(compact_keys, world, 3, extra) == _request(compact_keys, world, 1)
    assert _request(compact_keys, world, 3, extra, first=None) == _request(compact_keys, world, 1)


def test_any_failure_while_adding_takes_back_what_was_added(compact_keys, world, monkeypatch):
    """Not only a bad residue: an error of any kind in one range (here on its second block, after
    other ranges and its own first block were added) leaves the group's sum as it was."""
    from secagg.ring import Ring

    ids, roster, layout, wires = world
    state = secagg.Aggregator(compact_keys.public, roster=roster, workers=2).open_round(run=RUN, round=0, layout=layout)
    state.receive(wires["c0"])
    monkeypatch.setattr(server, "FOLD_BLOCK", 1)
    real, unit = Ring.unpack_many, Ring(compact_keys.secret.preset).residue_bytes

    def failing(self, blob, count, **kw):
        if kw.get("start") == 4 * unit and kw.get("out") is not None and kw["out"].base is not None:
            raise MemoryError("injected")
        return real(self, blob, count, **kw)

    monkeypatch.setattr(Ring, "unpack_many", failing)
    with pytest.raises(MemoryError, match="injected"):
        state.receive(wires["c1"])
    monkeypatch.setattr(Ring, "unpack_many", real)
    assert state.contributors == ("c0",)
    for c in ("c1", "c2"):
        state.receive(wires[c])
    cset = state.contributor_set(key_holder="c0")
    assert state.request(cset, {m: cset.sign(ids[m]) for m in cset.members}) == _request(compact_keys, world, 1)


@pytest.mark.parametrize(("workers", "block"), [(1, 16), (2, 16), (2, 2)])
def test_a_streamed_request_is_the_request(compact_keys, world, workers, block, monkeypatch):
    """Packed a block at a time, twice (to hash, then to write): the same bytes as in memory, and
    the key holder's parser accepts them."""
    monkeypatch.setattr(server, "FOLD_BLOCK", block)
    streamed = _request(compact_keys, world, workers, stream=True)
    assert streamed == _request(compact_keys, world, 1)
    ids, roster, _, _ = world
    assert secagg.messages.decode_request(streamed, max_members=len(roster)).cset.members == ("c0", "c1", "c2")


def test_the_body_digest_covers_every_piece_and_its_place():
    body = bytes(range(256)) * 40
    unit = 1000
    reference = body_digest(body, unit)
    assert body_digest(body, unit, workers=4) == reference
    assert reference == root_digest(chunk_digests(body, unit, 0, 11), unit=unit, size=len(body))
    swapped = body[unit:2 * unit] + body[:unit] + body[2 * unit:]
    assert body_digest(swapped, unit) != reference  # pieces are hashed in order
    for j in (0, 5, len(body) - 1):
        changed = bytearray(body)
        changed[j] ^= 1
        assert body_digest(bytes(changed), unit) != reference
    assert body_digest(body[:-1], unit) != reference  # a shorter last piece
    assert body_digest(body, unit + 1) != reference  # another cut of the same bytes

"""Fuzz target for everything a server parses: signed envelopes, secagg payloads, SEAL ciphertexts.

Every input must end in an accepted upload or in a specific secfl error: no other exception, no
crash, no hang, no unbounded allocation. Used two ways:

* ``tests/secagg/test_fuzz_wire.py`` drives :func:`one_input` with hypothesis for a bounded number of
  cases in CI;
* long runs with atheris (coverage-guided; ``pip install atheris``)::

      python tests/helpers/fuzz_wire.py -atheris_runs=200000 -rss_limit_mb=2048 -timeout=20

The first input byte picks a mode, the rest drives it:

0. raw bytes handed to the server as an upload, and to the payload parser directly;
1. edits (bit flips, truncation, insertion, overwrites, forged length fields) of a valid signed
   upload;
2. the same edits, then the container checksum recomputed, so edits reach the header and the
   signature checks;
3. edits of the inner CKKS payload (checksum recomputed), then *validly signed* by an enrolled
   client: a malicious insider, so edits reach SEAL's parser and the aggregation.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from functools import lru_cache

import numpy as np

import secagg
from fedattn.errors import FedAttnError
from fedattn.round import ClientMessage
from fedattn.rules import FedAvg
from helpers import SmallFederation
from secagg import signing as auth
from secagg.unsafe import decrypt_raw

RULE = FedAvg(equal_weights=True)
_PREFIX = struct.Struct("<8sHI")


@lru_cache(maxsize=1)
def world():
    keys = secagg.generate_keys(preset="compact")
    fed = SmallFederation(keys, ["client-0", "client-1"], rule=RULE, max_payload_bytes=1 << 20)
    rng = np.random.default_rng(0)
    update = {"w": (rng.standard_normal((90, 100)) * 0.05).astype(np.float32), "b": np.full(7, 0.01, np.float32)}
    inner = secagg.encrypt_update(update, keys.secret, round=0, client_id="client-0",
                                  weights=fed.protocol.client_weights(update, num_samples=1, reference=None)).to_bytes()
    signed, other = (fed.message(c, update, num_samples=1, commitment="c", fresh=True).payload
                     for c in ("client-0", "client-1"))
    return keys, fed.identities, fed, inner, signed, other


def _edit(blob: bytes, script: bytes) -> bytes:
    out = bytearray(blob)
    for i in range(0, len(script) - 5, 6):
        op, pos, value = script[i] % 6, struct.unpack_from("<I", script, i + 1)[0], script[i + 5]
        pos = pos % (len(out) + 1)
        if op == 0 and out:
            out[pos % len(out)] ^= 1 << (value % 8)
        elif op == 1:
            del out[pos:]
        elif op == 2:
            out[pos:pos] = bytes([value]) * (1 + value % 16)
        elif op == 3 and out:
            out[pos % len(out)] = value
        elif op == 4 and len(out) >= _PREFIX.size:  # forge the header-length field
            struct.pack_into("<I", out, 10, (value << (8 * (pos % 4))) & 0xFFFFFFFF)
        elif op == 5 and len(out) >= 10:  # forge the format version
            struct.pack_into("<H", out, 8, value)
    return bytes(out)


def _rechecksum(blob: bytes) -> bytes:
    if len(blob) < 32:
        return blob
    body = blob[:-32]
    return body + hashlib.blake2b(body, digest_size=32).digest()


def one_input(data: bytes) -> None:
    if not data:
        return
    keys, identities, fed, inner, signed, other = world()
    mode, script = data[0] % 4, data[1:]
    if mode == 0:
        upload = script
        try:
            secagg.EncryptedUpdate.from_bytes(script, keys.public, max_bytes=1 << 20)
        except secagg.SecAggError:
            pass
    elif mode == 1:
        upload = _edit(signed, script)
    elif mode == 2:
        upload = _rechecksum(_edit(signed, script))
    else:
        payload = _rechecksum(_edit(inner, script))
        upload = auth.seal(payload, identities["client-0"], round=0, commitment="c", fingerprint=keys.public.fingerprint)
    _serve(fed, upload, other)


def _serve(fed: SmallFederation, upload: bytes, other: bytes) -> None:
    """A round with the fuzzed upload next to a valid one: the valid one must always get through."""
    served = fed.serve([ClientMessage("client-0", upload, 1), ClientMessage("client-1", other, 1)], round=0)
    if "client-1" not in served.contributors:
        raise AssertionError(f"a fuzzed upload knocked out a valid one: {[r.describe() for r in served.rejections]}")
    for r in served.rejections:
        if not isinstance(r.error, (secagg.SecAggError, FedAttnError)):
            raise AssertionError(f"{r.client_id} was rejected with an unspecific error: {r.describe()}")
    try:
        decrypt_raw(secagg.EncryptedUpdate.from_bytes(served.aggregate_wire or b"", fed.keys.secret), fed.keys.secret)
    except secagg.SecAggError:
        return  # e.g. a forged coefficient that breaks the decryption's bound check


def main() -> None:  # pragma: no cover - run by hand with atheris installed
    import logging

    import atheris

    logging.disable(logging.WARNING)  # every rejected upload logs a warning; millions would drown the stats
    world()  # key generation outside the coverage-guided loop
    atheris.instrument_all()  # coverage of every loaded Python module (secagg, fedattn, ...) guides the mutations
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()

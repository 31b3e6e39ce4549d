"""Fuzz target for the whole server path: upload bytes -> receipt -> signature -> residues -> set ->
request -> key holder's verification, rebuild, decryption and release.

Every input must end in an accepted upload or in a specific secfl error: no other exception, no
crash, no hang, no unbounded allocation, and **never the loss of the valid upload beside it**. Used
two ways:

* ``tests/secagg/test_fuzz_wire.py`` drives :func:`one_input` with hypothesis for a bounded number
  of cases in CI;
* long runs with atheris (coverage-guided; ``pip install atheris``)::

      python tests/helpers/fuzz_wire.py -atheris_runs=200000 -rss_limit_mb=2048 -timeout=20

The first input byte picks a mode, the rest drives it:

0. raw bytes handed to the server as an upload;
1. edits (bit flips, truncation, insertion, overwrites, forged length fields) of a valid upload;
2. edits of the upload's header JSON, then re-signed by an enrolled client (a malicious insider):
   the edits reach every check behind the signature;
3. edits of the ciphertext body, then re-signed with the new digest by the insider: the edits
   reach the residue checks, the server's sum and the key holder's decryption and range checks.

In modes 2 and 3 the insider's upload is well formed and signed by its sender, but may decrypt to
garbage (an edited ciphertext, or a header naming another seed than the one it encrypted with),
which no party can tell from a valid encryption without proofs of well-formedness: the key
holder's range check on the flooded sum then refuses the round, and the valid upload beside it is
not released either (a denial of service by an enrolled client, stated in docs/security.md).
:func:`one_input` returns ``"refused"`` for those cases, ``"ok"`` otherwise; every other outcome
is an AssertionError.
"""

from __future__ import annotations

import struct
import sys
from functools import lru_cache

import numpy as np

import secagg
from fedattn.errors import FedAttnError
from fedattn.round import ClientMessage
from fedattn.rules import FedAvg
from helpers import SmallFederation
from secagg.framing import canonical_json, frame_signed, parse_json_object
from secagg.messages import FORMAT_VERSION, UPLOAD_MAGIC, Receipt, body_digest, decode_upload
from secagg.presets import PRESETS
from secagg.ring import Ring

RULE = FedAvg(equal_weights=True)
_PREFIX = struct.Struct("<8sHI")


@lru_cache(maxsize=1)
def world():
    keys = secagg.generate_keys(preset="compact")
    fed = SmallFederation(keys, ["client-0", "client-1"], rule=RULE, max_payload_bytes=1 << 20, group_size=1,
                          min_contributors=1)
    rng = np.random.default_rng(0)
    update = {"w": (rng.standard_normal((90, 100)) * 0.05).astype(np.float32), "b": np.full(7, 0.01, np.float32)}
    fed.model = {n: np.zeros(a.shape, a.dtype) for n, a in update.items()}
    signed, other = (fed.message(c, update, num_samples=1, fresh=True).payload for c in ("client-0", "client-1"))
    return fed, signed, other


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


def _insider(header: dict, body: bytes, fed: SmallFederation) -> bytes:
    """``header`` signed by client-0's own key over whatever fields it holds (as an insider can)."""
    fields = {k: header.get(k) for k in Receipt._FIELDS}
    try:
        message = Receipt(**fields).signed_bytes()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        message = canonical_json(fields) if all(isinstance(k, str) for k in fields) else b""
    signature = fed.identities["client-0"].key.sign(message).hex()
    return frame_signed(UPLOAD_MAGIC, FORMAT_VERSION, {**header, "signature": signature}, body)


def one_input(data: bytes) -> str:
    if not data:
        return "ok"
    fed, signed, other = world()
    mode, script = data[0] % 4, data[1:]
    if mode == 0:
        upload = script
    elif mode == 1:
        upload = _edit(signed, script)
    else:
        receipt, body = decode_upload(signed)
        if mode == 2:
            head = canonical_json(receipt.to_dict())
            try:
                header = parse_json_object(_edit(head, script), what="edited header")
            except secagg.PayloadError:
                header = {}
            upload = _insider(header, bytes(body), fed)
        else:
            edited = _edit(bytes(body), script)
            upload = _insider({**receipt.to_dict(), "body_digest": body_digest(edited, Ring(PRESETS[receipt.preset]).residue_bytes)}, edited, fed)
    return _serve(fed, upload, other, insider=mode >= 2)


class _Clients:
    """client-1 is honest (its own ledger, fresh each input); client-0 is the insider who sent the
    fuzzed upload and signs any set. client-1 is asked to release."""

    def __init__(self, fed: SmallFederation, other: bytes) -> None:
        receipt, _ = decode_upload(other)
        ledger = secagg.MemoryLedger()
        ledger.claim_round(fed.run, 0, receipt.commitment)
        ledger.record_upload(fed.run, 0, receipt.digest)
        self.fed, self.ledger = fed, ledger

    def online(self, senders):
        return sorted(senders, key=lambda c: c != "client-1")

    def sign(self, client_id, cset):
        if client_id == "client-0":
            return cset.sign(self.fed.identities["client-0"])
        return secagg.Uploader(self.fed.keys.secret, identity=self.fed.identities[client_id], ledger=self.ledger,
                               roster=self.fed.roster, min_contributors=1).sign_set(cset)

    def release(self, holder, request):
        return secagg.KeyHolder(self.fed.keys.secret, identity=self.fed.identities[holder], roster=self.fed.roster,
                                ledger=self.ledger, min_contributors=1).release(request)


def _serve(fed: SmallFederation, upload: bytes, other: bytes, *, insider: bool) -> str:
    """A round with the fuzzed upload next to a valid one, to the key holder's release: the valid one
    must get through, and every refusal must be a specific secfl error."""
    from fedattn.round import run_round

    commitment = decode_upload(other)[0].commitment  # what this (honest) server sent its clients
    try:
        out = run_round([ClientMessage("client-0", upload, 1), ClientMessage("client-1", other, 1)], server=fed.server,
                        clients=_Clients(fed, other), run=fed.run, round=0, reference=None, model=fed.model,
                        commitment=commitment)
    except (secagg.SecAggError, FedAttnError) as exc:
        raise AssertionError(f"the round failed as a whole: {type(exc).__name__}: {exc}") from None
    for r in out.rejections:
        if not isinstance(r.error, (secagg.SecAggError, FedAttnError)):
            raise AssertionError(f"{r.client_id} was rejected with an unspecific error: {r.describe()}")
    if "client-1" in out.contributors:
        return "ok"
    if insider and out.aborted and out.aborted.startswith(("ReleaseRefusedError", "EmptyAggregationError")):
        return "refused"
    raise AssertionError(f"a fuzzed upload knocked out a valid one: {[r.describe() for r in out.rejections]} "
                         f"{out.aborted}")


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

"""Operations that return **unreleased** plaintext, and the forgeries a malicious server sends:
for measurements and tests of the key holders' checks, never for a deployment.

A raw CKKS decryption ``m + e`` that leaves the key holder lets anyone who also holds the
ciphertext recover the error ``e`` and from it the secret key (Li and Micciancio, Eurocrypt 2021).
What leaves a key holder goes through :meth:`secagg.KeyHolder.release` (verified, once per round,
noise-flooded, rounded).
"""

from __future__ import annotations

import numpy as np

from .holder import KeyHolder
from .messages import decode_request, decode_upload, encode_request

__all__ = ["decrypt_raw", "forged_request", "upload_ciphertexts"]


def decrypt_raw(holder: KeyHolder, request: bytes) -> np.ndarray:
    """The packed sum of a release request as ``holder`` decrypts it after every check, before
    flooding; the round is **not** spent (so this must never serve another party)."""
    req = decode_request(request, max_members=len(holder.roster))
    receipts = holder._verify(req)
    return holder._decrypt(req, receipts, req.layout.chunks(holder.ring.n))


def upload_ciphertexts(upload: bytes) -> bytes:
    """An upload's ciphertext bytes (its first halves), as a server reads them."""
    return bytes(decode_upload(upload)[1])


def forged_request(request: bytes, *, body: bytes, max_members: int) -> bytes:
    """``request`` with its summed ciphertexts replaced by ``body``: contributor set, receipts and
    signatures unchanged (a server asking for ``(0, c)``, or for one upload as the sum of all)."""
    req = decode_request(request, max_members=max_members)
    return encode_request(req.cset, layout=req.layout, receipts=req.receipts, signatures=req.signatures, kind=req.kind,
                          body=body, blob_sizes=req.blob_sizes)

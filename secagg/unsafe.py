"""Operations that return **unreleased** plaintext: for measurements and tests of a key holder's
own steps, never to share.

A raw CKKS decryption ``m + e`` that leaves the key holder lets anyone who also holds the
ciphertext recover the error ``e`` and from it the secret key (Li and Micciancio, Eurocrypt 2021).
What leaves a key holder goes through :meth:`secagg.KeyHolder.release` (verified, once per round,
noise-flooded, rounded).
"""

from __future__ import annotations

import numpy as np

from .holder import KeyHolder
from .messages import decode_request

__all__ = ["decrypt_raw"]


def decrypt_raw(holder: KeyHolder, request: bytes) -> np.ndarray:
    """The packed sum of a release request as ``holder`` decrypts it after every check, before
    flooding; the round is **not** spent (so this must never serve another party)."""
    req = decode_request(request, max_members=len(holder.roster))
    receipts = holder._verify(req)
    return holder._decrypt(req, receipts, req.layout.chunks(holder.ring.n))

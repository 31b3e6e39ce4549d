"""Operations that return **unreleased** plaintext: for use inside a key holder, never to share.

A raw CKKS decryption ``m + e`` that leaves the key holder lets anyone who also holds the
ciphertext recover the error ``e`` and from it the secret key (Li and Micciancio, Eurocrypt 2021).
What leaves a key holder goes through :class:`secagg.KeyHolder` (noise-flooded, rounded, once per
round). These functions exist for measurements and tests of the key holder's own steps.
"""

from __future__ import annotations

from .decrypt import decrypt_raw

__all__ = ["decrypt_raw"]

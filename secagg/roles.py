"""The three parties of an encrypted round, each an object that holds only what that party holds.

* :class:`Uploader` - a client: its secret context, its signing identity and its ledger. It
  encrypts an update, signs it for one round and one model, and records the round first.
* :class:`Aggregator` - the server: the public context and the roster. It authenticates and
  parses uploads; it can never decrypt (it holds no secret, and no object it builds does).
* :class:`KeyHolder` - a client asked to release an aggregate: its secret context, the roster,
  its ledger and the release policy, which exists here only. It releases an aggregate of at least
  ``min_contributors`` signed uploads (default 2), all committing to the model this party itself
  trained on, once per round, noise-flooded (:mod:`secagg.release`).

Each is configured once, at construction (keyword-only), as Opacus' ``PrivacyEngine`` is.

Example::

    >>> import numpy as np, secagg
    >>> keys = secagg.generate_keys(preset="compact")
    >>> ids, roster = secagg.generate_identities(["a", "b"])
    >>> ledgers = {c: secagg.MemoryLedger() for c in ids}
    >>> uploads = [secagg.Uploader(keys.secret, identity=ids[c], ledger=ledgers[c]).upload(
    ...     {"w": np.full(3, 0.25 * (k + 1), np.float32)}, run="r", round=0, commitment="m", weights=1.0)
    ...     for k, c in enumerate(ids)]
    >>> server = secagg.Aggregator(keys.public, roster=roster)
    >>> received = [server.receive(u, round=0) for u in uploads]
    >>> total = secagg.RunningSum(keys.public, expected_round=0)
    >>> for r in received:
    ...     total.add(r.update)
    >>> holder = secagg.KeyHolder(keys.secret, roster=roster, ledger=ledgers["a"])
    >>> out = holder.release(total.result().to_bytes(), run="r", round=0, receipts=[r.receipt for r in received])
    >>> out.contributors, np.round(out.values["w"].astype(float), 4).tolist()  # (0.25 + 0.5) / 2
    (('a', 'b'), [0.375, 0.375, 0.375])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import signing
from ._check import integer
from .decrypt import decrypt, decrypt_ratio
from .encrypt import WEIGHTS_ENTRY, encrypt_update
from .errors import (
    AuthenticationError,
    KeyMismatchError,
    LayoutMismatchError,
    MissingSecretKeyError,
    PayloadError,
    ReleaseRefusedError,
    SignatureError,
)
from .keys import PublicContext, SecretContext
from .ledger import Ledger, MemoryLedger
from .packing import Layout
from .signing import ClientIdentity, Receipt, Roster
from .wire import EncryptedUpdate, validate_client_id

__all__ = ["Uploader", "Aggregator", "KeyHolder", "Received", "Release", "DEFAULT_MIN_CONTRIBUTORS"]

#: Key holders release sums of at least this many clients unless configured otherwise.
DEFAULT_MIN_CONTRIBUTORS = 2


@dataclass(frozen=True, kw_only=True)
class Received:
    """An upload the server accepted: the parsed update (ciphertexts not yet loaded) and its receipt."""

    update: EncryptedUpdate
    receipt: Receipt | None


@dataclass(frozen=True, kw_only=True)
class Release:
    """What a key holder lets out: the released (noise-flooded, rounded) values and whose sum they are."""

    values: dict[str, np.ndarray]
    contributors: tuple[str, ...]


class Uploader:
    """A client's encrypting and signing half.

    Args:
        secret: the client's secret context (``client.key``).
        identity: its Ed25519 signing identity; ``None`` sends unsigned payloads (only servers
            without a roster accept them, and key holders then cannot check anything).
        ledger: where it records each round it uploads for before it encrypts (one upload per
            round, rounds only grow); a :class:`MemoryLedger` by default.
        client_id: the id its payloads carry; required without an identity, which names it otherwise.
        workers: processes to encrypt with (see :func:`secagg.encrypt_update`).
    """

    def __init__(self, secret: SecretContext, *, identity: ClientIdentity | None = None, ledger: Ledger | None = None,
                 client_id: str | None = None, workers: int | None = None) -> None:
        if not isinstance(secret, SecretContext):
            raise MissingSecretKeyError(f"an Uploader encrypts with a SecretContext (client.key), got {type(secret).__name__}")
        if identity is not None and client_id is not None and client_id != identity.client_id:
            raise AuthenticationError(f"client_id {client_id!r} differs from the identity's {identity.client_id!r}")
        if identity is None and client_id is None:
            raise ValueError("an Uploader without a signing identity needs a client_id")
        self.secret = secret
        self.identity = identity
        self.client_id: str = identity.client_id if identity is not None else validate_client_id(client_id)
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.workers = workers

    def upload(self, update: Mapping[str, Any], *, run: str, round: int, commitment: str = "",
               weights: float | Mapping[str, float] | None = None) -> bytes:
        """Encrypt ``update`` (in the ratio form when ``weights`` is given), sign it and return the bytes.

        Raises:
            ReplayError: this party already uploaded for this round (or a later one) of ``run``.
        """
        self.ledger.claim_round(run, round, commitment)  # recorded before anything is encrypted
        enc = encrypt_update(update, self.secret, round=round, client_id=self.client_id, weights=weights,
                             workers=self.workers)
        payload = enc.to_bytes()
        if self.identity is None:
            return payload
        return signing.seal(payload, self.identity, round=round, commitment=commitment,
                            fingerprint=self.secret.fingerprint)


class Aggregator:
    """The server's half: authenticates and parses uploads with public material only.

    Args:
        public: the public context (``server.ctx``); a secret context is refused.
        roster: the clients' verification keys; given, only uploads signed by a client on it, for
            the current round, are accepted. ``None`` accepts unsigned payloads.
        max_payload_bytes: uploads above this are rejected before anything is parsed.
    """

    def __init__(self, public: PublicContext, *, roster: Roster | None = None, max_payload_bytes: int | None = None) -> None:
        if not isinstance(public, PublicContext):
            raise KeyMismatchError(f"the server holds the public context only (server.ctx), got {type(public).__name__}")
        self.public = public
        self.roster = roster
        self.max_payload_bytes = max_payload_bytes

    def receive(self, data: bytes | bytearray | memoryview, *, round: int, layout: Layout | None = None) -> Received:
        """Authenticate and parse one upload for ``round``; ``layout`` (the model the server sent, in
        the protocol's form) is what every upload must have.

        Raises:
            SecAggError subclasses: a malformed, foreign, forged, replayed or mismatched upload.
        """
        payload, receipt = data, None
        if self.roster is not None:
            opened = signing.open_envelope(data, self.roster, expected_round=round, max_bytes=self.max_payload_bytes)
            payload, receipt = opened.payload, opened.receipt
            if receipt.fingerprint != self.public.fingerprint:
                raise KeyMismatchError(f"{receipt.client_id!r} signed for another key set")
        update = EncryptedUpdate.from_bytes(payload, self.public, expected_round=round,
                                            max_bytes=self.max_payload_bytes, load=False)
        if update.kind != "update":
            raise PayloadError("a client uploads its own update, not an aggregate")
        if receipt is not None and update.client_id != receipt.client_id:
            raise SignatureError(f"{receipt.client_id!r} signed an update that names {update.client_id!r}")
        if layout is not None and update.layout.hash != layout.hash:
            raise LayoutMismatchError(f"{update._who()} sent an update for another model architecture than the one "
                                      "this round trains; it was dropped")
        return Received(update=update, receipt=receipt)


class KeyHolder:
    """A key holder's half, and the one release policy.

    Args:
        secret: its secret context.
        roster: the clients' verification keys. Given, it releases only aggregates whose every
            contributor sent a signed receipt for this round and key set, all committing to the
            model and configuration this party itself was given (read from ``ledger``). ``None``
            releases on the aggregate's own header (an honest-but-curious server only).
        min_contributors: the smallest number of clients whose sum it releases (default 2: a
            "sum" of one client is that client's update).
        ledger: its records; the commitment of each round it uploaded for, and the rounds it
            released (each once).
        release_seed: makes the flooding reproducible (seeded simulations only); ``None``, the
            default, draws it from the OS CSPRNG, as a deployment must.
    """

    def __init__(self, secret: SecretContext, *, roster: Roster | None = None,
                 min_contributors: int = DEFAULT_MIN_CONTRIBUTORS, ledger: Ledger | None = None,
                 release_seed: int | None = None) -> None:
        if not isinstance(secret, SecretContext):
            raise MissingSecretKeyError(f"a KeyHolder decrypts with a SecretContext (client.key), got {type(secret).__name__}")
        self.secret = secret
        self.roster = roster
        self.min_contributors = integer("min_contributors", min_contributors, minimum=1)
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.release_seed = release_seed

    def release(self, aggregate: bytes | bytearray | memoryview, *, run: str, round: int,
                receipts: Sequence[Receipt] = ()) -> Release:
        """Check the aggregate and its contributors' receipts, then release it once.

        Returns the ratio ``sum_k w_k x_k / sum_k w_k`` for ratio-form uploads, else the sum.

        Raises:
            ReleaseRefusedError: not an aggregate, too few contributors, a round this party did not
                upload for, receipts without a roster, or a round it already released.
            ModelInconsistencyError: contributors were given different models (a malicious server).
            AuthenticationError (and subclasses): receipts that do not verify or do not match.
        """
        total = EncryptedUpdate.from_bytes(aggregate, self.secret, expected_round=round)
        if total.kind == "update" or len(total.contributors) < self.min_contributors:
            raise ReleaseRefusedError(
                f"round {round}: asked to release a {total.kind} of {len(total.contributors)} client(s); this key "
                f"holder releases sums of at least {self.min_contributors} clients only")
        if self.roster is None:
            if receipts:
                raise ReleaseRefusedError(f"round {round}: receipts were sent, but this key holder holds no roster to "
                                          "check them against")
        else:
            own = self.ledger.commitment(run, round)
            if own is None:
                raise ReleaseRefusedError(
                    f"round {round}: this key holder releases only rounds of this run it uploaded for itself, so that "
                    "it can check the model every contributor was given against its own")
            signing.check_receipts(receipts, self.roster, round=round, contributors=total.contributors,
                                   fingerprint=self.secret.fingerprint, expected_commitment=own,
                                   min_contributors=self.min_contributors)
        self.ledger.claim_release(run, round)  # checked and recorded at once, after every other check passed
        seed = None if self.release_seed is None else int(
            np.random.SeedSequence([self.release_seed, round]).generate_state(1)[0])
        values = (decrypt_ratio if WEIGHTS_ENTRY in total.layout.names else decrypt)(total, self.secret, seed=seed)
        return Release(values=values, contributors=total.contributors)

"""The three parties of an encrypted round, each an object that holds only what that party holds.

* :class:`Uploader` - a client: its secret context, its signing identity, its ledger. It encrypts
  an update under a second half derived from a fresh seed, signs the upload for one run, round and
  model, and later signs the one contributor set of that round.
* :class:`Aggregator` - the server: the public context and the roster. It authenticates uploads,
  proposes a contributor set of whole enrolment groups and adds the members' first halves. It
  never holds a secret and never builds a ciphertext a key holder would decrypt.
* :class:`KeyHolder` - a client asked to release: its secret context, the roster, its ledger and
  the release policy, which exists here only. It decrypts only a sum it verified itself:

  1. the request names it, comes from a run and round it uploaded for itself, and every member's
     receipt verifies, commits to the model it was given, and is named by the set;
  2. every member signed that one set; the set covers whole enrolment groups of at least
     ``min_contributors`` clients (default 2);
  3. it marks the round spent **before** it decrypts (a refusal after that point spends it too);
  4. it rebuilds the second half from the members' signed seeds (the server sends none) and
     decrypts ``(sum of c0, sum of a)``; whatever the server put in the first half only shifts
     the result by an amount the server already knows;
  5. it floods with noise sized from what it verified (the preset and the number of members),
     checks ranges on the flooded values only, and releases the ratio (or the sum).

Example::

    >>> import numpy as np, secagg
    >>> keys = secagg.generate_keys(preset="compact")
    >>> ids, roster = secagg.generate_identities(["a", "b"])
    >>> ledgers = {c: secagg.MemoryLedger() for c in ids}
    >>> clients = {c: secagg.Uploader(keys.secret, identity=ids[c], ledger=ledgers[c], roster=roster) for c in ids}
    >>> commitment = "ab" * 32
    >>> uploads = [u.upload({"w": np.full(3, 0.25 * (k + 1), np.float32)}, run="r", round=0, commitment=commitment,
    ...                     weights=1.0) for k, u in enumerate(clients.values())]
    >>> layout = secagg.Layout.of({"w": np.zeros(3, np.float32), secagg.WEIGHTS_ENTRY: np.zeros(1)})
    >>> server = secagg.Aggregator(keys.public, roster=roster).open_round(run="r", round=0, layout=layout)
    >>> receipts = [server.receive(u) for u in uploads]
    >>> cset = server.contributor_set(key_holder="a")
    >>> request = server.request(cset, {c: clients[c].sign_set(cset) for c in cset.members})
    >>> holder = secagg.KeyHolder(keys.secret, identity=ids["a"], roster=roster, ledger=ledgers["a"])
    >>> out = holder.release(request)
    >>> out.contributors, np.round(out.values["w"].astype(float), 4).tolist()  # (0.25 + 0.5) / 2
    (('a', 'b'), [0.375, 0.375, 0.375])
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import parallel
from ._check import integer
from .epoch import Epoch
from .errors import (
    AuthenticationError,
    InvalidUpdateError,
    KeyMismatchError,
    LedgerError,
    MissingSecretKeyError,
    NonFiniteValueError,
    ReleaseRefusedError,
    ReplayError,
    ValueOutOfRangeError,
)
from .holder import DEFAULT_MIN_CONTRIBUTORS, WEIGHTS_ENTRY, KeyHolder, Release, seed_label
from .keys import SecretContext
from .ledger import Ledger, MemoryLedger
from .messages import (
    ContributorSet,
    Receipt,
    body_digest,
    encode_upload,
    validate_run,
)
from .packing import Layout, as_arrays
from .ring import ring_of
from .server import FOLD_BLOCK, Aggregator, RoundAggregate
from .signing import ClientIdentity, Roster
from .threshold import ROUND_LABEL, round_seed

__all__ = ["Uploader", "Aggregator", "RoundAggregate", "FOLD_BLOCK", "KeyHolder", "Release", "WEIGHTS_ENTRY",
           "DEFAULT_MIN_CONTRIBUTORS", "max_payload_bytes"]

_HEX = re.compile(r"^[0-9a-f]{1,256}$")


def max_payload_bytes(preset: Any, n_values: int, n_arrays: int = 1) -> int:
    """The size of an upload of ``n_values`` numbers in ``n_arrays`` arrays (ratio form included):
    a server's size limit, enforced before anything is parsed."""
    from .presets import get_preset

    ring = ring_of(get_preset(preset))
    chunks = -(-(n_values + n_arrays) // ring.n)
    return chunks * ring.residue_bytes + 2048


# ---- the client ---------------------------------------------------------------------------------
class Uploader:
    """A client's encrypting and signing half.

    Args:
        secret: the client's secret context (``client.key``).
        identity: its Ed25519 signing identity (its client id comes from it).
        ledger: where it records, before it encrypts, each round it uploads for (one upload per
            round, rounds only grow) and the one contributor set it signs per round.
        roster: the roster; given, it signs only contributor sets of whole enrolment groups.
        min_contributors: the smallest set it agrees to be part of.
        workers: processes to encrypt with; ``None`` picks 2 for large updates on multi-core machines.
        epoch: with threshold keys, the epoch whose committee holds shares of this client's own key
            (``secret``): uploads use the round's common second half (:mod:`secagg.threshold`) and
            need a durable ledger, since two encryptions under one second half and key reveal the
            difference of two updates.
    """

    def __init__(self, secret: SecretContext, *, identity: ClientIdentity, ledger: Ledger | None = None,
                 roster: Roster | None = None, min_contributors: int = DEFAULT_MIN_CONTRIBUTORS,
                 workers: int | None = None, epoch: Epoch | None = None) -> None:
        if not isinstance(secret, SecretContext):
            raise MissingSecretKeyError(f"an Uploader encrypts with a SecretContext (client.key), got {type(secret).__name__}")
        if not isinstance(identity, ClientIdentity):
            raise AuthenticationError("an Uploader signs what it sends: give it the client's ClientIdentity")
        self.secret = secret
        self.identity = identity
        self.client_id = identity.client_id
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.roster = roster
        self.min_contributors = integer("min_contributors", min_contributors, minimum=1)
        self.workers = workers
        self.ring = ring_of(secret.preset)
        self.epoch = epoch
        if epoch is not None:
            if ledger is None:
                raise LedgerError("with threshold keys a client needs a durable ledger (secagg.FileLedger): it must "
                                  "never encrypt twice under one round's second half")
            if epoch.key_of(self.client_id) != secret.fingerprint:
                raise KeyMismatchError(f"{self.client_id!r} dealt another key (or none) in epoch {epoch.id[:12]}...; "
                                       "upload with the key whose shares the committee holds")

    def upload(self, update: Mapping[str, Any], *, run: str, round: int, commitment: str,
               weights: float | Mapping[str, float] | None = None) -> bytes:
        """Encrypt ``update`` (in the ratio form when ``weights`` is given: ``Enc(w_l * d_l)`` and
        ``Enc(w_l)`` per layer), sign it for ``run``, ``round`` and ``commitment``, return the bytes.

        Raises:
            InvalidUpdateError, NonFiniteValueError, ValueOutOfRangeError: an update CKKS cannot carry.
            ReplayError: this party already uploaded for this round (or a later one) of ``run``; a
                retry of the latest round with the same commitment gets the bytes sent before
                (never a second encryption).
        """
        run = validate_run(run)
        rnd = integer("round", round)
        if not isinstance(commitment, str) or not _HEX.match(commitment):
            raise ValueError("commitment must be a hex digest (secagg.round_commitment)")
        layout, vector = _pack(update, weights, self.secret.preset)
        try:
            self.ledger.claim_round(run, rnd, commitment)  # recorded before anything is encrypted
        except ReplayError:
            sent = self.ledger.upload_bytes(run, rnd)
            if sent is not None and self.ledger.commitment(run, rnd) == commitment:
                return sent  # a retry: the same bytes again
            raise
        if self.epoch is None:
            seed, label, named, keys = os.urandom(32), seed_label(self.client_id), None, self.secret.fingerprint
        else:
            seed, label, named, keys = round_seed(self.epoch.id, run, rnd), ROUND_LABEL, "", self.epoch.id
        body = parallel.encrypt(vector, self.secret, seed=seed, label=label, workers=self.workers)
        receipt = Receipt(client_id=self.client_id, run=run, round=rnd, commitment=commitment, keys=keys,
                          preset=self.secret.preset.name, layout_hash=layout.hash,
                          seed=seed.hex() if named is None else named,
                          body_digest=body_digest(body.data, self.ring.residue_bytes)).sign(self.identity)
        data = encode_upload(receipt, body.data)
        self.ledger.record_upload(run, rnd, receipt.digest, data)
        return data

    def sign_set(self, cset: ContributorSet) -> str:
        """Agree to ``cset`` as this round's one contributor set, if it names this party's own upload
        unchanged; recorded durably before signing, so the party never signs a second set.

        Raises:
            ReleaseRefusedError: not a member, another upload, too small, not whole groups, or a
                different set already signed for this round.
        """
        if self.client_id not in cset.members:
            raise ReleaseRefusedError(f"{self.client_id!r} is not a member of the set it was asked to sign")
        own = self.ledger.upload_digest(cset.run, cset.round)
        if own is None or cset.receipts[cset.members.index(self.client_id)] != own:
            raise ReleaseRefusedError(f"round {cset.round}: the set does not name this party's own upload of that round")
        if len(cset.members) < self.min_contributors:
            raise ReleaseRefusedError(f"round {cset.round}: a set of {len(cset.members)} client(s); this party agrees to "
                                      f"sums of at least {self.min_contributors}")
        if self.roster is not None:
            try:
                self.roster.check_whole_groups(cset.members, min_size=self.min_contributors)
            except AuthenticationError as exc:
                raise ReleaseRefusedError(f"round {cset.round}: {exc}") from None
            if cset.key_holder not in self.roster:
                raise ReleaseRefusedError(f"round {cset.round}: the set names a key holder that is not on the roster")
        self.ledger.claim_set(cset.run, cset.round, cset.digest)
        return cset.sign(self.identity)


def _pack(update: Mapping[str, Any], weights: float | Mapping[str, float] | None, preset: Any) -> tuple[Layout, np.ndarray]:
    arrays = as_arrays(update)
    if WEIGHTS_ENTRY in arrays:
        raise InvalidUpdateError(f"the name {WEIGHTS_ENTRY!r} is reserved for the ratio form's weights")
    for name, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            raise NonFiniteValueError(f"array {name!r} holds NaN or infinite values; CKKS cannot encrypt them. Check "
                                      "the local training (diverged loss?) before sending")
    # the update itself within max_abs (weights are at most 1): the key holder relies on every
    # average lying in [-max_abs, max_abs] to refuse one that a dishonest client amplified
    for name, arr in arrays.items():
        if arr.size and float(np.max(np.abs(arr))) > preset.max_abs:
            raise ValueOutOfRangeError(
                f"array {name!r} holds a value beyond {preset.max_abs:g}, the safe range of preset {preset.name!r}; "
                "CKKS would wrap around silently. Clip or scale the update, or use a preset with a larger max_abs")
    if weights is not None:
        arrays = _apply_weights(arrays, weights)
    layout = Layout.of(arrays)
    if layout.total == 0:
        raise InvalidUpdateError("the update holds no values (every array is empty)")
    return layout, layout.pack(arrays)


def _apply_weights(arrays: dict[str, np.ndarray], weights: float | Mapping[str, float]) -> dict[str, np.ndarray]:
    names = list(arrays)
    if isinstance(weights, Mapping):
        if set(weights) != set(names):
            raise InvalidUpdateError("weights must name exactly the update's arrays: one weight per array")
        per_layer = [weights[n] for n in names]
    else:
        per_layer = [weights] * len(names)
    try:
        w = np.array(per_layer, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidUpdateError("weights must be real numbers") from None
    if not np.all(np.isfinite(w)) or np.any(w < 0) or np.any(w > 1):
        raise InvalidUpdateError("weights must lie in [0, 1] (the ratio form sends omega <= 1)")
    out = {n: (arrays[n] * w[i]).astype(arrays[n].dtype) for i, n in enumerate(names)}
    out[WEIGHTS_ENTRY] = w
    return out

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
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import parallel, sealio
from ._check import integer
from .epoch import Epoch
from .errors import (
    AuthenticationError,
    DuplicateUploadError,
    EmptyAggregationError,
    InvalidUpdateError,
    KeyMismatchError,
    LayoutMismatchError,
    LedgerError,
    MissingSecretKeyError,
    ModelInconsistencyError,
    NonFiniteValueError,
    PayloadError,
    ReleaseRefusedError,
    ReplayError,
    SignatureError,
    ValueOutOfRangeError,
)
from .holder import DEFAULT_MIN_CONTRIBUTORS, WEIGHTS_ENTRY, KeyHolder, Release, seed_label
from .keys import PublicContext, SecretContext
from .ledger import Ledger, MemoryLedger
from .messages import (
    ContributorSet,
    Receipt,
    body_digest,
    chunk_digests,
    decode_upload,
    encode_request,
    encode_upload,
    root_digest,
    validate_run,
)
from .packing import Layout, as_arrays
from .ring import Ring, second_half
from .signing import ClientIdentity, Roster
from .threshold import ROUND_LABEL, round_seed

__all__ = ["Uploader", "Aggregator", "RoundAggregate", "KeyHolder", "Release", "WEIGHTS_ENTRY",
           "DEFAULT_MIN_CONTRIBUTORS", "max_payload_bytes"]

_HEX = re.compile(r"^[0-9a-f]{1,256}$")


def max_payload_bytes(preset: Any, n_values: int, n_arrays: int = 1) -> int:
    """The size of an upload of ``n_values`` numbers in ``n_arrays`` arrays (ratio form included):
    a server's size limit, enforced before anything is parsed."""
    from .presets import get_preset

    ring = Ring(get_preset(preset))
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
        self.ring = Ring(secret.preset)
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


# ---- the server ---------------------------------------------------------------------------------
class Aggregator:
    """The server's half: authenticates uploads and adds first halves, with public material only.

    Args:
        public: the public context (``server.ctx``), or with threshold keys the public
            :class:`secagg.epoch.Epoch`; a secret context is refused.
        roster: the clients' verification keys and enrolment groups.
        max_payload_bytes: uploads above this are rejected before anything is parsed.
        workers: threads that check and fold an upload, each a range of its ciphertexts; ``None``
            picks them (:func:`secagg.parallel.choose_threads`: up to 4 cores for uploads of 32
            ciphertexts or more, capped by :func:`secagg.worker_limit`).
    """

    def __init__(self, public: PublicContext | Epoch, *, roster: Roster, max_payload_bytes: int | None = None,
                 workers: int | None = None) -> None:
        if not isinstance(public, (PublicContext, Epoch)):
            raise KeyMismatchError(f"the server holds the public context only (server.ctx), got {type(public).__name__}")
        self.threshold = isinstance(public, Epoch)
        if not isinstance(roster, Roster):
            raise AuthenticationError("the server accepts signed uploads only: give it the roster")
        self.public = public
        self.roster = roster
        self.max_payload_bytes = max_payload_bytes
        self.workers = None if workers is None else integer("workers", workers, minimum=1)
        self.ring = Ring(public.preset)

    def open_round(self, *, run: str, round: int, layout: Layout, commitment: str | None = None,
                   keep_uploads: bool = False) -> RoundAggregate:
        """A round's state; ``layout`` is what every upload of it must have (from the round's
        configuration, never from a vote among uploads). ``commitment``, when the server knows what
        its clients should have committed to, refuses an upload that commits to anything else: one
        client's false commitment then cannot make the key holder refuse the whole round. Uploads
        are folded into their enrolment group's sum as they arrive; ``keep_uploads`` also keeps each
        one (the server-scored circuit needs them)."""
        return RoundAggregate(self, run=validate_run(run), round=integer("round", round), layout=layout,
                              commitment=commitment, keep_uploads=keep_uploads)


class RoundAggregate:
    """One round on the server: the accepted uploads, then the contributor set and its request."""

    def __init__(self, aggregator: Aggregator, *, run: str, round: int, layout: Layout,
                 commitment: str | None = None, keep_uploads: bool = False) -> None:
        self.aggregator = aggregator
        self.run, self.round, self.layout, self.commitment = run, round, layout, commitment
        self.ring = aggregator.ring
        self.chunks = layout.chunks(self.ring.n)
        self._threads = parallel.choose_threads(self.chunks, aggregator.workers)
        self.keep_uploads = keep_uploads
        self._accepted: dict[str, Receipt] = {}
        self._sums: dict[int, np.ndarray] = {}  # enrolment group -> its accepted first halves, added
        self._terms: dict[int, int] = {}  # enrolment group -> uploads added into its sum since its last reduction
        self._bodies: dict[str, bytes] = {}
        self._scratch: np.ndarray | None = None  # where uploads are unpacked before they are added

    @property
    def contributors(self) -> tuple[str, ...]:
        return tuple(self._accepted)

    def receipt(self, client_id: str) -> Receipt:
        return self._accepted[client_id]

    def upload_body(self, client_id: str) -> bytes:
        """An accepted upload's ciphertext bytes (rounds opened with ``keep_uploads=True`` only)."""
        return self._bodies[client_id]

    def receive(self, data: bytes | bytearray | memoryview) -> Receipt:
        """Authenticate and check one upload; all or nothing: a refused upload changes nothing.

        Raises:
            SecAggError subclasses: malformed, oversized, foreign, forged, replayed, duplicated or
            mismatched (key set, preset, layout) uploads, each with its own class.
        """
        agg = self.aggregator
        receipt, body = decode_upload(data, max_bytes=agg.max_payload_bytes)
        receipt.verify(agg.roster)  # nothing the client wrote is believed before this
        if receipt.run != self.run or receipt.round != self.round:
            raise ReplayError(f"{receipt.client_id!r} signed this upload for another run or round: a replayed or "
                              "stale upload was dropped")
        if receipt.keys != agg.public.fingerprint or receipt.preset != agg.public.preset.name:
            raise KeyMismatchError(f"{receipt.client_id!r} encrypted under another key set or preset; provision that "
                                   "client with the current keys")
        if receipt.layout_hash != self.layout.hash:
            raise LayoutMismatchError(f"{receipt.client_id!r} sent an update for another model architecture than the "
                                      "one this round trains; it was dropped")
        if self.commitment is not None and receipt.commitment != self.commitment:
            raise ModelInconsistencyError(f"{receipt.client_id!r} committed to another model or configuration than the "
                                          "one this server sent; its upload was dropped")
        if bool(receipt.seed) == agg.threshold:
            raise PayloadError(f"{receipt.client_id!r}'s upload names no second-half seed" if not agg.threshold else
                               f"{receipt.client_id!r}'s upload names a seed; this round's second half is common")
        if receipt.client_id in self._accepted:
            raise DuplicateUploadError(f"a second upload from {receipt.client_id!r} this round was dropped; the first "
                                       "one counts")
        if not agg.threshold and any(r.seed == receipt.seed for r in self._accepted.values()):
            raise DuplicateUploadError(f"{receipt.client_id!r} reuses another upload's seed; it was dropped")
        if len(body) != self.chunks * self.ring.residue_bytes:
            raise PayloadError(f"{receipt.client_id!r}'s upload holds {len(body)} bytes of ciphertexts; this round's "
                               f"layout needs {self.chunks * self.ring.residue_bytes}")
        # a copy first, unless the caller's buffer is immutable: later writes to it cannot reach what is checked
        kept = body if isinstance(body.obj, bytes) else memoryview(bytes(body))
        self._fold(receipt, kept)
        self._accepted[receipt.client_id] = receipt
        if self.keep_uploads:
            self._bodies[receipt.client_id] = bytes(kept)
        return receipt

    def _fold(self, receipt: Receipt, kept: memoryview) -> None:
        """Check an upload's ciphertexts (digest, residues) and add them into its enrolment group's
        sum, a range of ciphertexts per thread; nothing is added unless all of it checks out."""
        group = self.aggregator.roster.group_index(receipt.client_id)
        fresh = group not in self._sums
        if fresh:  # the first upload of its group becomes the group's sum
            polys = np.empty((self.chunks, self.ring.limbs, self.ring.n), np.uint64)
        else:  # later ones are unpacked into one buffer, reused (no fresh pages per upload)
            if self._scratch is None:
                self._scratch = np.empty((self.chunks, self.ring.limbs, self.ring.n), np.uint64)
            polys = self._scratch
        workers, what = self._threads, f"the ciphertexts of {receipt.client_id!r}"
        checked = parallel.map_ranges(lambda a, b: self._check_range(kept, polys, a, b, what), self.chunks, workers)
        if root_digest(b"".join(d for d, _ in checked), unit=self.ring.residue_bytes, size=len(kept)) != receipt.body_digest:
            raise SignatureError(f"{receipt.client_id!r}: the ciphertexts do not match their signed digest; they were "
                                 "altered")
        for _, error in checked:
            if error is not None:
                raise error
        # folded as it arrives: a release covers whole groups, so the server never needs a single
        # upload again (unless it keeps them for a circuit)
        if fresh:
            self._sums[group], self._terms[group] = polys, 1
            return
        if self._terms[group] == self.ring.lazy_terms:  # added without reducing while a uint64 holds the sum
            self._reduced(group)
        total = self._sums[group]
        parallel.map_ranges(lambda a, b: self.ring.add_lazy(total[a:b], polys[a:b]), self.chunks, workers)
        self._terms[group] += 1

    def _check_range(self, kept: memoryview, polys: np.ndarray, first: int, last: int,
                     what: str) -> tuple[bytes, PayloadError | None]:
        """Ciphertexts ``first..last-1`` of an upload: their digests, and their residues unpacked into
        ``polys`` and range-checked (the error is returned, to be raised after the digest: an altered
        upload is reported as altered, not as malformed)."""
        unit = self.ring.residue_bytes
        piece = kept[first * unit:last * unit]
        digests = chunk_digests(piece, unit, 0, last - first)
        try:
            self.ring.unpack_many(piece, last - first, what=what, out=polys[first:last])
        except PayloadError as error:
            return digests, error
        return digests, None

    def _member_sum(self, members: tuple[str, ...]) -> np.ndarray:
        """The first halves of ``members`` added: the sums of their groups when they are whole
        groups, else (kept uploads only) upload by upload."""
        roster = self.aggregator.roster
        groups = {roster.group_index(m) for m in members}
        if set(members) == {c for g in groups for c in roster.groups[g]}:
            first, *rest = sorted(groups)
            if not rest:
                return self._reduced(first)
            total = self._reduced(first).copy()
            for g in rest:
                self.ring.add_into(total, self._reduced(g))
            return total
        if not self.keep_uploads:
            raise EmptyAggregationError("a set that cuts an enrolment group cannot be summed: the server folds whole "
                                        "groups only")
        total = np.zeros((self.chunks, self.ring.limbs, self.ring.n), np.uint64)
        for m in members:
            self.ring.add_into(total, self.ring.unpack_many(self._bodies[m], self.chunks, what="an accepted upload"))
        return total

    def _reduced(self, group: int) -> np.ndarray:
        """The group's sum as residues (reduced in place if uploads were added lazily)."""
        if self._terms[group] > 1:
            acc = self._sums[group]
            parallel.map_ranges(lambda a, b: self.ring.reduce(acc[a:b]), self.chunks, self._threads)
            self._terms[group] = 1
        return self._sums[group]

    def complete_groups(self, among: Iterable[str] | None = None) -> tuple[str, ...]:
        """The accepted clients whose whole enrolment group was accepted (and is in ``among``)."""
        present = set(self._accepted) if among is None else set(self._accepted) & set(among)
        return tuple(sorted(c for g in self.aggregator.roster.complete_groups(present) for c in g))

    def contributor_set(self, *, key_holder: str, among: Iterable[str] | None = None) -> ContributorSet:
        """The set to propose: every accepted upload of a complete enrolment group (a group with a
        member missing sits the round out), to be released by ``key_holder``.

        Raises:
            EmptyAggregationError: no enrolment group is complete.
        """
        members = self.complete_groups(among)
        if not members:
            raise EmptyAggregationError(f"round {self.round}: no enrolment group has all its members' uploads "
                                        f"({len(self._accepted)} accepted); nothing can be released")
        return ContributorSet.of(run=self.run, round=self.round, key_holder=key_holder,
                                 receipts=[self._accepted[m] for m in members])

    def request(self, cset: ContributorSet, signatures: Mapping[str, str]) -> bytes:
        """The release request: the members' first halves added, their receipts and their
        signatures of ``cset``."""
        total, size = self._member_sum(cset.members), self.ring.residue_bytes
        body = np.empty(self.chunks * size, dtype=np.uint8)
        parallel.map_ranges(lambda a, b: self.ring.pack_many(total[a:b], out=body[a * size:b * size]), self.chunks,
                            self._threads)
        return encode_request(cset, layout=self.layout, receipts=[self._accepted[m] for m in cset.members],
                              signatures=signatures, kind="sum", body=body.data)

    def circuit_request(self, cset: ContributorSet, signatures: Mapping[str, str], *, hi: float,
                        temperature: float) -> bytes:
        """The server-scored protocol's request: the members' full ciphertexts (second halves rebuilt
        from their public seeds) through :func:`secagg.circuit.score_and_combine`, serialised. A key
        holder cannot rebuild this output; it decrypts it only when configured to trust the server."""
        from .circuit import score_and_combine

        public = self.aggregator.public
        if not isinstance(public, PublicContext):
            raise KeyMismatchError("the server-scored circuit needs a shared key set's evaluation keys; threshold keys "
                                   "serve the client-scored protocol only")
        ring, preset = self.ring, public.preset
        if not self.keep_uploads:
            raise EmptyAggregationError("the server-scored circuit needs every upload: open the round with "
                                        "keep_uploads=True")
        clients = []
        for member in cset.members:
            seed = bytes.fromhex(self._accepted[member].seed)
            polys = ring.unpack_many(self._bodies[member], self.chunks, what="an accepted upload")
            clients.append([ring.full_ciphertext(polys[j], ring.uniform(second_half(seed, chunk=j, preset=preset,
                                                                                    label=seed_label(member))))
                            for j in range(self.chunks)])
        out = score_and_combine(clients, public, layout=self.layout, hi=hi, temperature=temperature)
        blobs = [sealio.dump(ct) for ct in out]
        return encode_request(cset, layout=self.layout, receipts=[self._accepted[m] for m in cset.members],
                              signatures=signatures, kind="circuit", body=b"".join(blobs),
                              blob_sizes=[len(b) for b in blobs])



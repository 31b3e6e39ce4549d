"""The server's half of an encrypted round: :class:`Aggregator` and one round's :class:`RoundAggregate`.

The server holds the public context (or a threshold epoch) and the roster, nothing secret. Each
upload is authenticated (signature, run and round, key set, layout, commitment, seed), then checked
and folded into its enrolment group's sum in two passes over its bytes, a range of ciphertexts per
thread: the digest of every ciphertext first, then - once the whole upload is the signed one - each
block unpacked, range-checked and added (:meth:`RoundAggregate.receive`). The release request adds
whole groups' sums and is built in memory (:meth:`RoundAggregate.request`) or streamed to a file or
socket without holding its body whole (:meth:`RoundAggregate.write_request`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import BinaryIO

import numpy as np

from . import parallel, sealio
from ._check import integer
from .epoch import Epoch
from .errors import (
    AuthenticationError,
    DuplicateUploadError,
    EmptyAggregationError,
    KeyMismatchError,
    LayoutMismatchError,
    ModelInconsistencyError,
    PayloadError,
    ReplayError,
    SignatureError,
)
from .framing import frame_signed_head
from .holder import seed_label
from .keys import PublicContext
from .messages import (
    FORMAT_VERSION,
    REQUEST_MAGIC,
    ContributorSet,
    Receipt,
    chunk_digests,
    decode_upload,
    encode_request,
    request_header,
    root_digest,
    validate_run,
)
from .packing import Layout
from .ring import ring_of, second_half
from .signing import Roster

__all__ = ["Aggregator", "RoundAggregate", "FOLD_BLOCK"]

#: Ciphertexts the server unpacks and adds at a time (per thread): 16 x 2 x 8192 residues, 2 MiB.
FOLD_BLOCK = 16


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
        self.ring = ring_of(public.preset)

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
        """Check an upload and add it into its enrolment group's sum, in two passes over its bytes,
        a range of ciphertexts per thread: first the digest of every ciphertext; then, once the whole
        upload is the one its client signed, each range unpacked, range-checked and added a block at
        a time (never a copy of the whole upload). An insider's residue beyond its prime, found in
        the second pass, takes back what the other blocks added: uint64 addition wraps, so
        subtracting them restores the sum exactly."""
        unit, workers = self.ring.residue_bytes, self._threads
        digests = parallel.map_ranges(lambda a, b: chunk_digests(kept[a * unit:b * unit], unit, 0, b - a),
                                      self.chunks, workers)
        if root_digest(b"".join(digests), unit=unit, size=len(kept)) != receipt.body_digest:
            raise SignatureError(f"{receipt.client_id!r}: the ciphertexts do not match their signed digest; they were "
                                 "altered")
        group = self.aggregator.roster.group_index(receipt.client_id)
        fresh = group not in self._sums  # the first upload of its group is unpacked into the group's sum
        if fresh:
            total = np.empty((self.chunks, self.ring.limbs, self.ring.n), np.uint64)
        else:
            if self._terms[group] == self.ring.lazy_terms:  # added without reducing while a uint64 holds the sum
                self._reduced(group)
            total = self._sums[group]
        what = f"the ciphertexts of {receipt.client_id!r}"
        added: dict[int, int] = {}  # range start -> end of what that range has added so far
        try:
            done = parallel.map_ranges(lambda a, b: self._add_range(kept, total, a, b, what, fresh, added=added),
                                       self.chunks, workers)
            error = next((e for _, _, e in done if e is not None), None)
        except BaseException:  # anything else (out of memory, an interrupt): the same take-back
            if not fresh:
                self._take_back(kept, total, added, what)
            raise
        if error is not None:
            if not fresh:
                self._take_back(kept, total, added, what)
            raise error
        # folded as it arrives: a release covers whole groups, so the server never needs a single
        # upload again (unless it keeps them for a circuit)
        if fresh:
            self._sums[group], self._terms[group] = total, 1
        else:
            self._terms[group] += 1

    def _take_back(self, kept: memoryview, total: np.ndarray, added: dict[int, int], what: str) -> None:
        """Subtract every block a refused upload's ranges had added (``added``: start -> end)."""
        for first, until in added.items():
            self._add_range(kept, total, first, until, what, False, sign=-1)

    def _add_range(self, kept: memoryview, total: np.ndarray, first: int, last: int, what: str, fresh: bool,
                   sign: int = 1, added: dict[int, int] | None = None) -> tuple[int, int, PayloadError | None]:
        """Ciphertexts ``first..last-1`` of an upload, :data:`FOLD_BLOCK` at a time: unpacked (into
        ``total`` itself for a group's first upload), range-checked, added (``sign`` -1: subtracted,
        to take them back); ``added[first]`` follows the end of what was added, block by block.
        Returns ``(first, end of what was added, the error that stopped it)``."""
        if added is not None:
            added[first] = first
        unit = self.ring.residue_bytes
        block = None if fresh else np.empty((min(FOLD_BLOCK, last - first), self.ring.limbs, self.ring.n), np.uint64)
        for b0 in range(first, last, FOLD_BLOCK):
            b1 = min(last, b0 + FOLD_BLOCK)
            try:
                if block is None:
                    self.ring.unpack_many(kept, b1 - b0, what=what, out=total[b0:b1], start=b0 * unit)
                    continue
                polys = self.ring.unpack_many(kept, b1 - b0, what=what, out=block[:b1 - b0], start=b0 * unit)
            except PayloadError as error:
                return first, b0, error
            if sign > 0:
                self.ring.add_lazy(total[b0:b1], polys)
            else:
                np.subtract(total[b0:b1], polys, out=total[b0:b1])
            if added is not None:
                added[first] = b1
        return first, last, None

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
        signatures of ``cset`` (in memory; :meth:`write_request` streams it)."""
        total, size = self._member_sum(cset.members), self.ring.residue_bytes
        body = np.empty(self.chunks * size, dtype=np.uint8)
        parallel.map_ranges(lambda a, b: self.ring.pack_into(total[a:b], body[a * size:b * size]), self.chunks,
                            self._threads)
        return encode_request(cset, layout=self.layout, receipts=[self._accepted[m] for m in cset.members],
                              signatures=signatures, kind="sum", body=body.data, digest_unit=size)

    def write_request(self, cset: ContributorSet, signatures: Mapping[str, str], sink: BinaryIO) -> int:
        """:meth:`request`'s bytes written to ``sink`` (a file, a socket's file object) without ever
        holding the packed body whole: the sum is packed twice, a block at a time, once to hash it
        (the header names the digest, so it goes first) and once to write it. Returns the bytes
        written."""
        total, size = self._member_sum(cset.members), self.ring.residue_bytes

        def digests(first: int, last: int) -> bytes:
            out, buffer = [], np.empty(min(FOLD_BLOCK, last - first) * size, dtype=np.uint8)
            for b0 in range(first, last, FOLD_BLOCK):
                b1 = min(last, b0 + FOLD_BLOCK)
                out.append(chunk_digests(self.ring.pack_into(total[b0:b1], buffer[:(b1 - b0) * size]).data, size, 0,
                                         b1 - b0))
            return b"".join(out)

        root = root_digest(b"".join(parallel.map_ranges(digests, self.chunks, self._threads)), unit=size,
                           size=self.chunks * size)
        header = request_header(cset, layout=self.layout, receipts=[self._accepted[m] for m in cset.members],
                                signatures=signatures, kind="sum", body_digest=root, digest_unit=size)
        head = frame_signed_head(REQUEST_MAGIC, FORMAT_VERSION, header)
        sink.write(head)
        batch = FOLD_BLOCK * self._threads  # a block per thread, packed side by side, then written
        buffer = np.empty(min(batch, self.chunks) * size, dtype=np.uint8)
        for b0 in range(0, self.chunks, batch):
            b1 = min(self.chunks, b0 + batch)
            parallel.map_ranges(lambda a, b: self.ring.pack_into(total[b0 + a:b0 + b], buffer[a * size:b * size]),  # noqa: B023
                                b1 - b0, self._threads)
            sink.write(buffer[:(b1 - b0) * size].data)
        return len(head) + self.chunks * size

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



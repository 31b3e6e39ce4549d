"""Threshold keys, the rounds: a t-of-n committee releases the sum of clients' own-key ciphertexts.

Each client of an :class:`~secagg.epoch.Epoch` encrypts with its **own** key ``s_i`` under a
second half common to the round, ``a_j = XOF("threshold", epoch, run, round, chunk j)``, which every
party derives itself (:func:`round_half`; a second half from the server could be 0). The server's
sum of first halves ``sum c0_i = sum (m_i + e_i) - a_j * sum s_i`` is then a ciphertext of the
sum under the key ``S = sum_{i in C} s_i`` of the round's contributor set ``C``. No party holds
``S``: member ``h`` of the committee holds ``X_h = sum_{i in C} share_h(s_i)``, a Shamir share of
it, and for a quorum ``Q`` of ``t`` members sends

    ``p_h = lambda_h^Q * a_j * X_h + E_h``

- its Lagrange coefficient applied **before** its own smudging noise ``E_h`` (Gaussian, ``2^40``
times the error of ``|C|`` encryptions with ``strict``, from its CSPRNG: enough alone, whatever
the others add) - sealed to the combining member the set names (X25519, ChaCha20-Poly1305, bound
to the epoch, run, round, quorum and request) and signed. The members, the combiner among them,
compute their partials in parallel; the combiner adds the first halves and every partial, floods,
checks and releases only the ratio: ``sum c0 + sum_h p_h = sum (m_i + e_i) + sum_h E_h``.

Each member checks the request itself exactly as a single key holder does
(:func:`secagg.holder.verify_request`: receipts, signatures of the one contributor set, whole
groups, commitments) and records in its ledger that it gave this round's partial **before**
computing it: one partial per round, whatever quorum it is told (two partials of one share for
two quorums would give away its noise, and with it the share). Losing a member after partials
went out aborts the round.

Statistical distance: each release hides the encryption errors behind one honest member's noise
within ``sqrt(N) * 2^-(flood_bits+1)`` per ciphertext (``2^-34.5`` for ``strict``); over a key's
lifetime multiply by the ciphertexts released (1M parameters x 100 rounds: ~1.2e4 ciphertexts,
``2^-20.9``; the ceremony's tests add one per dealer and subset). ``compact`` (one 60-bit prime)
cannot host that noise: threshold keys need ``strict``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from . import shamir
from ._check import integer
from .committee import MIN_FLOOD_BITS, HolderKeys, _x25519_public, open_sealed, seal
from .epoch import Epoch, HolderShares, smudging_std
from .errors import AuthenticationError, PayloadError, QuorumError, ReleaseRefusedError, ReplayError
from .framing import canonical_json, frame_signed, unframe_signed
from .holder import DEFAULT_MIN_CONTRIBUTORS, Release, check_headroom, released_values, verify_request
from .ledger import Ledger
from .messages import Request, decode_request, digest
from .release import release
from .ring import BATCH, ring_of, second_half
from .signing import ClientIdentity, Roster

__all__ = ["CommitteeMember", "round_half", "round_seed", "ROUND_LABEL"]

ROUND_LABEL = b"threshold"
_PARTIAL_MAGIC = b"SECFLPT1"
_VERSION = 2  # 2: partial decryptions of second halves in NTT form


def round_seed(epoch_id: str, run: str, rnd: int) -> bytes:
    return hashlib.blake2b(canonical_json(["secfl/threshold-round", epoch_id, str(run), int(rnd)]),
                           digest_size=32).digest()


def round_half(epoch: Epoch, run: str, rnd: int, chunk: int) -> bytes:
    """The key of the round's common second half for ``chunk`` (:meth:`secagg.ring.Ring.uniform`)."""
    return second_half(round_seed(epoch.id, run, rnd), chunk=chunk, preset=epoch.preset, label=ROUND_LABEL)


def _request_digest(req: Request) -> str:
    body = digest(req.body)
    return hashlib.blake2b(canonical_json([req.cset.digest, req.layout.hash, body]), digest_size=16).hexdigest()


class CommitteeMember:
    """A committee member of one epoch: its shares, its keys, its ledger, the release policy.

    Args:
        shares: its shares of the dealers' keys (:class:`secagg.epoch.HolderShares`).
        keys: its X25519 key (partials are sealed with it).
        identity: its Ed25519 identity (it signs its partials; a set names it as combiner).
        epoch: the epoch the shares belong to.
        roster: the clients' and members' verification keys and the enrolment groups.
        ledger: its durable records (one partial and, as combiner, one release per round).
        min_contributors, max_weight, release_seed: as :class:`secagg.KeyHolder`.
    """

    def __init__(self, *, shares: HolderShares, keys: HolderKeys, identity: ClientIdentity, epoch: Epoch,
                 roster: Roster, ledger: Ledger, min_contributors: int = DEFAULT_MIN_CONTRIBUTORS,
                 max_weight: float = 1.0, release_seed: int | None = None) -> None:
        if epoch.preset.flood_bits < MIN_FLOOD_BITS:  # a Committee refuses it too; an Epoch may be loaded
            raise ReleaseRefusedError(f"preset {epoch.preset.name!r} floods 2^{epoch.preset.flood_bits}; threshold "
                                      f"release needs 2^{MIN_FLOOD_BITS} (use 'strict')")
        if shares.committee.fingerprint != epoch.committee.fingerprint:
            raise AuthenticationError("these shares belong to another committee than the epoch's")
        if identity.client_id != shares.card.holder_id or keys.public_hex != shares.card.exchange_key:
            raise AuthenticationError("identity, keys and shares are not one committee member's")
        if ledger is None:
            raise ReleaseRefusedError("a committee member needs a durable ledger (secagg.FileLedger)")
        self.shares, self.keys, self.identity, self.epoch = shares, keys, identity, epoch
        self.roster, self.ledger = roster, ledger
        self.min_contributors = integer("min_contributors", min_contributors, minimum=1)
        if not (math.isfinite(max_weight) and max_weight > 0):
            raise ValueError("max_weight must be a positive number")
        self.max_weight, self.release_seed = float(max_weight), release_seed
        self.ring = ring_of(epoch.preset)
        self.id = identity.client_id

    # ---- both roles -----------------------------------------------------------------------------
    def _check(self, request: bytes, quorum: Sequence[str], run: str | None) -> tuple[Request, tuple[int, ...]]:
        req = decode_request(request, max_members=len(self.roster))
        cset = req.cset
        if run is not None and cset.run != run:
            raise ReplayError("the release request names another run than the one this member serves")
        committee = self.epoch.committee
        if len(set(quorum)) != len(quorum) or len(quorum) != committee.threshold or self.id not in quorum \
                or cset.key_holder not in quorum:
            raise QuorumError(f"a quorum is {committee.threshold} distinct members including this one and the "
                              "combiner the set names")
        points = tuple(sorted(committee.card(h).index for h in quorum))
        unknown = [m for m in cset.members if self.epoch.key_of(m) is None]
        if unknown:
            raise ReleaseRefusedError(f"{len(unknown)} member(s) of the set dealt no key in this epoch")
        verify_request(req, roster=self.roster, keys=self.epoch.id, preset=self.epoch.preset,
                       min_contributors=self.min_contributors,
                       own_commitment=self.ledger.commitment(cset.run, cset.round), seeded=False)
        check_headroom(len(cset.members), self.max_weight, self.epoch.preset)
        if len(req.body) != req.layout.chunks(self.ring.n) * self.ring.residue_bytes or req.kind != "sum":
            raise PayloadError("the release request's ciphertexts do not fit its layout")
        return req, points

    def _partial(self, req: Request, points: tuple[int, ...]) -> list[np.ndarray]:
        ring, preset, cset = self.ring, self.epoch.preset, req.cset
        x = self.shares.share_sum(cset.members)
        lam = [shamir.lagrange_at_zero(points, q)[self.shares.card.index] for q in ring.primes]
        scaled = np.stack([shamir.scalar_mul(x[i], lam[i], q) for i, q in enumerate(ring.primes)])
        sigma = smudging_std(preset, len(cset.members))
        out: list[np.ndarray] = []
        with ring.factor_from(scaled) as factor:
            for b0 in range(0, chunks := req.layout.chunks(ring.n), BATCH):  # a batch of noise and halves at a time
                span = range(b0, min(chunks, b0 + BATCH))
                noise = np.stack([ring.gaussian(sigma) for _ in span])
                halves = np.stack([ring.uniform(round_half(self.epoch, cset.run, cset.round, j)) for j in span])
                # E + a * lambda * X per chunk, NTT form: a key share's product, unsealed yet
                out.extend(ring.ntt_plus_products(noise, halves, factor, secret=True))
                noise.fill(0)  # with the partial, E would give the weighted share
        return out

    def _header(self, req: Request, quorum: Sequence[str], holder: str, digest: str) -> dict[str, object]:
        return {"epoch": self.epoch.id, "run": req.cset.run, "round": req.cset.round, "holder": holder,
                "combiner": req.cset.key_holder, "quorum": sorted(quorum), "request": digest}

    # ---- a member --------------------------------------------------------------------------------
    def partial(self, request: bytes, *, quorum: Sequence[str], run: str | None = None) -> bytes:
        """This member's partial decryption of the request's sum, sealed to the combiner and signed.

        Raises:
            QuorumError, ReleaseRefusedError (among others: a second partial for the round),
            ModelInconsistencyError, AuthenticationError, PayloadError: as a key holder's release.
        """
        req, points = self._check(request, quorum, run)
        self.ledger.claim_partial(req.cset.run, req.cset.round)  # before anything is computed
        header = self._header(req, quorum, self.id, _request_digest(req))
        combiner = _x25519_public(self.epoch.committee.card(req.cset.key_holder).exchange_key, what="the combiner's key")
        body = seal(self.keys.private, combiner, b"".join(self.ring.pack(p) for p in self._partial(req, points)),
                    canonical_json(header))
        signed = canonical_json({**header, "body": digest(body)})
        return frame_signed(_PARTIAL_MAGIC, _VERSION, {**header, "signature": self.identity.key.sign(signed).hex()}, body)

    # ---- the combiner ---------------------------------------------------------------------------
    def combine(self, request: bytes, *, quorum: Sequence[str], partials: Mapping[str, bytes],
                run: str | None = None) -> Release:
        """Open every quorum member's partial (its own included: members compute them in parallel),
        add them to the first halves, flood, check, release the ratio.

        Raises:
            QuorumError: a partial of the quorum is missing (a member dropped: the round aborts).
            AuthenticationError, PayloadError: a partial that is forged, altered, or for another
                request, quorum or combiner.
            ReleaseRefusedError and the key holder's other refusals.
        """
        req, _ = self._check(request, quorum, run)
        cset = req.cset
        if cset.key_holder != self.id:
            raise ReleaseRefusedError(f"round {cset.round}: the set names another combiner")
        missing = [h for h in quorum if h not in partials]
        if missing:
            raise QuorumError(f"{len(missing)} of the quorum's partials are missing; the round cannot be released")
        request_digest = _request_digest(req)
        opened = [self._open(req, quorum, h, partials[h], request_digest) for h in quorum]
        self.ledger.claim_release(cset.run, cset.round)  # spent before anything is decrypted
        ring, size = self.ring, self.ring.residue_bytes
        chunks = req.layout.chunks(ring.n)
        raw = np.empty(chunks * ring.n)
        for j0 in range(0, chunks, BATCH):  # SEAL transforms a batch of chunks back in one call
            block = range(j0, min(chunks, j0 + BATCH))
            totals = ring.unpack_many(req.body, len(block), start=j0 * size, what=f"summed ciphertexts {j0}+")
            for k, j in enumerate(block):
                for parts in opened:
                    totals[k] = ring.add(totals[k], parts[j])
            raw[j0 * ring.n:block.stop * ring.n] = ring.decode_many(totals).reshape(-1)
            totals.fill(0)
        members, preset = len(cset.members), self.epoch.preset
        sigma = preset.noise_std() * math.sqrt(members)
        seed = None if self.release_seed is None else int(
            np.random.SeedSequence([self.release_seed, cset.round]).generate_state(1)[0])
        flooded = release(raw[:req.layout.total], noise_std=sigma, flood_bits=preset.flood_bits, seed=seed)
        sigma_f = 2.0**preset.flood_bits * sigma * math.sqrt(len(quorum) + 1)  # the members' noise and the combiner's
        values = released_values(flooded, req.layout, members=members, max_weight=self.max_weight, preset=preset,
                                 sigma_f=sigma_f)
        return Release.signed(values, cset, self.identity)

    def _open(self, req: Request, quorum: Sequence[str], holder: str, data: bytes, request: str) -> list[np.ndarray]:
        ring = self.ring
        chunks = req.layout.chunks(ring.n)
        header, body = unframe_signed(data, magic=_PARTIAL_MAGIC, version=_VERSION, what=f"{holder!r}'s partial",
                                      max_bytes=chunks * ring.residue_bytes + 28 + 4096)
        expected = self._header(req, quorum, holder, request)
        signature = header.pop("signature", None)
        if header != expected or not isinstance(signature, str):
            raise AuthenticationError(f"{holder!r}'s partial is for another request, quorum, round or combiner")
        signed = canonical_json({**header, "body": digest(body)})
        try:
            self.roster.verify(holder, bytes.fromhex(signature), signed)
        except ValueError:
            raise AuthenticationError(f"{holder!r}'s partial carries no valid signature") from None
        sender = _x25519_public(self.epoch.committee.card(holder).exchange_key, what=f"{holder!r}'s key")
        raw = open_sealed(self.keys.private, sender, bytes(body), canonical_json(header), what=f"{holder!r}'s partial")
        size = ring.residue_bytes
        if len(raw) != chunks * size:
            raise PayloadError(f"{holder!r}'s partial does not fit the request's layout")
        return [ring.unpack(raw[j * size:(j + 1) * size], what=f"{holder!r}'s partial {j}") for j in range(chunks)]

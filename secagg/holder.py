"""The key holder's release policy: what a party with a secret checks before anything leaves it.

:class:`KeyHolder` (one shared key set) and :class:`secagg.threshold.CommitteeMember` (a committee
of key holders with shares of every client's own key) apply the same checks to a release request,
:func:`verify_request`, and to what they release, :func:`released_values`:

1. every member's receipt verifies against the party's own roster, names the run and round of the
   set, the key set (or key epoch), the preset and the request's layout; seeds are distinct (or,
   for a common second half, absent); every commitment is the same (and the party's own, where it
   uploaded too): otherwise ``ModelInconsistencyError``;
2. every member signed the one contributor set; it has at least ``min_contributors`` members and
   covers whole enrolment groups of at least that size;
3. the party spends the round in its ledger **before** it decrypts (a refusal after that point
   spends it too) - the callers do this;
4. what it releases is flooded with noise sized from what it verified, and checked on the flooded
   values only: totals of weights in ``[0, members x max_weight]``, averages in ``[-max_abs,
   max_abs]``, sums in ``members x [-max_abs, max_abs]``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as sealapi

from . import sealio
from ._check import integer
from .circuit import SERVER_SCORED_NOISE, circuit_outputs, ratio_vector
from .errors import (
    AuthenticationError,
    EmptyAggregationError,
    HeadroomError,
    KeyMismatchError,
    LayoutMismatchError,
    MissingSecretKeyError,
    ModelInconsistencyError,
    PayloadError,
    ReleaseRefusedError,
    ReplayError,
    SignatureError,
)
from .keys import SecretContext
from .ledger import Ledger, MemoryLedger
from .messages import ContributorSet, Receipt, Request, decode_request
from .packing import Layout
from .presets import Preset, max_members
from .release import release
from .ring import BATCH, ring_of, second_half
from .signing import ClientIdentity, Roster

__all__ = ["KeyHolder", "Release", "verify_request", "released_values", "check_headroom", "max_members",
           "DEFAULT_MIN_CONTRIBUTORS",
           "WEIGHTS_ENTRY", "seed_label", "ratio_layout"]

#: Key holders release sums of at least this many clients unless configured otherwise.
DEFAULT_MIN_CONTRIBUTORS = 2
#: Name of the array that carries a client's per-layer weights in the ratio form.
WEIGHTS_ENTRY = "__secagg_weights__"


def seed_label(client_id: str) -> bytes:
    """The domain of a client's own second halves (shared key set): bound to its id."""
    return b"shared:" + client_id.encode()


def ratio_layout(layout: Layout) -> Layout:
    """``layout`` with one weight per layer appended: the ratio form."""
    return Layout.of({**{s.name: np.zeros(s.shape, s.dtype) for s in layout.layers},
                      WEIGHTS_ENTRY: np.zeros(len(layout.layers))})


_RELEASE_TAG = b"secfl/release/v1\x00"


def _release_statement(cset: ContributorSet, values: Mapping[str, np.ndarray]) -> bytes:
    """What a releasing party signs: the contributor set (run, round, key holder, members, their
    receipts) and the released values, name by name, as little-endian float64."""
    h = hashlib.sha256()
    for name in sorted(values):
        a = np.ascontiguousarray(values[name], dtype="<f8")
        h.update(name.encode() + b"\x00" + repr(a.shape).encode() + b"\x00" + a.tobytes())
    return _RELEASE_TAG + cset.statement() + b"\x00" + h.digest()


@dataclass(frozen=True, kw_only=True)
class Release:
    """What a key holder lets out: the released (noise-flooded, rounded) values and whose sum they
    are; signed by the releasing party over its contributor set, so that anyone holding the
    roster (a client checking the model the server sends next) can tell a release from a claim."""

    values: dict[str, np.ndarray]
    contributors: tuple[str, ...]
    contributor_set: ContributorSet | None = None
    signature: str = ""

    @classmethod
    def signed(cls, values: dict[str, np.ndarray], cset: ContributorSet, identity: ClientIdentity) -> Release:
        signature = identity.key.sign(_release_statement(cset, values)).hex()
        return cls(values=values, contributors=cset.members, contributor_set=cset, signature=signature)

    def verify(self, roster: Roster, *, run: str, round: int) -> None:
        """Raise unless a party of ``roster`` released exactly these values for ``round`` of ``run``.

        Raises:
            AuthenticationError: unsigned, or signed for another run or round.
            SignatureError: the signature does not verify (the values or the set were altered).
        """
        cset = self.contributor_set
        if cset is None or not self.signature:
            raise AuthenticationError("the release is unsigned: only a key holder's signed release can be checked")
        if cset.run != run or cset.round != round:
            raise ReplayError("the release was signed for another run or round")
        if cset.members != self.contributors:
            raise AuthenticationError("the release names other contributors than its signed set")
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            raise SignatureError("the release's signature is not hex") from None
        roster.verify(cset.key_holder, signature, _release_statement(cset, self.values))


def verify_request(req: Request, *, roster: Roster, keys: str, preset: Preset, min_contributors: int,
                   own_commitment: str | None, seeded: bool) -> tuple[Receipt, ...]:
    """Steps 1 and 2 above; the receipts, in the set's order.

    ``keys`` is the fingerprint every receipt must name (the key set, or the key epoch); ``seeded``
    says whether each upload brings its own second-half seed (shared key set) or none (a second
    half common to the round, threshold keys).
    """
    cset = req.cset
    receipts = req.receipts
    if tuple(r.client_id for r in receipts) != cset.members or tuple(r.digest for r in receipts) != cset.receipts:
        raise AuthenticationError("the request's receipts are not the ones its contributor set names")
    seeds = set()
    for r in receipts:
        r.verify(roster)
        if r.run != cset.run or r.round != cset.round:
            raise ReplayError(f"{r.client_id!r}'s receipt is for another run or round")
        if r.keys != keys or r.preset != preset.name:
            raise KeyMismatchError(f"{r.client_id!r} encrypted under another key set or preset")
        if r.layout_hash != req.layout.hash:
            raise LayoutMismatchError(f"{r.client_id!r}'s receipt names another layout than the request's")
        if seeded and (not r.seed or r.seed in seeds):
            raise PayloadError(f"{r.client_id!r}'s receipt names no seed, or one another upload uses")
        if not seeded and r.seed:
            raise PayloadError(f"{r.client_id!r}'s receipt names a seed; this round's second half is common")
        seeds.add(r.seed)
    views = {r.commitment for r in receipts} | ({own_commitment} if own_commitment is not None else set())
    if len(views) > 1:
        given = {c: [r.client_id for r in receipts if r.commitment == c] or ["(the key holder)"] for c in views}
        seen = "; ".join(f"{c[:12]}... given to {sorted(w)}" for c, w in given.items())
        raise ModelInconsistencyError(
            f"round {cset.round}: clients trained on {len(views)} different global models or configurations ({seen}). "
            "The server may be attacking a client (model inconsistency); the aggregate was not released")
    cset.verify(roster, req.signatures)
    if len(cset.members) < min_contributors:
        raise ReleaseRefusedError(f"round {cset.round}: asked to release a sum of {len(cset.members)} client(s); this "
                                  f"key holder releases sums of at least {min_contributors} clients only")
    roster.check_whole_groups(cset.members, min_size=min_contributors)
    return receipts


def check_headroom(members: int, max_weight: float, preset: Preset) -> None:
    limit = max_members(preset, max_weight)
    if members > limit:
        raise HeadroomError(f"a sum of {members} clients could exceed preset {preset.name!r}'s modulus (at most "
                            f"{limit} at max_weight {max_weight:g}); release smaller groups")


def released_values(flooded: np.ndarray, layout: Layout, *, members: int, max_weight: float, preset: Preset,
                    sigma_f: float) -> dict[str, np.ndarray]:
    """Step 4's checks on the flooded values, then ``numerator / denominator`` per layer (or the sum)."""
    slack = 8 * sigma_f
    if WEIGHTS_ENTRY not in layout.names:
        if not np.all(np.abs(flooded) <= members * preset.max_abs + slack):
            raise ReleaseRefusedError("the released sum lies beyond what its members could have sent; it was "
                                      "withheld")
        return layout.unpack(flooded)
    spec = layout[WEIGHTS_ENTRY]
    denominators = flooded[spec.offset:spec.stop]
    if np.any(denominators > members * max_weight + slack) or np.any(denominators < -slack):
        raise ReleaseRefusedError("the released total weight lies beyond what its members could have sent; it "
                                  "was withheld")
    out: dict[str, np.ndarray] = {}
    for i, layer in enumerate(s for s in layout.layers if s.name != WEIGHTS_ENTRY):
        den = denominators[i]
        if not den > slack:
            raise EmptyAggregationError(f"the total weight of {layer.name!r} is indistinguishable from zero; every "
                                        "client sent weight ~0 for it, so there is nothing to average")
        num = flooded[layer.offset:layer.stop]
        # every update lies in [-max_abs, max_abs] and every weight in [0, max_weight], so every
        # average does too: one that does not was amplified (e.g. by a negative weight)
        if np.any(np.abs(num) > preset.max_abs * den + slack * (1 + preset.max_abs)):
            raise ReleaseRefusedError(f"the released average of {layer.name!r} lies beyond the range every update "
                                      "is held to; a contributor sent an update or weight outside it; it was "
                                      "withheld")
        out[layer.name] = (num / den).reshape(layer.shape).astype(layer.dtype)
    return out


class KeyHolder:
    """A key holder's half, and the one release policy (see the module docstring).

    Args:
        secret: its secret context.
        identity: its signing identity: the id a contributor set must name to be released here.
        roster: the clients' verification keys and enrolment groups.
        ledger: its records: the commitment of each round it uploaded for (it releases only those,
            comparing every receipt's commitment with its own), and the rounds it released.
        min_contributors: the smallest set it releases (default 2: a "sum" of one client is that
            client's update); every enrolment group in the set must be at least this large.
        max_weight: the largest weight one client may contribute (1 in the ratio form of the
            client-scored protocol); a released total weight above members x this is refused.
        release_seed: makes the flooding reproducible (labelled, seeded simulations only); ``None``,
            the default, draws it from the OS CSPRNG, as a deployment must.
        trust_server_circuit: also decrypt the output of the server-scored circuit, which no key
            holder can rebuild: a server that lies there can make it decrypt a ciphertext of its
            choice (and learn the secret key). Off by default; the server-scored protocol is for
            an honest-but-curious server only.
    """

    def __init__(self, secret: SecretContext, *, identity: ClientIdentity, roster: Roster, ledger: Ledger | None = None,
                 min_contributors: int = DEFAULT_MIN_CONTRIBUTORS, max_weight: float = 1.0,
                 release_seed: int | None = None, trust_server_circuit: bool = False) -> None:
        if not isinstance(secret, SecretContext):
            raise MissingSecretKeyError(f"a KeyHolder decrypts with a SecretContext (client.key), got {type(secret).__name__}")
        if not isinstance(roster, Roster):
            raise AuthenticationError("a key holder checks every contributor against the roster: give it one")
        self.secret = secret
        self.client_id = identity.client_id
        self.identity = identity
        self.roster = roster
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.min_contributors = integer("min_contributors", min_contributors, minimum=1)
        if not (math.isfinite(max_weight) and max_weight > 0):
            raise ValueError("max_weight must be a positive number")
        self.max_weight = float(max_weight)
        self.release_seed = release_seed
        self.trust_server_circuit = bool(trust_server_circuit)
        self.ring = ring_of(secret.preset)

    def release(self, request: bytes | bytearray | memoryview, *, run: str | None = None) -> Release:
        """Verify the request, spend the round, decrypt with a second half rebuilt here, release.

        ``run``, when the caller knows which run this key holder is serving (on Flower, the run of
        the query), refuses a request for any other run.

        Raises:
            ReleaseRefusedError: another key holder's set, a round this party did not upload for,
                too few members, a sum beyond its range, or a round already released.
            ModelInconsistencyError: members were given different models (a malicious server).
            AuthenticationError (and subclasses), PayloadError: receipts, signatures or bytes that
                do not verify.
        """
        req = decode_request(request, max_members=len(self.roster))
        if run is not None and req.cset.run != run:
            raise ReplayError("the release request names another run than the one this key holder serves")
        receipts = self._verify(req)
        cset, preset = req.cset, self.secret.preset
        members = len(cset.members)
        check_headroom(members, self.max_weight, preset)
        chunks = req.layout.chunks(self.ring.n)
        if req.kind == "circuit":
            if not self.trust_server_circuit:
                raise ReleaseRefusedError(
                    "this is the server-scored circuit's output, which no key holder can rebuild or check: a lying "
                    "server could make it decrypt a ciphertext of its choice. Release it only for a server you trust "
                    "(KeyHolder(trust_server_circuit=True))")
            if len(req.blob_sizes) != circuit_outputs(req.layout, self.ring.n):
                raise PayloadError("the circuit's output does not fit its layout")
        elif len(req.body) != chunks * self.ring.residue_bytes:
            raise PayloadError("the release request's ciphertexts do not fit its layout")
        self.ledger.claim_release(cset.run, cset.round)  # spent before anything is decrypted
        if req.kind == "circuit":
            raw, layout, sigma = self._decrypt_circuit(req, chunks), ratio_layout(req.layout), \
                SERVER_SCORED_NOISE * math.sqrt(members)
        else:
            raw, layout, sigma = self._decrypt(req, receipts, chunks), req.layout, preset.noise_std() * math.sqrt(members)
        seed = None if self.release_seed is None else int(
            np.random.SeedSequence([self.release_seed, cset.round]).generate_state(1)[0])
        flooded = release(raw, noise_std=sigma, flood_bits=preset.flood_bits, seed=seed)
        values = self._ratio(flooded, layout, members, 2.0**preset.flood_bits * sigma)
        return Release.signed(values, cset, self.identity)

    def _decrypt_circuit(self, req: Request, chunks: int) -> np.ndarray:
        """The raw output of the server-scored circuit (trusted server only): numerators, then weights."""
        ring, decoded, offset = self.ring, [], 0
        bound = 2 * 8 * ring.limbs * ring.n + 4096
        for i, size in enumerate(req.blob_sizes):
            ct = sealio.load(sealapi.Ciphertext, ring.seal, req.body[offset:offset + size], max_inflated=bound,
                             what=f"circuit output {i}")
            offset += size
            if ct.size() != 2 or not ct.is_ntt_form() or ct.is_transparent():
                raise PayloadError(f"circuit output {i} is not a relinearised CKKS ciphertext")
            plain = sealapi.Plaintext()
            self.secret.decryptor.decrypt(ct, plain)
            decoded.append(ring.decode(plain, secret=True))  # at the circuit's output level: SEAL's decoder
        return ratio_vector(decoded, req.layout, ring.n, clients=len(req.cset.members))

    def _verify(self, req: Request) -> tuple[Receipt, ...]:
        cset = req.cset
        if cset.key_holder != self.client_id:
            raise ReleaseRefusedError(f"round {cset.round}: the set names another key holder; this one releases only "
                                      "sets that name it")
        own = self.ledger.commitment(cset.run, cset.round)
        if own is None:
            raise ReleaseRefusedError(f"round {cset.round}: this key holder releases only rounds of runs it uploaded "
                                      "for itself, so that it can check every contributor's model against its own")
        return verify_request(req, roster=self.roster, keys=self.secret.fingerprint, preset=self.secret.preset,
                              min_contributors=self.min_contributors, own_commitment=own, seeded=True)

    def _decrypt(self, req: Request, receipts: Sequence[Receipt], chunks: int) -> np.ndarray:
        """The raw sum, decrypted with a second half rebuilt from the signed seeds (never sent), a
        batch of chunks at a time."""
        ring = self.ring
        out = np.empty(chunks * ring.n, dtype=np.float64)
        size = ring.residue_bytes
        seeds = [(bytes.fromhex(r.seed), seed_label(r.client_id)) for r in receipts]
        key = ring.key_factor(self.secret)
        for j0 in range(0, chunks, BATCH):
            block = range(j0, min(chunks, j0 + BATCH))
            a = np.stack([self._rebuilt_half(seeds, j) for j in block])
            c0 = ring.unpack_many(req.body, len(block), start=j0 * size, what=f"summed ciphertexts {j0}+")
            out[j0 * ring.n:block.stop * ring.n] = ring.decrypt_many(c0, a, key).reshape(-1)
        return out[:req.layout.total]

    def _rebuilt_half(self, seeds: Sequence[tuple[bytes, bytes]], chunk: int) -> np.ndarray:
        """``sum a_i`` of one chunk from the contributors' signed seeds, added lazily (reduced when a
        uint64 is full and at the end)."""
        ring, preset = self.ring, self.secret.preset
        a, terms = ring.zeros(), 0
        for seed, label in seeds:
            if terms == ring.lazy_terms:
                ring.reduce(a)
                terms = 1
            ring.add_lazy(a, ring.uniform(second_half(seed, chunk=chunk, preset=preset, label=label)))
            terms += 1
        return ring.reduce(a)

    def _ratio(self, flooded: np.ndarray, layout: Layout, members: int, sigma_f: float) -> dict[str, np.ndarray]:
        return released_values(flooded, layout, members=members, max_weight=self.max_weight,
                               preset=self.secret.preset, sigma_f=sigma_f)

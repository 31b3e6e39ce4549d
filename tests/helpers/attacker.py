"""A malicious server's tools, and key holders with one defence switched off, for the attack tests.

The server sees every upload's first half ``c0`` and, through the seed in its signed header, its
second half ``a``; it may send a key holder any bytes. The "defence off" key holders below are
:class:`secagg.KeyHolder` with exactly one step replaced, so that a test shows the attack
succeeding without that step and failing with it:

* :class:`TrustingKeyHolder` decrypts with second halves the server supplies (instead of the ones
  it rebuilds from the signed seeds) - what the first version did;
* :class:`ChunkMapKeyHolder` rebuilds them, but takes from the server which of a member's chunk
  seeds feeds which chunk;
* :class:`RawCheckKeyHolder` range-checks the raw decryption and does not spend the round before
  it decrypts (a refusal oracle);
* :class:`ForgetfulLedger` records nothing: a party that signs any number of sets, or releases a
  round any number of times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as sealapi

import secagg
from secagg import sealio
from secagg.holder import seed_label as _seed_label
from secagg.messages import decode_request, encode_request
from secagg.ring import Ring, second_half


class ForgetfulLedger(secagg.MemoryLedger):
    """Signs every set and releases every round it is asked to (sign-once and release-once off)."""

    def claim_set(self, run, rnd, digest):
        pass

    def claim_release(self, run, rnd):
        pass


class TrustingKeyHolder(secagg.KeyHolder):
    """Decrypts ``(body, halves[j])`` with second halves the server gave it (rebuild off)."""

    halves: list[np.ndarray] = []

    def _decrypt(self, req, receipts, chunks):
        ring, size = self.ring, self.ring.residue_bytes
        out = np.concatenate([ring.decrypt(ring.unpack(req.body[j * size:(j + 1) * size], what="sum"), self.halves[j],
                                           self.secret) for j in range(chunks)])
        return out[:req.layout.total]


class ChunkMapKeyHolder(secagg.KeyHolder):
    """Rebuilds each chunk's second half from the members' seeds, but derives member ``m``'s share
    of chunk ``j`` from chunk ``chunk_map[m][j]`` of its seed (the server's say; binding off)."""

    chunk_map: dict[str, list[int]] = {}

    def _decrypt(self, req, receipts, chunks):
        ring, size, preset = self.ring, self.ring.residue_bytes, self.secret.preset
        out = []
        for j in range(chunks):
            a = ring.zeros()
            for r in receipts:
                place = self.chunk_map.get(r.client_id, list(range(chunks)))[j]
                a = ring.add(a, ring.uniform(second_half(bytes.fromhex(r.seed), chunk=place, preset=preset,
                                                         label=_seed_label(r.client_id))))
            out.append(ring.decrypt(ring.unpack(req.body[j * size:(j + 1) * size], what="sum"), a, self.secret))
        return np.concatenate(out)[:req.layout.total]


class RawCheckKeyHolder(secagg.KeyHolder):
    """Refuses a sum whose *raw* decryption leaves the members' range, and spends nothing first."""

    def release(self, request, *, run=None):
        req = decode_request(request, max_members=len(self.roster))
        receipts = self._verify(req)
        raw = self._decrypt(req, receipts, req.layout.chunks(self.ring.n))
        if np.any(np.abs(raw) > len(receipts) * self.secret.preset.max_abs):
            raise secagg.ReleaseRefusedError("the sum lies beyond its members' range")
        return super().release(request, run=run)


# ---- a round the server runs honestly up to the signed set ---------------------------------------
@dataclass
class SignedRound:
    """What a server holds once every member signed the set: uploads, halves, set and signatures."""

    ring: Ring
    state: object  # secagg.RoundAggregate
    cset: secagg.ContributorSet
    signatures: dict
    c0: dict  # member -> [first half of chunk j (NTT form)]
    a: dict  # member -> [second half of chunk j (NTT form), from the seed in its receipt]

    def request(self, body: list[np.ndarray]) -> bytes:
        """A release request with this round's genuine receipts and signatures and ``body`` as the sum."""
        receipts = [self.state.receipt(m) for m in self.cset.members]
        return encode_request(self.cset, layout=self.state.layout, receipts=receipts, signatures=self.signatures,
                              kind="sum", body=b"".join(self.ring.pack(c) for c in body))

    def honest_sum(self, part: str) -> list[np.ndarray]:
        """The sum over the members of ``c0`` or ``a``, chunk by chunk."""
        halves = getattr(self, part)
        out = []
        for j in range(len(halves[self.cset.members[0]])):
            total = self.ring.zeros()
            for m in self.cset.members:
                total = self.ring.add(total, halves[m][j])
            out.append(total)
        return out


def signed_round(keys, identities, roster, ledgers, updates, *, key_holder, run="run", round=0, weights=None,
                 commitment=None, members=None):
    """Every client of ``updates`` uploads; the server proposes ``members`` (default: all) to
    ``key_holder`` and collects the signatures."""
    commitment = commitment or secagg.round_commitment(round, {}, {"attack": run})
    uploaders = {c: secagg.Uploader(keys.secret, identity=identities[c], ledger=ledgers[c], roster=roster,
                                    min_contributors=1) for c in updates}
    blobs = {c: u.upload(updates[c], run=run, round=round, commitment=commitment, weights=weights)
             for c, u in uploaders.items()}
    first = next(iter(updates.values()))
    names = {n: np.zeros(np.shape(v), np.asarray(v).dtype) for n, v in first.items()}
    layout = secagg.Layout.of(names if weights is None else names | {secagg.WEIGHTS_ENTRY: np.zeros(len(names))})
    state = secagg.Aggregator(keys.public, roster=roster).open_round(run=run, round=round, layout=layout,
                                                                     keep_uploads=True)
    for blob in blobs.values():
        state.receive(blob)
    cset = secagg.ContributorSet.of(run=run, round=round, key_holder=key_holder,
                                    receipts=[state.receipt(m) for m in sorted(members or updates)])
    signatures = {m: uploaders[m].sign_set(cset) for m in cset.members}
    ring = Ring(keys.secret.preset)
    chunks = layout.chunks(ring.n)
    c0 = {m: list(ring.unpack_many(state.upload_body(m), chunks, what="upload")) for m in updates}
    a = {m: [ring.uniform(second_half(bytes.fromhex(state.receipt(m).seed), chunk=j, preset=ring.preset,
                                      label=_seed_label(m))) for j in range(chunks)] for m in updates}
    return SignedRound(ring=ring, state=state, cset=cset, signatures=signatures, c0=c0, a=a)


# ---- polynomial arithmetic a key-recovering attacker needs ---------------------------------------
def _poly(ring: Ring, ct: sealapi.Ciphertext) -> np.ndarray:
    polys = 8 * ring.limbs * ring.n
    raw = sealio.inflate(sealio.dump(ct), max_inflated=4 * polys, what="a ciphertext")
    return np.frombuffer(raw[len(raw) - 2 * polys:len(raw) - polys], dtype="<u8").reshape(ring.limbs, ring.n).copy()


def to_ntt(ring: Ring, coeff: np.ndarray) -> np.ndarray:
    ct = ring.ciphertext(coeff, constant(ring, 1), ntt=False)  # SEAL refuses a zero second half (transparent)
    ring.evaluator.transform_to_ntt_inplace(ct)
    return _poly(ring, ct)


def from_ntt(ring: Ring, ntt: np.ndarray) -> np.ndarray:
    ct = ring.ciphertext(ntt, ring.zeros() + np.uint64(1), ntt=True)
    ring.evaluator.transform_from_ntt_inplace(ct)
    return _poly(ring, ct)


def centred(ring: Ring, coeff: np.ndarray) -> np.ndarray:
    """RNS residues (coefficient form) as the integers they stand for, in (-Q/2, Q/2] (CRT)."""
    modulus = 1
    for q in ring.primes:
        modulus *= q
    total = np.zeros(ring.n, dtype=object)
    for i, q in enumerate(ring.primes):
        rest = modulus // q
        total = (total + coeff[i].astype(object) * (rest * pow(rest, -1, q))) % modulus
    return np.where(total > modulus // 2, total - modulus, total)


def residues(ring: Ring, ints) -> np.ndarray:
    """Integers (one per coefficient) as RNS residues."""
    out = ring.zeros()
    for i, q in enumerate(ring.primes):
        out[i] = np.array([int(x) % q for x in ints], dtype=np.uint64)
    return out


def scaled(ring: Ring, poly: np.ndarray, factor: int) -> np.ndarray:
    """``factor * poly`` modulo each prime (any form)."""
    out = ring.zeros()
    for i, q in enumerate(ring.primes):
        out[i] = ((poly[i].astype(object) * factor) % q).astype(np.uint64)
    return out


def constant(ring: Ring, value: int) -> np.ndarray:
    """The constant polynomial ``value`` (coefficient form)."""
    return residues(ring, [value] + [0] * (ring.n - 1))


def secret_coefficients(ring: Ring, secret) -> np.ndarray:
    """The secret key's coefficients (the ground truth an attack is scored against)."""
    return centred(ring, from_ntt(ring, ring.secret_ntt(secret))).astype(np.int64)


def coefficients_of(ring: Ring, values: np.ndarray) -> np.ndarray:
    """The integer polynomial whose decoding is ``values`` (re-encoded at the preset's scale)."""
    return centred(ring, from_ntt(ring, ring.plaintext_array(ring.encode(np.asarray(values, np.float64)))))


def key_from_decryption(ring: Ring, decryption: np.ndarray, c0: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``s`` from an exact decryption polynomial ``c0 + a*s`` (integers), its ``c0`` and ``a`` (both NTT
    form): ``s = (decryption - c0) / a``, pointwise in the NTT domain."""
    lhs, a_ntt = to_ntt(ring, residues(ring, decryption)), a
    s = ring.zeros()
    for i, q in enumerate(ring.primes):
        diff = (lhs[i].astype(object) - c0[i].astype(object)) % q
        s[i] = np.array([int(d) * pow(int(x), -1, q) % q for d, x in zip(diff, a_ntt[i])], dtype=np.uint64)
    return centred(ring, from_ntt(ring, s)).astype(np.int64)


def shift(ring: Ring, c0: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``c0`` plus the encoding of ``values``: what a server adds to move a decryption by ``values``."""
    return ring.add(c0, ring.plaintext_array(ring.encode(np.asarray(values, np.float64))))


# ---- a dishonest client: any vector, encrypted and signed as its own upload ----------------------
def forged_upload(keys, identity, arrays: dict, *, run: str, round: int, commitment: str) -> bytes:
    """What an enrolled client can send without proofs of well-formedness: ``arrays`` (ratio form
    included, under ``secagg.WEIGHTS_ENTRY``) encrypted and signed with no range check at all."""
    from secagg import parallel
    from secagg.messages import Receipt, body_digest, encode_upload
    from secagg.ring import Ring

    layout = secagg.Layout.of(arrays)
    seed = bytes(range(32))
    body = parallel.encrypt(layout.pack(arrays), keys.secret, seed=seed, label=_seed_label(identity.client_id),
                            workers=1)
    receipt = Receipt(client_id=identity.client_id, run=run, round=round, commitment=commitment,
                      keys=keys.secret.fingerprint, preset=keys.secret.preset.name, layout_hash=layout.hash,
                      seed=seed.hex(), body_digest=body_digest(body, Ring(keys.secret.preset).residue_bytes)).sign(identity)
    return encode_upload(receipt, body)


def pointwise_inverse(ring: Ring, x: np.ndarray) -> np.ndarray:
    """``1 / x`` modulo each prime, pointwise (NTT form)."""
    out = ring.zeros()
    for i, q in enumerate(ring.primes):
        out[i] = np.array([pow(int(v), -1, q) for v in x[i]], dtype=np.uint64)
    return out

"""Server side: sums and plaintext-weighted sums of encrypted updates, without a secret key.

Per-layer weights are applied by multiplying whole ciphertexts with a *constant* plaintext
(exact up to the weight's quantisation), never with a slot mask, which CKKS would encode with an
error of ~sqrt(N)/scale per slot. A ciphertext that straddles layers with different weights
yields one weighted term per run of equally weighted layers; the decryptor takes each value from
its own term.

Example:
    >>> import numpy as np
    >>> from secagg import generate_keys, encrypt_update, aggregate, decrypt
    >>> keys = generate_keys(preset="compact")
    >>> ups = [encrypt_update({"w": np.full(3, 0.1 * (k + 1))}, keys.secret, round=1, client_id=f"c{k}")
    ...        for k in range(3)]
    >>> total = aggregate(ups, keys.public)
    >>> np.round(decrypt(total, keys.secret)["w"], 4).tolist()
    [0.6, 0.6, 0.6]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tenseal.sealapi as sealapi

from .errors import (
    DuplicateClientError,
    EmptyAggregationError,
    HeadroomError,
    KeyMismatchError,
    LayoutMismatchError,
    PayloadError,
    RoundMismatchError,
)
from .keys import PublicContext, SecretContext
from .packing import Layout
from .wire import EncryptedUpdate, Term, check_context, same_round

__all__ = ["aggregate", "RunningSum", "MAX_WEIGHT_BITS", "MIN_WEIGHT_BITS"]

#: Weights are quantised to multiples of 2^-p with p as large as the headroom allows, up to this.
MAX_WEIGHT_BITS = 30
#: Fewer bits than this would make the weights too coarse: refuse instead.
MIN_WEIGHT_BITS = 10

Weights = Sequence[float] | Sequence[Mapping[str, float]]


def aggregate(
    updates: Sequence[EncryptedUpdate],
    context: PublicContext | SecretContext,
    *,
    weights: Weights | None = None,
    expected_round: int | None = None,
) -> EncryptedUpdate:
    """Add encrypted updates, optionally weighted by public per-client (or per-layer) weights.

    ``weights=None`` returns ``Enc(sum_k x_k)``. With ``weights`` (one float per update, or one
    mapping layer name -> float per update) it returns ``Enc(sum_k w_k x_k)`` per layer. Summing
    updates encrypted in the ratio form (``encrypt_update(..., weights=...)``) gives the
    numerator and denominator of attention aggregation; use :func:`secagg.decrypt_ratio`.

    Raises:
        EmptyAggregationError: no update.
        KeyMismatchError: an update from another key set or preset.
        RoundMismatchError: updates from different rounds, or not ``expected_round``.
        LayoutMismatchError: updates with different layouts.
        DuplicateClientError: a client counted twice.
        HeadroomError: the aggregate could exceed the ciphertext modulus.
    """
    updates = list(updates)
    if not updates:
        raise EmptyAggregationError("nothing to aggregate: no update was received this round")
    for u in updates:
        if not isinstance(u, EncryptedUpdate):
            raise TypeError(f"aggregate expects EncryptedUpdate objects, got {type(u).__name__}")
        check_context(u, context)
    rnd = same_round(updates)
    if expected_round is not None and rnd != expected_round:
        raise RoundMismatchError(f"updates are for round {rnd}, expected {expected_round}")
    layout = updates[0].layout
    for u in updates[1:]:
        if u.layout.hash != layout.hash:
            raise LayoutMismatchError(
                f"{u._who()} has a different layout (names, shapes or dtypes) from {updates[0]._who()}; "
                "all clients must train the same model architecture"
            )
    seen: set[str] = set()
    for u in updates:
        dup = seen.intersection(u.contributors)
        if dup:
            raise DuplicateClientError(f"client(s) {sorted(dup)} appear twice in this aggregation; drop the duplicate payload")
        seen.update(u.contributors)
    encryption = "public" if any(u.encryption == "public" for u in updates) else "symmetric"
    contributors = tuple(c for u in updates for c in u.contributors)
    if weights is None:
        return _sum(updates, context, rnd, contributors, encryption)
    return _weighted(updates, context, _weight_matrix(updates, weights), rnd, contributors, encryption)


def _check_headroom(context: PublicContext | SecretContext, bound: float, scale_bits: float) -> None:
    preset = context.preset
    need = math.log2(bound) + scale_bits + 1
    if need > preset.data_modulus_bits:
        raise HeadroomError(
            f"the aggregate could reach {bound:.4g} at scale 2^{scale_bits:g}, which needs {need:.1f} bits of a "
            f"{preset.data_modulus_bits}-bit modulus (preset {preset.name!r}); aggregate fewer clients at once "
            "(e.g. in groups, then add the group sums) or use a preset with more headroom"
        )


def _sum(updates: Sequence[EncryptedUpdate], context: PublicContext | SecretContext, rnd: int, contributors: tuple[str, ...],
         encryption: str) -> EncryptedUpdate:
    acc = RunningSum(context, expected_round=rnd)
    for u in updates:
        acc.add(u)
    return acc.result()


class RunningSum:
    """``Enc(sum_k x_k)`` folded one update at a time, so the server's memory holds one running sum
    and one update's ciphertexts, however many clients upload.

    :meth:`add` is all or nothing: an update that fails any check (context, round, layout, scale,
    duplicate client, headroom, a ciphertext SEAL rejects) raises and leaves the sum unchanged,
    so a server can drop that client and go on. Example::

        >>> import numpy as np, secagg
        >>> keys = secagg.generate_keys(preset="compact")
        >>> acc = secagg.RunningSum(keys.public, expected_round=0)
        >>> for k in range(3):
        ...     acc.add(secagg.encrypt_update({"w": np.full(2, 0.5, np.float32)}, keys.secret, round=0, client_id=f"c{k}"))
        >>> np.round(secagg.decrypt(acc.result(), keys.secret)["w"].astype(float), 4).tolist()
        [1.5, 1.5]
    """

    def __init__(self, context: PublicContext | SecretContext, *, expected_round: int | None = None) -> None:
        self.context = context
        self.expected_round = expected_round
        self._first: EncryptedUpdate | None = None
        self._acc: list[sealapi.Ciphertext] = []
        self._contributors: list[str] = []
        self._bound = 0.0
        self._noise_var = 0.0
        self._public = False

    def __len__(self) -> int:
        return len(self._contributors)

    def add(self, update: EncryptedUpdate) -> None:
        if not isinstance(update, EncryptedUpdate):
            raise TypeError(f"RunningSum.add expects an EncryptedUpdate, got {type(update).__name__}")
        check_context(update, self.context)
        first = self._first or update
        if self.expected_round is not None and update.round != self.expected_round:
            raise RoundMismatchError(f"{update._who()} is for round {update.round}, expected {self.expected_round}")
        if update.round != first.round:
            raise RoundMismatchError(f"{update._who()} is for round {update.round}, the sum is of round {first.round}")
        if update.layout.hash != first.layout.hash:
            raise LayoutMismatchError(
                f"{update._who()} has a different layout (names, shapes or dtypes) from {first._who()}; "
                "all clients must train the same model architecture"
            )
        if update.terms != first.terms:
            raise LayoutMismatchError(f"{update._who()} cuts its ciphertexts differently from {first._who()}")
        if update.scale_bits != first.scale_bits:
            raise KeyMismatchError("updates have different scales (some were weighted); sum like with like")
        dup = set(self._contributors).intersection(update.contributors)
        if dup:
            raise DuplicateClientError(f"client(s) {sorted(dup)} appear twice in this aggregation; drop the duplicate payload")
        _check_headroom(self.context, self._bound + update.bound, update.scale_bits)
        cached = update.ciphertexts is not None
        cts = update.load(self.context)  # raises before the sum changes
        for i, (acc, ct) in enumerate(zip(self._acc, cts)):
            # SEAL refuses to add across levels or unequal scales; find out before touching the sum
            if list(ct.parms_id()) != list(acc.parms_id()) or ct.scale != acc.scale:
                raise PayloadError(f"ciphertext {i} of {update._who()} has another level or scale than the "
                                   f"running sum ({ct.scale!r} vs {acc.scale!r}); it was not added")
        if self._first is None:
            self._acc = [_copy(self.context.evaluator, ct) for ct in cts]
            self._first = update
        else:
            ev = self.context.evaluator
            for acc, ct in zip(self._acc, cts):
                ev.add_inplace(acc, ct)
        if not cached and update.blobs is not None:
            update.ciphertexts = None  # the blobs stay; dropping the parsed copy is what bounds memory
        self._contributors.extend(update.contributors)
        self._bound += update.bound
        self._noise_var += update.noise_std**2
        self._public |= update.encryption == "public"

    def result(self) -> EncryptedUpdate:
        if self._first is None:
            raise EmptyAggregationError("nothing to aggregate: no update was added")
        f = self._first
        return EncryptedUpdate(self.context.preset, self.context.fingerprint, f.round, "sum", tuple(self._contributors),
                               f.layout, f.terms, f.scale_bits, self._bound, math.sqrt(self._noise_var),
                               "public" if self._public else "symmetric", ciphertexts=[_copy(self.context.evaluator, ct) for ct in self._acc])


def _copy(evaluator: sealapi.Evaluator, ct: sealapi.Ciphertext) -> sealapi.Ciphertext:
    out = sealapi.Ciphertext()
    evaluator.add_many([ct], out)  # sealapi has no copy constructor; a one-term sum is a copy
    return out


def _weight_matrix(updates: Sequence[EncryptedUpdate], weights: Weights) -> np.ndarray:
    """``W[k, l]``: weight of update ``k`` for layer ``l``, validated."""
    layout = updates[0].layout
    if isinstance(weights, (str, bytes)) or len(weights) != len(updates):
        raise ValueError(f"weights must have one entry per update ({len(updates)}), got {len(weights)}")
    rows = []
    for k, w in enumerate(weights):
        if isinstance(w, Mapping):
            if set(w) != set(layout.names):
                diff = sorted(set(w) ^ set(layout.names))[:5]
                raise LayoutMismatchError(f"weights[{k}] does not name exactly the update's arrays (differs in {diff})")
            rows.append([w[n] for n in layout.names])
        else:
            rows.append([w] * len(layout.layers))
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("weights must be real numbers") from None
    if not np.all(np.isfinite(matrix)):
        raise ValueError("weights must be finite (no NaN or infinity)")
    for u in updates:
        if u.kind != "update" and u.scale_bits != u.preset.scale_bits:
            raise HeadroomError("an already weighted aggregate cannot be weighted again; weight client updates")
    return matrix


def _weighted(updates: Sequence[EncryptedUpdate], context: PublicContext | SecretContext, matrix: np.ndarray,
              rnd: int, contributors: tuple[str, ...], encryption: str) -> EncryptedUpdate:
    preset = context.preset
    layout = updates[0].layout
    in_scale = updates[0].scale_bits
    if any(u.scale_bits != in_scale for u in updates):
        raise KeyMismatchError("updates have different scales; weight updates of one kind at a time")
    bounds = np.array([u.bound for u in updates])
    total = float(np.max(np.abs(matrix).T @ bounds))  # worst layer
    if total == 0.0:
        raise ValueError("all weights are zero; the weighted aggregate would carry nothing")
    spare = preset.data_modulus_bits - 1 - in_scale - math.log2(total)
    # integer weights (sample counts) are exact at p = 0; others get as many bits as fit
    exact = np.all(matrix == np.round(matrix))
    p = 0 if exact else min(MAX_WEIGHT_BITS, math.floor(spare))
    if not exact and p < MIN_WEIGHT_BITS:
        raise HeadroomError(
            f"only {p} bits are left to quantise the weights (preset {preset.name!r}, weight total {total:.4g}); "
            "normalise the weights to sum to about 1, aggregate fewer clients, or use a preset with more headroom"
        )
    q = np.round(matrix * 2.0**p) / 2.0**p
    scale_bits = in_scale + p
    _check_headroom(context, total, scale_bits)
    loaded = [u.load(context) for u in updates]
    ev, enc = context.evaluator, context.encoder
    out_terms, out_cts = [], []
    plain_cache: dict[float, sealapi.Plaintext] = {}

    def plain(value: float) -> sealapi.Plaintext:
        if value not in plain_cache:
            pt = sealapi.Plaintext()
            enc.encode(float(value), 2.0**p, pt)
            plain_cache[value] = pt
        return plain_cache[value]

    for i, term in enumerate(updates[0].terms):
        for u in updates[1:]:
            if u.terms[i] != term:
                raise LayoutMismatchError(f"{u._who()} cuts its ciphertexts differently from {updates[0]._who()}")
        for start, stop, column in _runs(layout, term, q):
            acc = None
            for k, cts in enumerate(loaded):
                if column[k] == 0.0:
                    continue
                prod = sealapi.Ciphertext()
                ev.multiply_plain(cts[i], plain(column[k]), prod)
                if acc is None:
                    acc = prod
                else:
                    ev.add_inplace(acc, prod)
            if acc is None:  # every weight of this run is zero: the encryption of zero is sum - sum
                acc = sealapi.Ciphertext()
                ev.sub(loaded[0][i], loaded[0][i], acc)
                ev.multiply_plain_inplace(acc, plain(1.0))
            out_terms.append(Term(term.position, start, stop))
            out_cts.append(acc)
    noise = math.sqrt(float(np.max((q**2).T @ np.array([u.noise_std**2 for u in updates]))))
    return EncryptedUpdate(preset, context.fingerprint, rnd, "weighted_sum", contributors, layout, tuple(out_terms),
                           float(scale_bits), total, noise, encryption, ciphertexts=out_cts)


def _runs(layout: Layout, term: Term, q: np.ndarray) -> Iterator[tuple[int, int, tuple[float, ...]]]:
    """Split ``term`` into runs of consecutive layers that share one weight column."""
    run: tuple[int, int, tuple[float, ...]] | None = None
    for layer, lo, hi in layout.layer_ranges(term.start, term.stop):
        col = tuple(float(v) for v in q[:, layer])
        if run is not None and run[2] == col:
            run = (run[0], hi, col)
            continue
        if run is not None:
            yield run
        run = (lo, hi, col)
    assert run is not None, "a term covers at least one value"
    yield run

"""Metrics for privacy attacks: reconstruction quality, record identification, label recovery,
membership inference (ROC, TPR at low FPR, bootstrap intervals) and empirical DP lower bounds.

Every function validates its inputs and raises :class:`MetricInputError` (a ``ValueError``) naming
the offending argument. Scores follow one convention: higher means "member".

>>> import numpy as np
>>> from attacks.metrics import label_accuracy, psnr
>>> round(psnr(np.zeros((4, 4)), np.full((4, 4), 0.1)), 6)
20.0
>>> round(label_accuracy([1, 1, 2], [2, 1, 3]), 4)
0.6667
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats
from skimage.metrics import structural_similarity
from sklearn import metrics as skm

from ._validation import count, real

__all__ = ["MetricInputError", "mse", "psnr", "ssim", "MatchResult", "match_reconstructions", "identifiability",
           "label_accuracy", "RocCurve", "roc_curve", "tpr_at_fpr", "Estimate", "membership_metrics",
           "epsilon_lower_bound_clopper_pearson", "epsilon_lower_bound_one_run", "PSNR_CAP"]

PSNR_CAP = 100.0  # dB reported for identical inputs (and any PSNR above it), instead of +inf


class MetricInputError(ValueError):
    """Inputs a metric cannot be computed on: shape mismatch, empty, NaN, bad labels, too few samples."""


# ---------------------------------------------------------------------------- validation helpers
def _array(x: object, name: str, *, min_ndim: int = 0) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name} must be numeric: {exc}") from None
    if a.size == 0:
        raise MetricInputError(f"{name} is empty")
    if a.ndim < min_ndim:
        raise MetricInputError(f"{name} must have at least {min_ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise MetricInputError(f"{name} holds NaN or infinity")
    return a


def _pair(reference: object, reconstruction: object) -> tuple[np.ndarray, np.ndarray]:
    ref, rec = _array(reference, "reference"), _array(reconstruction, "reconstruction")
    if ref.shape != rec.shape:
        raise MetricInputError(f"reconstruction has shape {rec.shape} but reference has shape {ref.shape}")
    return ref, rec


def _real(x: float, name: str, *, low: float = 0.0, high: float = math.inf, closed: bool = False) -> float:
    return real(x, name, low=low, high=high, closed=closed, error=MetricInputError)


def _count(x: int, name: str, *, low: int = 0, high: int | None = None) -> int:
    return count(x, name, low=low, high=high, error=MetricInputError)


def _scores_members(scores: object, is_member: object, *, both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    s = _array(scores, "scores")
    if s.ndim != 1:
        raise MetricInputError(f"scores must be 1-D, got shape {s.shape}")
    m = np.asarray(is_member)
    if m.shape != s.shape:
        raise MetricInputError(f"is_member has shape {m.shape} but scores has shape {s.shape}")
    if m.dtype != bool:
        if m.dtype.kind not in "iuf" or not np.all(np.isin(m, (0, 1))):
            raise MetricInputError("is_member must be boolean (or 0/1)")
        m = m.astype(bool)
    if both and (m.all() or not m.any()):
        raise MetricInputError("is_member must contain both members and non-members")
    return s, m


# ---------------------------------------------------------------------------- reconstruction quality
def mse(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean squared error over all elements. Scale-dependent: compare only inputs on the same range."""
    ref, rec = _pair(reference, reconstruction)
    return float(np.mean((ref - rec) ** 2))


def _psnr_from_mse(err: float | np.ndarray, data_range: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.minimum(10 * np.log10(data_range**2 / np.asarray(err, dtype=np.float64)), PSNR_CAP)


def psnr(reference: np.ndarray, reconstruction: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / mse)`` in dB (pixel-wise fidelity).

    Identical inputs would give ``+inf``; the value is capped at :data:`PSNR_CAP` (100 dB) so that
    averages stay finite. PSNR ignores structure: a shifted image can score low while recognisable.
    """
    return float(_psnr_from_mse(mse(reference, reconstruction), _real(data_range, "data_range")))


def _ssim_image(a: np.ndarray, name: str) -> tuple[np.ndarray, bool, int]:
    """``a`` as an SSIM image, whether it has a leading channel axis, and the window size."""
    if a.ndim == 1:
        side = math.isqrt(a.size)
        if side * side != a.size:
            raise MetricInputError(f"{name} is a flat vector of length {a.size}, not a perfect square")
        a = a.reshape(side, side)
    if a.ndim not in (2, 3):
        raise MetricInputError(f"{name} must be (H, W), (C, H, W) or a flat square vector, got shape {a.shape}")
    side = min(a.shape[-2:])
    if side < 3:
        raise MetricInputError(f"{name} has shape {a.shape}: SSIM needs images of at least 3x3")
    return a, a.ndim == 3, min(7, side if side % 2 else side - 1)


def ssim(reference: np.ndarray, reconstruction: np.ndarray, *, data_range: float = 1.0) -> float:
    """Structural similarity (skimage defaults: uniform 7x7 window) of one image pair, in ``[-1, 1]``.

    Accepts ``(H, W)``, ``(C, H, W)`` (per-channel SSIM averaged) or a flat vector of perfect-square
    length (reshaped to a square). Images smaller than 7x7 use the largest odd window that fits (at
    least 3), so values on tiny images are not comparable with 7x7 ones. Channels-last is not detected.
    """
    ref, rec = _pair(reference, reconstruction)
    dr = _real(data_range, "data_range")
    ref, channels, win = _ssim_image(ref, "reference")
    rec, _, _ = _ssim_image(rec, "reconstruction")
    return float(structural_similarity(ref, rec, data_range=dr, win_size=win, channel_axis=0 if channels else None))


@dataclass(frozen=True, eq=False)
class MatchResult:
    """Optimal one-to-one matching of reconstructions to originals and per-pair quality.

    ``pairs`` holds ``(original index, reconstruction index)``; ``psnr``/``mse``/``ssim`` follow the same
    order (``ssim`` is NaN where the items are not images, see :func:`ssim`). ``n_originals`` (default:
    ``len(pairs)``) lets :meth:`fraction_above` count unmatched originals as misses.
    """

    pairs: tuple[tuple[int, int], ...]
    psnr: np.ndarray
    mse: np.ndarray
    ssim: np.ndarray
    n_originals: int | None = None

    def __post_init__(self) -> None:
        n = len(self.pairs) if self.n_originals is None else self.n_originals
        if n < len(self.pairs):
            raise MetricInputError(f"n_originals={n} is smaller than the {len(self.pairs)} pairs")
        object.__setattr__(self, "n_originals", n)

    def fraction_above(self, db: float) -> float:
        """Share of ALL originals matched with PSNR >= ``db`` (unmatched originals are misses)."""
        if not isinstance(db, (int, float, np.number)) or math.isnan(db):
            raise MetricInputError(f"db must be a number, got {db!r}")
        return float(np.count_nonzero(np.asarray(self.psnr) >= db) / self.n_originals) if self.n_originals else 0.0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared L2 distances between rows of ``a`` (k, d) and ``b`` (n, d), by expansion (clipped at 0)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def match_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, *, data_range: float = 1.0) -> MatchResult:
    """Pair reconstructions with originals by the Hungarian assignment minimising total MSE.

    ``originals`` is ``(n, ...)`` and ``reconstructions`` ``(m, ...)`` with the same per-item shape;
    ``min(n, m)`` pairs result. The matching is the attacker-favourable best case (it uses the originals),
    which is the usual convention for reporting reconstruction attacks.
    """
    orig = _array(originals, "originals", min_ndim=2)
    rec = _array(reconstructions, "reconstructions", min_ndim=2)
    if orig.shape[1:] != rec.shape[1:]:
        raise MetricInputError(f"reconstructions items have shape {rec.shape[1:]} but originals items {orig.shape[1:]}")
    dr = _real(data_range, "data_range")
    a, b = orig.reshape(len(orig), -1), rec.reshape(len(rec), -1)
    rows, cols = optimize.linear_sum_assignment(_sq_dists(a, b))
    errs = np.mean((a[rows] - b[cols]) ** 2, axis=1)
    try:
        _ssim_image(orig[0], "originals item")
        sims = np.array([ssim(orig[i], rec[j], data_range=dr) for i, j in zip(rows, cols)])
    except MetricInputError:
        sims = np.full(len(rows), np.nan)
    pairs = tuple((int(i), int(j)) for i, j in zip(rows, cols))
    return MatchResult(pairs, _psnr_from_mse(errs, dr), errs, sims, n_originals=len(orig))


def identifiability(reconstructions: np.ndarray, true_indices: np.ndarray, dataset: np.ndarray) -> float:
    """Fraction of reconstructions whose nearest dataset row (L2, flattened) is their true record.

    Measures whether a reconstruction singles out the record it came from, not how good it looks. Ties
    (duplicate records) are broken uniformly at random and counted in expectation. Distances are
    computed by expansion and the near-minimal candidates re-checked exactly.
    """
    rec = _array(reconstructions, "reconstructions", min_ndim=1)
    data = _array(dataset, "dataset", min_ndim=1)
    rec, data = rec.reshape(len(rec), -1), data.reshape(len(data), -1)
    if rec.shape[1] != data.shape[1]:
        raise MetricInputError(f"reconstructions items have {rec.shape[1]} elements but dataset rows {data.shape[1]}")
    idx = np.asarray(true_indices)
    if idx.shape != (len(rec),) or idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= len(data):
        raise MetricInputError(f"true_indices must be {len(rec)} integers in [0, {len(data)}), "
                               f"got shape {idx.shape} dtype {idx.dtype}")
    data_sq = (data * data).sum(1)
    hits = 0.0
    for start in range(0, len(rec), 512):
        block = rec[start:start + 512]
        d = _sq_dists(block, data)
        tol = 1e-9 * ((block * block).sum(1) + data_sq.max()) + 1e-300
        for r, row, t, true in zip(block, d, tol, idx[start:start + 512]):
            cand = np.union1d(np.flatnonzero(row <= row.min() + 2 * t), [true])
            exact = ((data[cand] - r) ** 2).sum(1)
            best = cand[exact == exact.min()]
            hits += (true in best) / len(best)
    return hits / len(rec)


def label_accuracy(predicted_labels: Sequence | np.ndarray, true_labels: Sequence | np.ndarray) -> float:
    """Multiset agreement ``sum_c min(#pred_c, #true_c) / len(true_labels)`` (order-free).

    Label-recovery attacks return a multiset of labels for a batch, not per-example labels, so order
    is ignored; extra predicted labels cannot raise the score above 1.
    """
    pred, true = np.asarray(predicted_labels).ravel(), np.asarray(true_labels).ravel()
    if true.size == 0:
        raise MetricInputError("true_labels is empty")
    for arr, name in ((pred, "predicted_labels"), (true, "true_labels")):
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise MetricInputError(f"{name} holds NaN or infinity")
        if arr.dtype.kind not in "iufbUS":
            raise MetricInputError(f"{name} must hold integer or string labels, got dtype {arr.dtype}")
    try:
        _, inv = np.unique(np.concatenate([pred, true]), return_inverse=True)
    except TypeError as exc:
        raise MetricInputError(f"predicted_labels and true_labels are not comparable: {exc}") from None
    k = int(inv.max()) + 1
    return float(np.minimum(np.bincount(inv[:pred.size], minlength=k), np.bincount(inv[pred.size:], minlength=k)).sum()
                 / true.size)


# ---------------------------------------------------------------------------- membership inference
@dataclass(frozen=True, eq=False)
class RocCurve:
    """ROC of a membership score (``thresholds[0]`` is ``+inf``: nobody flagged) and its area."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


@dataclass(frozen=True)
class Estimate:
    """A value with an interval ``[low, high]``; each producer documents what the bounds mean."""

    value: float
    low: float
    high: float
    confidence: float


def roc_curve(scores: np.ndarray, is_member: np.ndarray) -> RocCurve:
    """ROC curve of ``scores`` (higher = member). AUC averages over all FPRs; it hides the low-FPR
    regime that matters for privacy, so report :func:`tpr_at_fpr` too."""
    s, m = _scores_members(scores, is_member)
    fpr, tpr, thr = skm.roc_curve(m, s)
    return RocCurve(fpr, tpr, thr, float(skm.auc(fpr, tpr)))


def _weighted_stats(pos: np.ndarray, neg: np.ndarray, wp: np.ndarray, wn: np.ndarray,
                    fprs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """AUC and TPR at each FPR for B resamples given as counts ``wp`` (B, n_pos) over sorted ``pos`` and
    ``wn`` (B, n_neg) over sorted ``neg``. Returns (auc (B,), tpr (len(fprs), B))."""
    n_pos, n_neg = pos.size, neg.size
    cn = np.concatenate([np.zeros((len(wn), 1)), np.cumsum(wn, axis=1)], axis=1)
    cp = np.concatenate([np.zeros((len(wp), 1)), np.cumsum(wp, axis=1)], axis=1)
    lo, hi = np.searchsorted(neg, pos, "left"), np.searchsorted(neg, pos, "right")
    below = cn[:, lo] + 0.5 * (cn[:, hi] - cn[:, lo])  # negatives below each positive (ties half)
    auc = (wp * below).sum(1) / (n_pos * n_neg)
    above = n_neg - cn[:, :n_neg]  # resampled negatives at sorted position >= j
    tprs = []
    for f in fprs:
        k = math.floor(f * n_neg + 1e-9)  # false positives allowed
        j = (above > k).sum(1) - 1  # position of the (k+1)-th largest resampled negative
        g = np.searchsorted(pos, neg[j], "right")  # positives <= that threshold
        tprs.append((n_pos - cp[np.arange(len(wp)), g]) / n_pos)
    return auc, np.array(tprs).reshape(len(fprs), len(wp))


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr: float) -> float:
    """Largest TPR of a deterministic threshold rule ``score > t`` whose FPR is at most ``fpr``.

    With ``fpr == 0`` the threshold lies strictly above every non-member score. With ``n`` non-members
    FPRs below ``1/n`` cannot be resolved and equal the ``fpr == 0`` value.
    """
    s, m = _scores_members(scores, is_member)
    f = _real(fpr, "fpr", high=1, closed=True)
    pos, neg = np.sort(s[m]), np.sort(s[~m])
    return float(_weighted_stats(pos, neg, np.ones((1, pos.size)), np.ones((1, neg.size)), [f])[1][0, 0])


def _bootstrap_counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def membership_metrics(scores: np.ndarray, is_member: np.ndarray, *, fprs: Sequence[float] = (0.01, 0.001, 0.0),
                       n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """AUC and TPR at each of ``fprs`` with percentile-bootstrap intervals.

    Members and non-members are resampled separately (stratified), ``n_bootstrap`` times with
    ``np.random.default_rng(seed)``. ``value`` is the full-sample estimate; ``[low, high]`` the central
    ``confidence`` percentile interval. The bootstrap is unreliable for TPR at FPRs near ``1/n_nonmembers``.
    Returns ``{"auc": Estimate, "tpr_at_fpr": {fpr: Estimate}, "n_members": int, "n_nonmembers": int}``.
    """
    s, m = _scores_members(scores, is_member)
    fl = [_real(f, "fprs", high=1, closed=True) for f in fprs]
    nb = _count(n_bootstrap, "n_bootstrap", low=1)
    conf = _real(confidence, "confidence", high=1)
    _count(seed, "seed")
    pos, neg = np.sort(s[m]), np.sort(s[~m])
    auc0, tpr0 = _weighted_stats(pos, neg, np.ones((1, pos.size)), np.ones((1, neg.size)), fl)
    rng = np.random.default_rng(seed)
    aucs, tprs = [], []
    for start in range(0, nb, 100):
        b = min(100, nb - start)
        a, t = _weighted_stats(pos, neg, _bootstrap_counts(rng, b, pos.size), _bootstrap_counts(rng, b, neg.size), fl)
        aucs.append(a)
        tprs.append(t)
    q = [(1 - conf) / 2, 1 - (1 - conf) / 2]

    def est(value: float, boot: np.ndarray) -> Estimate:
        low, high = np.quantile(boot, q)
        return Estimate(float(value), float(low), float(high), conf)

    boot_tpr = np.concatenate(tprs, axis=1)
    return {"auc": est(auc0[0], np.concatenate(aucs)),
            "tpr_at_fpr": {float(f): est(tpr0[i, 0], boot_tpr[i]) for i, f in enumerate(fl)},
            "n_members": int(m.sum()), "n_nonmembers": int((~m).sum())}


# ---------------------------------------------------------------------------- empirical DP lower bounds
def _eps_from_rates(tpr: float, fpr: float, delta: float) -> float:
    """max(log((tpr - delta) / fpr), log((1 - fpr - delta) / (1 - tpr)), 0), with x/0 = inf for x > 0."""
    best = 0.0
    for num, den in ((tpr - delta, fpr), (1 - fpr - delta, 1 - tpr)):
        if num > 0:
            best = max(best, math.inf if den <= 0 else math.log(num / den))
    return best


def epsilon_lower_bound_clopper_pearson(*, true_positives: int, false_positives: int, n_members: int,
                                        n_nonmembers: int, delta: float, confidence: float = 0.95) -> Estimate:
    """Epsilon lower bound from one attack threshold over many trials (Jagielski et al. 2020; Nasr et al. 2021).

    Any (eps, delta)-DP mechanism forces ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``.
    With one-sided Clopper-Pearson bounds ``TPR_low`` and ``FPR_high``, each at ``1 - (1 - confidence)/2`` so
    both hold jointly at ``confidence``, ``eps_lb = max(log((TPR_low - delta)/FPR_high),
    log((1 - FPR_high - delta)/(1 - TPR_low)), 0)``. Returns ``value = low = eps_lb`` (valid at ``confidence``
    if the trials are independent) and ``high`` = the same formula on the raw rates: a point estimate (may be
    ``inf`` when FPR is 0), not an upper confidence bound. Only as tight as the chosen threshold.
    """
    n1 = _count(n_members, "n_members", low=1)
    n0 = _count(n_nonmembers, "n_nonmembers", low=1)
    tp = _count(true_positives, "true_positives", high=n1)
    fp = _count(false_positives, "false_positives", high=n0)
    d = _real(delta, "delta", high=1, closed=True)
    conf = _real(confidence, "confidence", high=1)
    side = (1 - conf) / 2
    tpr_low = 0.0 if tp == 0 else float(stats.beta.ppf(side, tp, n1 - tp + 1))
    fpr_high = 1.0 if fp == n0 else float(stats.beta.ppf(1 - side, fp + 1, n0 - fp))
    lb = _eps_from_rates(tpr_low, fpr_high, d)
    return Estimate(lb, lb, max(lb, _eps_from_rates(tp / n1, fp / n0, d)), conf)


def _one_run_p_value(eps: float, *, m: int, r: int, v: int, delta: float) -> float:
    """Upper bound on P[>= v correct of r guesses] under (eps, delta)-DP (Steinke et al. 2023, Thm. 5.2 form)."""
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    # alpha = max_{i=1..v} P[v - i <= Binomial(r, q) < v] / i
    window = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(window / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * alpha, 1.0)


def epsilon_lower_bound_one_run(*, scores: np.ndarray, is_member: np.ndarray, delta: float, k_positive: int,
                                k_negative: int, confidence: float = 0.95) -> Estimate:
    """Epsilon lower bound from ONE training run (Steinke, Nasr & Jagielski, NeurIPS 2023).

    Assumes the ``m = len(scores)`` canaries were each included independently with probability 1/2
    (``is_member``). The auditor guesses IN for the ``k_positive`` highest scores and OUT for the
    ``k_negative`` lowest, abstaining on the rest; ``v`` of the ``r = k_positive + k_negative`` guesses are
    right. Ties in score are broken against the auditor (fewest correct guesses), which can only lower ``v``.

    Under (eps, delta)-DP, ``P[V >= v] <= f(v) + 2 m delta max_{i=1..v} (f(v - i) - f(v)) / i`` with
    ``f(u) = P[Binomial(r, e^eps / (1 + e^eps)) >= u]`` (the paper's approximate-DP theorem; for
    ``delta = 0`` it is the pure-DP tail ``f(v)``). This bound increases with eps; the returned
    ``value = low`` is the largest eps (bisection, rounded down) at which it is still below
    ``1 - confidence``, i.e. every smaller eps is rejected at level ``1 - confidence``: a lower bound on the
    true eps holding with probability ``confidence``; 0 if even eps = 0 is not rejected. ``high`` is the
    plug-in ``log(acc / (1 - acc))`` of randomized response at the observed accuracy ``acc = v / r``
    (ignores delta; ``inf`` if every guess is right): a point estimate, not a confidence bound.
    """
    s, mem = _scores_members(scores, is_member, both=False)
    m = s.size
    kp = _count(k_positive, "k_positive", high=m)
    kn = _count(k_negative, "k_negative", high=m - kp)
    if kp + kn == 0:
        raise MetricInputError("k_positive + k_negative must be at least 1 (no guesses made)")
    d = _real(delta, "delta", high=1, closed=True)
    conf = _real(confidence, "confidence", high=1)
    order = np.lexsort((~mem, s))  # ascending score; among ties members first = worst case for both ends
    v = int(np.count_nonzero(mem[order[m - kp:]]) + np.count_nonzero(~mem[order[:kn]]))
    r, beta = kp + kn, 1 - conf

    def p_value(eps: float) -> float:
        return _one_run_p_value(eps, m=m, r=r, v=v, delta=d)

    lb = 0.0
    if p_value(0.0) < beta:
        hi = 1.0
        while p_value(hi) < beta and hi < 1e3:
            lb, hi = hi, 2 * hi
        for _ in range(60):
            mid = (lb + hi) / 2
            lb, hi = (mid, hi) if p_value(mid) < beta else (lb, mid)
    acc = v / r
    plug_in = math.inf if acc == 1 else max(0.0, math.log(acc / (1 - acc))) if acc > 0 else 0.0
    return Estimate(lb, lb, plug_in, conf)

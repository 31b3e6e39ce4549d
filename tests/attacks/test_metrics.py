"""Tests for attacks.metrics: hand-computed values, known mechanisms and input validation."""

import math
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score

from attacks import metrics as M
from attacks.metrics import (
    Estimate,
    MatchResult,
    MetricInputError,
    epsilon_lower_bound_clopper_pearson,
    epsilon_lower_bound_one_run,
    identifiability,
    label_accuracy,
    match_reconstructions,
    membership_metrics,
    mse,
    psnr,
    roc_curve,
    ssim,
    tpr_at_fpr,
)


# ---------------------------------------------------------------------------- reconstruction quality
def test_mse_and_psnr_hand_computed():
    assert mse(np.array([0.0, 0.0]), np.array([1.0, 3.0])) == 5.0
    x = np.zeros((4, 4))
    assert psnr(x, x + 0.1) == pytest.approx(20.0)
    assert psnr(x, x + 1.0, data_range=255.0) == pytest.approx(20 * math.log10(255))
    assert psnr(x, x) == M.PSNR_CAP == 100.0


def test_ssim_identical_noisy_and_layouts():
    rng = np.random.default_rng(0)
    img = rng.random((3, 16, 16))
    assert ssim(img, img) == pytest.approx(1.0)
    slightly = ssim(img, np.clip(img + 0.05 * rng.normal(size=img.shape), 0, 1))
    very = ssim(img, np.clip(img + 0.3 * rng.normal(size=img.shape), 0, 1))
    assert 1.0 > slightly > very
    # (C, H, W) averages the per-channel SSIM; a flat square vector is reshaped
    noisy = img + 0.1 * rng.normal(size=img.shape)
    assert ssim(img, noisy) == pytest.approx(np.mean([ssim(img[c], noisy[c]) for c in range(3)]))
    assert ssim(img[0].ravel(), noisy[0].ravel()) == pytest.approx(ssim(img[0], noisy[0]))
    # tiny images use a smaller odd window
    assert ssim(img[0, :5, :4], img[0, :5, :4]) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(2, 2), (10,), (1, 2, 3, 4), (3, 2, 8)])
def test_ssim_rejects_uninterpretable_shapes(shape):
    a = np.zeros(shape)
    with pytest.raises(MetricInputError, match="reference"):
        ssim(a, a)


def test_match_recovers_shuffled_permutation():
    rng = np.random.default_rng(1)
    originals = rng.random((6, 1, 8, 8))
    perm = rng.permutation(6)
    match = match_reconstructions(originals, originals[perm])
    assert sorted(match.pairs) == list(match.pairs)
    assert all(perm[j] == i for i, j in match.pairs)
    assert np.all(match.psnr == 100.0) and np.all(match.mse == 0) and np.allclose(match.ssim, 1.0)
    assert match.fraction_above(40.0) == 1.0


def test_match_fraction_counts_unmatched_originals():
    rng = np.random.default_rng(2)
    originals = rng.random((4, 49))  # flat 7x7 images
    recs = originals[[2, 0]] + 0.01  # psnr 40 dB each
    match = match_reconstructions(originals, recs)
    assert set(match.pairs) == {(2, 0), (0, 1)} and match.n_originals == 4
    assert match.psnr == pytest.approx([40.0, 40.0])
    assert match.fraction_above(39.0) == 0.5 and match.fraction_above(41.0) == 0.0
    # more reconstructions than originals: min(n, m) pairs
    assert len(match_reconstructions(originals[:1], recs).pairs) == 1
    # items that are not images: SSIM is NaN, the rest still works
    tab = match_reconstructions(rng.random((3, 5)), rng.random((3, 5)))
    assert np.isnan(tab.ssim).all() and np.isfinite(tab.psnr).all()
    assert MatchResult(((0, 0),), np.array([30.0]), np.array([1e-3]), np.array([0.9])).fraction_above(20) == 1.0


def test_match_rejects_mismatched_items():
    with pytest.raises(MetricInputError, match="reconstructions"):
        match_reconstructions(np.zeros((2, 4, 4)), np.zeros((2, 5, 5)))


def test_identifiability():
    rng = np.random.default_rng(3)
    data = rng.random((300, 4))
    idx = rng.choice(300, 50, replace=False)
    assert identifiability(data[idx], idx, data) == 1.0
    noisy = identifiability(data[idx] + 0.3 * rng.normal(size=(50, 4)), idx, data)
    assert 0.0 <= noisy < 0.7
    dup = np.concatenate([data[:5], data[:5]])  # duplicated records: ties count half
    assert identifiability(dup[:5], np.arange(5), dup) == 0.5
    with pytest.raises(MetricInputError, match="true_indices"):
        identifiability(data[:2], np.array([0, 300]), data)
    with pytest.raises(MetricInputError, match="true_indices"):
        identifiability(data[:2], np.array([0.0, 1.0]), data)


def test_label_accuracy_is_multiset():
    assert label_accuracy([3, 1, 2], [1, 2, 3]) == 1.0
    assert label_accuracy([1, 1, 2], [2, 1, 3]) == pytest.approx(2 / 3)
    assert label_accuracy([1, 1, 1, 1], [1, 2]) == 0.5  # extra predictions do not help
    assert label_accuracy([], [1, 2]) == 0.0
    assert label_accuracy(["cat", "dog"], ["dog", "dog"]) == 0.5
    with pytest.raises(MetricInputError, match="true_labels"):
        label_accuracy([1], [])
    with pytest.raises(MetricInputError, match="predicted_labels"):
        label_accuracy([np.nan], [1.0])


# ---------------------------------------------------------------------------- membership inference
def test_roc_separated_and_random():
    curve = roc_curve(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    assert curve.auc == 1.0 and curve.tpr[-1] == 1.0 and curve.fpr[0] == 0.0
    rng = np.random.default_rng(4)
    member = rng.random(4000) < 0.5
    scores = rng.normal(size=4000)
    assert roc_curve(scores, member).auc == pytest.approx(0.5, abs=0.03)
    assert roc_curve(scores, member).auc == pytest.approx(roc_auc_score(member, scores))


def test_tpr_at_fpr_by_hand():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.5, 0.95, 1.0, 0.8])
    member = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    assert tpr_at_fpr(scores, member, 0.0) == 0.5  # threshold above 0.9
    assert tpr_at_fpr(scores, member, 0.2) == 0.5  # < 1/4 of 4 non-members: still none allowed
    assert tpr_at_fpr(scores, member, 0.25) == 1.0  # one false positive (0.9) allowed
    assert tpr_at_fpr(np.array([1.0, 1.0]), np.array([True, False]), 0.0) == 0.0  # tie: no strict threshold


def _brute_tpr(scores, member, fpr):
    best = 0.0
    for t in np.append(scores, np.inf):
        for flagged in (scores > t, scores >= t):
            if flagged[~member].mean() <= fpr + 1e-12:
                best = max(best, flagged[member].mean())
    return best


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=25),
       st.sampled_from([0.0, 0.05, 0.2, 0.5, 0.9]))
def test_tpr_at_fpr_matches_brute_force(items, fpr):
    scores = np.array([s for s, _ in items], dtype=float)
    member = np.array([m for _, m in items])
    if member.all() or not member.any():
        return
    assert tpr_at_fpr(scores, member, fpr) == pytest.approx(_brute_tpr(scores, member, fpr))


def test_membership_metrics_bootstrap():
    rng = np.random.default_rng(5)
    member = rng.random(600) < 0.5
    scores = rng.normal(size=600) + 1.0 * member
    out = membership_metrics(scores, member, fprs=(0.1, 0.0), n_bootstrap=300, seed=7)
    assert out["n_members"] == member.sum() and out["n_nonmembers"] == (~member).sum()
    assert out["auc"].value == pytest.approx(roc_auc_score(member, scores))
    assert out["tpr_at_fpr"][0.1].value == tpr_at_fpr(scores, member, 0.1)
    for e in [out["auc"], *out["tpr_at_fpr"].values()]:
        assert e.low <= e.value <= e.high and e.confidence == 0.95
    assert out["auc"].high - out["auc"].low < 0.15
    assert membership_metrics(scores, member, fprs=(0.1, 0.0), n_bootstrap=300, seed=7) == out
    assert membership_metrics(scores, member, fprs=(0.1,), n_bootstrap=300, seed=8)["auc"] != out["auc"]


def test_membership_metrics_is_fast():
    rng = np.random.default_rng(6)
    member = rng.random(5000) < 0.5
    scores = rng.normal(size=5000) + 0.5 * member
    start = time.perf_counter()
    membership_metrics(scores, member)
    assert time.perf_counter() - start < 5.0


# ---------------------------------------------------------------------------- epsilon lower bounds
def _cp(tp, fp, n, delta=0.0):
    return epsilon_lower_bound_clopper_pearson(true_positives=tp, false_positives=fp, n_members=n,
                                               n_nonmembers=n, delta=delta)


def test_clopper_pearson_bound():
    assert _cp(300, 300, 1000).value == 0.0
    assert _cp(0, 0, 50).value == 0.0  # FPR_high > 0: no infinite bound
    weak, strong = _cp(500, 100, 1000), _cp(900, 10, 1000)
    assert 0 < weak.value < strong.value
    assert _cp(90, 1, 100).value < _cp(900, 10, 1000).value < _cp(9000, 100, 10000).value  # sample size
    assert strong.low == strong.value <= strong.high == pytest.approx(max(math.log(0.9 / 0.01), math.log(0.99 / 0.1)))
    assert _cp(900, 10, 1000, delta=0.1).value < strong.value
    assert _cp(10, 0, 10).high == math.inf


def _one_run(scores, member, *, delta=0.0, kp=None, kn=None, confidence=0.95):
    kp = int(np.count_nonzero(scores > 0)) if kp is None else kp
    kn = len(scores) - kp if kn is None else kn
    return epsilon_lower_bound_one_run(scores=scores, is_member=member, delta=delta, k_positive=kp,
                                       k_negative=kn, confidence=confidence)


def _randomized_response(rng, m, eps):
    member = rng.random(m) < 0.5
    correct = rng.random(m) < math.exp(eps) / (1 + math.exp(eps))
    return np.where(correct == member, 1.0, -1.0), member


def test_one_run_random_and_perfect_guesses():
    rng = np.random.default_rng(7)
    member = rng.random(1000) < 0.5
    assert _one_run(rng.normal(size=1000), member, kp=300, kn=300).value < 0.3
    perfect = _one_run(np.where(member, 1.0, -1.0), member)
    # v = r = 1000: largest eps with q^1000 >= 0.05, q = e^eps / (1 + e^eps)
    q = 0.05 ** (1 / 1000)
    assert perfect.value == pytest.approx(math.log(q / (1 - q)), rel=1e-6) and perfect.high == math.inf
    with_delta = _one_run(np.where(member, 1.0, -1.0), member, delta=1e-4)
    assert 0 < with_delta.value < perfect.value


def test_one_run_respects_randomized_response_epsilon():
    rng = np.random.default_rng(8)
    bounds = [_one_run(*_randomized_response(rng, 1000, 1.0)).value for _ in range(20)]
    assert sum(b > 1.0 for b in bounds) <= 3  # a 95% lower bound: rare violations only
    assert np.mean(bounds) > 0.5  # and not vacuous
    assert max(bounds) < 1.3


def test_one_run_ties_are_broken_against_the_auditor():
    member = np.array([False] * 10 + [True] * 10)  # order that would favour index tie-breaking
    assert _one_run(np.zeros(20), member, kp=10, kn=10).high == 0.0


def test_one_run_p_value_matches_theorem():
    m, r, v, eps, delta = 200, 80, 60, 0.7, 1e-3
    q = math.exp(eps) / (1 + math.exp(eps))
    f = lambda u: stats.binom.sf(u - 1, r, q)  # noqa: E731  P[Binomial(r, q) >= u]
    expected = f(v) + 2 * m * delta * max((f(v - i) - f(v)) / i for i in range(1, v + 1))
    assert M._one_run_p_value(eps, m=m, r=r, v=v, delta=delta) == pytest.approx(expected)
    # the returned bound is the edge of the rejection region at level 1 - confidence
    scores, member = _randomized_response(np.random.default_rng(9), m, 2.0)
    bound = _one_run(scores, member, delta=delta).value
    v = int(np.count_nonzero((scores > 0) == member))
    assert M._one_run_p_value(bound, m=m, r=m, v=v, delta=delta) < 0.05
    assert M._one_run_p_value(bound + 1e-6, m=m, r=m, v=v, delta=delta) >= 0.05


# ---------------------------------------------------------------------------- validation
S, MEM = np.array([0.1, 0.9, 0.5]), np.array([False, True, True])
BAD_INPUTS = [
    (lambda: mse(np.zeros(3), np.zeros(4)), "reconstruction"),
    (lambda: mse(np.array([]), np.array([])), "reference"),
    (lambda: mse(np.array([np.nan]), np.array([0.0])), "reference"),
    (lambda: psnr(np.zeros(3), np.zeros(3), data_range=0.0), "data_range"),
    (lambda: match_reconstructions(np.zeros(3), np.zeros((3, 2))), "originals"),
    (lambda: identifiability(np.zeros((2, 3)), np.array([0, 1]), np.zeros((4, 2))), "dataset"),
    (lambda: roc_curve(S, np.array([True, True, True])), "is_member"),
    (lambda: roc_curve(S, np.array([0, 1, 2])), "is_member"),
    (lambda: roc_curve(S, MEM[:2]), "is_member"),
    (lambda: roc_curve(np.array([0.1, np.inf, 0.5]), MEM), "scores"),
    (lambda: tpr_at_fpr(S, MEM, 1.0), "fpr"),
    (lambda: membership_metrics(S, MEM, confidence=1.0), "confidence"),
    (lambda: membership_metrics(S, MEM, n_bootstrap=0), "n_bootstrap"),
    (lambda: membership_metrics(S, MEM, fprs=(-0.1,)), "fprs"),
    (lambda: epsilon_lower_bound_clopper_pearson(true_positives=11, false_positives=0, n_members=10,
                                                 n_nonmembers=10, delta=0.0), "true_positives"),
    (lambda: epsilon_lower_bound_clopper_pearson(true_positives=1, false_positives=0, n_members=10,
                                                 n_nonmembers=0, delta=0.0), "n_nonmembers"),
    (lambda: epsilon_lower_bound_clopper_pearson(true_positives=1, false_positives=0, n_members=10,
                                                 n_nonmembers=10, delta=1.0), "delta"),
    (lambda: epsilon_lower_bound_one_run(scores=S, is_member=MEM, delta=0.0, k_positive=2, k_negative=2), "k_negative"),
    (lambda: epsilon_lower_bound_one_run(scores=S, is_member=MEM, delta=0.0, k_positive=0, k_negative=0), "k_positive"),
    (lambda: epsilon_lower_bound_one_run(scores=S, is_member=MEM, delta=0.0, k_positive=1, k_negative=1,
                                         confidence=0.0), "confidence"),
]


@pytest.mark.parametrize("call, name", BAD_INPUTS)
def test_bad_inputs_raise_naming_the_argument(call, name):
    with pytest.raises(MetricInputError, match=name):
        call()
    assert issubclass(MetricInputError, ValueError) and Estimate(0.0, 0.0, 0.0, 0.9).confidence == 0.9

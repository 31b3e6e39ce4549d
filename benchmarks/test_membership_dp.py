"""Acceptance experiment: membership inference (LOSS, LiRA online/offline) against a digits MLP, with and without DP-SGD.

Run:  python -m pytest -q -s -p no:cacheprovider benchmarks/test_membership_dp.py

Setup. Pool = all 1797 digits examples (train + test of ``load_dataset("digits", seed=0)``). The target MLP
(64 hidden units) trains on a random half of the pool (the members); the other half are the non-members.
16 shadow models train on the LiRA paper's balanced scheme over the same pool (every example IN for
exactly 8 of them) with the target's recipe, DP included (LiRA assumes the attacker knows the recipe).
Every pool example is scored; AUC and TPR at 1 % and 0.1 % FPR get 95 % percentile-bootstrap intervals
(1000 stratified resamples). Settings: no DP, DP-SGD at target epsilon 8 and 1 (delta 1e-5, clip 1.0,
Poisson sampling, PRV accountant).

Budget. Recipe: SGD lr 0.3, batch 64, 100 epochs for every model (DP or not); one torch thread. The paper uses
64+ shadows and augmented queries; 16 shadows, fixed-variance LiRA and no augmentation keep the whole
run within a few minutes on 2 CPU cores (see the printed wall time), so low-FPR figures are noisier
and weaker than the paper's. With 899 non-members, FPR 0.1 % means zero false positives.

Sanity checks only (nothing that depends on luck): finite scores, epsilon within 10 % of its target,
the no-DP LiRA beating chance, and each DP setting's empirical AUC below the (epsilon, delta)-DP bound on AUC.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from attacks.membership import lira, loss_attack, train_model, train_shadow_models
from fedattn.data import load_dataset
from fedattn.models import MLP

EPOCHS = 100
RECIPE = dict(epochs=EPOCHS, lr=0.3, batch_size=64)
N_SHADOWS = 16
N_BOOT = 1000
DELTA = 1e-5
FPRS = (0.01, 0.001)
SETTINGS: list[tuple[str, float | None]] = [("no DP", None), ("DP eps~8", 8.0), ("DP eps~1", 1.0)]


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_max: float) -> float:
    """Largest TPR whose FPR is at most ``fpr_max`` (no interpolation)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= fpr_max].max())


def metrics(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.array([roc_auc_score(labels, scores), *(tpr_at_fpr(labels, scores, f) for f in FPRS)])


def bootstrap(labels: np.ndarray, scores: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates of (AUC, TPR@1%, TPR@0.1%) and their 95 % percentile-bootstrap intervals, shape (3, 2).

    Stratified: members and non-members are resampled separately, so every resample keeps both counts.
    """
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    boot = np.empty((n_boot, 1 + len(FPRS)))
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        boot[b] = metrics(labels[idx], scores[idx])
    return metrics(labels, scores), np.percentile(boot, [2.5, 97.5], axis=0).T


def dp_auc_bound(eps: float, delta: float) -> float:
    """Largest AUC any attack can reach against an (eps, delta)-DP mechanism (area under its trade-off curve)."""
    fpr = np.linspace(0.0, 1.0, 200_001)
    tpr = np.minimum.reduce([math.exp(eps) * fpr + delta, 1 - math.exp(-eps) * (1 - delta - fpr), np.ones_like(fpr)])
    return float(np.trapezoid(np.clip(tpr, 0, 1), fpr))


@pytest.fixture(scope="module")
def pool():
    torch.set_num_threads(1)
    ds = load_dataset("digits", seed=0)
    x, y = np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
    member = np.zeros(len(y), bool)
    member[np.random.default_rng(2024).permutation(len(y))[: len(y) // 2]] = True
    return ds, x, y, member


def test_membership_vs_dp(pool):
    ds, x, y, member = pool
    factory = lambda: MLP(ds.input_shape, ds.n_classes)  # noqa: E731  init drawn from train_model's seeded RNG
    t_start = time.perf_counter()
    rows, notes = [], []
    results = {}
    for setting, target_eps in SETTINGS:
        t0 = time.perf_counter()
        kw = dict(RECIPE, target_epsilon=target_eps, delta=DELTA)
        target, eps = train_model(factory, x[member], y[member], seed=7, **kw)
        shadows = train_shadow_models(factory, x, y, n_models=N_SHADOWS, seed=11, **kw)
        with torch.no_grad():
            acc = [float((target(torch.as_tensor(x[m])).argmax(1).numpy() == y[m]).mean()) for m in (member, ~member)]
        scores = {"LiRA online": lira(target, x, y, shadows, online=True),
                  "LiRA offline": lira(target, x, y, shadows, online=False),
                  "LOSS": loss_attack(target, x, y)}
        notes.append(f"{setting}: target train acc {acc[0]:.3f}, non-member acc {acc[1]:.3f}, "
                     f"{time.perf_counter() - t0:.0f} s for 1 target + {N_SHADOWS} shadows + scoring")
        for attack, s in scores.items():
            assert np.isfinite(s).all(), (setting, attack)
            point, ci = bootstrap(member, s)
            results[setting, attack] = (point, ci)
            eps_txt = "-" if eps is None else f"{eps:.2f}"
            rows.append([setting, eps_txt, attack] + [f"{p:.3f} [{lo:.3f}, {hi:.3f}]" for p, (lo, hi) in zip(point, ci)])
        if target_eps is not None:
            assert eps is not None and abs(eps - target_eps) / target_eps < 0.10
            bound = dp_auc_bound(eps, DELTA)
            notes.append(f"{setting}: any attack's AUC <= {bound:.3f} and TPR@1% <= {min(1.0, math.exp(eps) * 0.01 + DELTA):.3f} "
                         f"by the (eps={eps:.2f}, delta={DELTA:g}) guarantee")
            for attack in scores:
                assert results[setting, attack][1][0, 0] < bound, (setting, attack)  # lower CI end below the bound

    header = ["setting", "epsilon", "attack", "AUC [95% CI]", "TPR@1%FPR [95% CI]", "TPR@0.1%FPR [95% CI]"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\nMembership inference on digits MLP: pool {len(y)}, {member.sum()} members, {N_SHADOWS} shadows, "
          f"recipe {RECIPE}, {N_BOOT} bootstrap resamples")
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    for n in notes:
        print(n)
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")

    assert results["no DP", "LiRA online"][0][0] > 0.55

"""A DP audit in one training run (Steinke, Nasr and Jagielski, NeurIPS 2023).

``m`` canaries - held-out examples given a random wrong label, the examples a model must memorise
to fit - are each included in the training data independently with probability 1/2. After the
one run, the auditor scores every canary by the trained model's loss on it, guesses "included"
for the ``k`` lowest losses and "excluded" for the ``k`` highest, and counts correct guesses; any
(eps, delta)-DP training makes many correct guesses unlikely, so their number gives a lower bound
on eps that holds with the stated confidence (:func:`attacks.metrics.epsilon_lower_bound_one_run`).
A lower bound above the accountant's epsilon would mean the accounting or the implementation is
wrong; one far below it says this audit is not tight, not that the guarantee is loose.

It audits **example-level** DP (DP-SGD): the canaries are examples. A client-level audit needs
canary *clients*, hundreds of them for a useful bound in one run; the audit says so instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from .membership import loss_attack
from .metrics import epsilon_lower_bound_one_run

__all__ = ["Canaries", "make_canaries", "audit_one_run", "DPAuditResult"]


@dataclass(frozen=True, kw_only=True)
class Canaries:
    """``m`` canary examples and which were included (drawn at random, probability 1/2 each)."""

    x: np.ndarray
    y: np.ndarray
    included: np.ndarray


@dataclass(frozen=True, kw_only=True)
class DPAuditResult:
    canaries: int
    included: int
    guesses: int
    correct: int
    epsilon_lower_bound: float
    confidence: float
    delta: float


def make_canaries(x_pool: np.ndarray, y_pool: np.ndarray, *, m: int, n_classes: int, rng: np.random.Generator) -> Canaries:
    """``m`` examples of the pool with a random *wrong* label each, included with probability 1/2."""
    if not 2 <= m <= len(y_pool):
        raise ValueError(f"canaries: need 2 <= m <= {len(y_pool)}, got {m}")
    idx = rng.choice(len(y_pool), m, replace=False)
    wrong = (y_pool[idx] + rng.integers(1, n_classes, m)) % n_classes
    return Canaries(x=x_pool[idx], y=wrong.astype(np.int64), included=rng.random(m) < 0.5)


def audit_one_run(train: Callable[[np.ndarray, np.ndarray], nn.Module], canaries: Canaries, *, delta: float,
                  guesses: int, confidence: float = 0.95) -> DPAuditResult:
    """Train once with the included canaries (``train(x_extra, y_extra)`` returns the model the
    attacker sees) and bound epsilon from ``guesses`` guesses (half "in", half "out")."""
    model = train(canaries.x[canaries.included], canaries.y[canaries.included])
    scores = loss_attack(model, canaries.x, canaries.y)  # minus the loss: high = likely included
    k = guesses // 2
    est = epsilon_lower_bound_one_run(scores=scores, is_member=canaries.included, delta=delta, k_positive=k,
                                      k_negative=k, confidence=confidence)
    order = np.argsort(scores)
    correct = int(canaries.included[order[-k:]].sum() + (~canaries.included[order[:k]]).sum())
    return DPAuditResult(canaries=len(canaries.y), included=int(canaries.included.sum()), guesses=2 * k,
                         correct=correct, epsilon_lower_bound=est.value, confidence=confidence, delta=delta)

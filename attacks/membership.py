"""Membership inference: the LOSS attack and LiRA (Carlini et al. 2022) against centrally trained models.

A membership-inference attack gets a trained model and an example ``(x, y)`` and outputs a score: the
higher the score, the more the attacker believes that the example was in the training set. Scores are
only meaningful relative to each other (threshold them, or feed them to a ROC curve); none of them is a
calibrated probability.

* :func:`loss_attack` (Yeom et al. 2018): score = minus the cross-entropy of the true label. Cheap and
  needs no shadow models, but it treats every example alike, so it mostly flags "easy" examples
  (members or not) and is weak at low false-positive rates.
* :func:`lira` (Carlini et al. 2022, "Membership Inference Attacks From First Principles"): trains
  shadow models on random halves of a data pool that the attacker controls, learns per example how the
  logit-scaled confidence ``phi`` of the true label is distributed when the example is IN vs OUT of the
  training set, and scores the target's ``phi`` with a likelihood-ratio test. It assumes that the
  attacker knows the training recipe (architecture, optimiser, epochs, DP settings) and that the
  examples to score are the shadow pool. No data augmentation is queried (the paper averages over
  augmented queries); scores are per example, not per augmentation.

Example (tiny, runs in a few seconds):

>>> import numpy as np, torch
>>> from fedattn.data import load_dataset
>>> from fedattn.models import MLP
>>> from attacks.membership import train_model, train_shadow_models, lira, loss_attack
>>> ds = load_dataset("digits", seed=0)
>>> x, y = ds.x_train[:200], ds.y_train[:200]
>>> factory = lambda: MLP(ds.input_shape, ds.n_classes)  # draws its init from torch's (seeded) RNG
>>> member = np.zeros(200, bool); member[:100] = True
>>> target, eps = train_model(factory, x[member], y[member], epochs=20, seed=1)
>>> shadows = train_shadow_models(factory, x, y, n_models=4, epochs=20, seed=2)
>>> lira(target, x, y, shadows).shape, loss_attack(target, x, y).shape, eps
((200,), (200,), None)
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from fedattn.privacy import DPConfig
from fedattn.training import Recipe, train_epochs

__all__ = ["MembershipError", "ShadowModels", "balanced_in_mask", "train_model", "logit_confidence", "loss_attack",
           "train_shadow_models", "lira", "rmia", "label_matched"]

logger = logging.getLogger(__name__)

#: Variance floor, so that shadows that agree exactly (e.g. a constant phi) do not divide by zero.
_MIN_VARIANCE = 1e-12
#: Per-example variances need this many shadow models on each side used (the paper uses 64+).
MIN_PER_EXAMPLE = 4


class MembershipError(ValueError):
    """Inputs that a membership attack cannot use: mismatched shapes, labels, masks or too few shadow models."""


def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or x.ndim < 2 or len(x) != len(y):
        raise MembershipError(f"x must have shape (n, ...) and y shape (n,) with the same n; got x {x.shape}, y {y.shape}")
    if len(y) == 0:
        raise MembershipError("no examples given: x and y are empty")
    if not np.issubdtype(y.dtype, np.integer):
        raise MembershipError(f"labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise MembershipError(f"labels must be >= 0, got a label {int(y.min())}")
    return x, y


def train_model(
    model_factory: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, *, epochs: int = 30, lr: float = 0.1,
    batch_size: int = 64, seed: int = 0, dp: DPConfig | None = None, target_epsilon: float | None = None,
    delta: float = 1e-5,
) -> tuple[nn.Module, float | None]:
    """Train a fresh ``model_factory()`` on ``(x, y)`` with plain SGD and cross-entropy; used for targets and shadows.

    ``model_factory`` is called with torch's global RNG seeded from ``seed`` (and restored afterwards), so a
    factory that draws its initial weights from that RNG (``lambda: MLP(...)``) gets a different init for
    every seed; one that fixes its own seed (``make_model(..., seed=0)``) gives the same init every time.

    Without DP, mini-batches of ``batch_size`` are shuffled each epoch. With ``dp`` (``mode="sample"``) or
    ``target_epsilon``, training runs Opacus DP-SGD with Poisson sampling (expected batch ``batch_size``),
    per-sample clipping to ``dp.clip_norm`` (1.0 without ``dp``) and noise drawn from a seeded generator
    (reproducible, hence not for deployment). ``target_epsilon`` picks the noise multiplier that reaches it
    after ``epochs`` (Opacus' ``make_private_with_epsilon``), else ``dp.noise_multiplier`` is used.
    Epsilon is accounted at ``dp.delta`` when ``dp`` is given, else at ``delta``.

    Returns:
        The trained model (a plain module, in eval mode, Opacus hooks removed) and the achieved epsilon,
        or ``None`` when trained without DP.
    """
    x, y = _check_xy(x, y)
    if dp is not None and dp.mode != "sample":
        raise MembershipError(f"train_model supports sample-level DP only (DPConfig(mode='sample')), got mode {dp.mode!r}")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise MembershipError(f"epochs and batch_size must be >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    if target_epsilon is not None and not target_epsilon > 0:
        raise MembershipError(f"target_epsilon must be > 0, got {target_epsilon}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_factory()
    with torch.no_grad():
        classes = model(torch.as_tensor(x[:1], dtype=torch.float32)).shape[-1]
    if classes <= int(y.max()):
        raise MembershipError(f"the model outputs {classes} logits but a label is {int(y.max())}")
    engine = None
    make_private = None
    if dp is not None or target_epsilon is not None:
        from opacus import PrivacyEngine

        dp = dp or DPConfig(mode="sample", delta=delta)
        delta = dp.delta
        with warnings.catch_warnings():  # seeded noise is deliberate here (targets and shadows of an attack)
            warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
            engine = PrivacyEngine(accountant=dp.accountant)

        def make_private(module: nn.Module, optimizer: Any, loader: Any) -> tuple[nn.Module, Any, Any]:
            assert dp is not None and engine is not None
            common = dict(module=module, optimizer=optimizer, data_loader=loader, max_grad_norm=dp.clip_norm,
                          poisson_sampling=True, noise_generator=torch.Generator().manual_seed(seed + 1))
            if target_epsilon is not None:
                return engine.make_private_with_epsilon(**common, target_epsilon=float(target_epsilon),
                                                        target_delta=delta, epochs=epochs)
            return engine.make_private(**common, noise_multiplier=dp.noise_multiplier)

    trained = train_epochs(model, x, y, recipe=Recipe(epochs=epochs, lr=lr, batch_size=batch_size), seed=seed,
                           make_private=make_private)
    epsilon = None
    if engine is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            epsilon = float(engine.get_epsilon(delta))
        model = trained.to_standard_module()  # type: ignore[operator]
        for p in model.parameters():  # leftovers of per-sample gradients
            p.grad = None
            if hasattr(p, "grad_sample"):
                p.grad_sample = None
    model.eval()
    return model, epsilon


@torch.no_grad()
def _logits(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int) -> torch.Tensor:
    x, y = _check_xy(x, y)
    was_training = model.training
    model.eval()
    try:
        parts = [model(torch.as_tensor(x[i:i + batch_size], dtype=torch.float32)) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    logits = torch.cat(parts).double()
    if logits.ndim != 2 or logits.shape[0] != len(y):
        raise MembershipError(f"the model must output logits of shape (n, classes); got {tuple(logits.shape)} for n={len(y)}")
    if logits.shape[1] < 2 or logits.shape[1] <= int(y.max()):
        raise MembershipError(f"the model outputs {logits.shape[1]} logits but labels go up to {int(y.max())}; "
                              "the labels must lie in 0..classes-1 of this model (and classes >= 2)")
    return logits


def logit_confidence(model: nn.Module, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """LiRA's statistic ``phi = log(p_y) - log(1 - p_y)`` of the softmax probability of the true label, per example.

    Computed stably from the logits as ``logit_y - logsumexp(other logits)``, so confident predictions give
    large finite values (around +-700 in float64 before anything saturates) instead of ``log(0)``. This
    logit scaling makes the distribution of ``phi`` over shadow models close to Gaussian, which LiRA
    assumes. The model is run in eval mode without gradients; its mode is restored afterwards.
    """
    logits = _logits(model, x, y, batch_size)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    true = logits.gather(1, yt[:, None])[:, 0]
    others = logits.scatter(1, yt[:, None], float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).numpy()


def loss_attack(model: nn.Module, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """LOSS attack (Yeom et al. 2018): score = ``-cross_entropy(model(x), y)`` per example; higher = more likely member.

    A global threshold on the loss: it cannot tell a member from a non-member that is simply easy to
    classify, so its true-positive rate at low false-positive rates is poor. Use it as a baseline.
    The loss is computed as ``softplus(-phi)`` (with ``phi`` from :func:`logit_confidence`), which equals
    the cross-entropy but does not round to exactly 0 once the margin exceeds ~37 (float64), so confident
    examples keep distinct scores instead of tying; ties remain only past a margin of ~745.
    """
    phi = torch.as_tensor(logit_confidence(model, x, y, batch_size=batch_size))
    return (-nn.functional.softplus(-phi)).numpy()


def loss_change_attack(before: nn.Module, after: nn.Module, x: np.ndarray, y: np.ndarray, *,
                       batch_size: int = 1024) -> np.ndarray:
    """Membership from one observed step ``before -> after`` (e.g. a round's aggregate applied to
    the global model): score = how much the step lowered the example's loss; higher = more likely
    member. A server that sees only the released aggregate of a round can run it; the examples of
    the round's clients are the ones the step was fitted to.
    """
    return loss_attack(after, x, y, batch_size=batch_size) - loss_attack(before, x, y, batch_size=batch_size)


@dataclass
class ShadowModels:
    """Shadow models trained on random halves of a pool.

    Attributes:
        models: the trained shadow models.
        in_mask: ``(n_models, n_pool)`` bool; ``True`` where the pool example was in that shadow's training set.
    """

    models: list[nn.Module]
    in_mask: np.ndarray

    def __post_init__(self) -> None:
        self.in_mask = np.asarray(self.in_mask)
        if self.in_mask.dtype != bool or self.in_mask.ndim != 2 or self.in_mask.shape[0] != len(self.models):
            raise MembershipError(f"in_mask must be a bool array of shape (n_models={len(self.models)}, n_pool); "
                                  f"got {self.in_mask.dtype} {self.in_mask.shape}")


def balanced_in_mask(n_models: int, n_pool: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_models, n_pool)`` membership of pool examples in shadow training sets: every example is IN
    for exactly half of the models, chosen independently per example (the LiRA paper's scheme)."""
    return np.argsort(rng.random((n_models, n_pool)), axis=0) < n_models // 2


def train_shadow_models(
    model_factory: Callable[[], nn.Module], x_pool: np.ndarray, y_pool: np.ndarray, *, n_models: int, seed: int = 0,
    **train_kwargs: Any,
) -> ShadowModels:
    """Train ``n_models`` shadows, each on a random half of the pool, with the paper's balanced scheme.

    For every example, exactly ``n_models / 2`` models (chosen at random, independently per example) include
    it, so each example has the same number of IN and OUT models; each shadow then trains on about half of
    the pool. ``train_kwargs`` go to :func:`train_model` (use the target's recipe, DP included: LiRA
    assumes the attacker knows it). Each shadow gets its own seed derived from ``seed``.
    """
    x_pool, y_pool = _check_xy(x_pool, y_pool)
    if not isinstance(n_models, int | np.integer) or n_models < 2 or n_models % 2:
        raise MembershipError(f"n_models must be an even integer >= 2 (every example IN for exactly half), got {n_models!r}")
    if "seed" in train_kwargs:
        raise MembershipError("pass seed to train_shadow_models, not in train_kwargs; each shadow derives its own")
    rng = np.random.default_rng(seed)
    in_mask = balanced_in_mask(n_models, len(y_pool), rng)
    seeds = rng.integers(0, 2**31 - 2, size=n_models)
    models = []
    for i in range(n_models):
        model, eps = train_model(model_factory, x_pool[in_mask[i]], y_pool[in_mask[i]], seed=int(seeds[i]), **train_kwargs)
        logger.info("shadow model %d/%d trained on %d examples%s", i + 1, n_models, int(in_mask[i].sum()),
                    "" if eps is None else f" (epsilon {eps:.3g})")
        models.append(model)
    return ShadowModels(models=models, in_mask=in_mask)


def _side_stats(phi: np.ndarray, mask: np.ndarray, *, fixed_variance: bool, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and (pooled or per-example) std of ``phi`` over the shadow models where ``mask`` holds."""
    count = mask.sum(axis=0)
    needed = 1 if fixed_variance else MIN_PER_EXAMPLE
    if count.min() < needed:
        bad = int(np.argmin(count))
        raise MembershipError(
            f"LiRA with {'fixed' if fixed_variance else 'per-example'} variance needs at least {needed} {side} "
            f"shadow model(s) per example; example {bad} has {int(count[bad])}. Train more shadow models "
            f"(n_models >= {2 * needed} with the balanced scheme{'' if fixed_variance else '; 64+ is typical'})")
    mean = np.where(mask, phi, 0.0).sum(axis=0) / count
    sq = np.where(mask, (phi - mean) ** 2, 0.0)
    if fixed_variance:
        dof = int(count.sum() - len(count))
        if dof < 1:
            raise MembershipError(f"the pooled {side} variance needs some example with 2+ {side} shadow models; "
                                  "train more shadow models (n_models >= 4 with the balanced scheme)")
        var = np.full(len(count), sq.sum() / dof)
    else:
        var = sq.sum(axis=0) / (count - 1)
    return mean, np.sqrt(np.maximum(var, _MIN_VARIANCE))


def lira(target_model: nn.Module, x: np.ndarray, y: np.ndarray, shadows: ShadowModels, *, online: bool = True,
         fixed_variance: bool = True) -> np.ndarray:
    """LiRA membership scores of the pool examples ``(x, y)`` against ``target_model``; higher = more likely member.

    ``x, y`` must be exactly the shadow pool, in the same order (only the shape can be checked). For each
    example, ``phi`` (:func:`logit_confidence`) is collected from the shadows where it was IN and OUT and
    a Gaussian fitted to each side.

    * online: ``log N(phi_t; mu_in, s_in) - log N(phi_t; mu_out, s_out)``, a log likelihood ratio.
    * offline (``online=False``): ``-log P[phi_out >= phi_t]`` under the OUT Gaussian, one-sided: only OUT
      models are needed, so shadows can be trained before the target's data is known. Large when the
      target is more confident than OUT models typically are.

    ``fixed_variance=True`` uses one variance per side, pooled over all examples (within-example
    residuals); it is much more stable with few shadows (the paper's recommendation below ~64).
    ``fixed_variance=False`` fits a variance per example and needs at least 4 models on each side used.
    Limits: the Gaussian fit is a model; with a handful of shadows the means are noisy, which mostly costs
    true-positive rate at very low false-positive rates.
    """
    x, y = _check_xy(x, y)
    mask = shadows.in_mask
    if mask.shape != (len(shadows.models), len(y)):
        raise MembershipError(f"x, y have {len(y)} examples but the shadows' in_mask has shape {mask.shape} "
                              f"(n_models={len(shadows.models)}, n_pool); score exactly the shadow pool, in order")
    phi_t = logit_confidence(target_model, x, y)
    phi_s = np.stack([logit_confidence(m, x, y) for m in shadows.models])
    mu_out, s_out = _side_stats(phi_s, ~mask, fixed_variance=fixed_variance, side="OUT")
    if not online:
        return -norm.logsf(phi_t, loc=mu_out, scale=s_out)
    mu_in, s_in = _side_stats(phi_s, mask, fixed_variance=fixed_variance, side="IN")
    return norm.logpdf(phi_t, loc=mu_in, scale=s_in) - norm.logpdf(phi_t, loc=mu_out, scale=s_out)


def _true_class_probability(model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    logits = _logits(model, x, y, 1024)
    return torch.softmax(logits, -1)[torch.arange(len(y)), torch.as_tensor(y, dtype=torch.long)].numpy().astype(np.float64)


def rmia(target_model: nn.Module, x: np.ndarray, y: np.ndarray, references: ShadowModels, *, population: np.ndarray,
         gamma: float = 1.0) -> np.ndarray:
    """RMIA scores (Zarifzadeh et al., ICML 2024) of the pool ``(x, y)``; higher = more likely member.

    ``Pr(x | target) / Pr(x)`` is the likelihood ratio of an example, with ``Pr(x)`` the mean of
    the reference models' probabilities of its true label (every reference model, IN and OUT alike:
    the balanced scheme makes that the population average). The score is the share of population
    examples ``z`` (indices into the pool, ideally known non-members) that ``x`` dominates:
    ``ratio(x) / ratio(z) >= gamma``. It pairs every example with many ``z``, which makes it strong
    with few reference models.
    """
    x, y = _check_xy(x, y)
    if references.in_mask.shape[1] != len(y):
        raise MembershipError("score exactly the reference models' pool, in order")
    pop = np.asarray(population, dtype=int)
    if pop.ndim != 1 or pop.size == 0 or pop.min() < 0 or pop.max() >= len(y):
        raise MembershipError("population must index pool examples")
    if not gamma > 0:
        raise MembershipError(f"gamma must be positive, got {gamma}")
    p_target = _true_class_probability(target_model, x, y)
    p_ref = np.mean([_true_class_probability(m, x, y) for m in references.models], axis=0)
    ratio = p_target / np.maximum(p_ref, 1e-30)
    z = np.sort(ratio[pop])
    # share of z with ratio(x) / ratio(z) >= gamma, i.e. ratio(z) <= ratio(x) / gamma
    return np.searchsorted(z, ratio / gamma, side="right") / z.size


def label_matched(member_labels: np.ndarray, candidate_labels: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of members and of non-member candidates with the same number of each label, as many
    as both sides allow: membership tests on them cannot profit from a difference in label
    distribution (a Dirichlet shard against the whole test set measures label skew, not membership)."""
    members, candidates = np.asarray(member_labels), np.asarray(candidate_labels)
    keep_m, keep_c = [], []
    for label in np.unique(members):
        m_idx, c_idx = np.flatnonzero(members == label), np.flatnonzero(candidates == label)
        k = min(m_idx.size, c_idx.size)
        keep_m.append(rng.choice(m_idx, k, replace=False))
        keep_c.append(rng.choice(c_idx, k, replace=False))
    if not keep_m or sum(a.size for a in keep_m) == 0:
        raise MembershipError("no label has both members and non-member candidates")
    return np.sort(np.concatenate(keep_m)), np.sort(np.concatenate(keep_c))

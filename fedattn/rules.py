"""Aggregation rules in plaintext: the reference every encrypted protocol must match.

Global model ``w`` (per layer ``l``), client ``k``'s update ``d_k = w_k - w``. Every rule has the
ratio form::

    aggregate_l = sum_k omega_kl * d_kl / sum_k omega_kl        new w_l = w_l + step * aggregate_l

* :class:`FedAvg` - ``omega_kl = n_k`` (sample counts), ``step = 1``.
* :class:`FedAtt` (Ji et al., IJCNN 2019) - ``s_kl = ||d_kl||_2``, ``omega_kl = exp(s_kl / tau)``
  (a softmax over clients), server step ``epsilon`` (1.2 in the public code) and optional Gaussian
  noise of std ``noise_std`` on the new model. A larger distance gets a larger weight.
* :class:`CosineAttention` (Wan and Chen 2021) - ``s_kl = cos(d_kl, r_l)`` with ``r`` the previous
  global step; ``omega_kl = exp(s_kl / tau)``. With no previous step (first round) every score is 0:
  uniform weights.

Scores are clipped to a public range ``[lo, hi]`` before the exponential. Clients compute their own
weights in the encrypted protocol (:mod:`fedattn.protocols`), so the range bounds how much a
dishonest client can inflate its weight: at most ``exp((hi - lo) / tau)`` times another's. The
range also sets precision under encryption: weights are sent as ``exp((s - hi) / tau) <= 1``, and
the released ratio's error is the flooding noise divided by ``sum_k omega_k``; a range far above
the real scores makes every weight tiny and the ratio noisy. Defaults: ``[0, 4]`` with ``tau = 1``
for FedAtt (layer update norms of small models), ``[-1, 1]`` with ``tau = 0.5`` for cosine.

Example:
    >>> import numpy as np
    >>> rule = FedAtt(temperature=1.0, step=1.0)
    >>> w = {"l": np.zeros(2)}
    >>> ups = [{"l": np.array([0.0, 0.0])}, {"l": np.array([1.0, 0.0])}]
    >>> rule.weights(ups, num_samples=[1, 1], reference=None)[:, 0].round(3).tolist()  # softmax([0, 1])
    [0.269, 0.731]
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidConfigError, ScoreOutOfRangeError

__all__ = ["AggregationRule", "FedAvg", "FedAtt", "CosineAttention", "RULES", "make_rule", "layer_names"]
log = logging.getLogger(__name__)

Update = Mapping[str, np.ndarray]


def layer_names(update: Update) -> list[str]:
    return list(update)


@dataclass
class AggregationRule(ABC):
    """A rule in ratio form: per-client, per-layer weights ``omega`` plus a server step."""

    step: float = 1.0
    noise_std: float = 0.0
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step) and self.step > 0):
            raise InvalidConfigError(f"step must be a positive number, got {self.step}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise InvalidConfigError(f"noise_std must be >= 0, got {self.noise_std}")

    @abstractmethod
    def log_weights(self, updates: Sequence[Update], *, num_samples: Sequence[int],
                    reference: Update | None) -> np.ndarray:
        """``log omega`` of shape (clients, layers), shifted so that the largest possible is 0."""

    def client_log_weights(self, update: Update, *, num_samples: int, reference: Update | None) -> np.ndarray:
        """What one client computes for itself in the client-scored protocol (shape: layers)."""
        return self.log_weights([update], num_samples=[num_samples], reference=reference)[0]

    def weights(self, updates: Sequence[Update], *, num_samples: Sequence[int], reference: Update | None) -> np.ndarray:
        """Normalised weights ``alpha`` (clients x layers): each column sums to 1."""
        lw = self.log_weights(updates, num_samples=num_samples, reference=reference)
        lw = lw - lw.max(axis=0, keepdims=True)
        w = np.exp(lw)
        return w / w.sum(axis=0, keepdims=True)

    def combine(self, updates: Sequence[Update], *, num_samples: Sequence[int], reference: Update | None) -> dict[str, np.ndarray]:
        """The aggregate ``sum_k alpha_kl d_kl`` (before the server step)."""
        alpha = self.weights(updates, num_samples=num_samples, reference=reference)
        names = layer_names(updates[0])
        return {n: sum(alpha[k, i] * np.asarray(u[n], np.float64) for k, u in enumerate(updates))
                for i, n in enumerate(names)}

    def apply(self, global_weights: Update, aggregate: Update, *, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """Server step: ``w + step * aggregate`` (+ Gaussian noise), keeping dtypes."""
        out = {}
        for n, w in global_weights.items():
            new = np.asarray(w, np.float64) + self.step * np.asarray(aggregate[n], np.float64)
            if self.noise_std > 0:
                if rng is None:
                    raise InvalidConfigError("noise_std > 0 needs an rng (seeded, for reproducibility)")
                new = new + rng.normal(0.0, self.noise_std, size=new.shape)
            out[n] = new.astype(np.asarray(w).dtype)
        return out


@dataclass
class FedAvg(AggregationRule):
    """Sample-count weights: ``omega_k = n_k``.

    ``max_samples`` is a public bound on any client's ``n_k``; encrypted protocols send
    ``n_k / max_samples`` (at most 1) so the weighted values stay in the preset's range.
    ``equal_weights=True`` gives every client weight 1 (the plain mean; client-level DP needs it).
    """

    max_samples: int | None = None
    equal_weights: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = "fedavg"

    def log_weights(self, updates, *, num_samples, reference):
        n = np.asarray(num_samples, np.float64)
        if n.shape != (len(updates),) or np.any(n <= 0):
            raise InvalidConfigError("FedAvg needs a positive sample count per update")
        if self.equal_weights:
            n = np.ones_like(n)
        return np.repeat(np.log(n)[:, None], len(layer_names(updates[0])), axis=1)


@dataclass
class _Attention(AggregationRule):
    temperature: float = 1.0
    score_range: tuple[float, float] = (0.0, 4.0)
    on_out_of_range: str = "clip"

    def __post_init__(self) -> None:
        super().__post_init__()
        lo, hi = self.score_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidConfigError(f"score_range must be two finite numbers lo < hi, got {self.score_range}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InvalidConfigError(f"temperature must be positive, got {self.temperature}")
        if (hi - lo) / self.temperature > 60:
            raise InvalidConfigError(
                f"(hi - lo) / temperature = {(hi - lo) / self.temperature:.1f} lets one client outweigh another "
                "by more than e^60; narrow score_range or raise the temperature"
            )
        if self.on_out_of_range not in ("clip", "raise"):
            raise InvalidConfigError(f"on_out_of_range must be 'clip' or 'raise', got {self.on_out_of_range!r}")

    @abstractmethod
    def scores(self, updates: Sequence[Update], reference: Update | None) -> np.ndarray:
        """Raw scores (clients x layers)."""

    def clip(self, scores: np.ndarray) -> np.ndarray:
        lo, hi = self.score_range
        outside = (scores < lo) | (scores > hi)
        if np.any(outside):
            if self.on_out_of_range == "raise":
                raise ScoreOutOfRangeError(
                    f"{int(outside.sum())} attention score(s) lie outside the public range [{lo}, {hi}] "
                    f"(extremes {scores.min():.4g}, {scores.max():.4g}); widen score_range or lower the local lr"
                )
            log.info("clipped %d attention score(s) to [%g, %g]", int(outside.sum()), lo, hi)
        return np.clip(scores, lo, hi)

    def log_weights(self, updates, *, num_samples, reference):
        s = self.clip(self.scores(updates, reference))
        return (s - self.score_range[1]) / self.temperature


@dataclass
class FedAtt(_Attention):
    """Layer-wise L2 distance attention (Ji et al. 2019); public code uses step 1.2, noise 0.001.

    ``score="l2"`` is the paper's ``||d_l||``; ``score="l2_squared"`` uses ``||d_l||^2``, which the
    server-scored protocol can evaluate on ciphertexts with a low-degree polynomial.
    """

    step: float = 1.2
    score: str = "l2"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.score not in ("l2", "l2_squared"):
            raise InvalidConfigError(f"FedAtt score must be 'l2' or 'l2_squared', got {self.score!r}")
        self.name = "fedatt"

    def scores(self, updates, reference):
        names = layer_names(updates[0])
        sq = np.array([[float(np.sum(np.square(np.asarray(u[n], np.float64)))) for n in names] for u in updates])
        return sq if self.score == "l2_squared" else np.sqrt(sq)


@dataclass
class CosineAttention(_Attention):
    """Cosine similarity to the previous global step (attack-adaptive aggregation)."""

    score_range: tuple[float, float] = (-1.0, 1.0)
    temperature: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = "cosine"

    def scores(self, updates, reference):
        names = layer_names(updates[0])
        if reference is None:
            return np.zeros((len(updates), len(names)))
        out = np.zeros((len(updates), len(names)))
        for i, n in enumerate(names):
            r = np.asarray(reference[n], np.float64).ravel()
            rn = np.linalg.norm(r)
            for k, u in enumerate(updates):
                d = np.asarray(u[n], np.float64).ravel()
                dn = np.linalg.norm(d)
                out[k, i] = float(d @ r / (dn * rn)) if dn > 0 and rn > 0 else 0.0
        return out


RULES = {"fedavg": FedAvg, "fedatt": FedAtt, "cosine": CosineAttention}


def make_rule(name: str, **options) -> AggregationRule:
    """Build a rule by name (``fedavg``, ``fedatt``, ``cosine``) with keyword options."""
    try:
        cls = RULES[name]
    except KeyError:
        raise InvalidConfigError(f"unknown aggregation {name!r}; choose one of: {', '.join(sorted(RULES))}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise InvalidConfigError(f"bad option for {name}: {exc}") from None

"""Sentence reconstruction from a language model's gradient (TAG / LAMP style), scored by ROUGE.

The observation is the mean cross-entropy gradient of a batch of next-word windows (a FedSGD
client's upload), or the released mean of several clients' gradients: the attack does not care
which. What the attacker knows: the model the gradient was computed at (the server sent it) and
the batch size. The attack (after Balunović et al., "LAMP", 2022, and Deng et al., "TAG", 2021):

1. **Labels** from the output bias gradient (``mean softmax - count / batch``; one example: its
   only negative entry), the mean softmax estimated on random token windows.
2. **Bag of words** from the input embedding's gradient: a lookup's gradient is zero outside the
   rows of the tokens used, so the rows that moved are the candidates (at most
   ``batch * context * 2`` of the largest rows, which also bounds the search under noise).
3. **Continuous search**: dummy token embeddings, Adam on the cosine distance between their
   gradient and the observed one (every parameter but the embedding, which a dummy input does not
   reach), plus a pull towards the embedding rows' mean norm.
4. **Discrete search**: each position projected on its nearest candidate row (cosine), then random
   changes - replace a token by a candidate, swap two positions, move one - kept when they lower
   the cosine distance of the *discrete* sequence's full gradient, embedding included.

Scoring: ROUGE-1 and ROUGE-2 F1 (clipped n-gram counts) of each original window - its context and
the token it predicts - against the reconstruction assigned to it (a one-to-one assignment that
maximises the total), and, as the floor to read them against, the same scores of random windows
of the public text (:func:`chance_rouge`: common words give ROUGE-1 above zero by themselves).

>>> rouge_n([1, 2, 3, 4], [1, 2, 3, 5], 1), rouge_n([1, 2, 3, 4], [1, 2, 3, 5], 2)
(0.75, 0.6666666666666666)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ._validation import count
from .inversion import labels_from_bias

__all__ = ["ReconstructionConfig", "reconstruct_windows", "rouge_n", "assign", "score_reconstruction", "chance_rouge"]
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReconstructionConfig:
    """The attack's budget: Adam steps of the continuous search, random changes tried per window
    in the discrete search, and restarts of the continuous search (the best one is kept)."""

    continuous_steps: int = 100
    discrete_steps: int = 300
    restarts: int = 1
    lr: float = 0.05
    norm_weight: float = 0.01
    embedding: str = "embedding.weight"


def rouge_n(candidate: Sequence[int], reference: Sequence[int], n: int) -> float:
    """ROUGE-N F1 of two token sequences: clipped n-gram overlap; 0 when either has no n-gram."""
    grams = [Counter(tuple(s[i:i + n]) for i in range(len(s) - n + 1)) for s in (list(candidate), list(reference))]
    total_c, total_r = sum(grams[0].values()), sum(grams[1].values())
    if total_c == 0 or total_r == 0:
        return 0.0
    hits = sum((grams[0] & grams[1]).values())
    return 0.0 if hits == 0 else 2 * hits / (total_c + total_r)


def _params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _flat(observed: Mapping[str, np.ndarray], names: list[str]) -> torch.Tensor:
    return torch.cat([torch.as_tensor(np.asarray(observed[n]), dtype=torch.float32).reshape(-1) for n in names])


def _labels(model: nn.Module, observed: Mapping[str, np.ndarray], batch: int, context: int, embedding: str,
            rng: np.random.Generator) -> np.ndarray:
    """The batch's next tokens from the output bias gradient (see the module docstring)."""
    vocab = len(observed[embedding])
    bias_name = next((n for n, p in reversed(_params(model)) if n.endswith("bias") and p.shape == (vocab,)), None)
    if bias_name is None:
        raise ValueError("sentence reconstruction reads the next words from the output layer's bias gradient; the "
                         "model has no bias the size of its vocabulary")
    g = np.asarray(observed[bias_name], np.float64)
    if batch == 1:
        return np.array([int(np.argmin(g))])
    with torch.no_grad():
        probe = torch.as_tensor(rng.integers(0, vocab, (256, context)), dtype=torch.float32)
        p_mean = torch.softmax(model(probe), -1).mean(0).numpy().astype(np.float64)
    return labels_from_bias(g, p_mean, batch)


def _candidates(observed: Mapping[str, np.ndarray], embedding: str, limit: int) -> np.ndarray:
    """Token ids whose embedding gradient row moved, the ``limit`` largest at most."""
    norms = np.linalg.norm(np.asarray(observed[embedding], np.float64), axis=1)
    moved = np.flatnonzero(norms > 1e-3 * norms.max()) if norms.max() > 0 else np.arange(len(norms))
    return moved[np.argsort(-norms[moved])][:limit]


class _Distance:
    """1 - cosine between a candidate batch's gradient and the observed one."""

    def __init__(self, model: nn.Module, observed: Mapping[str, np.ndarray], labels: np.ndarray, embedding: str):
        self.model, self.labels = model, torch.as_tensor(labels, dtype=torch.long)
        named = _params(model)
        self.all_params = [p for _, p in named]
        self.all_target = _flat(observed, [n for n, _ in named])
        rest = [(n, p) for n, p in named if n != embedding]
        self.rest_params = [p for _, p in rest]
        self.rest_target = _flat(observed, [n for n, _ in rest])

    @staticmethod
    def _cos(grads: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        flat = torch.cat([g.reshape(-1) for g in grads])
        return 1 - torch.nn.functional.cosine_similarity(flat, target, dim=0, eps=1e-12)

    def continuous(self, embedded: torch.Tensor) -> torch.Tensor:
        forward = self.model.forward_embedded
        assert callable(forward)  # reconstruct_windows checked it
        loss = nn.functional.cross_entropy(forward(embedded), self.labels)
        return self._cos(torch.autograd.grad(loss, self.rest_params, create_graph=True), self.rest_target)

    def discrete(self, ids: np.ndarray) -> float:
        loss = nn.functional.cross_entropy(self.model(torch.as_tensor(ids, dtype=torch.float32)), self.labels)
        return float(self._cos(torch.autograd.grad(loss, self.all_params), self.all_target))


def _continuous(dist: _Distance, rows: torch.Tensor, shape: tuple[int, int], cfg: ReconstructionConfig,
                gen: torch.Generator) -> tuple[float, torch.Tensor]:
    mean_norm = rows.norm(dim=1).mean()
    z = (torch.randn((*shape, rows.shape[1]), generator=gen) * rows.std()).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    for _ in range(cfg.continuous_steps):
        opt.zero_grad()
        loss = dist.continuous(z) + cfg.norm_weight * (z.norm(dim=-1) - mean_norm).pow(2).mean()
        loss.backward()
        opt.step()
    return float(dist.continuous(z).detach()), z.detach()


def _discrete(dist: _Distance, ids: np.ndarray, candidates: np.ndarray, steps: int,
              rng: np.random.Generator) -> np.ndarray:
    best, best_d = ids.copy(), dist.discrete(ids)
    batch, context = ids.shape
    for _ in range(steps * batch):
        trial = best.copy()
        b, i, j = int(rng.integers(batch)), int(rng.integers(context)), int(rng.integers(context))
        move = rng.integers(3)
        if move == 0:
            trial[b, i] = rng.choice(candidates)
        elif move == 1:
            trial[b, [i, j]] = trial[b, [j, i]]
        else:
            trial[b] = np.insert(np.delete(trial[b], i), j, trial[b, i])
        d = dist.discrete(trial)
        if d < best_d:
            best, best_d = trial, d
    return best


def reconstruct_windows(model: nn.Module, observed: Mapping[str, np.ndarray], *, batch_size: int, context: int,
                        config: ReconstructionConfig | None = None, seed: int = 0) -> np.ndarray:
    """Reconstruct the ``batch_size`` windows behind ``observed``: an array ``(batch, context + 1)``
    of token ids, each window's context followed by the token it predicts (see the module docstring).

    ``model`` must be the model the gradient was computed at and have an ``embedding`` lookup and a
    ``forward_embedded`` method (``fedattn``'s ``lstm`` and ``transformer`` do).
    """
    cfg = config or ReconstructionConfig()
    batch, context = count(batch_size, "batch_size", low=1), count(context, "context", low=1)
    if not hasattr(model, "forward_embedded") or cfg.embedding not in observed:
        raise ValueError(f"sentence reconstruction needs a language model with forward_embedded and an observation "
                         f"holding {cfg.embedding!r}")
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    model.eval()
    labels = _labels(model, observed, batch, context, cfg.embedding, rng)
    candidates = _candidates(observed, cfg.embedding, 2 * batch * context)
    dist = _Distance(model, observed, labels, cfg.embedding)
    rows = model.get_parameter(cfg.embedding).detach()
    z = min((_continuous(dist, rows, (batch, context), cfg, gen) for _ in range(cfg.restarts)),
            key=lambda r: r[0])[1]
    cand_rows = nn.functional.normalize(rows[torch.as_tensor(candidates)], dim=1)
    nearest = (nn.functional.normalize(z, dim=-1) @ cand_rows.T).argmax(-1).numpy()
    ids = _discrete(dist, candidates[nearest], candidates, cfg.discrete_steps, rng)
    return np.concatenate([ids, labels[:, None]], axis=1)


def assign(reconstructed: np.ndarray, originals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one assignment of reconstructions to originals that maximises the summed ROUGE-1 +
    ROUGE-2: (index of the reconstruction assigned to each original, -1 for none; their ROUGE-1 and
    ROUGE-2, an ``(originals, 2)`` array, 0 where none)."""
    rec, orig = np.asarray(reconstructed, np.int64), np.asarray(originals, np.int64)
    scores = np.array([[[rouge_n(r, o, n) for n in (1, 2)] for r in rec] for o in orig])
    rows, cols = linear_sum_assignment(-scores.sum(-1))
    index, matched = np.full(len(orig), -1), np.zeros((len(orig), 2))
    index[rows], matched[rows] = cols, scores[rows, cols]
    return index, matched


def score_reconstruction(reconstructed: np.ndarray, originals: np.ndarray) -> dict[str, float]:
    """Mean ROUGE-1 and ROUGE-2 F1 of each original window against the reconstruction assigned to it
    one-to-one (:func:`assign`)."""
    matched = assign(reconstructed, originals)[1]
    return {"rouge1": float(matched[:, 0].mean()), "rouge2": float(matched[:, 1].mean())}


def chance_rouge(originals: np.ndarray, reference_text: np.ndarray, *, seed: int = 0, draws: int = 20) -> dict[str, float]:
    """The floor: :func:`score_reconstruction` of ``draws`` sets of random windows cut from
    ``reference_text`` (a token stream, e.g. the public split) against ``originals``, averaged."""
    orig = np.asarray(originals, np.int64)
    stream = np.asarray(reference_text, np.int64)
    width = orig.shape[1]
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(count(draws, "draws", low=1)):
        starts = rng.integers(0, len(stream) - width, len(orig))
        runs.append(score_reconstruction(np.stack([stream[s:s + width] for s in starts]), orig))
    return {k: float(np.mean([r[k] for r in runs])) for k in ("rouge1", "rouge2")}

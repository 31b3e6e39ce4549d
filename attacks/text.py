"""Text leakage: which tokens a client used, read from the embedding rows an update moved.

A language model's input embedding is a lookup: one local SGD epoch changes exactly the rows of the
tokens in the client's text (plain SGD, no weight decay, no momentum carried across rounds). So
the server reads a client's **bag of words** straight off its update under plain FedAvg; under
encrypted aggregation it sees only the released sum of the round's clients, whose moved rows are
the union of their vocabularies (every client's words are there, hidden among the others'); DP-SGD
noise moves every row.

Memorisation: a secret sentence (a canary) in one client's text, and its **exposure** under a
model the server can form (Carlini et al., "The Secret Sharer", 2019): how much better than chance
the model ranks the true secret among every candidate of the same shape.

>>> import numpy as np
>>> update = {"embedding.weight": np.zeros((5, 2)), "head.bias": np.ones(5)}
>>> update["embedding.weight"][[1, 3]] = 0.01
>>> tokens_from_update(update).tolist()
[1, 3]
>>> bag_of_words_scores(np.array([1, 3]), np.array([1, 2, 3]))
(1.0, 0.6666666666666666)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._validation import count, real

__all__ = ["EMBEDDING", "DEFAULT_THRESHOLD", "tokens_from_update", "bag_of_words_scores", "used_tokens",
           "canary_windows", "exposure"]

EMBEDDING = "embedding.weight"
#: A row counts as moved above this max-abs change: 10x the strict preset's release error (~8e-7),
#: far below one SGD step on a used token's row (measured >= 1e-3 on pydoc-topics, see docs/text.md).
DEFAULT_THRESHOLD = 1e-5


def tokens_from_update(update: Mapping[str, np.ndarray], *, embedding: str = EMBEDDING,
                       threshold: float = DEFAULT_THRESHOLD, ignore: tuple[int, ...] = ()) -> np.ndarray:
    """Token ids whose embedding row moved by more than ``threshold`` (max-abs), sorted.

    Args:
        update: what the server sees: one client's update, or the released aggregate.
        embedding: the name of the input embedding's weight in ``update``.
        threshold: the smallest change that counts as a move.
        ignore: ids left out of the answer (e.g. ``<unk>``, 0).
    """
    if embedding not in update:
        raise KeyError(f"update has no {embedding!r}; pass embedding= the name of the input embedding's weight "
                       f"(it has {', '.join(sorted(update)[:5])}...)")
    rows = np.asarray(update[embedding], dtype=np.float64)
    if rows.ndim != 2 or not np.all(np.isfinite(rows)):
        raise ValueError(f"update[{embedding!r}] must be a finite (vocabulary, dimension) matrix, got shape "
                         f"{rows.shape}")
    real(threshold, "threshold")
    moved = np.flatnonzero(np.abs(rows).max(axis=1) > threshold)
    return moved[~np.isin(moved, ignore)]


def used_tokens(x: np.ndarray, *, ignore: tuple[int, ...] = ()) -> np.ndarray:
    """The token ids in a client's input windows (its bag of words, the ground truth), sorted."""
    ids = np.unique(np.asarray(x).astype(np.int64))
    return ids[~np.isin(ids, ignore)]


def bag_of_words_scores(recovered: np.ndarray, used: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of ``recovered`` token ids against the ids a client ``used``."""
    recovered, used = np.unique(recovered), np.unique(used)
    if len(used) == 0:
        raise ValueError("used is empty: a client with no tokens has no bag of words to recover")
    hits = len(np.intersect1d(recovered, used))
    return (hits / len(recovered) if len(recovered) else 0.0), hits / len(used)


# ---- memorisation: canary exposure (Carlini et al. 2019) --------------------------------------------
def canary_windows(prefix: np.ndarray, secret: np.ndarray, *, context: int, repeats: int) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """The next-word examples of the sentence ``prefix + secret``, ``repeats`` times: one window per
    secret token (its ``context`` preceding tokens, ``<unk>``-padded on the left) and that token."""
    if len(prefix) + len(secret) == 0 or len(secret) == 0:
        raise ValueError("a canary needs a non-empty secret")
    sentence = np.concatenate([np.zeros(context, np.int64), np.asarray(prefix, np.int64), np.asarray(secret, np.int64)])
    start = context + len(prefix)
    x = np.stack([sentence[i - context:i] for i in range(start, len(sentence))]).astype(np.float32)
    y = sentence[start:].astype(np.int64)
    return np.tile(x, (count(repeats, "repeats", low=1), 1)), np.tile(y, repeats)


def exposure(model: Any, prefix: np.ndarray, secret: np.ndarray, alphabet: np.ndarray, *, context: int) -> float:
    """The canary's exposure under ``model``: ``log2(|candidates|) - log2(rank)``, where the candidates
    are every secret of the same length over ``alphabet`` (the true one among them) ranked by the
    model's log-likelihood of the secret after the prefix; 0 means no better than chance order."""
    import itertools

    import torch

    alphabet = np.unique(np.asarray(alphabet, np.int64))
    if not np.isin(secret, alphabet).all():
        raise ValueError("the secret's tokens must all be in the alphabet")
    candidates = np.array(list(itertools.product(alphabet, repeat=len(secret))), np.int64)
    head = np.concatenate([np.zeros(context, np.int64), np.asarray(prefix, np.int64)])
    rows = np.concatenate([np.tile(head, (len(candidates), 1)), candidates], axis=1)
    start = len(head)
    score = np.zeros(len(candidates))
    model.eval()
    with torch.no_grad():
        for i in range(start, rows.shape[1]):
            logits = model(torch.as_tensor(rows[:, i - context:i], dtype=torch.float32))
            score += torch.log_softmax(logits, dim=1)[torch.arange(len(rows)), torch.as_tensor(rows[:, i])].numpy()
    true = int(np.flatnonzero((candidates == np.asarray(secret)).all(axis=1))[0])
    rank = 1 + int(np.sum(score > score[true]))
    return float(np.log2(len(candidates)) - np.log2(rank))

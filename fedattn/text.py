"""Text that installs with secfl: next-word prediction on a pinned snapshot of Python's help topics.

The corpus is the 79 help topics of CPython 3.11.7 (``pydoc_data.topics``, from the Python
documentation, PSF License: ``fedattn/corpora/PYDOC_TOPICS_LICENSE.txt``), vendored as
``fedattn/corpora/pydoc_topics.json.gz`` and checked against a stored SHA-256 when read, so results
do not change with the Python that runs them. About 0.46 M characters, 120 k tokens: small,
technical English mixed with code, and very uneven (five topics hold 43% of the text).

* **Public split**: every fifth topic in name order (16 topics). The vocabulary comes from it
  alone - its tokens, at most the ``VOCAB_SIZE - 1`` most frequent, the rest mapped to ``<unk>``
  (id 0; 6.7% of the private training labels) -
  because a vocabulary built from the clients' text would name their words.
* **Private split**: the other 63 topics, the clients' data. Each topic's token stream is cut at
  80%: the head is training text, the tail test text, so no test window overlaps a training one.
* **Examples**: a window of ``CONTEXT`` token ids (float32, as every secfl dataset's inputs) and
  the next token as label; ``n_classes`` is the vocabulary size, the loss is the cross-entropy of
  next-word prediction and ``exp(loss)`` its perplexity.
* **Natural partition**: ``Dataset.groups`` holds each training window's topic, and
  ``partition(..., scheme="natural", groups=...)`` deals whole topics to clients: non-IID by
  construction.

>>> from fedattn.data import load_dataset
>>> ds = load_dataset("pydoc-topics")
>>> ds.input_shape, ds.n_classes, int(ds.groups.max()) + 1   # the public topics hold 1,412 token types
((8,), 1413, 63)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CORPUS", "CORPUS_SHA256", "CONTEXT", "VOCAB_SIZE", "CorpusError", "load_topics", "tokenize",
           "public_private", "build_vocabulary", "vocabulary", "pydoc_topics_arrays", "public_windows"]

CORPUS = Path(__file__).parent / "corpora" / "pydoc_topics.json.gz"
#: SHA-256 of the uncompressed JSON: a corpus that changed is refused, not silently used.
CORPUS_SHA256 = "b1373f0e4805bae809c0d99214d9612431f5fa111c2e3ff0403a6749609f3b75"
CONTEXT = 8
VOCAB_SIZE = 2000
TEST_SHARE = 0.2
_TOKEN = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


class CorpusError(RuntimeError):
    """The vendored corpus is missing or differs from the pinned snapshot."""


@cache
def load_topics() -> dict[str, str]:
    """Topic name -> text of the pinned snapshot (checked against :data:`CORPUS_SHA256`)."""
    try:
        raw = gzip.decompress(CORPUS.read_bytes())
    except (OSError, EOFError) as exc:
        raise CorpusError(f"cannot read the text corpus {CORPUS}: {exc}; reinstall secfl") from None
    if hashlib.sha256(raw).hexdigest() != CORPUS_SHA256:
        raise CorpusError(f"{CORPUS} is not the pinned snapshot (its SHA-256 differs); reinstall secfl")
    topics = json.loads(raw)["topics"]
    return {str(k): str(v) for k, v in sorted(topics.items())}


def tokenize(text: str) -> list[str]:
    """Lower-cased words, numbers and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def public_private(topics: dict[str, str]) -> tuple[list[str], list[str]]:
    """Topic names of the public split (every fifth in name order) and of the private split."""
    names = sorted(topics)
    return names[::5], [n for i, n in enumerate(names) if i % 5]


def build_vocabulary(texts: list[str], size: int = VOCAB_SIZE) -> dict[str, int]:
    """Token -> id for the ``size - 1`` most frequent tokens of ``texts`` (ties by token); 0 is ``<unk>``."""
    counts = Counter(t for text in texts for t in tokenize(text))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size - 1]
    return {"<unk>": 0, **{tok: i + 1 for i, (tok, _) in enumerate(ranked)}}


@cache
def vocabulary() -> dict[str, int]:
    """The corpus's vocabulary: :func:`build_vocabulary` of the public topics (built once)."""
    topics = load_topics()
    return build_vocabulary([topics[n] for n in public_private(topics)[0]])


def _windows(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(ids) <= CONTEXT:
        return np.empty((0, CONTEXT), np.float32), np.empty(0, np.int64)
    view = np.lib.stride_tricks.sliding_window_view(ids, CONTEXT + 1)
    return view[:, :CONTEXT].astype(np.float32), view[:, CONTEXT].astype(np.int64)


def pydoc_topics_arrays() -> dict[str, Any]:
    """The ``pydoc-topics`` dataset's fields (see the module docstring); ``fedattn.data`` wraps them
    in a :class:`~fedattn.data.Dataset`. The split is fixed by topic and position: no seed applies."""
    topics = load_topics()
    public, private = public_private(topics)
    vocab = vocabulary()
    xs, ys, groups, xt, yt = [], [], [], [], []
    for g, topic in enumerate(private):
        ids = np.array([vocab.get(t, 0) for t in tokenize(topics[topic])], dtype=np.int64)
        cut = int(len(ids) * (1 - TEST_SHARE))
        x, y = _windows(ids[:cut])
        xs.append(x)
        ys.append(y)
        groups.append(np.full(len(y), g, np.int64))
        x, y = _windows(ids[cut:])
        xt.append(x)
        yt.append(y)
    return {"x_train": np.concatenate(xs), "y_train": np.concatenate(ys), "x_test": np.concatenate(xt),
            "y_test": np.concatenate(yt), "groups": np.concatenate(groups), "n_classes": len(vocab),
            "input_shape": (CONTEXT,),
            "description": f"CPython 3.11.7 help topics (PSF License): next-word prediction from {CONTEXT} tokens, "
                           f"vocabulary of {len(vocab)} from the {len(public)} public topics; {len(private)} private "
                           "topics, each cut 80/20 into train/test"}


def public_windows() -> tuple[np.ndarray, np.ndarray]:
    """Next-word examples of the public topics (for pretraining), with the same vocabulary."""
    topics = load_topics()
    public, _ = public_private(topics)
    vocab = vocabulary()
    pairs = [_windows(np.array([vocab.get(t, 0) for t in tokenize(topics[n])], dtype=np.int64)) for n in public]
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])

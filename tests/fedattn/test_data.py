"""Tests of fedattn.data: offline datasets and client partitions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedattn.data import DATASETS, SCHEMES, Dataset, load_dataset, partition, register_dataset
from fedattn.errors import PartitionError, UnknownDatasetError

EXPECTED = {  # name: (input_shape, n_classes, n_total, synthetic)
    "digits": ((1, 8, 8), 10, 1797, False),
    "mnist": ((1, 28, 28), 10, 5000, False),
    "breast_cancer": ((30,), 2, 569, False),
    "credit": ((20,), 2, 5000, True),
}
HYPO = settings(max_examples=30, deadline=None, derandomize=True, database=None)


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def dataset(request) -> Dataset:
    return load_dataset(request.param, seed=0)


def test_registry_holds_the_builtin_datasets():
    assert set(EXPECTED) <= set(DATASETS)


def test_shapes_dtypes_and_classes(dataset):
    shape, n_classes, n_total, synthetic = EXPECTED[dataset.name]
    assert dataset.input_shape == shape
    assert dataset.n_classes == n_classes
    assert dataset.synthetic is synthetic
    assert len(dataset.x_train) + len(dataset.x_test) == n_total
    assert len(dataset.x_test) == math.ceil(0.2 * n_total)  # sklearn rounds the test size up
    for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (len(y), *shape)
        assert np.isfinite(x).all()
        assert set(np.unique(y)) == set(range(n_classes))  # stratified: every class on both sides
    assert dataset.description and "\n" not in dataset.description


def test_stratified_split_keeps_class_balance(dataset):
    train = np.bincount(dataset.y_train, minlength=dataset.n_classes) / len(dataset.y_train)
    test = np.bincount(dataset.y_test, minlength=dataset.n_classes) / len(dataset.y_test)
    np.testing.assert_allclose(train, test, atol=0.02)


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_images_are_scaled_to_unit_interval(name):
    ds = load_dataset(name)
    for x in (ds.x_train, ds.x_test):
        assert x.min() == 0.0 and x.max() == 1.0


@pytest.mark.parametrize("name", ["breast_cancer", "credit"])
def test_tabular_features_standardised_on_train_split(name):
    ds = load_dataset(name)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1.0, atol=1e-3)
    # Train statistics only: the test split is close to, but not exactly, standardised.
    assert not np.allclose(ds.x_test.mean(axis=0), 0.0, atol=1e-4)


def test_credit_is_labelled_synthetic_and_imbalanced():
    ds = load_dataset("credit")
    assert ds.synthetic and "synthetic" in ds.description.lower()
    minority = np.mean(np.concatenate([ds.y_train, ds.y_test]) == 1)
    assert 0.15 < minority < 0.25
    assert all(not load_dataset(n).synthetic for n in ("digits", "breast_cancer"))


def test_credit_table_does_not_depend_on_the_seed():
    # Seeds change the split (and so the train mean/std), not the generated table: the pooled columns of
    # two seeds are the same values up to the affine map of standardisation.
    a, b = load_dataset("credit", seed=0), load_dataset("credit", seed=1)
    pooled = [np.concatenate([ds.x_train, ds.x_test]).astype(np.float64) for ds in (a, b)]
    for j in range(pooled[0].shape[1]):
        col_a, col_b = np.sort(pooled[0][:, j]), np.sort(pooled[1][:, j])
        slope, intercept = np.polyfit(col_a, col_b, 1)
        np.testing.assert_allclose(slope * col_a + intercept, col_b, atol=1e-4)
    assert np.bincount(np.concatenate([a.y_train, a.y_test])).tolist() == np.bincount(
        np.concatenate([b.y_train, b.y_test])).tolist()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_same_seed_same_arrays_different_seed_different_split(name):
    a, b, c = load_dataset(name, seed=3), load_dataset(name, seed=3), load_dataset(name, seed=4)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, c.x_train)


def test_callers_cannot_corrupt_the_cache():
    a = load_dataset("digits")
    a.x_train[:] = -1.0
    a.y_train[:] = -1
    b = load_dataset("digits")
    assert b.x_train.min() == 0.0 and b.y_train.min() == 0


def test_test_fraction_changes_split_size():
    ds = load_dataset("digits", test_fraction=0.5)
    assert len(ds.x_test) == math.ceil(0.5 * 1797)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownDatasetError) as info:
        load_dataset("cifar10")
    for name in EXPECTED:
        assert name in str(info.value)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan"), "a"])
def test_bad_test_fraction(fraction):
    with pytest.raises(PartitionError, match="test_fraction"):
        load_dataset("digits", test_fraction=fraction)


def test_test_fraction_too_small_for_stratification():
    with pytest.raises(PartitionError, match="test_fraction"):
        load_dataset("digits", test_fraction=0.001)  # 2 test samples for 10 classes


def test_register_dataset():
    def tiny(name, *, seed, test_fraction):
        x = np.zeros((4, 3), np.float32)
        y = np.array([0, 1, 0, 1], np.int64)
        return Dataset(name, x, y, x, y, 2, (3,), True, "SYNTHETIC zeros for tests")

    register_dataset("_tiny_test", tiny)
    try:
        assert load_dataset("_tiny_test").n_classes == 2
    finally:
        DATASETS.pop("_tiny_test")


def test_dataset_rejects_wrong_shapes_and_dtypes():
    x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="shape"):
        Dataset("bad", x, y, x, y, 2, (4,), False, "")
    with pytest.raises(ValueError, match="float32"):
        Dataset("bad", x.astype(np.float64), y, x, y, 2, (3,), False, "")


# --- partition ---------------------------------------------------------------------------------------

LABELS = np.repeat(np.arange(10), 60)  # 600 labels, 10 balanced classes, sorted like mnist_data's
GROUPS = np.arange(len(LABELS)) % 50  # natural groups for the natural scheme (other schemes ignore them)


def assert_disjoint_and_covering(parts, n):
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)  # sorted, no repeats
    everything = np.concatenate(parts)
    assert len(everything) == n
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))


@HYPO
@given(n_clients=st.integers(1, 40), alpha=st.floats(0.05, 100.0), seed=st.integers(0, 2**32 - 1),
       scheme=st.sampled_from(SCHEMES))
def test_partition_is_disjoint_and_covering(n_clients, alpha, seed, scheme):
    parts = partition(LABELS, n_clients, scheme=scheme, alpha=alpha, seed=seed, groups=GROUPS)
    assert len(parts) == n_clients
    assert_disjoint_and_covering(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 1


@HYPO
@given(n=st.integers(1, 500), n_clients=st.integers(1, 50), seed=st.integers(0, 1000))
def test_iid_sizes_differ_by_at_most_one(n, n_clients, seed):
    if n_clients > n:
        return
    sizes = [len(p) for p in partition(np.zeros(n, np.int64), n_clients, seed=seed)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n


def mean_max_class_share(labels, parts):
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


def test_small_alpha_is_more_skewed_than_large_alpha():
    skewed = partition(LABELS, 10, scheme="dirichlet", alpha=0.1, seed=0)
    near_iid = partition(LABELS, 10, scheme="dirichlet", alpha=100.0, seed=0)
    iid = partition(LABELS, 10, scheme="iid", seed=0)
    assert mean_max_class_share(LABELS, skewed) > 0.5
    assert mean_max_class_share(LABELS, near_iid) < 0.25
    assert mean_max_class_share(LABELS, iid) < 0.25


@pytest.mark.parametrize("min_samples", [1, 20, 40])
def test_dirichlet_respects_min_samples(min_samples):
    parts = partition(LABELS, 10, scheme="dirichlet", alpha=0.3, seed=1, min_samples=min_samples)
    assert min(len(p) for p in parts) >= min_samples
    assert_disjoint_and_covering(parts, len(LABELS))


def test_dirichlet_gives_up_when_min_samples_is_unreachable():
    # 12 clients x 50 = 600: only an exactly even split would do, which alpha=0.1 never draws.
    with pytest.raises(PartitionError, match="larger alpha"):
        partition(LABELS, 12, scheme="dirichlet", alpha=0.1, seed=0, min_samples=50)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_partition_is_deterministic(scheme):
    a = partition(LABELS, 7, scheme=scheme, alpha=0.5, seed=11, groups=GROUPS)
    b = partition(LABELS, 7, scheme=scheme, alpha=0.5, seed=11, groups=GROUPS)
    c = partition(LABELS, 7, scheme=scheme, alpha=0.5, seed=12, groups=GROUPS)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_partition_of_real_training_labels():
    ds = load_dataset("breast_cancer")
    parts = partition(ds.y_train, 8, scheme="dirichlet", alpha=0.5, seed=0, min_samples=5)
    assert_disjoint_and_covering(parts, len(ds.y_train))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"scheme": "dirichlet", "alpha": -1.0}, "alpha"),
        ({"scheme": "dirichlet", "alpha": float("nan")}, "alpha"),
        ({"scheme": "dirichlet", "alpha": float("inf")}, "alpha"),
        ({"scheme": "pathological"}, "iid, dirichlet"),
        ({"n_clients": 601}, "at most 600 clients"),
        ({"n_clients": 31, "min_samples": 20}, "at most 30 clients"),
        ({"n_clients": 0}, "at least 1"),
        ({"n_clients": -3}, "at least 1"),
        ({"min_samples": 0}, "min_samples"),
    ],
)
def test_partition_bad_input(kwargs, match):
    kwargs = {"n_clients": 5, **kwargs}
    with pytest.raises(PartitionError, match=match):
        partition(LABELS, **kwargs)


def test_partition_rejects_2d_labels():
    with pytest.raises(PartitionError, match="1-D"):
        partition(np.zeros((10, 2)), 2)

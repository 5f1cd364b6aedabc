"""Tests of the synthetic data sets and array helpers in fastnet.datasets."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnet.datasets as ds
from fastnet.datasets import (
    make_blobs,
    make_circles,
    one_hot,
    sine,
    spirals,
    standardize,
    train_test_split,
    xor,
)


def test_public_names():
    for name in ["load_mnist", "make_circles", "make_blobs", "xor", "sine", "spirals",
                 "train_test_split", "standardize", "one_hot", "DatasetError"]:
        assert name in ds.__all__ and hasattr(ds, name)
    assert issubclass(ds.DatasetError, RuntimeError)


# --------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------

GENERATORS = [
    (make_circles, {}, (400, 2)),
    (make_blobs, {}, (1500, 2)),
    (spirals, {}, (300, 2)),
    (sine, {}, (200, 1)),
]


@pytest.mark.parametrize("make, kwargs, shape", GENERATORS)
def test_generators_shapes_and_determinism(make, kwargs, shape):
    X, y = make(seed=3, **kwargs)
    assert X.shape == shape and X.dtype == np.float64
    assert len(y) == shape[0]
    X2, y2 = make(seed=3, **kwargs)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _ = make(seed=4, **kwargs)
    assert not np.array_equal(X, X3)


@pytest.mark.parametrize("make", [make_circles, make_blobs, spirals, sine])
def test_generators_accept_a_generator(make):
    a = make(seed=np.random.default_rng(7))
    b = make(seed=np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])


def test_make_circles_geometry():
    X, y = make_circles(n_samples=101, noise=0.0, factor=0.3, seed=0)
    assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    assert (y == 0).sum() == 50 and (y == 1).sum() == 51
    radius = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radius[y == 0], 1.0)
    np.testing.assert_allclose(radius[y == 1], 0.3)
    # Shuffled: the labels are not in two sorted runs.
    assert np.count_nonzero(np.diff(y)) > 2


def test_make_blobs_split_and_centres():
    centers = [(0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10)]
    X, y = make_blobs(n_samples=1002, centers=centers, std=[0.1, 0.2, 0.3, 0.4], seed=1)
    assert X.shape == (1002, 3)
    np.testing.assert_array_equal(np.bincount(y), [251, 251, 250, 250])
    for k, c in enumerate(centers):
        np.testing.assert_allclose(X[y == k].mean(axis=0), c, atol=0.1)
    assert np.allclose(make_blobs(n_samples=3, std=0, seed=0)[0].std(axis=0),
                       np.std([[0, -2], [2, 2], [-2, 2]], axis=0))


def test_xor():
    X, y = xor()
    np.testing.assert_array_equal(X, [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
    assert y.shape == (4, 1) and y.dtype == np.float64
    np.testing.assert_array_equal(y.ravel(), [0, 1, 1, 0])
    np.testing.assert_array_equal(y.ravel(), np.logical_xor(X[:, 0], X[:, 1]))


def test_sine():
    x, y = sine(n_samples=1000, seed=0)
    assert x.shape == y.shape == (1000, 1)
    assert x.min() >= -np.pi and x.max() <= np.pi
    np.testing.assert_allclose(y, np.sin(x))


def test_spirals():
    X, y = spirals(n_samples=301, n_classes=4, noise=0.0, seed=0)
    assert X.shape == (301, 2)
    np.testing.assert_array_equal(np.bincount(y), [76, 75, 75, 75])
    assert np.all(np.hypot(X[:, 0], X[:, 1]) <= 1.0 + 1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_circles(n_samples=1), "n_samples must be an integer >= 2, got 1"),
        (lambda: make_circles(n_samples=10.5), "n_samples"),
        (lambda: make_circles(noise=-0.1), "noise must be >= 0, got -0.1"),
        (lambda: make_circles(factor=1.0), r"factor must be in \(0, 1\), got 1.0"),
        (lambda: make_circles(seed="abc"), "seed"),
        (lambda: make_blobs(centers=[]), "centers"),
        (lambda: make_blobs(centers=[(0, 0), (1, 1)], std=[1, 2, 3]), "std"),
        (lambda: make_blobs(std=-1), "std"),
        (lambda: make_blobs(n_samples=2), "n_samples must be an integer >= 3, got 2"),
        (lambda: sine(n_samples=0), "n_samples"),
        (lambda: spirals(n_classes=0), "n_classes"),
        (lambda: spirals(noise=float("inf")), "noise must be finite, got inf"),
        (lambda: make_circles(n_samples=True), "n_samples"),
    ],
)
def test_generator_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: spirals(noise=float("nan")), "noise must be a real number, got nan"),
        (lambda: make_circles(factor="0.5"), "factor must be a real number, got '0.5'"),
        (lambda: train_test_split(np.zeros((10, 2)), np.zeros(10), test_size="0.2"),
         "test_size must be a real number, got '0.2'"),
    ],
)
def test_non_numbers_are_type_errors(call, match):
    """The checks are fastnet.core.validation's: a non-number (or NaN) is a TypeError."""
    with pytest.raises(TypeError, match=match):
        call()


# --------------------------------------------------------------------------
# train_test_split
# --------------------------------------------------------------------------


def test_train_test_split_basic():
    X = np.arange(100).reshape(50, 2)
    y = np.arange(50)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, seed=0)
    assert X_tr.shape == (40, 2) and X_te.shape == (10, 2)
    # Rows stay paired with their labels and nothing is lost or duplicated.
    np.testing.assert_array_equal(X_tr[:, 0] // 2, y_tr)
    np.testing.assert_array_equal(np.sort(np.concatenate([y_tr, y_te])), y)
    again = train_test_split(X, y, test_size=0.2, seed=0)
    np.testing.assert_array_equal(again[3], y_te)
    assert train_test_split(X, y, test_size=7, seed=0)[1].shape == (7, 2)


def test_train_test_split_stratified():
    y = np.array([0] * 80 + [1] * 15 + [2] * 5)
    X = np.arange(100, dtype=float)[:, None]
    _, _, y_tr, y_te = train_test_split(X, y, test_size=0.2, seed=1, stratify=y)
    np.testing.assert_array_equal(np.bincount(y_te), [16, 3, 1])
    np.testing.assert_array_equal(np.bincount(y_tr), [64, 12, 4])
    # stratify=True is a shorthand for stratify=y; a column vector works too.
    same = train_test_split(X, y[:, None], test_size=0.2, seed=1, stratify=True)
    np.testing.assert_array_equal(np.bincount(same[3].ravel()), [16, 3, 1])


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=60),
    frac=st.floats(0.01, 0.99),
    stratified=st.booleans(),
)
def test_train_test_split_is_a_partition(labels, frac, stratified):
    y = np.array(labels)
    X = np.arange(len(y))[:, None]
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=frac, seed=0, stratify=y if stratified else None)
    assert len(X_te) == min(max(int(np.ceil(frac * len(y))), 1), len(y) - 1)
    idx = np.concatenate([X_tr[:, 0], X_te[:, 0]])
    np.testing.assert_array_equal(np.sort(idx), np.arange(len(y)))
    np.testing.assert_array_equal(y[X_tr[:, 0]], y_tr)
    np.testing.assert_array_equal(y[X_te[:, 0]], y_te)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_size": 1.5}, r"test_size must be in \(0, 1\), got 1.5"),
        ({"test_size": 0.0}, r"test_size must be in \(0, 1\), got 0.0"),
        ({"test_size": 10}, r"test_size as a count must be in \[1, 9\], got 10"),
        ({"stratify": np.zeros(3)}, "stratify"),
    ],
)
def test_train_test_split_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_test_split(np.zeros((10, 2)), np.zeros(10), **kwargs)


def test_train_test_split_length_mismatch():
    with pytest.raises(ValueError, match="same number of samples, got 10 and 9"):
        train_test_split(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="at least 2 samples"):
        train_test_split(np.zeros((1, 2)), np.zeros(1))


# --------------------------------------------------------------------------
# standardize and one_hot
# --------------------------------------------------------------------------


def test_standardize_fits_on_train_only():
    rng = np.random.default_rng(0)
    X_train = rng.normal(5.0, 3.0, size=(200, 3))
    X_train[:, 2] = 7.0  # a constant feature must not divide by zero
    X_test = rng.normal(5.0, 3.0, size=(50, 3))
    tr, te, (mean, std) = standardize(X_train, X_test)
    np.testing.assert_allclose(tr[:, :2].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(tr[:, :2].std(axis=0), 1)
    np.testing.assert_array_equal(tr[:, 2], 0)
    assert std[2] == 1.0 and np.all(np.isfinite(te))
    np.testing.assert_allclose(te, (X_test - mean) / std)
    only, stats = standardize(X_train)
    np.testing.assert_array_equal(only, tr)
    np.testing.assert_array_equal(stats[0], mean)


def test_standardize_dtypes_and_errors():
    tr, _ = standardize(np.ones((4, 2), dtype=np.float32))
    assert tr.dtype == np.float32
    tr, _ = standardize(np.arange(8).reshape(4, 2))
    assert tr.dtype == np.float64
    with pytest.raises(ValueError, match="X_test must have shape"):
        standardize(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="X_train must be a non-empty 2-D array"):
        standardize(np.zeros(4))


def test_one_hot():
    out = one_hot([2, 0, 1, 2])
    np.testing.assert_array_equal(out, np.eye(3)[[2, 0, 1, 2]])
    assert out.dtype == np.float64
    wide = one_hot(np.array([[1], [0]]), num_classes=4, dtype=np.float32)
    assert wide.shape == (2, 4) and wide.dtype == np.float32
    np.testing.assert_array_equal(one_hot(np.array([1.0, 0.0])), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(one_hot(xor()[1]).argmax(axis=1), [0, 1, 1, 0])


@pytest.mark.parametrize(
    "y, kwargs, match",
    [
        ([0, 3], {"num_classes": 3}, "num_classes"),
        ([-1, 0], {}, "non-negative"),
        ([0.5, 1.0], {}, "integer class labels"),
        ([[0, 1], [1, 0]], {}, "1-D"),
        ([0, 1], {"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ],
)
def test_one_hot_errors(y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        one_hot(y, **kwargs)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=50))
def test_one_hot_round_trip(labels):
    out = one_hot(labels, num_classes=10)
    np.testing.assert_array_equal(out.argmax(axis=1), labels)
    np.testing.assert_array_equal(out.sum(axis=1), 1)

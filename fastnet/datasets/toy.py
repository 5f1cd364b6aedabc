"""Small synthetic data sets and array helpers for examples and tests.

Conventions
-----------
* Features are ``float64`` arrays of shape ``(n_samples, n_features)``.
* Classification labels are ``int64`` arrays of shape ``(n_samples,)``; use
  :func:`one_hot` for a one-hot matrix.
* Regression targets (:func:`sine`, :func:`xor`) are ``float64`` column
  vectors of shape ``(n_samples, 1)``, ready for a mean-squared-error loss.
* ``seed`` may be None (fresh entropy), an int, or a ``numpy.random.Generator``;
  the same int always gives the same data.
* Generated samples are shuffled, so any contiguous slice mixes all classes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from fastnet.core.validation import check_int, check_real

__all__ = [
    "make_circles",
    "make_blobs",
    "xor",
    "sine",
    "spirals",
    "train_test_split",
    "standardize",
    "one_hot",
]


# --------------------------------------------------------------------------
# Shared helpers (the argument checks are fastnet.core.validation's)
# --------------------------------------------------------------------------


def _rng(seed):
    if seed is not None and not isinstance(seed, (numbers.Integral, np.random.Generator)):
        raise ValueError(f"seed must be None, an int or a numpy Generator, got {seed!r}")
    # default_rng returns a Generator unchanged, so callers can share one.
    return np.random.default_rng(seed)


def _split_evenly(n, k):
    """Sizes of ``k`` groups totalling ``n``; the first groups get the remainder."""
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    return sizes


def _shuffled(rng, X, y):
    perm = rng.permutation(len(X))
    return X[perm], y[perm]


# --------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------


def make_circles(n_samples: int = 400, noise: float = 0.1, factor: float = 0.5,
                 seed: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric noisy circles, a classic non-linearly-separable problem.

    Parameters
    ----------
    n_samples : int, default 400
        Total number of points (>= 2); the outer circle gets ``n_samples // 2``.
    noise : float, default 0.1
        Standard deviation of the Gaussian noise added to each coordinate.
    factor : float, default 0.5
        Radius of the inner circle relative to the outer one (radius 1),
        in ``(0, 1)``.
    seed : None, int or numpy.random.Generator, optional
        Randomness source.

    Returns
    -------
    X : numpy.ndarray of float64, shape (n_samples, 2)
    y : numpy.ndarray of int64, shape (n_samples,)
        0 for the outer circle, 1 for the inner one.
    """
    n_samples = check_int("n_samples", n_samples, minimum=2)
    noise = check_real("noise", noise, low=0)
    factor = check_real("factor", factor, 0, 1, low_open=True, high_open=True)
    rng = _rng(seed)
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer
    # Evenly spaced angles give both circles full coverage even for small n.
    t_out = np.linspace(0.0, 2 * np.pi, n_outer, endpoint=False)
    t_in = np.linspace(0.0, 2 * np.pi, n_inner, endpoint=False)
    X = np.concatenate([
        np.column_stack([np.cos(t_out), np.sin(t_out)]),
        factor * np.column_stack([np.cos(t_in), np.sin(t_in)]),
    ])
    y = np.concatenate([np.zeros(n_outer, np.int64), np.ones(n_inner, np.int64)])
    if noise > 0:
        X = X + rng.normal(0.0, noise, X.shape)
    return _shuffled(rng, X, y)


def make_blobs(n_samples: int = 1500, centers: Sequence[Sequence[float]] = ((0, -2), (2, 2), (-2, 2)), std: float = 1.0,
               seed: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian blobs, one class per centre.

    Parameters
    ----------
    n_samples : int, default 1500
        Total number of points, split as evenly as possible over the centres
        (the first centres get one extra point when it does not divide).
    centers : array_like, shape (n_centers, n_features)
        Blob centres; the default gives three 2-D blobs.
    std : float or array_like of shape (n_centers,), default 1.0
        Standard deviation of each blob (one value, or one per centre).
    seed : None, int or numpy.random.Generator, optional
        Randomness source.

    Returns
    -------
    X : numpy.ndarray of float64, shape (n_samples, n_features)
    y : numpy.ndarray of int64, shape (n_samples,)
        Index of the centre each point was drawn around.
    """
    centers_arr = np.asarray(centers, dtype=np.float64)
    if centers_arr.ndim != 2 or len(centers_arr) == 0 or centers_arr.shape[1] == 0:
        raise ValueError(
            f"centers must be a non-empty 2-D array (n_centers, n_features), got shape "
            f"{centers_arr.shape}"
        )
    if not np.all(np.isfinite(centers_arr)):
        raise ValueError("centers must be finite")
    k = len(centers_arr)
    n_samples = check_int("n_samples", n_samples, minimum=k)
    try:
        std_arr = np.broadcast_to(np.asarray(std, dtype=np.float64), (k,))
    except (TypeError, ValueError):
        std_arr = None
    if std_arr is None or not np.all(np.isfinite(std_arr)) or np.any(std_arr < 0):
        raise ValueError(
            f"std must be a non-negative number or one per centre ({k}), got {std!r}"
        )
    rng = _rng(seed)
    sizes = _split_evenly(n_samples, k)
    X = np.concatenate([
        c + s * rng.standard_normal((m, centers_arr.shape[1]))
        for c, s, m in zip(centers_arr, std_arr, sizes)
    ])
    y = np.repeat(np.arange(k, dtype=np.int64), sizes)
    return _shuffled(rng, X, y)


def xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points, with a constant bias input.

    Returns
    -------
    X : numpy.ndarray of float64, shape (4, 3)
        ``[[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]]``; the last column is a
        constant 1 so that even a model without bias terms can fit it.
    y : numpy.ndarray of float64, shape (4, 1)
        ``[[0], [1], [1], [0]]``, a column vector for regression-style losses
        (``y.ravel().astype(int)`` gives class labels).
    """
    X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return X, y


def sine(n_samples: int = 200, seed: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Samples of ``sin(x)`` for ``x`` uniform on ``[-pi, pi]``.

    Parameters
    ----------
    n_samples : int, default 200
        Number of points (>= 1).
    seed : None, int or numpy.random.Generator, optional
        Randomness source.

    Returns
    -------
    x : numpy.ndarray of float64, shape (n_samples, 1)
    y : numpy.ndarray of float64, shape (n_samples, 1)
        ``sin(x)``, without noise.
    """
    n_samples = check_int("n_samples", n_samples)
    rng = _rng(seed)
    x = rng.uniform(-np.pi, np.pi, size=(n_samples, 1))
    return x, np.sin(x)


def spirals(n_samples: int = 300, n_classes: int = 3, noise: float = 0.2,
            seed: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved 2-D spirals, one arm per class (the CS231n example).

    Parameters
    ----------
    n_samples : int, default 300
        Total number of points, split as evenly as possible over the classes.
    n_classes : int, default 3
        Number of spiral arms (>= 1).
    noise : float, default 0.2
        Standard deviation of the Gaussian noise added to each point's angle.
    seed : None, int or numpy.random.Generator, optional
        Randomness source.

    Returns
    -------
    X : numpy.ndarray of float64, shape (n_samples, 2)
        Points within the unit disc.
    y : numpy.ndarray of int64, shape (n_samples,)
        Arm index.
    """
    n_classes = check_int("n_classes", n_classes)
    n_samples = check_int("n_samples", n_samples, minimum=n_classes)
    noise = check_real("noise", noise, low=0)
    rng = _rng(seed)
    xs, ys = [], []
    for j, m in enumerate(_split_evenly(n_samples, n_classes)):
        r = np.linspace(0.0, 1.0, m)
        # Each arm sweeps 4 radians, starting 4 radians after the previous one.
        t = np.linspace(4.0 * j, 4.0 * (j + 1), m) + rng.standard_normal(m) * noise
        xs.append(np.column_stack([r * np.sin(t), r * np.cos(t)]))
        ys.append(np.full(m, j, dtype=np.int64))
    return _shuffled(rng, np.concatenate(xs), np.concatenate(ys))


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def train_test_split(X, y, test_size=0.2, seed=None, stratify=None):
    """Shuffle and split arrays into a training and a test part.

    Parameters
    ----------
    X, y : array_like
        Arrays with the same first dimension (samples).
    test_size : float or int, default 0.2
        Fraction of samples in the test part, in ``(0, 1)`` (rounded up to a
        whole sample), or, as an int, the number of test samples.
    seed : None, int or numpy.random.Generator, optional
        Randomness source.
    stratify : array_like of shape (n_samples,) or True, optional
        Class labels whose proportions both parts should keep (``True`` means
        use ``y``). Counts per class are rounded by largest remainder so the
        test size is exactly as requested.

    Returns
    -------
    X_train, X_test, y_train, y_test : numpy.ndarray
        Same dtypes and trailing shapes as the inputs.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError("X and y must have at least one dimension")
    n = len(X)
    if len(y) != n:
        raise ValueError(f"X and y must have the same number of samples, got {n} and {len(y)}")
    if n < 2:
        raise ValueError(f"need at least 2 samples to split, got {n}")

    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        n_test = int(test_size)
        if not 1 <= n_test <= n - 1:
            raise ValueError(f"test_size as a count must be in [1, {n - 1}], got {test_size!r}")
    else:
        frac = check_real("test_size", test_size, 0, 1, low_open=True, high_open=True)
        n_test = min(max(math.ceil(frac * n), 1), n - 1)

    rng = _rng(seed)
    if stratify is None or stratify is False:
        perm = rng.permutation(n)
        test_idx, train_idx = perm[:n_test], perm[n_test:]
    else:
        labels = y if stratify is True else np.asarray(stratify)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or len(labels) != n:
            raise ValueError(
                f"stratify must be one label per sample (shape ({n},)), got shape {labels.shape}"
            )
        test_idx, train_idx = _stratified_indices(rng, labels, n_test)
    return X[train_idx], X[test_idx], y[train_idx], y[test_idx]


def _stratified_indices(rng, labels, n_test):
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    ideal = counts * (n_test / len(labels))
    take = np.floor(ideal).astype(np.int64)
    # Hand the leftover test slots to the classes with the largest remainders.
    leftover = n_test - int(take.sum())
    if leftover:
        order = np.argsort(-(ideal - take), kind="stable")
        take[order[:leftover]] += 1
    test, train = [], []
    for c in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(inverse == c))
        test.append(idx[: take[c]])
        train.append(idx[take[c]:])
    # Shuffle across classes so neither part is sorted by label.
    return rng.permutation(np.concatenate(test)), rng.permutation(np.concatenate(train))


def standardize(X_train, X_test=None):
    """Scale features to zero mean and unit variance, fitted on the training set.

    Parameters
    ----------
    X_train : array_like, shape (n_samples, n_features)
        Data the mean and standard deviation are computed from.
    X_test : array_like, shape (m_samples, n_features), optional
        Data transformed with the training statistics (never refitted, so no
        information leaks from the test set).

    Returns
    -------
    X_train_std : numpy.ndarray
    X_test_std : numpy.ndarray
        Only when ``X_test`` is given.
    (mean, std) : tuple of numpy.ndarray, each shape (n_features,)
        The statistics used; a constant feature has ``std`` 1 so it maps to 0
        instead of dividing by zero.

    Notes
    -----
    Floating-point inputs keep their dtype (float32 stays float32); integer
    inputs become float64.
    """
    X_train = _as_float(X_train, "X_train")
    if X_train.ndim != 2 or len(X_train) == 0:
        raise ValueError(f"X_train must be a non-empty 2-D array, got shape {X_train.shape}")
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std = np.where(std > 0, std, np.ones_like(std))
    out_train = (X_train - mean) / std
    if X_test is None:
        return out_train, (mean, std)
    X_test = _as_float(X_test, "X_test")
    if X_test.ndim != 2 or X_test.shape[1] != X_train.shape[1]:
        raise ValueError(
            f"X_test must have shape (m, {X_train.shape[1]}) like X_train, got {X_test.shape}"
        )
    return out_train, ((X_test - mean) / std).astype(X_train.dtype, copy=False), (mean, std)


def _as_float(X, name):
    X = np.asarray(X)
    if X.dtype.kind == "f":
        return X
    if X.dtype.kind in "iub":
        return X.astype(np.float64)
    raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")


def one_hot(y, num_classes=None, dtype=np.float64):
    """One-hot encode integer class labels.

    Parameters
    ----------
    y : array_like of int, shape (n,) or (n, 1)
        Labels in ``[0, num_classes)``. Integral floats (``1.0``) are accepted.
    num_classes : int, optional
        Number of columns; defaults to ``max(y) + 1``.
    dtype : numpy dtype, default float64
        Dtype of the result.

    Returns
    -------
    numpy.ndarray, shape (n, num_classes)
        Row ``i`` is all zeros except a 1 in column ``y[i]``.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of labels, got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError("y must hold integer class labels, got non-integral values")
    elif y.dtype.kind not in "iu" and len(y):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    labels = y.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise ValueError(f"y must hold non-negative labels, got {labels.min()}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    else:
        num_classes = check_int("num_classes", num_classes)
        if len(labels) and labels.max() >= num_classes:
            raise ValueError(
                f"y has label {labels.max()}, which needs num_classes > {labels.max()}, "
                f"got num_classes={num_classes}"
            )
    out = np.zeros((len(labels), num_classes), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out

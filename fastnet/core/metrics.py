"""Classification metrics on host arrays: accuracy, confusion matrix, per-class
precision and recall, top-k accuracy, and the model's top-k guesses.

Labels may be given as class ids ``(n,)`` (or ``(n, 1)``) or as one-hot /
score rows ``(n, k)``: rows are reduced with ``argmax``, so predicted
probabilities can be passed wherever predicted labels are expected.
GPU arrays are copied to the host.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from fastnet.core.validation import as_array

__all__ = [
    "accuracy",
    "confusion_matrix",
    "precision_recall",
    "top_k_accuracy",
    "predict_top_k",
    "classification_report",
]


def _host(argument, a):
    return as_array(argument, a)


def _labels(argument, y):
    """Class ids (n,) int64 from ids, a column of ids, or (n, k) one-hot/score rows."""
    a = _host(argument, y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2:
        if a.shape[1] == 0:
            raise ValueError(f"{argument} has no columns: shape {a.shape}")
        return np.argmax(a, axis=1).astype(np.int64)
    if a.ndim != 1:
        raise ValueError(f"{argument} must be class ids (n,) or rows (n, k), got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{argument} must hold integer class ids, got non-integer values")
    elif a.dtype.kind not in "iub":
        raise TypeError(f"{argument} must hold integer class ids, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{argument} holds negative class ids, e.g. {int(a.min())}")
    return a


def _pair(y_true, y_pred):
    t = _labels("y_true", y_true)
    p = _labels("y_pred", y_pred)
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred have different lengths: {len(t)} and {len(p)}")
    if len(t) == 0:
        raise ValueError("y_true is empty")
    return t, p


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of samples whose predicted class is the true class.

    Parameters
    ----------
    y_true : array (n,) of class ids, or (n, k) one-hot rows
    y_pred : array (n,) of class ids, or (n, k) probabilities/scores

    Returns
    -------
    float
    """
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Parameters
    ----------
    y_true, y_pred : array
        As in :func:`accuracy`.
    n_classes : int, optional
        Size of the matrix; default: one more than the largest class id seen
        (or the number of columns of ``y_pred`` when it holds scores).

    Returns
    -------
    numpy.ndarray of int64, shape (n_classes, n_classes)
        ``C[i, j]`` is the number of samples of true class ``i`` predicted as ``j``
        (rows: truth, columns: prediction, as in scikit-learn).
    """
    t, p = _pair(y_true, y_pred)
    if n_classes is None:
        # Score or one-hot rows say how many classes there are, even unseen ones.
        widths = [np.ndim(a) == 2 and np.shape(a)[1] for a in (y_true, y_pred)]
        n_classes = max(int(t.max()) + 1, int(p.max()) + 1, *widths)
    n_classes = _check_k(n_classes)
    if t.max() >= n_classes or p.max() >= n_classes:
        raise ValueError(
            f"class ids must be below n_classes={n_classes}, got up to {max(int(t.max()), int(p.max()))}"
        )
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def precision_recall(y_true, y_pred, n_classes=None, zero_division=0.0):
    """Per-class precision, recall and support.

    Parameters
    ----------
    y_true, y_pred, n_classes
        As in :func:`confusion_matrix`.
    zero_division : float
        Value for a class that is never predicted (precision) or never
        present (recall); ``float("nan")`` to mark those explicitly.

    Returns
    -------
    precision, recall : numpy.ndarray of float64, shape (n_classes,)
        ``precision[c]``: of the samples predicted ``c``, the fraction that are ``c``;
        ``recall[c]``: of the samples of class ``c``, the fraction predicted ``c``.
    support : numpy.ndarray of int64, shape (n_classes,)
        Number of true samples of each class.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), zero_division)
        recall = np.where(support > 0, tp / np.maximum(support, 1), zero_division)
    return precision, recall, support


def _top_k_indices(proba, k):
    """Column indices of the ``k`` largest scores per row, largest first."""
    k = min(k, proba.shape[1])
    if k == proba.shape[1]:
        part = np.broadcast_to(np.arange(k), proba.shape).copy()
    else:
        part = np.argpartition(-proba, k - 1, axis=1)[:, :k]
    scores = np.take_along_axis(proba, part, axis=1)
    # Stable on ties: the smaller class id first, as argmax does.
    order = np.lexsort((part, -scores), axis=1)
    return np.take_along_axis(part, order, axis=1)


def top_k_accuracy(y_true: ArrayLike, proba: ArrayLike, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores.

    Parameters
    ----------
    y_true : array (n,) of class ids, or (n, k) one-hot rows
    proba : array (n, n_classes)
        Probabilities or scores (e.g. ``model.predict_proba(X)``).
    k : int
        ``k=1`` is plain accuracy; ``k >= n_classes`` gives 1.0.

    Returns
    -------
    float
    """
    k = _check_k(k)
    t = _labels("y_true", y_true)
    p = _host("proba", proba)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-D (n_samples, n_classes), got shape {p.shape}")
    if len(p) != len(t):
        raise ValueError(f"y_true and proba have different lengths: {len(t)} and {len(p)}")
    if len(t) == 0:
        raise ValueError("y_true is empty")
    top = _top_k_indices(p, k)
    return float(np.mean(np.any(top == t[:, None], axis=1)))


def predict_top_k(model, X, k=3):
    """The model's ``k`` best guesses per sample, with their probabilities.

    Parameters
    ----------
    model : Sequential
        A fitted classifier (cross-entropy or binary cross-entropy).
    X : array (n_samples, n_features)
    k : int
        Number of guesses; at most the number of classes.

    Returns
    -------
    classes : numpy.ndarray of int64, shape (n_samples, k)
        Class ids, most probable first: ``classes[:, 0]`` is ``model.predict(X)``,
        ``classes[:, 1]`` the second guess...
    probabilities : numpy.ndarray, shape (n_samples, k)
        The matching probabilities, in decreasing order.

    Examples
    --------
    >>> classes, probs = predict_top_k(model, X_test[:1], k=3)   # doctest: +SKIP
    >>> classes, probs
    (array([[7, 9, 2]]), array([[0.91, 0.05, 0.02]]))
    """
    k = _check_k(k)
    proba = model.predict_proba(X)
    if k > proba.shape[1]:
        raise ValueError(f"k must be at most the number of classes ({proba.shape[1]}), got {k}")
    top = _top_k_indices(proba, k)
    labels = getattr(model, "classes_", None)
    # the model's labels when it was trained on labels; class ids otherwise
    guesses = top.astype(np.int64) if labels is None else labels[top]
    return guesses, np.take_along_axis(proba, top, axis=1)


def classification_report(y_true, y_pred, n_classes=None, class_names=None, digits=3):
    """Accuracy and a per-class precision / recall / support table, as a string.

    Parameters
    ----------
    y_true, y_pred, n_classes
        As in :func:`confusion_matrix`.
    class_names : list of str, optional
    digits : int

    Returns
    -------
    str
    """
    precision, recall, support = precision_recall(y_true, y_pred, n_classes)
    names = list(class_names) if class_names is not None else [str(c) for c in range(len(support))]
    if len(names) != len(support):
        raise ValueError(f"class_names has {len(names)} names for {len(support)} classes")
    width = max(8, max(len(n) for n in names) + 2)
    lines = [f"{'class':<{width}}{'precision':>11}{'recall':>9}{'support':>9}"]
    for name, p, r, s in zip(names, precision, recall, support):
        lines.append(f"{name:<{width}}{p:>11.{digits}f}{r:>9.{digits}f}{int(s):>9}")
    lines.append(f"accuracy {accuracy(y_true, y_pred):.{digits}f} on {int(support.sum())} samples")
    return "\n".join(lines)

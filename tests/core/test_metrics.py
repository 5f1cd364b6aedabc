"""Metrics: hand-worked examples, input forms, and the model's top-k guesses."""
import numpy as np
import pytest

import fastnet
from fastnet.core.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    precision_recall,
    predict_top_k,
    top_k_accuracy,
)

Y_TRUE = np.array([0, 1, 2, 2, 1, 0])
Y_PRED = np.array([0, 2, 2, 2, 1, 1])


def test_accuracy_hand_worked():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert accuracy([1, 1], [1, 1]) == 1.0


def test_labels_from_one_hot_and_probabilities():
    onehot = np.eye(3)[Y_TRUE]
    proba = np.eye(3)[Y_PRED] * 0.8 + 0.05
    assert accuracy(onehot, proba) == accuracy(Y_TRUE, Y_PRED)
    assert accuracy(Y_TRUE.reshape(-1, 1), Y_PRED.astype(float)) == accuracy(Y_TRUE, Y_PRED)


def test_confusion_matrix_hand_worked():
    cm = confusion_matrix(Y_TRUE, Y_PRED)
    expected = np.array([[1, 1, 0],
                         [0, 1, 1],
                         [0, 0, 2]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    assert cm.sum() == len(Y_TRUE)


def test_confusion_matrix_size_from_scores_and_argument():
    # Class 3 never occurs, but the score rows say there are 4 classes.
    cm = confusion_matrix([0, 1], np.eye(4)[[0, 1]])
    assert cm.shape == (4, 4)
    assert confusion_matrix([0, 1], [1, 0], n_classes=5).shape == (5, 5)
    with pytest.raises(ValueError, match="below n_classes=2"):
        confusion_matrix([0, 3], [0, 1], n_classes=2)


def test_precision_recall_hand_worked():
    p, r, support = precision_recall(Y_TRUE, Y_PRED)
    # predicted 0: {0}; predicted 1: {1(true 0), 1}; predicted 2: {2(true 1), 2, 2}
    np.testing.assert_allclose(p, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(r, [0.5, 0.5, 1.0])
    np.testing.assert_array_equal(support, [2, 2, 2])


def test_precision_zero_division():
    p, r, _ = precision_recall([0, 0, 1], [0, 0, 0], n_classes=3)
    assert p[1] == 0.0 and r[2] == 0.0  # class 1 never predicted; class 2 never present
    p, r, _ = precision_recall([0, 0, 1], [0, 0, 0], n_classes=3, zero_division=np.nan)
    assert np.isnan(p[1]) and np.isnan(p[2]) and np.isnan(r[2])


def test_top_k_accuracy_hand_worked():
    proba = np.array([[0.1, 0.5, 0.4],
                      [0.3, 0.3, 0.4],   # tie between 0 and 1: the smaller id ranks first
                      [0.2, 0.2, 0.6]])
    y = [2, 0, 1]
    assert top_k_accuracy(y, proba, k=1) == 0.0
    assert top_k_accuracy(y, proba, k=2) == pytest.approx(2 / 3)
    assert top_k_accuracy(y, proba, k=3) == 1.0
    assert top_k_accuracy(y, proba, k=10) == 1.0


def test_top_k_accuracy_is_accuracy_for_k_1(rng):
    proba = rng.random((200, 7))
    y = rng.integers(0, 7, 200)
    assert top_k_accuracy(y, proba, 1) == accuracy(y, proba)
    values = [top_k_accuracy(y, proba, k) for k in range(1, 8)]
    assert values == sorted(values) and values[-1] == 1.0


@pytest.mark.parametrize("bad, message", [
    ((Y_TRUE, Y_PRED[:3]), "different lengths"),
    (([], []), "empty"),
    (([0.5, 1], [0, 1]), "integer class ids"),
    (([-1, 1], [0, 1]), "negative"),
    ((["a", "b"], [0, 1]), "integer class ids"),
])
def test_errors_name_the_problem(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        accuracy(*bad)


def test_top_k_errors():
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        top_k_accuracy([0], [[1.0, 0.0]], k=0)
    with pytest.raises(ValueError, match="2-D"):
        top_k_accuracy([0], [1.0, 0.0], k=1)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (5, 6))
    y = rng.integers(0, 5, 600)
    X = (centres[y] + rng.normal(0, 1, (600, 6))).astype(np.float32)
    model = fastnet.MLP([6, 32, 5], backend="cpu", seed=0)
    model.fit(X, y, epochs=10, optimizer="adam", lr=0.01)
    return model, X, y


def test_predict_top_k_matches_predict_proba(trained):
    model, X, y = trained
    classes, probs = predict_top_k(model, X, k=3)
    proba = model.predict_proba(X)
    assert classes.shape == probs.shape == (len(X), 3)
    assert classes.dtype == np.int64
    np.testing.assert_array_equal(classes[:, 0], model.predict(X))
    np.testing.assert_allclose(probs, np.take_along_axis(proba, classes, axis=1))
    assert np.all(np.diff(probs, axis=1) <= 0)  # most probable first
    # The second and third guesses are the 2nd and 3rd largest probabilities.
    np.testing.assert_allclose(probs[:, 1], np.sort(proba, axis=1)[:, -2])
    np.testing.assert_allclose(probs[:, 2], np.sort(proba, axis=1)[:, -3])
    assert np.all(classes[:, 0] != classes[:, 1])
    assert top_k_accuracy(y, proba, 3) >= accuracy(y, classes[:, 0])


def test_predict_top_k_k_bounds(trained):
    model, X, _ = trained
    classes, probs = predict_top_k(model, X[:4], k=5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="at most the number of classes"):
        predict_top_k(model, X[:4], k=6)


def test_classification_report(trained):
    model, X, y = trained
    text = classification_report(y, model.predict_proba(X), class_names=list("abcde"))
    lines = text.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "support"]
    assert [line.split()[0] for line in lines[1:6]] == list("abcde")
    assert lines[-1].startswith(f"accuracy {accuracy(y, model.predict(X)):.3f} on 600 samples")

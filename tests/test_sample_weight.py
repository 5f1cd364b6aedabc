"""fit(sample_weight=...): a weight counts like repeated rows, 0 like a dropped row."""
import numpy as np
import pytest

import fastnet


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    return X, (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int), rng.integers(0, 4, 40).astype(float)


def train(X, y, backend="cpu", loss=None, output=None, **kw):
    m = fastnet.MLP([3, 5, 2 if output != "linear" else 1], output=output, loss=loss, backend=backend, seed=0,
                    dtype="float64")
    m.fit(X, y, epochs=15, batch_size=None, optimizer="adam", lr=0.01, shuffle=False, diagnose=False, **kw)
    return m


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_integer_weights_equal_repeated_rows_and_zero_equals_dropped(data, kind):
    X, y, w = data
    kw = dict(output="linear", loss="mse") if kind == "regressor" else {}
    target = X[:, 0] * 2 + X[:, 1] if kind == "regressor" else y
    weighted = train(X, target, sample_weight=w, **kw)
    reps = w.astype(int)
    repeated = train(np.repeat(X, reps, axis=0), np.repeat(target, reps), **kw)
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-12, atol=1e-12)
    assert weighted.history_["loss"] == pytest.approx(repeated.history_["loss"], rel=1e-12)
    # and the weights did something: unweighted training ends elsewhere
    assert not np.allclose(train(X, target, **kw).predict(X), weighted.predict(X))


def test_ones_and_a_constant_equal_no_weights(data):
    X, y, _ = data
    plain = train(X, y).predict_proba(X)
    np.testing.assert_allclose(train(X, y, sample_weight=np.ones(40)).predict_proba(X), plain, rtol=1e-13)
    np.testing.assert_allclose(train(X, y, sample_weight=np.full(40, 7.0)).predict_proba(X), plain, rtol=1e-13)


def test_weights_follow_their_rows_through_shuffled_mini_batches(data):
    X, y, w = data
    m = fastnet.MLP([3, 5, 2], backend="cpu", seed=0, dtype="float64")
    m.fit(X, y, epochs=30, batch_size=8, optimizer="adam", lr=0.02, sample_weight=np.where(y == 1, 0.0, 1.0),
          diagnose=False)
    # class 1 weighs nothing: the model learns to say 0
    assert (m.predict(X) == 0).mean() > 0.9


@pytest.mark.parametrize("weights, error, match", [
    (np.ones(39), ValueError, r"sample_weight must have shape \(40,\), one weight per sample, got shape \(39,\)"),
    (-np.ones(40), ValueError, r"sample_weight must be non-negative, got -1.0 at sample_weight\[0\]"),
    (np.full(40, np.nan), ValueError, r"sample_weight contains 40 NaN"),
    (np.zeros(40), ValueError, r"sample_weight sums to 0"),
    (np.array(["a"] * 40), TypeError, r"sample_weight must hold real numbers"),
])
def test_bad_weights_are_refused_before_anything_changes(data, weights, error, match):
    X, y, _ = data
    m = fastnet.MLP([3, 5, 2], backend="cpu", seed=0)
    with pytest.raises(error, match=match):
        m.fit(X, y, epochs=1, sample_weight=weights)
    assert not m.built

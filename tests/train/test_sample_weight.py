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
    m.fit(X, y, epochs=15, batch_size=None, optimizer="adam", lr=0.01, **kw)
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
    m.fit(X, y, epochs=30, batch_size=8, optimizer="adam", lr=0.02, sample_weight=np.where(y == 1, 0.0, 1.0))
    # class 1 weighs nothing: the model learns to say 0
    assert (m.predict(X) == 0).mean() > 0.9


@pytest.mark.parametrize("shuffle", [False, True])
def test_validation_split_keeps_each_training_row_s_own_weight(data, shuffle):
    """Oracle: the documented split done by hand.  validation_split holds out the LAST rows,
    before any shuffling (as Keras does): fit(X, y, validation_split=0.25, sample_weight=w) on
    40 rows trains as fit on rows 0-29 with their weights w[:30], validated on rows 30-39."""
    X, y, w = data
    w = w + np.arange(40) / 40  # 40 different weights: a row with another row's weight shows
    kw = dict(epochs=6, batch_size=8, optimizer="adam", lr=0.01, shuffle=shuffle)

    def new():
        return fastnet.MLP([3, 5, 2], backend="cpu", seed=0, dtype="float64")

    split = new()
    h_split = split.fit(X, y, validation_split=0.25, sample_weight=w, **kw)
    by_hand = new()
    h_hand = by_hand.fit(X[:30], y[:30], validation_data=(X[30:], y[30:]), sample_weight=w[:30], **kw)
    np.testing.assert_allclose(split.predict_proba(X), by_hand.predict_proba(X), rtol=1e-12, atol=1e-14)
    assert h_split["loss"] == pytest.approx(h_hand["loss"], rel=1e-12)
    assert h_split["val_loss"] == pytest.approx(h_hand["val_loss"], rel=1e-12)
    assert h_split.params["n_samples"] == 30
    # and the comparison discriminates: the weights of other rows (the last 30) train another model
    other = new()
    other.fit(X[:30], y[:30], validation_data=(X[30:], y[30:]), sample_weight=w[10:], **kw)
    assert np.abs(other.predict_proba(X) - by_hand.predict_proba(X)).max() > 1e-3


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

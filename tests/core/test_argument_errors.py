"""Bad arguments raise ValueError/TypeError naming the argument and the value."""
import numpy as np
import pytest

import fastnet

X = np.random.default_rng(0).normal(size=(20, 3))
Y = np.arange(20) % 2


def _model(**kw):
    return fastnet.MLP([3, 4, 2], backend="cpu", seed=0, **kw)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"batch_size": 0}, r"batch_size must be a positive integer or None, got 0"),
    ({"batch_size": -3}, r"batch_size .* got -3"),
    ({"batch_size": 2.5}, r"batch_size .* got 2.5"),
    ({"lr": 0}, r"lr must be > 0, got 0"),
    ({"lr": -0.1}, r"lr must be > 0, got -0.1"),
    ({"optimizer": "adma"}, r"optimizer must be one of .* got 'adma' \(did you mean 'adam'\?\)"),
    ({"epochs": -1}, r"epochs must be a non-negative integer, got -1"),
    ({"lr_schedule": "cosin"}, r"lr_schedule .* got 'cosin'"),
    ({"validation_split": 1.5}, r"validation_split must be in \(0, 1\), got 1.5"),
])
def test_bad_fit_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        _model().fit(X, Y, **kwargs)


def test_unknown_names():
    with pytest.raises(ValueError, match=r"activation must be one of .* got 'sigmiod' \(did you mean 'sigmoid'\?\)"):
        fastnet.Dense(3, activation="sigmiod")
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'gpu'"):
        fastnet.MLP([3, 2], backend="gpu")
    with pytest.raises(ValueError, match=r"loss must be one of .* got 'hinge'"):
        fastnet.MLP([3, 2], loss="hinge")
    with pytest.raises(ValueError, match=r"kernels must be one of .* got 'fast'"):
        fastnet.get_backend("cpu", kernels="fast")
    with pytest.raises(ValueError, match=r"dtype must be one of .* got 'float16'"):
        fastnet.get_backend("cpu", dtype="float16")


def test_lengths_and_features():
    with pytest.raises(ValueError, match=r"X and y have different lengths: 20 and 19"):
        _model().fit(X, Y[:-1])
    m = _model()
    m.fit(X, Y, epochs=1)
    with pytest.raises(ValueError, match=r"X has 5 features per sample, but the model expects 3"):
        m.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"X has 4 features per sample, but the model expects 3"):
        _model().fit(np.zeros((20, 4)), Y)


def test_bad_layers_and_sizes():
    with pytest.raises(ValueError, match=r"units must be a positive integer, got 0"):
        fastnet.Dense(0)
    with pytest.raises(ValueError, match=r"sizes\[1\] must be a positive integer, got -4"):
        fastnet.MLP([3, -4, 2])
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got 1.0"):
        fastnet.Dropout(1.0)
    with pytest.raises(ValueError, match=r"softmax is only supported on the last layer"):
        fastnet.Sequential([fastnet.Dense(3, "softmax"), fastnet.Dense(2, "softmax")])
    with pytest.raises(ValueError, match=r"loss 'mse' does not go with a 'softmax' output"):
        fastnet.Sequential([fastnet.Dense(2, "softmax")], loss="mse")


def test_labels_out_of_range_and_not_fitted():
    # labels need not be ids, but there must be as many as output units
    with pytest.raises(ValueError, match=r"class ids outside \[0, 2\): y\[0\] = 5"):
        _model().fit(X, np.full(20, 5))
    with pytest.raises(ValueError, match=r"y holds 3 distinct labels \('a', 'b', 'c'\)"):
        _model().fit(X, np.array(["a", "b", "c", "a"] * 5))
    with pytest.raises(fastnet.NotFittedError, match="not fitted"):
        _model().predict(X)

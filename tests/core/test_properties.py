"""Property tests: random architectures and data never fail except with documented errors."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnet

ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "linear"]


@st.composite
def problems(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 6))
    hidden = draw(st.lists(st.integers(1, 12), min_size=0, max_size=3))
    k = draw(st.integers(2, 5))
    loss = draw(st.sampled_from(["cross_entropy", "binary_cross_entropy", "mse", "sse"]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    if loss == "cross_entropy":
        y = rng.integers(0, k, n)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, (n, k)).astype(float)
    else:
        y = rng.normal(size=(n, k))
    return dict(X=X, y=y, sizes=[d, *hidden, k], loss=loss, seed=seed,
                activation=draw(st.sampled_from(ACTS)),
                batch_size=draw(st.one_of(st.none(), st.integers(1, 64))),
                optimizer=draw(st.sampled_from(["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])),
                dropout=draw(st.sampled_from([0.0, 0.3])),
                dtype=draw(st.sampled_from(["float32", "float64"])))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_fit_predict_never_fail_unexpectedly(tmp_path_factory, p):
    model = fastnet.MLP(p["sizes"], activation=p["activation"], loss=p["loss"], dropout=p["dropout"],
                        backend="cpu", dtype=p["dtype"], seed=p["seed"])
    # Every generated problem is valid (any batch size >= 1 or None, finite data, labels in range):
    # the only documented failure left is a diverging loss.  A ValueError or TypeError here is a
    # bug (e.g. a valid batch size rejected), so it must not be swallowed.
    try:
        model.fit(p["X"], p["y"], epochs=2, batch_size=p["batch_size"], optimizer=p["optimizer"])
    except fastnet.TrainingDivergedError:
        assert len(model.predict(p["X"])) == len(p["X"])  # the last good weights were put back
        return
    assert model.n_iter_ == 2
    if p["loss"] in ("cross_entropy", "binary_cross_entropy"):
        proba = model.predict_proba(p["X"])
        if p["loss"] == "cross_entropy":
            np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-4)
        assert np.all((proba >= 0) & (proba <= 1))
    pred = model.predict(p["X"])
    assert len(pred) == len(p["X"])
    path = tmp_path_factory.mktemp("m") / "m.npz"
    model.save(path)
    again = fastnet.load(path, backend="cpu")
    np.testing.assert_array_equal(again.predict(p["X"]), pred)


@settings(max_examples=30, deadline=None)
@given(st.one_of(
    st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=3), st.booleans(), st.none(),
))
def test_bad_batch_sizes_are_value_or_type_errors(bad):
    model = fastnet.MLP([2, 2], backend="cpu", seed=0)
    if bad is None:
        return  # None is full batch: valid
    with pytest.raises((ValueError, TypeError), match="batch_size"):
        model.fit(np.zeros((3, 2)), [0, 1, 0], batch_size=bad)

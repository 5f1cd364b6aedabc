"""Finite-difference gradient checks for every activation x loss, with and without bias."""
# Opt-out kept (issue 27): monkeypatch puts a wrong kernel in the table: catching it is the subject.
import numpy as np
import pytest

import fastnet

ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu", "linear"]
LOSSES = [("cross_entropy", "softmax", 3), ("binary_cross_entropy", "sigmoid", 2),
          ("mse", "linear", 2), ("sse", "sigmoid", 2)]


def _targets(loss, n, k, rng):
    if loss == "cross_entropy":
        return rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (n, k)).astype(float)
    return rng.normal(size=(n, k))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss,output,k", LOSSES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_gradcheck(activation, loss, output, k, use_bias):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 4))
    model = fastnet.MLP([4, 5, 3, k], activation=activation, output=output, loss=loss,
                        use_bias=use_bias, backend="cpu", seed=1)
    err = fastnet.gradcheck(model, X, _targets(loss, 6, k, rng))
    assert err < 1e-6


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    # The check itself must be able to fail: break the sigmoid derivative.
    from fastnet.kernels import reference

    def wrong(a, dy, dz, db):
        dz[...] = dy * a
        dz.sum(axis=0, out=db)

    monkeypatch.setitem(reference.KERNELS, "sigmoid_bwd", wrong)  # the table backends resolve from
    rng = np.random.default_rng(0)
    model = fastnet.MLP([3, 4, 2], activation="sigmoid", backend="cpu", seed=0)
    assert fastnet.gradcheck(model, rng.normal(size=(5, 3)), rng.integers(0, 2, 5)) > 1e-2

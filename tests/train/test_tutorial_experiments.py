"""The from-scratch tutorials' classic experiments, with their figures as assertions."""
import numpy as np

import fastnet
from fastnet import datasets


def test_three_gaussian_clouds(backend):
    # 500 points per cloud, centres (0,-2), (2,2), (-2,2), unit variance; 2-5-3 sigmoid/softmax.
    X, y = datasets.make_blobs(n_samples=1500, seed=0)
    model = fastnet.MLP([2, 5, 3], activation="sigmoid", backend=backend, seed=0)
    model.fit(X, y, epochs=60, batch_size=32, optimizer="sgd", lr=0.5)
    assert model.score(X, y) >= 0.97


def test_two_circles(backend):
    X, y = datasets.make_circles(n_samples=400, noise=0.1, factor=0.5, seed=0)
    model = fastnet.MLP([2, 16, 2], activation="tanh", backend=backend, seed=0)
    model.fit(X, y, epochs=200, batch_size=32, optimizer="adam", lr=0.01)
    assert model.score(X, y) >= 0.95


def test_xor_like_sum_of_squares(backend):
    # The "neural network in 11 lines" data set: 3-4-1 sigmoid net, sum-of-squares loss,
    # 1500 full-batch iterations.
    X, y = datasets.xor()
    model = fastnet.MLP([3, 4, 1], activation="sigmoid", output="sigmoid", loss="sse",
                        backend=backend, seed=1)
    model.fit(X, y, epochs=1500, batch_size=None, optimizer="sgd", lr=1.0)
    pred = model.predict(X)
    assert np.all(np.abs(pred - np.ravel(y)) < 0.1), pred


def test_sine_regression(backend):
    x, y = datasets.sine(n_samples=200, seed=0)
    model = fastnet.MLP([1, 32, 1], activation="tanh", loss="mse", backend=backend, seed=0)
    model.fit(x, y, epochs=400, batch_size=32, optimizer="adam", lr=0.01)
    mse = np.mean((model.predict(x) - np.ravel(y)) ** 2)
    assert mse < 1e-3, mse

"""Regression: y = sin(x) on [-pi, pi] with a 1-32-1 tanh net and mean squared error."""
import numpy as np

import fastnet
from fastnet import datasets

x, y = datasets.sine(n_samples=200, seed=0)
model = fastnet.MLP([1, 32, 1], activation="tanh", loss="mse", backend="cpu", seed=0)
model.fit(x, y, epochs=400, batch_size=32, optimizer="adam", lr=0.01)
print(f"sine: mean squared error {np.mean((model.predict(x) - y.ravel()) ** 2):.2e}")

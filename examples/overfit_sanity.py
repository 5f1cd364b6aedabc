"""Sanity check: a net that can learn must memorise 10 images per digit (about 100%)."""
import numpy as np

import fastnet
from fastnet.cli import load_mnist_arrays

(X, y), (Xt, yt) = load_mnist_arrays()
idx = np.concatenate([np.flatnonzero(y == d)[:10] for d in range(10)])
model = fastnet.MLP([784, 128, 10], activation="relu", backend="cpu", seed=0)
history = model.fit(X[idx], y[idx], epochs=100, batch_size=20, optimizer="adam", lr=1e-3)
print(f"overfit: 100 images, training accuracy {model.score(X[idx], y[idx]):.4f} "
      f"(loss {history['loss'][-1]:.4f}); test accuracy {model.score(Xt, yt):.4f} (it memorised, not learned)")

"""The 4-sample XOR-like set of "a neural network in 11 lines": 3-4-1 sigmoid,
sum-of-squares loss, 1500 full-batch gradient steps."""
import numpy as np

import fastnet
from fastnet import datasets

X, y = datasets.xor()  # inputs [0,0,1], [0,1,1], [1,0,1], [1,1,1]; targets 0, 1, 1, 0
model = fastnet.MLP([3, 4, 1], activation="sigmoid", output="sigmoid", loss="sse", backend="cpu", seed=1)
model.fit(X, y, epochs=1500, batch_size=None, optimizer="sgd", lr=1.0)
pred = model.predict(X)
print("xor: predictions", np.round(pred, 3), f"largest error {np.max(np.abs(pred - y.ravel())):.3f}")

"""Three Gaussian clouds (500 points each), a 2-5-3 sigmoid/softmax net, SGD."""
import fastnet
from fastnet import datasets

X, y = datasets.make_blobs(n_samples=1500, centers=((0, -2), (2, 2), (-2, 2)), std=1.0, seed=0)
model = fastnet.MLP([2, 5, 3], activation="sigmoid", backend="cpu", seed=0)
history = model.fit(X, y, epochs=60, batch_size=32, optimizer="sgd", lr=0.5)
print(f"blobs: final loss {history['loss'][-1]:.4f}, training accuracy {model.score(X, y):.4f}")

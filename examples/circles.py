"""Two concentric circles (400 points, noise 0.1, radius ratio 0.5), one hidden layer."""
import fastnet
from fastnet import datasets

X, y = datasets.make_circles(n_samples=400, noise=0.1, factor=0.5, seed=0)
model = fastnet.MLP([2, 16, 2], activation="tanh", backend="cpu", seed=0)
model.fit(X, y, epochs=200, batch_size=32, optimizer="adam", lr=0.01)
print(f"circles: training accuracy {model.score(X, y):.4f}")

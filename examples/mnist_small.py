"""MNIST with the tutorials' 784-40-30-10 ReLU/softmax net."""
import fastnet
from fastnet.cli import load_mnist_arrays

(X, y), (Xt, yt) = load_mnist_arrays()
model = fastnet.MLP([784, 40, 30, 10], activation="relu", backend="cpu", seed=0)
model.fit(X, y, epochs=10, batch_size=64, optimizer="adam", lr=3e-3)
print(f"mnist 784-40-30-10: test accuracy {model.score(Xt, yt):.4f}")

"""A learning rate too high (the loss diverges or oscillates) against a lowered one."""
import fastnet
from fastnet.cli import load_mnist_arrays

(X, y), (Xt, yt) = load_mnist_arrays(subset=10000)
for lr in (50.0, 0.5):
    model = fastnet.MLP([784, 64, 10], activation="sigmoid", backend="cpu", seed=0)
    h = model.fit(X, y, epochs=8, batch_size=100, optimizer="sgd", lr=lr, on_nan="ignore")
    curve = ", ".join(f"{v:.3f}" for v in h["loss"])
    print(f"lr {lr}: training loss per epoch {curve}; test accuracy {model.score(Xt, yt):.4f}")

"""Learning curves at batch 100 against batch 1000 (same lr, same epochs)."""
import fastnet
from fastnet.cli import load_mnist_arrays

(X, y), (Xt, yt) = load_mnist_arrays(subset=20000)
for batch in (100, 1000):
    model = fastnet.MLP([784, 128, 10], activation="sigmoid", backend="cpu", seed=0)
    h = model.fit(X, y, epochs=10, batch_size=batch, optimizer="sgd", lr=0.5, validation_data=(Xt, yt))
    curve = ", ".join(f"{v:.3f}" for v in h["val_loss"])
    print(f"batch {batch}: val loss per epoch {curve}; test accuracy {h['val_accuracy'][-1]:.4f}")

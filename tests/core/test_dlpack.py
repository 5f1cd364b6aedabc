"""DLPack both ways (issue 31): fit, predict, evaluate, train_on_batch and set_weights read any
host array that exports ``__dlpack__`` (PyTorch's CPU tensors, JAX's...) without a copy;
get_weights gives NumPy arrays, which export DLPack (``torch.from_dlpack(w)``).

PyTorch is not installed in CI: the DLPack-only objects here wrap NumPy's own ``__dlpack__``
(no ``__array__``, no buffer protocol: NumPy can read them through DLPack only)."""
import numpy as np
import pytest

import fastnet


class DLPackOnly:
    """An array that NumPy can read through DLPack only (as a tensor of another library)."""

    def __init__(self, a, device=None):
        self._a, self._device = a, device

    def __dlpack__(self, **kwargs):
        if self._device is not None:
            raise BufferError("the array lives on a GPU")
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device or self._a.__dlpack_device__()


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4))
    return X, (X[:, 0] > 0).astype(np.int64)


def test_fit_predict_evaluate_read_dlpack_arrays():
    X, y = _data()
    a, b = fastnet.MLP([4, 8, 2], seed=0), fastnet.MLP([4, 8, 2], seed=0)
    a.fit(X, y, epochs=2, verbose=0)
    b.fit(DLPackOnly(X), DLPackOnly(y), epochs=2, verbose=0)
    for k, w in a.get_weights().items():
        np.testing.assert_array_equal(w, b.get_weights()[k])
    np.testing.assert_array_equal(b.predict(DLPackOnly(X)), a.predict(X))
    np.testing.assert_array_equal(b.predict_proba(DLPackOnly(X)), a.predict_proba(X))
    assert b.evaluate(DLPackOnly(X), DLPackOnly(y)) == a.evaluate(X, y)
    b.train_on_batch(DLPackOnly(X[:16]), DLPackOnly(y[:16]))


def test_weights_both_ways():
    m = fastnet.MLP([4, 8, 2], seed=0)
    weights = m.get_weights()
    exported = {k: np.from_dlpack(w) for k, w in weights.items()}  # what torch.from_dlpack reads
    other = fastnet.MLP([4, 8, 2], seed=1)
    other.set_weights({k: DLPackOnly(w * 2) for k, w in exported.items()})
    for k, w in other.get_weights().items():
        np.testing.assert_allclose(w, weights[k] * 2)


def test_a_gpu_dlpack_array_is_refused_naming_the_argument():
    X, y = _data()
    m = fastnet.MLP([4, 8, 2], seed=0)
    with pytest.raises(TypeError, match=r"^X \(DLPackOnly, DLPack device \(2, 0\)\).*tensor.detach\(\).cpu\(\)"):
        m.fit(DLPackOnly(X, device=(2, 0)), y, epochs=1, verbose=0)

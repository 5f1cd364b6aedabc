"""The CUDA ``affine_warp`` kernel under the simulator: the same images as the NumPy
reference (float64) for the same parameters, hand-worked cases, and ``fit(augment=...)``
on cuda-sim training like the CPU.

The session launches at most 2 blocks of 32 threads (``conftest.SIM_LAUNCH``): every
image here has more pixels than a launch, so the grid-stride loop crosses rows.
"""
import numpy as np
import pytest

import fastnet
from fastnet.train.augment import Augment, affine_params
from fastnet.kernels import cuda, reference


def _warp(images, params, dtype):
    images = np.asarray(images, dtype=dtype)
    n, h, w = images.shape
    out = np.full((n, h * w), np.nan, dtype)
    cuda._BOUND.clear()
    cuda.affine_warp(images.reshape(n, h * w), np.ascontiguousarray(params, dtype=dtype), out, h, w)
    assert {key[0] for key in cuda._BOUND} == {cuda._k_affine_warp}  # its own kernel, launched
    return out.reshape(n, h, w)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (9, 7), (12, 12)])
def test_same_images_as_the_reference(dtype, tol, shape):
    h, w = shape
    rng = np.random.default_rng(h * 100 + w)
    n = 5
    images = rng.random((n, h, w)).astype(dtype)
    params = Augment(shift=2, rotate=30, scale=0.3).draw(rng, n, shape).astype(dtype)
    params[0] = (1, 0, 0, 0, 1, 0)
    got = _warp(images, params, dtype)
    want = np.full((n, h * w), np.nan)
    reference.affine_warp(images.reshape(n, h * w).astype(np.float64), params.astype(np.float64), want, h, w)
    np.testing.assert_allclose(got.reshape(n, -1), want, rtol=0, atol=tol)
    assert np.array_equal(got[0], images[0])  # the identity row: exactly


def test_hand_worked_shift_and_quarter_turn():
    img = np.zeros((2, 4, 6))
    img[0, 1, 2] = 1.0
    img[1] = np.arange(24).reshape(4, 6)
    params = np.concatenate([affine_params(1, 0, 0, 1, (4, 6)), affine_params(0, 1, 0, 1, (4, 6))])
    got = _warp(img, params, np.float64)
    want0 = np.zeros((4, 6))
    want0[1, 3] = 1.0  # one column right
    want1 = np.zeros((4, 6))
    want1[1:] = img[1, :-1]  # one row down
    np.testing.assert_array_equal(got[0], want0)
    np.testing.assert_array_equal(got[1], want1)
    sq = np.arange(16, dtype=float).reshape(1, 4, 4)
    got = _warp(sq, affine_params(0, 0, 90, 1, (4, 4)), np.float64)
    np.testing.assert_allclose(got[0], np.rot90(sq[0]), rtol=0, atol=1e-9)


@pytest.mark.once  # (tens of seconds under the simulator)
def test_fit_with_augmentation_on_cuda_sim_trains_like_cpu():
    rng = np.random.default_rng(0)
    X = rng.random((96, 64)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    aug = Augment(shift=1.5, rotate=20, scale=0.1)
    curves, weights = {}, {}
    for backend in ("cpu", "cuda-sim"):
        model = fastnet.MLP([64, 8, 3], backend=backend, seed=0)
        assert "affine_warp" in model.backend_.kernel_set.fused
        history = model.fit(X, y, epochs=2, batch_size=48, lr=1e-2, augment=aug)
        curves[backend] = history["loss"]
        weights[backend] = list(model.get_weights().values())
    np.testing.assert_allclose(curves["cuda-sim"], curves["cpu"], rtol=1e-4)
    for a, b in zip(weights["cuda-sim"], weights["cpu"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    # and the augmentation mattered: without it the same seed trains to other weights
    plain = fastnet.MLP([64, 8, 3], backend="cuda-sim", seed=0)
    plain.fit(X, y, epochs=2, batch_size=48, lr=1e-2)
    assert not np.allclose(list(plain.get_weights().values())[0], weights["cuda-sim"][0], atol=1e-5)


def test_the_reference_kernel_runs_on_the_cupy_contract_like_the_fused_cpu_one():
    """``kernels="reference"`` on cuda-sim: the table's array expression on the strict CuPy
    stand-in (every call checked against CuPy's signatures) trains like the CPU."""
    rng = np.random.default_rng(0)
    X = rng.random((40, 36)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    aug = Augment(shift=1, rotate=10)
    losses = []
    for backend, kernels in (("cuda-sim", "reference"), ("cpu", "fused")):
        model = fastnet.MLP([36, 8, 3], backend=backend, kernels=kernels, seed=0)
        assert (model.backend_.kernel_set.affine_warp is reference.affine_warp) == (kernels == "reference")
        losses.append(model.fit(X, y, epochs=2, batch_size=16, augment=aug)["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)

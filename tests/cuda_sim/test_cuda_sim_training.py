"""End to end: the cuda-sim backend (NumPy arrays, the numba.cuda kernels under the
simulator) trains like the CPU backend."""
import numpy as np
import pytest

import fastnet


@pytest.mark.once  # (tens of seconds under the simulator)
def test_cuda_sim_training_matches_cpu():
    assert "cuda-sim" in fastnet.available_backends()
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (512, 784)).astype(np.float32) / 255  # MNIST-shaped
    y = rng.integers(0, 10, 512)
    curves = {}
    for backend in ("cpu", "cuda-sim"):
        model = fastnet.MLP([784, 32, 10], activation="relu", backend=backend, seed=0)
        assert model.backend_.name == backend
        history = model.fit(X, y, epochs=2, batch_size=128, optimizer="adam", lr=1e-3)
        curves[backend] = history["loss"]
    assert len(curves["cpu"]) == 2
    np.testing.assert_allclose(curves["cuda-sim"], curves["cpu"], rtol=1e-4)


@pytest.mark.once  # (tens of seconds under the simulator)
def test_gelu_fused_and_adagrad_reference_train_on_cuda_sim_like_cpu():
    """GELU (fused in kernels/cuda.py) and Adagrad (reference only: it falls back to the
    table's array expression on the CuPy contract) train on cuda-sim as on the CPU."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((256, 8)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    curves = {}
    for backend in ("cpu", "cuda-sim"):
        model = fastnet.MLP([8, 16, 2], activation="gelu", backend=backend, seed=0)
        kernels = model.backend_.kernel_set
        assert "gelu_fwd" in kernels.fused and "adagrad_update" in kernels.fallback
        history = model.fit(X, y, epochs=4, batch_size=64, optimizer="adagrad", lr=0.05)
        curves[backend] = history["loss"]
    assert curves["cpu"][-1] < curves["cpu"][0]
    np.testing.assert_allclose(curves["cuda-sim"], curves["cpu"], rtol=1e-4)


def test_a_cuda_sim_model_pickles_and_deep_copies():
    import copy
    import pickle

    rng = np.random.default_rng(2)
    X = rng.standard_normal((64, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    for fit in (False, True):
        m = fastnet.MLP([6, 8, 2], backend="cuda-sim", seed=0)
        if fit:
            m.fit(X, y, epochs=2, batch_size=32, optimizer="adam")
        for c in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
            assert c.backend_.name == "cuda-sim" and c.built == fit
            if fit:
                np.testing.assert_array_equal(c.predict_proba(X), m.predict_proba(X))
                assert c.optimizer_.t == m.optimizer_.t


@pytest.mark.once  # (tens of seconds under the simulator)
def test_sample_weights_train_on_cuda_sim_like_cpu():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((96, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    w = rng.integers(0, 3, 96).astype(np.float64)
    curves = {}
    for backend in ("cpu", "cuda-sim"):
        m = fastnet.MLP([6, 8, 2], backend=backend, seed=0)
        curves[backend] = m.fit(X, y, epochs=3, batch_size=32, optimizer="adam", sample_weight=w)["loss"]
    np.testing.assert_allclose(curves["cuda-sim"], curves["cpu"], rtol=1e-4)

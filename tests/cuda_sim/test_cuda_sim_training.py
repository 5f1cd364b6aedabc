"""End to end: the cuda-sim backend (NumPy arrays, the numba.cuda kernels under the
simulator) trains like the CPU backend."""
import numpy as np

import fastnet


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

"""One SGD step of a 2-2-1 sigmoid network, worked out by hand.

Network: h = sigmoid(x @ W1 + b1), o = sigmoid(h @ W2 + b2), loss "sse"
0.5 * (o - t)**2, learning rate 0.5, one sample x = (0.05, 0.10), t = 0.01.

Forward (by hand, 9 digits):
  net_h1 = 0.05*0.15 + 0.10*0.20 + 0.35 = 0.3775     h1 = sigmoid(0.3775) = 0.593269992
  net_h2 = 0.05*0.25 + 0.10*0.30 + 0.35 = 0.3925     h2 = sigmoid(0.3925) = 0.596884378
  net_o  = 0.40*h1 + 0.45*h2 + 0.60 = 1.105905967    o  = sigmoid(1.105905967) = 0.751365070
Backward:
  delta_o  = (o - t) * o * (1 - o) = 0.741365070 * 0.186815602 = 0.138498562
  dW2      = (h1, h2) * delta_o = (0.082167041, 0.082667628);  db2 = 0.138498562
  delta_h1 = delta_o * 0.40 * h1 * (1 - h1) = 0.138498562 * 0.40 * 0.241300709 = 0.013367920
  delta_h2 = delta_o * 0.45 * h2 * (1 - h2) = 0.138498562 * 0.45 * 0.240613417 = 0.014996075
  dW1      = x^T (delta_h1, delta_h2) = [[0.000668396, 0.000749804], [0.001336792, 0.001499608]]
  db1      = (0.013367920, 0.014996075)
New weights = old - 0.5 * gradient.
"""
import numpy as np
import pytest

import fastnet


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_sgd_step_by_hand(backend, kernels, dtype):
    model = fastnet.Sequential(
        [fastnet.Dense(2, "sigmoid"), fastnet.Dense(1, "sigmoid")],
        loss="sse", backend=backend, kernels=kernels, dtype=dtype,
    )
    model.build(2)
    model.set_weights({
        "dense_0.W": [[0.15, 0.25], [0.20, 0.30]], "dense_0.b": [0.35, 0.35],
        "dense_1.W": [[0.40], [0.45]], "dense_1.b": [0.60],
    })
    history = model.fit([[0.05, 0.10]], [0.01], epochs=1, batch_size=1, optimizer="sgd", lr=0.5)
    w = model.get_weights()
    tol = 1e-8 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(w["dense_1.W"], [[0.40 - 0.5 * 0.082167041], [0.45 - 0.5 * 0.082667628]], atol=tol)
    np.testing.assert_allclose(w["dense_1.b"], [0.60 - 0.5 * 0.138498562], atol=tol)
    np.testing.assert_allclose(
        w["dense_0.W"],
        [[0.15 - 0.5 * 0.000668396, 0.25 - 0.5 * 0.000749804],
         [0.20 - 0.5 * 0.001336792, 0.30 - 0.5 * 0.001499608]], atol=tol)
    np.testing.assert_allclose(w["dense_0.b"], [0.35 - 0.5 * 0.013367920, 0.35 - 0.5 * 0.014996075], atol=tol)
    # The loss of the step, before the update: 0.5 * (0.751365070 - 0.01)**2
    assert history["loss"][0] == pytest.approx(0.5 * 0.741365070**2, rel=1e-6)

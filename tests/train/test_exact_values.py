"""Exact values, computed independently of fastnet, for the training path.

Every expected number here comes either from a hand computation written out in
a docstring or comment, or from a few lines of plain Python floats following
the published rule (an "oracle" defined in this file, itself anchored to the
hand-computed values).  Nothing is checked by comparing two fastnet code paths
that could share a mistake.

Sections: optimizers (direct steps and through ``fit``), learning-rate
schedules, the training loop's bookkeeping (partial last batch, schedule
progress, validation split, chunked inference, R^2), dropout, checkpoints,
label validation, the floating-point environment during ``fit``, fit's
warnings, batch sizes, ``summary``/``to``.
"""
import math
import os
import warnings
import zipfile

import numpy as np
import pytest

import fastnet
from fastnet import datasets
from fastnet.train.checkpoint import CheckpointError, read_checkpoint
from fastnet.kernels import fpenv

KERNELS = ["fused", "reference"]


# ============================================================== optimizer oracle
class HandOptimizer:
    """The published update rules, one Python float at a time.

    ``g' = g + wd * w`` is the L2-regularised gradient (fastnet's convention for
    every optimizer except AdamW, whose decay is decoupled).

    * sgd:       w <- w - lr g'
    * momentum:  v <- mu v - lr g';  w <- w + v                  (heavy ball, Polyak)
    * nesterov:  v <- mu v - lr g';  w <- w + mu v - lr g'       (Sutskever et al. 2013 in the
      "look-ahead" variable of Bengio et al. 2012, as Keras/TF write it)
    * adam:      m <- b1 m + (1-b1) g';  v <- b2 v + (1-b2) g'^2;
                 w <- w - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)        (Kingma & Ba, alg. 1)
    * adamw:     m, v from g (no decay);  w <- w - lr ((m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + wd w)
                 (Loshchilov & Hutter, alg. 2, with the schedule multiplier folded into lr)
    * rmsprop:   s <- rho s + (1-rho) g'^2;  w <- w - lr g' / (sqrt(s) + eps)   (Hinton, lecture 6e)
    * adagrad:   s <- s + g'^2;  w <- w - lr g' / (sqrt(s) + eps)                  (Duchi et al. 2011)
    """

    def __init__(self, name, wd=0.0, mu=0.9, beta1=0.9, beta2=0.999, eps=1e-8, rho=0.9):
        self.name, self.wd, self.mu = name, wd, mu
        self.beta1, self.beta2, self.eps, self.rho = beta1, beta2, eps, rho
        self.t = 0
        self.state = {}

    def step(self, ws, gs, lr):
        self.t += 1
        t = self.t
        out = []
        for i, (w, g) in enumerate(zip(ws, gs)):
            st = self.state.setdefault(i, {"v": 0.0, "m": 0.0, "s": 0.0})
            gd = g + self.wd * w
            if self.name == "sgd":
                w = w - lr * gd
            elif self.name == "momentum":
                st["v"] = self.mu * st["v"] - lr * gd
                w = w + st["v"]
            elif self.name == "nesterov":
                st["v"] = self.mu * st["v"] - lr * gd
                w = w + self.mu * st["v"] - lr * gd
            elif self.name in ("adam", "adamw"):
                gg = gd if self.name == "adam" else g
                st["m"] = self.beta1 * st["m"] + (1 - self.beta1) * gg
                st["v"] = self.beta2 * st["v"] + (1 - self.beta2) * gg * gg
                m_hat = st["m"] / (1 - self.beta1 ** t)
                v_hat = st["v"] / (1 - self.beta2 ** t)
                ratio = m_hat / (math.sqrt(v_hat) + self.eps)
                w = w - lr * (ratio + (self.wd * w if self.name == "adamw" else 0.0))
            elif self.name == "rmsprop":
                st["s"] = self.rho * st["s"] + (1 - self.rho) * gd * gd
                w = w - lr * gd / (math.sqrt(st["s"]) + self.eps)
            elif self.name == "adagrad":
                st["s"] = st["s"] + gd * gd
                w = w - lr * gd / (math.sqrt(st["s"]) + self.eps)
            else:  # pragma: no cover
                raise AssertionError(self.name)
            out.append(w)
        return out


# Two steps from w = 1.0 with gradients 0.5 then 0.25, lr = 0.1, worked by hand:
#
# sgd, wd=0.1:   g1' = 0.5 + 0.1*1 = 0.6,   w1 = 1 - 0.06 = 0.94
#                g2' = 0.25 + 0.1*0.94 = 0.344,   w2 = 0.94 - 0.0344 = 0.9056
# momentum 0.9:  v1 = -0.05, w1 = 0.95;  v2 = 0.9*-0.05 - 0.025 = -0.07, w2 = 0.88
# nesterov 0.9:  v1 = -0.05, w1 = 1 + 0.9*-0.05 - 0.05 = 0.905
#                v2 = -0.07, w2 = 0.905 + 0.9*-0.07 - 0.025 = 0.817
# adam:          m1 = 0.05, v1 = 0.001*0.25 = 0.00025, m^ = 0.05/0.1 = 0.5, v^ = 0.00025/0.001 = 0.25
#                w1 = 1 - 0.1*0.5/(0.5 + 1e-8) = 0.900000002
#                m2 = 0.045 + 0.025 = 0.07, v2 = 0.999*0.00025 + 0.001*0.0625 = 0.00031225
#                m^ = 0.07/(1-0.81) = 0.368421053, v^ = 0.00031225/(1-0.998001) = 0.156203102
#                w2 = 0.900000002 - 0.1*0.368421053/(0.395225381 + 1e-8) = 0.806782040
#                (without bias correction: w2 = w1 - 0.1*0.07/0.01767060 = 0.50; with 1-b1^t as the
#                second correction: w2 = w1 - 0.1*0.3684/0.04054 = -0.009: both far off)
# adam, wd=0.1 (L2): g1' = 0.6, w1 = 1 - 0.1*0.6/(0.6+1e-8) = 0.9000000017
#                g2' = 0.25 + 0.09 = 0.34, m2 = 0.054 + 0.034 = 0.088, v2 = 0.00035964 + 0.0001156 = 0.00047524
#                m^ = 0.463157895, v^ = 0.237738869, w2 = w1 - 0.1*0.463157895/0.487584740 = 0.805009766
# adamw, wd=0.1: w1 = 1 - 0.1*(0.5/(0.5+1e-8) + 0.1*1) = 0.890000002
#                w2 = w1 - 0.1*(0.368421053/0.395225391 + 0.1*0.890000002) = 0.890000002 - 0.102117962 = 0.787882040
# rmsprop 0.9:   s1 = 0.1*0.25 = 0.025, w1 = 1 - 0.05/(0.158113883 + 1e-8) = 0.683772254
#                s2 = 0.0225 + 0.00625 = 0.02875, w2 = w1 - 0.025/(0.169558250 + 1e-8) = 0.536330307
HAND_TWO_STEPS = [
    ("sgd", 0.1, fastnet.SGD, (0.94, 0.9056)),
    ("momentum", 0.0, fastnet.Momentum, (0.95, 0.88)),
    ("nesterov", 0.0, fastnet.Nesterov, (0.905, 0.817)),
    ("adam", 0.0, fastnet.Adam, (0.900000002, 0.806782040)),
    ("adam", 0.1, fastnet.Adam, (0.9000000017, 0.805009766)),
    ("adamw", 0.1, fastnet.AdamW, (0.890000002, 0.787882040)),
    ("rmsprop", 0.0, fastnet.RMSprop, (0.683772254, 0.536330307)),
]


@pytest.mark.parametrize("name, wd, cls, expected", HAND_TWO_STEPS,
                         ids=[f"{n}-wd{wd}" for n, wd, _, _ in HAND_TWO_STEPS])
def test_oracle_matches_hand_computation(name, wd, cls, expected):
    """The oracle itself against the hand-worked numbers above."""
    opt = HandOptimizer(name, wd=wd)
    got = [opt.step([1.0], [0.5], 0.1)[0]]
    got.append(opt.step([got[0]], [0.25], 0.1)[0])
    assert got == pytest.approx(list(expected), abs=1e-9)


def _steps_through(opt, w0, grads, lrs, kernels, dtype="float64"):
    """Run ``opt`` (a fastnet Optimizer) on one parameter array with fixed gradients."""
    backend = fastnet.get_backend("cpu", dtype=dtype, kernels=kernels)
    w = np.array(w0, dtype=dtype)
    g = np.zeros_like(w)
    opt.setup([w], [g], backend)
    out = []
    for gk, lr in zip(grads, lrs):
        g[...] = gk
        opt.step(lr)
        out.append(w.copy())
    return out


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("name, wd, cls, expected", HAND_TWO_STEPS,
                         ids=[f"{n}-wd{wd}" for n, wd, _, _ in HAND_TWO_STEPS])
def test_two_optimizer_steps_equal_hand_values(kernels, name, wd, cls, expected):
    opt = cls(lr=0.1, weight_decay=wd)
    got = _steps_through(opt, [1.0], [[0.5], [0.25]], [0.1, 0.1], kernels)
    assert [float(a[0]) for a in got] == pytest.approx(list(expected), abs=1e-9)
    assert opt.t == 2


GRADS = [[0.5, -1.0, 2.0, 1e-3], [0.3, 0.4, -1.0, 2e-3], [-0.2, 0.1, 0.05, -5e-3]]
W0 = [1.0, -0.5, 0.25, 0.0]
OPTIMIZERS = [
    ("sgd", fastnet.SGD, {}),
    ("momentum", fastnet.Momentum, {"momentum": 0.8}),
    ("nesterov", fastnet.Nesterov, {"momentum": 0.8}),
    ("adam", fastnet.Adam, {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6}),
    ("adamw", fastnet.AdamW, {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6}),
    ("rmsprop", fastnet.RMSprop, {"rho": 0.7, "eps": 1e-6}),
]
_ORACLE_KW = {"momentum": "mu"}


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("name, cls, hyper", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_three_steps_vector_non_default_hyperparameters(kernels, wd, name, cls, hyper, dtype):
    """Three steps on a 4-vector with a different lr each step and non-default hyper-parameters."""
    lrs = [0.1, 0.05, 0.2]
    opt = cls(lr=0.1, weight_decay=wd, **hyper)
    got = _steps_through(opt, W0, GRADS, lrs, kernels, dtype)
    hand = HandOptimizer(name, wd=wd, **{_ORACLE_KW.get(k, k): v for k, v in hyper.items()})
    w = list(W0)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == "float64" else dict(rtol=2e-6, atol=1e-7)
    for k in range(3):
        w = hand.step(w, GRADS[k], lrs[k])
        np.testing.assert_allclose(got[k], w, err_msg=f"step {k + 1}", **tol)


# Gradients of ~1e-8, where eps (1e-8) is as large as sqrt(v) and its place decides the step.
# One step from w = 1.0 with g = 1e-8, lr = 0.1, eps = 1e-8, worked by hand:
#
# adam (and adamw, wd=0): m1 = 0.1 * 1e-8 = 1e-9, v1 = 0.001 * 1e-16 = 1e-19,
#                m^ = 1e-9 / 0.1 = 1e-8, v^ = 1e-19 / 0.001 = 1e-16, sqrt(v^) = 1e-8,
#                w1 = 1 - 0.1 * 1e-8 / (1e-8 + 1e-8) = 0.95
#                (eps inside the root: 0.1 * 1e-8 / sqrt(1e-16 + 1e-8) = 1e-5, w1 = 0.99999)
# rmsprop 0.9:   s1 = 0.1 * 1e-16 = 1e-17, sqrt(s1) = 3.16227766e-9,
#                w1 = 1 - 0.1 * 1e-8 / (3.16227766e-9 + 1e-8) = 1 - 0.0759746927 = 0.9240253073
# adagrad:       s1 = 1e-16, w1 = 1 - 0.1 * 1e-8 / (1e-8 + 1e-8) = 0.95
TINY_GRADS = [[1e-8], [3e-8], [-2e-8], [5e-9]]
EPS_FIRST_STEP = [
    ("adam", fastnet.Adam, {}, 0.95),
    ("adamw", fastnet.AdamW, {"weight_decay": 0.0}, 0.95),
    ("rmsprop", fastnet.RMSprop, {}, 0.9240253073),
    ("adagrad", fastnet.Adagrad, {"eps": 1e-8}, 0.95),
]


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name, cls, hyper, first", EPS_FIRST_STEP, ids=[o[0] for o in EPS_FIRST_STEP])
def test_eps_is_added_to_the_square_root_not_under_it(kernels, dtype, name, cls, hyper, first):
    """sqrt(v) + eps, not sqrt(v + eps): with gradients of 1e-8 the two differ in the first
    digit (0.95 against 0.99999 after one step), far beyond any rounding.  The kernel and the
    reference kernel are both checked against the hand value and the plain-Python oracle."""
    lrs = [0.1, 0.1, 0.05, 0.2]
    opt = cls(lr=0.1, **hyper)
    assert opt.eps == 1e-8
    got = _steps_through(opt, [1.0], TINY_GRADS, lrs, kernels, dtype)
    hand = HandOptimizer(name, eps=1e-8)
    assert hand.step([1.0], TINY_GRADS[0], 0.1)[0] == pytest.approx(first, abs=1e-10)  # the oracle
    hand = HandOptimizer(name, eps=1e-8)
    w = [1.0]
    tol = dict(rtol=1e-13, atol=0) if dtype == "float64" else dict(rtol=1e-6, atol=0)
    for k, (g, lr) in enumerate(zip(TINY_GRADS, lrs)):
        w = hand.step(w, g, lr)
        np.testing.assert_allclose(got[k], w, err_msg=f"step {k + 1}", **tol)
    assert float(got[0][0]) == pytest.approx(first, abs=1e-9 if dtype == "float64" else 1e-6)


# ------------------------------------------------------------ optimizers in fit
# A 1-input 1-output linear model with the mean squared error: for a batch B of m rows,
# p_i = w x_i + b, r_i = p_i - t_i, loss = (1/m) sum r_i^2,
# dL/dw = (2/m) sum r_i x_i, dL/db = (2/m) sum r_i.
# Opt-out kept: the fits compared with hand_fit pass shuffle=False, because the oracle takes the
# batches in the data's order (which rows form each batch is what the hand computation needs).
X5 = [0.5, -1.0, 1.5, 2.0, -0.5]
T5 = [1.0, -1.0, 2.5, 2.0, 0.0]


def _linear_model(kernels="fused", w=0.3, b=-0.2, dtype="float64"):
    m = fastnet.MLP([1, 1], activation="linear", output="linear", loss="mse", backend="cpu",
                    dtype=dtype, kernels=kernels)
    m.build(1)
    m.set_weights({"dense_0.W": [[w]], "dense_0.b": [b]})
    return m


def hand_fit(xs, ts, w, b, batch_size, epochs, opt, lr_at, first_epoch=0):
    """Plain-Python training of the linear model in order (no shuffling).

    Returns (w, b, per-epoch mean losses, lr of the last step of each epoch).
    ``lr_at(progress)`` is the rate at progress = epoch + step / steps.
    """
    n = len(xs)
    bs = n if batch_size is None else min(batch_size, n)
    steps = -(-n // bs)
    losses, lrs = [], []
    for e in range(first_epoch, first_epoch + epochs):
        total = 0.0
        for s in range(steps):
            rows = range(s * bs, min(n, (s + 1) * bs))
            m = len(rows)
            r = [w * xs[i] + b - ts[i] for i in rows]
            total += sum(ri * ri for ri in r)
            gw = sum(2.0 / m * ri * xs[i] for ri, i in zip(r, rows))
            gb = sum(2.0 / m * ri for ri in r)
            lr = lr_at(e + s / steps)
            w, b = opt.step([w, b], [gw, gb], lr)
        losses.append(total / n)
        lrs.append(lr)
    return w, b, losses, lrs


FIT_LR = {"sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adam": 0.05, "adamw": 0.05, "rmsprop": 0.01}


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("name", list(FIT_LR))
def test_fit_equals_hand_training(kernels, wd, name):
    """Two epochs of 3 steps (batches of 2, 2 and 1 rows), every optimizer, through fit."""
    lr = FIT_LR[name]
    model = _linear_model(kernels)
    h = model.fit(np.array(X5)[:, None], np.array(T5), epochs=2, batch_size=2, shuffle=False,
                  optimizer=name, lr=lr, weight_decay=wd)
    w, b, losses, _ = hand_fit(X5, T5, 0.3, -0.2, 2, 2, HandOptimizer(name, wd=wd), lambda p: lr)
    got = model.get_weights()
    assert got["dense_0.W"][0, 0] == pytest.approx(w, rel=1e-11, abs=1e-13)
    assert got["dense_0.b"][0] == pytest.approx(b, rel=1e-11, abs=1e-13)
    assert h["loss"] == pytest.approx(losses, rel=1e-11)
    assert h.params["steps"] == 3 and h.params["batch_size"] == 2 and h.params["n_samples"] == 5
    assert model.optimizer_.t == 6


def test_fit_sgd_partial_last_batch_by_hand():
    """One epoch of SGD, lr 0.1, batches {x=0.5, -1.0}, {1.5, 2.0}, {-0.5}: w0 = 0.3, b0 = -0.2.

    step 1: p = (-0.05, -0.5), r = (-1.05, 0.5); dw = (2/2)(-1.05*0.5 + 0.5*-1) = -1.025,
            db = -1.05 + 0.5 = -0.55;  w = 0.3 + 0.1025 = 0.4025, b = -0.2 + 0.055 = -0.145
    step 2: p = (0.45875, 0.66), r = (-2.04125, -1.34); dw = -2.04125*1.5 - 1.34*2 = -5.741875,
            db = -3.38125;  w = 0.4025 + 0.5741875 = 0.9766875, b = -0.145 + 0.338125 = 0.193125
    step 3 (one row): p = -0.48834375 + 0.193125 = -0.29521875, r = -0.29521875;
            dw = 2*(-0.29521875)*(-0.5) = 0.29521875, db = -0.5904375
            w = 0.9766875 - 0.029521875 = 0.947165625, b = 0.193125 + 0.05904375 = 0.25216875
    epoch loss = (1.05^2 + 0.5^2 + 2.04125^2 + 1.34^2 + 0.29521875^2) / 5
               = (1.1025 + 0.25 + 4.1667015625 + 1.7956 + 0.0871541104) / 5 = 1.4803911346
    initial loss (first batch, before any step) = (1.1025 + 0.25) / 2 = 0.67625
    """
    model = _linear_model()
    h = model.fit(np.array(X5)[:, None], np.array(T5), epochs=1, batch_size=2, shuffle=False,
                  optimizer="sgd", lr=0.1)
    got = model.get_weights()
    assert got["dense_0.W"][0, 0] == pytest.approx(0.947165625, abs=1e-12)
    assert got["dense_0.b"][0] == pytest.approx(0.25216875, abs=1e-12)
    assert h["loss"][0] == pytest.approx(1.4803911346, abs=1e-9)
    assert h.params["initial_loss"] == pytest.approx(0.67625, abs=1e-12)
    # its standard error as an estimate of the 5 rows' loss: the two rows' losses 1.1025 and 0.25,
    # sample variance 2 * 0.42625**2 / 1 = 0.363378125, over 2 rows of 5 drawn without
    # replacement: sqrt(0.363378125 / 2 * (5 - 2) / (5 - 1)) = 0.369143328363117
    assert h.params["initial_loss_se"] == pytest.approx(0.369143328363117, abs=1e-12)


def test_fit_records_the_loss_before_training_on_the_epochs_scale_for_sse():
    """"sse" sums over the rows (0.5 * sum (p - t)**2): an epoch's loss is over all 5 rows, so the
    loss before training, from the first batch of 2, is scaled to 5 rows: 0.5 * (1.1025 + 0.25) * 5 / 2
    = 1.690625 (the first batch's own sum, 0.67625, would make any epoch look 2.5x worse), and its
    standard error 0.5 * 5 * 0.369143328363117 (the mean row's, as in the "mse" case above)."""
    model = fastnet.MLP([1, 1], activation="linear", output="linear", loss="sse", backend="cpu", dtype="float64")
    model.build(1)
    model.set_weights({"dense_0.W": [[0.3]], "dense_0.b": [-0.2]})
    h = model.fit(np.array(X5)[:, None], np.array(T5), epochs=1, batch_size=2, shuffle=False,
                  optimizer="sgd", lr=0.01)
    assert h.params["initial_loss"] == pytest.approx(1.690625, abs=1e-12)
    assert h.params["initial_loss_se"] == pytest.approx(2.5 * 0.369143328363117, abs=1e-12)


@pytest.mark.parametrize("kernels", KERNELS)
def test_optimizer_object_passed_to_fit(kernels):
    """An Adam instance with its own betas; fit's lr overrides the instance's."""
    opt = fastnet.Adam(lr=0.5, beta1=0.7, beta2=0.95, eps=1e-7)
    model = _linear_model(kernels)
    model.fit(np.array(X5)[:, None], np.array(T5), epochs=1, batch_size=2, shuffle=False,
              optimizer=opt, lr=0.02)
    assert model.optimizer_ is opt and opt.lr == 0.02
    w, b, _, _ = hand_fit(X5, T5, 0.3, -0.2, 2, 1, HandOptimizer("adam", beta1=0.7, beta2=0.95, eps=1e-7),
                          lambda p: 0.02)
    got = model.get_weights()
    assert [got["dense_0.W"][0, 0], got["dense_0.b"][0]] == pytest.approx([w, b], rel=1e-11)
    # Without lr, the instance's own rate is used; state continues (fit twice == once with more epochs).
    opt2 = fastnet.RMSprop(lr=0.03, rho=0.8)
    model = _linear_model(kernels)
    model.fit(np.array(X5)[:, None], np.array(T5), epochs=1, batch_size=5, optimizer=opt2)  # full batch
    model.fit(np.array(X5)[:, None], np.array(T5), epochs=1, batch_size=5, optimizer=opt2)  # full batch
    w, b, _, _ = hand_fit(X5, T5, 0.3, -0.2, 5, 2, HandOptimizer("rmsprop", rho=0.8), lambda p: 0.03)
    got = model.get_weights()
    assert [got["dense_0.W"][0, 0], got["dense_0.b"][0]] == pytest.approx([w, b], rel=1e-11)
    assert opt2.t == 2


def test_fit_applies_the_schedule_at_each_step():
    """SGD with Exponential(gamma=0.5), lr 0.1, 3 steps per epoch: step s of epoch e uses
    0.1 * 0.5 ** (e + s/3).  The epoch's logged lr is its last step's:
    epoch 1: 0.1 * 0.5**(2/3) = 0.1 * 0.629960525 = 0.0629960525
    epoch 2: 0.1 * 0.5**(5/3) = 0.1 * 0.314980262 = 0.0314980262"""
    model = _linear_model()
    h = model.fit(np.array(X5)[:, None], np.array(T5), epochs=2, batch_size=2, shuffle=False,
                  optimizer="sgd", lr=0.1, lr_schedule=fastnet.Exponential(gamma=0.5))
    assert h["lr"] == pytest.approx([0.0629960525, 0.0314980262], abs=1e-10)
    w, b, _, _ = hand_fit(X5, T5, 0.3, -0.2, 2, 2, HandOptimizer("sgd"), lambda p: 0.1 * 0.5 ** p)
    got = model.get_weights()
    assert [got["dense_0.W"][0, 0], got["dense_0.b"][0]] == pytest.approx([w, b], rel=1e-12)


class _RecordingSchedule(fastnet.Constant):
    def __init__(self):
        self.calls = []

    def __call__(self, epoch, base_lr):
        self.calls.append(epoch)
        return base_lr


def test_schedule_progress_is_epoch_plus_step_fraction():
    """5 rows in batches of 2: 3 steps per epoch, so progress 0, 1/3, 2/3, 1, 4/3, 5/3."""
    sched = _RecordingSchedule()
    model = _linear_model()
    X, T = np.array(X5)[:, None], np.array(T5)
    model.fit(X, T, epochs=2, batch_size=2, optimizer="sgd", lr=0.01, lr_schedule=sched)
    assert sched.calls == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3], abs=1e-15)
    assert sched.total_epochs == 2
    sched.calls.clear()
    model.fit(X, T, epochs=1, batch_size=2, optimizer="sgd", lr=0.01, lr_schedule=sched)
    assert sched.calls == pytest.approx([2, 7 / 3, 8 / 3], abs=1e-15)
    assert sched.total_epochs == 3


# =================================================================== schedules
def test_constant_schedule():
    s = fastnet.Constant()
    assert [s(e, 0.3) for e in (0, 0.5, 7)] == [0.3, 0.3, 0.3]
    assert fastnet.core.schedules.get_schedule(None)(4.2, 0.1) == 0.1


def test_step_decay_values():
    """StepDecay(step_size=2, gamma=0.5): 0.5 ** floor(epoch / 2)."""
    s = fastnet.StepDecay(step_size=2, gamma=0.5)
    got = [s(e, 1.0) for e in (0, 1.99, 2, 3.5, 4, 7.9)]
    assert got == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    s3 = fastnet.StepDecay(step_size=3, gamma=0.1)
    assert s3(2.9, 2.0) == 2.0 and s3(3.0, 2.0) == pytest.approx(0.2) and s3(6.0, 2.0) == pytest.approx(0.02)


def test_exponential_values():
    """gamma ** epoch: 0.5**0 = 1, 0.5**1 = 0.5, 0.5**2.5 = 1/(4 sqrt 2) = 0.1767766953."""
    s = fastnet.Exponential(gamma=0.5)
    assert s(0, 1.0) == 1.0 and s(1, 1.0) == 0.5
    assert s(2.5, 2.0) == pytest.approx(2 * 0.1767766953, rel=1e-9)


def test_cosine_with_warmup_values():
    """Cosine(warmup=2, min_lr=0.1), 10 epochs, base 1.0:
    warm-up: epoch 1 -> 1/2 = 0.5, epoch 0.5 -> 0.25, epoch 0 -> ~0;
    decay: frac = (epoch - 2) / 8, lr = 0.1 + 0.45 (1 + cos(pi frac)):
      epoch 2 -> 0.1 + 0.45*2 = 1.0;  epoch 4 -> frac 1/4, cos = 0.7071067812 -> 0.8681980515
      epoch 6 -> frac 1/2 -> 0.55;     epoch 10 -> 0.1;  epoch 12 -> clipped to 0.1."""
    s = fastnet.Cosine(warmup=2.0, min_lr=0.1)
    s.total_epochs = 10
    assert s(0, 1.0) == pytest.approx(0.0, abs=1e-9)
    assert s(0.5, 1.0) == pytest.approx(0.25, abs=1e-9)
    assert s(1, 1.0) == pytest.approx(0.5, abs=1e-9)
    assert s(2, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert s(4, 1.0) == pytest.approx(0.8681980515, abs=1e-9)
    assert s(6, 1.0) == pytest.approx(0.55, abs=1e-12)
    assert s(10, 1.0) == pytest.approx(0.1, abs=1e-12)
    assert s(12, 1.0) == pytest.approx(0.1, abs=1e-12)
    # No warm-up, min_lr 0, 4 epochs, base 0.2: epoch 1 -> 0.1 (1 + cos(pi/4)) = 0.1707106781
    c = fastnet.Cosine()
    c.total_epochs = 4
    assert c(0, 0.2) == pytest.approx(0.2) and c(1, 0.2) == pytest.approx(0.1707106781, abs=1e-9)
    assert c(2, 0.2) == pytest.approx(0.1) and c(4, 0.2) == pytest.approx(0.0, abs=1e-15)


def test_onecycle_values():
    """OneCycle(pct_start=0.3, div_factor=25, final_div=1e4), 10 epochs, base 1.0:
    lo = 1/25 = 0.04, hi = 1, end = 1e-4; frac = epoch / 10.
      epoch 0:   0.04
      epoch 1.5: frac 0.15, t = 0.5: 0.04 + 0.96 * 0.5 * (1 - cos(pi/2)) = 0.52
      epoch 3:   frac 0.3 (peak): 1.0
      epoch 6.5: frac 0.65, t = 0.35/0.7 = 0.5: 1e-4 + 0.9999 * 0.5 * (1 + 0) = 0.50005
      epoch 10:  1e-4 (and clipped beyond)."""
    s = fastnet.OneCycle(pct_start=0.3, div_factor=25.0, final_div=1e4)
    s.total_epochs = 10
    assert s(0, 1.0) == pytest.approx(0.04, abs=1e-12)
    assert s(1.5, 1.0) == pytest.approx(0.52, abs=1e-12)
    assert s(3, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert s(6.5, 1.0) == pytest.approx(0.50005, abs=1e-12)
    assert s(10, 1.0) == pytest.approx(1e-4, abs=1e-15)
    assert s(11, 1.0) == pytest.approx(1e-4, abs=1e-15)
    assert s(1.5, 0.01) == pytest.approx(0.0052, abs=1e-14)


# ===================================================== loop bookkeeping, inference
def test_validation_split_holds_out_the_last_rows():
    """x = 1, 2, 3, 4; t = 1, 3, 2, 5; validation_split 0.25 -> train on rows 1-3, validate on row 4.
    Full batch SGD, lr 0.1, from w = 0.5, b = 0:
      p = (0.5, 1, 1.5), r = (-0.5, -2, -0.5); dw = (2/3)(-0.5 - 4 - 1.5) = -4, db = (2/3)(-3) = -2
      w = 0.5 + 0.4 = 0.9, b = 0.2;  val: p = 0.9*4 + 0.2 = 3.8, val_loss = (3.8 - 5)^2 = 1.44
      train loss = (0.25 + 4 + 0.25) / 3 = 1.5"""
    model = _linear_model(w=0.5, b=0.0)
    h = model.fit(np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([1.0, 3.0, 2.0, 5.0]), epochs=1,
                  batch_size=None, optimizer="sgd", lr=0.1, validation_split=0.25)
    assert h.params["n_samples"] == 3
    got = model.get_weights()
    assert got["dense_0.W"][0, 0] == pytest.approx(0.9, abs=1e-12)
    assert got["dense_0.b"][0] == pytest.approx(0.2, abs=1e-12)
    assert h["loss"][0] == pytest.approx(1.5, abs=1e-12)
    assert h["val_loss"][0] == pytest.approx(1.44, abs=1e-12)


def test_predict_and_evaluate_over_several_inference_chunks():
    """w = 2, b = 1: the prediction of x is exactly 2x + 1 (integers, float64), on more rows than
    two inference chunks; targets 2x + 1 + (1 on even rows, -1 on odd rows): mse exactly 1."""
    model = _linear_model(w=2.0, b=1.0)
    n = 2 * 1024 + 77
    x = np.arange(n, dtype=np.float64)
    np.testing.assert_array_equal(model.predict(x[:, None]), 2 * x + 1)
    t = 2 * x + 1 + np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    assert model.evaluate(x[:, None], t) == pytest.approx(1.0, abs=1e-12)
    assert model.evaluate(x[-5:, None], t[-5:]) == pytest.approx(1.0, abs=1e-12)


def test_score_is_r2_for_regression():
    """w = 2, b = 0: x = 1..4 -> p = 2, 4, 6, 8; t = 2, 5, 6, 9.
    ss_res = 0 + 1 + 0 + 1 = 2; mean t = 5.5, ss_tot = 12.25 + 0.25 + 0.25 + 12.25 = 25;
    R^2 = 1 - 2/25 = 0.92."""
    model = _linear_model(w=2.0, b=0.0)
    X = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert model.score(X, [2.0, 5.0, 6.0, 9.0]) == pytest.approx(0.92, abs=1e-12)
    # Predicting the mean everywhere scores 0; perfect predictions score 1.
    flat = _linear_model(w=0.0, b=5.5)
    assert flat.score(X, [2.0, 5.0, 6.0, 9.0]) == pytest.approx(0.0, abs=1e-12)
    assert model.score(X, [2.0, 4.0, 6.0, 8.0]) == 1.0


def test_score_is_accuracy_for_classifiers():
    """Logits x @ W: W = [[1, -1], [0, 0]] -> class 0 when x0 > 0, else class 1 (b = 0)."""
    model = fastnet.MLP([2, 2], backend="cpu", dtype="float64")
    model.build(2)
    model.set_weights({"dense_0.W": [[1.0, -1.0], [0.0, 0.0]], "dense_0.b": [0.0, 0.0]})
    X = np.array([[1.0, 0], [2.0, 0], [-1.0, 0], [-3.0, 0]])
    assert model.score(X, [0, 0, 1, 0]) == 0.75
    assert model.score(X, [0, 0, 1, 1]) == 1.0


def _summary(model):
    """The text ``model.summary()`` prints (each line given to ``print_fn``, as Keras's)."""
    lines = []
    assert model.summary(print_fn=lines.append) is None
    return "\n".join(lines)


def test_summary_counts_parameters():
    """784-256-10: 784*256 + 256 = 200,960 and 256*10 + 10 = 2,570; total 203,530.
    Without biases: 200,704 + 2,560 = 203,264.  Dropout layers have none."""
    model = fastnet.MLP([784, 256, 10], dropout=0.5, backend="cpu", seed=0)
    model.build(784)
    text = _summary(model)
    lines = text.splitlines()
    assert "200,960" in lines[1] and "2,570" in lines[3]
    assert lines[2].split()[0] == "dropout_0" and lines[2].split()[2] == "0"
    assert "total parameters: 203,530" in lines[-1]
    nobias = fastnet.MLP([784, 256, 10], use_bias=False, backend="cpu", seed=0).build(784)
    assert "total parameters: 203,264" in _summary(nobias)
    small = fastnet.MLP([3, 4, 2], backend="cpu", seed=0).build(3)
    # 3*4 + 4 = 16, 4*2 + 2 = 10, total 26
    assert [ln.split()[2] for ln in _summary(small).splitlines()[1:3]] == ["16", "10"]
    assert "total parameters: 26 " in _summary(small)


@pytest.mark.parametrize("kernels", KERNELS)
def test_to_keeps_weights_and_optimizer_state(kernels):
    """Adam on the linear model: 1 epoch (3 steps) in float64, then .to("cpu") (float64 again),
    1 more epoch: equal to 6 uninterrupted hand steps.  Then .to(dtype float32): weights and
    state rounded to float32, training continues in float32."""
    X, T = np.array(X5)[:, None], np.array(T5)
    model = _linear_model(kernels)
    model.fit(X, T, epochs=1, batch_size=2, shuffle=False, optimizer="adam", lr=0.05)
    assert model.to("cpu") is model
    model.fit(X, T, epochs=1, batch_size=2, shuffle=False, optimizer="adam", lr=0.05)
    hand = HandOptimizer("adam")
    w, b, _, _ = hand_fit(X5, T5, 0.3, -0.2, 2, 2, hand, lambda p: 0.05)
    got = model.get_weights()
    assert [got["dense_0.W"][0, 0], got["dense_0.b"][0]] == pytest.approx([w, b], rel=1e-11)
    assert model.optimizer_.t == 6

    w64 = model.get_weights()
    m64 = [st["m"].copy() for st in model.optimizer_.state]
    model.to("cpu", dtype="float32")
    assert model.dtype == "float32" and model.backend == "cpu"
    for name, a in model.get_weights().items():
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, w64[name].astype(np.float32))
    for st, m in zip(model.optimizer_.state, m64):
        assert st["m"].dtype == np.float32
        np.testing.assert_array_equal(st["m"], m.astype(np.float32))
    assert model.optimizer_.t == 6
    model.fit(X, T, epochs=1, batch_size=2, shuffle=False, optimizer="adam", lr=0.05)
    w, b, _, _ = hand_fit(X5, T5, w, b, 2, 1, hand, lambda p: 0.05)
    got = model.get_weights()
    assert got["dense_0.W"].dtype == np.float32
    assert [float(got["dense_0.W"][0, 0]), float(got["dense_0.b"][0])] == pytest.approx([w, b], rel=1e-5)


# ===================================================================== dropout
def _dropout(rate, n_in, batch, kernels, seed=0):
    backend = fastnet.get_backend("cpu", dtype="float64", seed=seed, kernels=kernels)
    layer = fastnet.Dropout(rate)
    layer.build(n_in, backend, np.random.default_rng(0))
    layer.allocate(batch)
    return layer


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_dropout_forward_zero_or_scaled_and_unbiased(kernels, rate):
    """Each entry is 0 (probability p) or x / (1 - p).  With x = 1 on N = 100,000 entries the
    output's mean is 1 in expectation, with standard deviation sqrt(p / ((1 - p) N)) (each entry
    has variance (1-p) / (1-p)^2 - 1 = p / (1-p)); the dropped fraction is p +- sqrt(p(1-p)/N)."""
    n, k = 200, 500
    N = n * k
    layer = _dropout(rate, k, n, kernels)
    x = np.random.default_rng(1).uniform(0.5, 1.5, size=(n, k))
    out = layer.forward(x, True).copy()
    dropped = out == 0
    kept = ~dropped
    np.testing.assert_allclose(out[kept], x[kept] / (1 - rate), rtol=1e-14)
    assert abs(dropped.mean() - rate) < 5 * math.sqrt(rate * (1 - rate) / N)
    ones = layer.forward(np.ones((n, k)), True)
    assert abs(ones.mean() - 1.0) < 5 * math.sqrt(rate / ((1 - rate) * N))
    assert set(np.unique(ones).tolist()) == {0.0, 1 / (1 - rate)}
    # At inference: the identity.
    np.testing.assert_array_equal(layer.forward(x, False), x)


@pytest.mark.parametrize("kernels", KERNELS)
def test_dropout_backward_uses_the_forward_mask(kernels):
    """dL/dx = dL/dy * keep: exactly 0 where the forward output was dropped, dy / (1 - p) elsewhere."""
    rate, n, k = 0.4, 64, 300
    layer = _dropout(rate, k, n, kernels)
    x = np.random.default_rng(2).uniform(0.5, 1.5, size=(n, k))  # never 0: out == 0 <=> dropped
    out = layer.forward(x, True).copy()
    dy = np.random.default_rng(3).normal(size=(n, k)) + 3.0
    dx = layer.backward(dy.copy(), True).copy()
    dropped = out == 0
    assert dropped.any() and (~dropped).any()
    assert np.all(dx[dropped] == 0)
    np.testing.assert_allclose(dx[~dropped], dy[~dropped] / (1 - rate), rtol=1e-14)
    assert layer.backward(dy.copy(), False) is None


@pytest.mark.parametrize("kernels", KERNELS)
def test_dropout_masks_change_between_steps(kernels):
    """Each training step draws a new mask (the generator's counter advances)."""
    layer = _dropout(0.5, 100, 10, kernels)
    a = layer.forward(np.ones((10, 100)), True).copy()
    b = layer.forward(np.ones((10, 100)), True).copy()
    # Two independent masks of 1000 entries agree on ~500; identical ones on all 1000.
    assert (a == b).sum() < 600


# ================================================================= checkpoints
def _blobs(n=120, seed=0):
    return datasets.make_blobs(n_samples=n, seed=seed)


def test_checkpoint_with_altered_array_fails_its_checksum(tmp_path):
    """A checkpoint rewritten by np.savez with one changed value (so the zip and its CRCs are valid,
    the metadata entry unchanged) must be refused by its SHA-256, not by the zip reader."""
    path = tmp_path / "run.npz"
    X, y = _blobs()
    model = fastnet.MLP([2, 4, 3], backend="cpu", seed=0)
    model.fit(X, y, epochs=1, optimizer="adam", callbacks=[fastnet.ModelCheckpoint(path)])
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    assert "__fastnet__" in arrays and "param/dense_0.W" in arrays and "opt/0/m" in arrays

    # Unchanged arrays written back the same way: still a good checkpoint.
    np.savez(path, **arrays)
    meta, _ = read_checkpoint(path)
    assert meta["history"]["epochs"] == [1]

    for name in ("param/dense_0.W", "opt/0/m"):
        altered = dict(arrays)
        altered[name] = arrays[name].copy()
        altered[name].flat[0] += 0.25
        bad = tmp_path / f"bad-{name.replace('/', '_')}.npz"
        np.savez(bad, **altered)
        with zipfile.ZipFile(bad) as zf:
            assert zf.testzip() is None  # every CRC is right
        with pytest.raises(CheckpointError, match="failed its checksum"):
            read_checkpoint(bad)
        fresh = fastnet.MLP([2, 4, 3], backend="cpu", seed=0)
        with pytest.raises(CheckpointError, match="failed its checksum"):
            fresh.fit(X, y, epochs=2, optimizer="adam", resume=bad)


def test_model_checkpoint_every_two_epochs(tmp_path, monkeypatch):
    """every=2 over 5 epochs: saved after epochs 2 and 4, and at the end of training (5);
    never after epochs 1 or 3."""
    import fastnet.train.checkpoint as C

    saved = []
    real = C.save_checkpoint
    # monkeypatch: a spy that calls the real save_checkpoint (opt-out kept: it only counts the saves)
    monkeypatch.setattr(C, "save_checkpoint", lambda model, path: (saved.append(model.n_iter_), real(model, path)))
    path = tmp_path / "every2.npz"
    X, y = _blobs()
    model = fastnet.MLP([2, 4, 3], backend="cpu", seed=0)
    model.fit(X, y, epochs=5, optimizer="sgd", callbacks=[fastnet.ModelCheckpoint(path, every=2)])
    assert saved == [2, 4, 5]
    # The files: the latest holds epochs up to 5, the previous one up to 4.
    latest = read_checkpoint(path)[0]["history"]["epochs"]
    prev = read_checkpoint(str(path) + ".prev")[0]["history"]["epochs"]
    assert (latest, prev) == ([1, 2, 3, 4, 5], [1, 2, 3, 4])
    saved.clear()
    model.fit(X, y, epochs=2, optimizer="sgd", callbacks=[fastnet.ModelCheckpoint(path, every=2)])
    assert saved == [6, 7]  # the model's epochs 6 (every 2, counted from its first epoch) and 7 (the end)


@pytest.mark.parametrize("kernels", KERNELS)
def test_resume_restores_adam_state(tmp_path, kernels):
    """Adam, 3 steps per epoch: 1 epoch with a checkpoint, then a new model (other weights)
    resumes to 2 epochs.  The result must be 6 uninterrupted hand steps: m, v and t restored."""
    path = tmp_path / "adam.npz"
    X, T = np.array(X5)[:, None], np.array(T5)
    model = _linear_model(kernels)
    model.fit(X, T, epochs=1, batch_size=2, shuffle=False, optimizer="adam", lr=0.05,
              callbacks=[fastnet.ModelCheckpoint(path)])
    resumed = _linear_model(kernels, w=-7.0, b=3.0)
    h = resumed.fit(X, T, epochs=2, batch_size=2, shuffle=False, optimizer="adam", lr=0.05,
                    resume=path)
    assert h.epochs == [2]
    assert resumed.optimizer_.t == 6
    w, b, losses, _ = hand_fit(X5, T5, 0.3, -0.2, 2, 2, HandOptimizer("adam"), lambda p: 0.05)
    got = resumed.get_weights()
    assert [got["dense_0.W"][0, 0], got["dense_0.b"][0]] == pytest.approx([w, b], rel=1e-11)
    assert resumed.loss_curve_ == pytest.approx(losses, rel=1e-11)
    # The same with an optimizer object like the checkpoint's: it continues the saved state.
    again = _linear_model(kernels, w=-7.0, b=3.0)
    again.fit(X, T, epochs=2, batch_size=2, shuffle=False, optimizer=fastnet.Adam(lr=0.05),
              resume=path)
    assert again.optimizer_.t == 6
    for k, v in got.items():
        assert np.array_equal(again.get_weights()[k], v), k


# ============================================================ label validation
def _classifier():
    return fastnet.MLP([2, 4, 3], backend="cpu", seed=0)


def test_fit_rejects_label_equal_to_n_classes():
    X = np.zeros((4, 2))
    model = _classifier()
    with pytest.raises(ValueError, match=r"\by\[2\] = 3\b.*3 units"):
        model.fit(X, [0, 1, 3, 2], epochs=1)
    assert not model.built
    model.fit(X, [0, 1, 2, 2], epochs=1)  # k - 1 is the largest valid id


def test_evaluate_score_and_validation_data_reject_label_equal_to_n_classes():
    X = np.zeros((4, 2))
    model = _classifier()
    model.fit(X, [0, 1, 2, 2], epochs=1)
    with pytest.raises(ValueError, match=r"\by\[0\] = 3\b"):
        model.evaluate(X, [3, 1, 2, 2])
    with pytest.raises(ValueError, match=r"\by\[3\] = 3\b"):
        model.score(X, [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"validation_data\[1\]\[1\] = 3\b"):
        model.fit(X, [0, 1, 2, 2], epochs=1, validation_data=(X, [0, 3, 1, 1]))
    with pytest.raises(ValueError, match=r"\by\[3\] = 3\b"):
        model.fit(X, [0, 1, 2, 3], epochs=1, validation_split=0.25)
    assert model.n_iter_ == 1


# ======================================================= floating-point environment
def _flushes():
    """True when a float32 denormal (5e-39 < 1.18e-38, the smallest normal) becomes 0."""
    return float(np.float32(5e-39) * np.float32(1.0)) == 0.0 or float(
        (np.array([5e-39], np.float32) * np.float32(1.0))[0]) == 0.0


needs_mxcsr = pytest.mark.skipif(not fpenv.SUPPORTED, reason="flush-to-zero is set on x86-64 only")


class _Probe(fastnet.Callback):
    def __init__(self, fail_at_epoch=None):
        self.seen, self.fail_at_epoch = [], fail_at_epoch

    def on_step_end(self, model, epoch, step):
        self.seen.append(_flushes())

    def on_epoch_end(self, model, epoch, logs):
        if epoch == self.fail_at_epoch:
            raise KeyError("stop from a callback")


@needs_mxcsr
def test_denormals_flushed_during_fit_and_restored_after():
    assert not _flushes(), "denormals are already flushed before fit"
    X, y = _blobs()
    probe = _Probe()
    _classifier().fit(X, y, epochs=2, batch_size=32, callbacks=[probe])
    assert probe.seen and all(probe.seen)
    assert not _flushes()


@needs_mxcsr
def test_float_mode_restored_after_fit_raises():
    assert not _flushes()
    X, y = _blobs()
    probe = _Probe(fail_at_epoch=1)
    with pytest.raises(KeyError, match="stop from a callback"):
        _classifier().fit(X, y, epochs=3, callbacks=[probe])
    assert probe.seen and all(probe.seen)
    assert not _flushes()
    # A diverging run: (1e200 w)^2 overflows at the first step.
    model = _linear_model()
    with pytest.raises(fastnet.TrainingDivergedError):
        model.fit(np.full((4, 1), 1e200), np.zeros(4), epochs=1, optimizer="sgd")
    assert not _flushes()


@needs_mxcsr
def test_callers_own_flush_setting_is_kept():
    previous = fpenv.flush_denormals(True)
    try:
        assert _flushes()
        X, y = _blobs()
        _classifier().fit(X, y, epochs=1)
        assert _flushes()  # put back as it was, not cleared
    finally:
        fpenv.restore(previous)
    assert not _flushes()


# ===================================================================== warnings
def test_fit_warns_on_unscaled_inputs():
    """Raw 0-255 pixel-like values into a sigmoid net: inputs_not_standardized."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(300, 20)).astype(np.float64)
    y = rng.integers(0, 3, 300)
    model = fastnet.MLP([20, 16, 3], activation="sigmoid", backend="cpu", seed=0)
    with pytest.warns(fastnet.FastnetWarning, match="inputs_not_standardized"):
        model.fit(X, y, epochs=3, batch_size=32, optimizer="sgd")
    # diagnose=False: no warning (opt-out kept: the option is what this half of the test checks).
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastnet.FastnetWarning)
        fastnet.MLP([20, 16, 3], activation="sigmoid", backend="cpu", seed=0).fit(
            X, y, epochs=3, batch_size=32, optimizer="sgd", diagnose=False)


def test_healthy_fit_does_not_warn():
    X, y = _blobs(n=300)
    model = fastnet.MLP([2, 16, 3], backend="cpu", seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, epochs=10, batch_size=32, optimizer="adam", lr=0.01)
    assert [str(w.message) for w in caught if issubclass(w.category, fastnet.FastnetWarning)] == []
    assert model.score(X, y) > 0.9


# ================================================================== batch sizes
@pytest.mark.parametrize("batch_size, steps", [(9, 3), (100, 1), (23, 1), (None, 1), (1, 23), (8, 3)])
def test_valid_batch_sizes_train(batch_size, steps):
    """23 rows: batches of 9 -> 3 steps (9, 9, 5); 100 and 23 and None -> one full batch."""
    X, y = _blobs(n=23)
    model = fastnet.MLP([2, 4, 3], backend="cpu", seed=0)
    model.build(2)
    before = model.get_weights()["dense_0.W"].copy()
    counted = []

    class Count(fastnet.Callback):
        def on_step_end(self, model, epoch, step):
            counted.append(step)

    h = model.fit(X, y, epochs=2, batch_size=batch_size, optimizer="sgd", lr=0.1,
                  callbacks=[Count()])
    assert h.params["batch_size"] == (23 if batch_size is None else min(batch_size, 23))
    assert h.params["steps"] == steps
    assert counted == list(range(1, steps + 1)) * 2
    assert np.all(np.isfinite(h["loss"])) and model.optimizer_.t == 2 * steps
    assert not np.array_equal(model.get_weights()["dense_0.W"], before)

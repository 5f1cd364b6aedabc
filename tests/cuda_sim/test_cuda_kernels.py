"""Every CUDA kernel, run by Numba's simulator, against the float64 reference.

Odd shapes (one row, one column, widths that are not a multiple of the block);
outputs poisoned with NaN so an element the kernel never writes shows up;
the grid is capped at 2 blocks of 32 threads (``conftest.SIM_LAUNCH``), so the
kernels' stride loops run on every shape wider than one launch.
"""
import inspect
import zlib

import numba
import numpy as np
import pytest

from fastnet.kernels import KernelSet, conformance, cuda, overrides, reference

SHAPES = [(1, 1), (1, 7), (5, 1), (3, 33), (2, 70)]
DTYPES = [np.float32, np.float64]
FUSED = KernelSet(cuda).fused
# The hand-built activation cases below feed the backward the forward's output:
# activations that save their input (GELU) are covered by the conformance check.
ACTS = [a for a, spec in reference.ACTIVATIONS.items() if spec.saves == "output" and f"{a}_fwd" in FUSED]


def test_runs_under_the_simulator():
    assert numba.config.ENABLE_CUDASIM and cuda._SIM


def test_overrides_only_kernels_of_the_table_with_their_signatures():
    public = {
        n for n, f in vars(cuda).items()
        if inspect.isfunction(f) and f.__module__ == cuda.__name__ and not n.startswith("_")
    }  # fmt: skip
    assert public - set(cuda.API) == set(FUSED)
    assert overrides(cuda) == []  # no public function that overrides nothing (a misspelt name)
    assert {"gelu_fwd", "gelu_bwd"} <= set(FUSED)
    for name in FUSED:
        got = inspect.signature(getattr(cuda, name))
        assert got == inspect.signature(getattr(reference, name)), name


def test_every_fused_kernel_conforms_to_the_reference():
    """Every kernel cuda.py fuses, simulated, against reference on float64 copies."""
    from fastnet.cuda_sim import contract as cupy_contract

    xp = cupy_contract.module()
    cuda.use_array_module(xp)
    assert conformance.check(KernelSet(cuda), to_device=xp.asarray, to_host=xp.asnumpy) == []


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def run(name, *args):
    """Call ``cuda.<name>`` and check it launched its own kernel, once."""
    cuda._BOUND.clear()
    getattr(cuda, name)(*args)
    launched = {key[0] for key in cuda._BOUND}
    assert launched == {getattr(cuda, f"_k_{name}")}, name


def expected(name, *args):
    """Run ``reference.<name>`` on float64 copies; return the copies."""
    copies = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
              for a in args]  # fmt: skip
    getattr(reference, name)(*copies)
    return copies


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def assert_close(got, want, dtype, what=""):
    assert got.dtype == dtype
    want = np.asarray(want, dtype=np.float64)
    big = max(1.0, float(np.abs(want).max(initial=0.0)))
    if dtype == np.float32:
        rtol, atol = 2e-5, 2e-6 * big
    else:
        rtol, atol = 1e-12, 1e-13 * big
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# --------------------------------------------------------------------------
# bias + activation
# --------------------------------------------------------------------------
def pre_activations(rng, shape, dtype):
    z = rng.normal(0.0, 3.0, size=shape)
    z.flat[:: 5] *= 20.0  # some |x| ~ 60: sigmoid/tanh saturate, must not overflow
    return z.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
def test_activation_forward(act, shape, dtype):
    rng = rng_for("fwd", act, shape)
    z = pre_activations(rng, shape, dtype)
    b = rng.normal(size=shape[1]).astype(dtype)
    (want, _) = expected(f"{act}_fwd", z, b)
    run(f"{act}_fwd", z, b)
    assert_close(z, want, dtype, f"{act}_fwd")


def backward_inputs(act, shape, dtype, rng):
    z = pre_activations(rng, shape, dtype)
    getattr(reference, f"{act}_fwd")(z, np.zeros(shape[1], dtype))
    if act in ("relu", "leaky_relu"):
        z.flat[::7] = 0  # the kink: derivative taken as for x <= 0
    dy = rng.normal(size=shape).astype(dtype)
    return z, dy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
def test_activation_backward(act, shape, dtype):
    a, dy = backward_inputs(act, shape, dtype, rng_for("bwd", act, shape))
    dz, db = poisoned(shape, dtype), poisoned(shape[1], dtype)
    _, _, want_dz, want_db = expected(f"{act}_bwd", a, dy, dz, db)
    run(f"{act}_bwd", a, dy, dz, db)
    assert_close(dz, want_dz, dtype, "dz")
    assert_close(db, want_db, dtype, "db")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_activation_backward_in_place(act, dtype):
    """``dz`` may be ``dy`` (the layers reuse the upstream gradient's buffer)."""
    shape = (3, 33)
    a, dy = backward_inputs(act, shape, dtype, rng_for("bwd-inplace", act))
    db = poisoned(shape[1], dtype)
    _, _, want_dz, want_db = expected(f"{act}_bwd", a, dy, dy.copy(), db)
    run(f"{act}_bwd", a, dy, dy, db)
    assert_close(dy, want_dz, dtype, "dz")
    assert_close(db, want_db, dtype, "db")


def test_backward_with_no_rows_zeroes_the_bias_gradient():
    a = np.zeros((0, 5), np.float32)
    db = poisoned(5, np.float32)
    run("relu_bwd", a, a, a.copy(), db)
    assert (db == 0).all()


def test_forward_of_an_empty_array_launches_nothing():
    z = np.zeros((0, 5), np.float32)
    cuda._BOUND.clear()
    cuda.sigmoid_fwd(z, np.zeros(5, np.float32))
    assert not cuda._BOUND


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_nan_stays_nan(act):
    z = np.array([[np.nan, 1.0, -1.0]], np.float32)
    run(f"{act}_fwd", z, np.zeros(3, np.float32))
    assert np.isnan(z[0, 0]) and np.isfinite(z[0, 1:]).all()


# --------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------
def logits_for(rng, shape, dtype):
    x = rng.normal(0.0, 2.0, size=shape)
    x[::2] *= 5000.0  # every other row has logits of order +-1e4
    x.flat[::3] = np.sign(x.flat[::3]) * 1e4
    return x.astype(dtype)


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_xent(shape, dtype, label_dtype):
    n, k = shape
    rng = rng_for("xent", shape, np.dtype(label_dtype).name)
    logits = logits_for(rng, shape, dtype)
    y = rng.integers(0, k, size=n).astype(label_dtype)
    loss, grad = poisoned(n, dtype), poisoned(shape, dtype)
    scale = 1.0 / n
    _, _, want_loss, want_grad, _ = expected("softmax_xent", logits, y, loss, grad, scale)
    before = logits.copy()
    run("softmax_xent", logits, y, loss, grad, scale)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    assert_close(loss, want_loss, dtype, "loss")
    assert_close(grad, want_grad, dtype, "grad")
    np.testing.assert_array_equal(logits, before)


def test_softmax_xent_label_out_of_range_gives_nan_loss():
    logits = np.zeros((3, 4), np.float32)
    y = np.array([0, 4, -1], np.int64)
    loss, grad = poisoned(3, np.float32), poisoned((3, 4), np.float32)
    run("softmax_xent", logits, y, loss, grad, 1.0)
    assert np.isfinite(loss[0]) and np.isnan(loss[1:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_sigmoid_bce(shape, dtype):
    rng = rng_for("bce", shape)
    logits = logits_for(rng, shape, dtype)
    t = rng.uniform(size=shape).astype(dtype)
    t.flat[::2] = np.round(t.flat[::2])
    loss, grad = poisoned(shape[0], dtype), poisoned(shape, dtype)
    scale = 0.5 / shape[0]
    _, _, want_loss, want_grad, _ = expected("sigmoid_bce", logits, t, loss, grad, scale)
    run("sigmoid_bce", logits, t, loss, grad, scale)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    assert_close(loss, want_loss, dtype, "loss")
    assert_close(grad, want_grad, dtype, "grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_squared_error(shape, dtype):
    rng = rng_for("mse", shape)
    p = rng.normal(size=shape).astype(dtype)
    t = rng.normal(size=shape).astype(dtype)
    loss, grad = poisoned(shape[0], dtype), poisoned(shape, dtype)
    scale = 1.0 / (shape[0] * shape[1])
    _, _, want_loss, want_grad, _ = expected("squared_error", p, t, loss, grad, scale)
    run("squared_error", p, t, loss, grad, scale)
    assert_close(loss, want_loss, dtype, "loss")
    assert_close(grad, want_grad, dtype, "grad")


# --------------------------------------------------------------------------
# optimizer updates
# --------------------------------------------------------------------------
# name -> (state arrays, hyper-parameters after them)
UPDATES = {
    "sgd_update": (0, (0.1, 1e-2)),
    "momentum_update": (1, (0.1, 0.9, 1e-2)),
    "nesterov_update": (1, (0.1, 0.9, 1e-2)),
    "adam_update": (2, (1e-2, 0.9, 0.999, 1e-8, 1e-2, 1 - 0.9**3, 1 - 0.999**3)),
    "adamw_update": (2, (1e-2, 0.9, 0.999, 1e-8, 1e-2, 1 - 0.9**3, 1 - 0.999**3)),
    "rmsprop_update": (1, (1e-2, 0.9, 1e-8, 1e-2)),
}
# 2-D parameters are flattened by the wrapper (a view: the update lands in w)
PARAM_SHAPES = [(1,), (7,), (70,), (3, 33)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", PARAM_SHAPES)
@pytest.mark.parametrize("name", list(UPDATES))
def test_optimizer_update(name, shape, dtype):
    n_state, hyper = UPDATES[name]
    rng = rng_for("opt", name, shape)
    w = rng.normal(size=shape).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    # state after a few steps: m any sign, v (second moment) non-negative
    state = [rng.normal(scale=0.1, size=shape).astype(dtype) for _ in range(n_state)]
    if n_state:
        state[-1] = np.abs(state[-1]) ** 2
    want = expected(name, w, g, *state, *hyper)
    run(name, w, g, *state, *hyper)
    for i, got in enumerate([w, g, *state]):
        assert_close(got, want[i], dtype, f"argument {i}")


def test_update_rejects_a_non_contiguous_parameter():
    w = np.zeros((4, 6), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="w must be C-contiguous"):
        cuda.sgd_update(w, np.zeros_like(w), 0.1, 0.0)


# --------------------------------------------------------------------------
# launch configurations
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        dict(block=17, row_block=4, bwd_block=(2, 2), max_blocks=3),
        dict(block=64, row_block=64, bwd_block=(32, 2), max_blocks=1),
    ],
    ids=["tiny-blocks", "one-block"],
)
def test_other_launch_configurations(config):
    old = cuda.set_launch_config(**config)
    try:
        test_activation_backward("sigmoid", (2, 70), np.float32)
        test_softmax_xent((2, 70), np.float32, np.int64)
        test_optimizer_update("adam_update", (70,), np.float32)
    finally:
        cuda.set_launch_config(**old)


def test_reductions_are_deterministic():
    a, dy = backward_inputs("tanh", (5, 33), np.float32, rng_for("det"))
    outs = []
    for _ in range(2):
        dz, db = poisoned(a.shape, np.float32), poisoned(33, np.float32)
        cuda.tanh_bwd(a, dy, dz, db)
        outs.append((dz, db))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize(
    "bad",
    [dict(row_block=48), dict(row_block=512), dict(bwd_block=(3, 4)),
     dict(bwd_block=(32, 16)), dict(block=0), dict(max_blocks=0)],
)  # fmt: skip
def test_set_launch_config_rejects_bad_settings(bad):
    before = cuda.set_launch_config()
    with pytest.raises(ValueError, match=next(iter(bad))):
        cuda.set_launch_config(**bad)
    assert cuda.set_launch_config() == before


def test_launch_configuration_is_bound_once():
    z = np.zeros((3, 33), np.float32)
    b = np.zeros(33, np.float32)
    cuda._BOUND.clear()
    cuda.relu_fwd(z, b)
    first = dict(cuda._BOUND)
    cuda.relu_fwd(z, b)
    assert cuda._BOUND == first and len(first) == 1
    ((kernel, grid, block, stream),) = first
    assert (grid, block, stream) == (2, 32, 0)  # 99 elements, capped at 2 blocks

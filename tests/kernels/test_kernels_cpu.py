"""Conformance of the Numba CPU kernels (``fastnet.kernels.cpu``) to the reference.

Every fused kernel is run on float32 and float64 inputs and compared with the
reference kernel run on the same inputs in float64 (the oracle).  Outputs are
filled with NaN first, so a kernel that forgets an element fails.  Shapes
include one row, one column and sizes that are not a multiple of the SIMD
width; logits reach +-1e4.
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")

from fastnet.kernels import KernelSet, conformance, cpu, overrides, reference  # noqa: E402

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (1, 7), (9, 1), (127, 10), (128, 512), (1000, 10)]
FUSED = KernelSet(cpu).fused
# The hand-built activation cases below feed the backward the forward's output:
# activations that save their input (GELU) are covered by the conformance check.
ACT = [a for a, spec in reference.ACTIVATIONS.items() if spec.saves == "output" and f"{a}_fwd" in FUSED]
OPTIMIZERS = [k for k in FUSED if reference.KINDS[k] == "update"]
LOSSES = ["softmax_xent", "sigmoid_bce", "squared_error"]

# float32 kernels are held to a float64 oracle; our float32 exp/tanh/log1p are
# within ~3 ulp (6e-8 each), the rest is float32 rounding of a few operations.
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}

# Absolute slack for activations (outputs of size <= 1): float32 results below
# the smallest normal number flush to 0; in float64 the oracle itself,
# 0.5 * tanh(x / 2) + 0.5, is only accurate to ~eps absolute.
FWD_ATOL = {np.float32: 2 * float(np.finfo(np.float32).tiny), np.float64: 4 * EPS[np.float64]}

HYPOTHESIS = settings(max_examples=30, deadline=None, derandomize=True)


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def assert_close(got, want, dtype, atol=0.0, what=""):
    """``|got - want| <= atol + rtol |want|`` elementwise; ``atol`` may be an array."""
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    err = np.abs(got.astype(np.float64) - want)
    bound = np.broadcast_to(atol + RTOL[dtype] * np.abs(want), want.shape)
    bad = ~(err <= bound)  # NaN (an unwritten element) counts as bad
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        rows = [
            f"  at {tuple(i)}: got {got[tuple(i)]!r}, want {want[tuple(i)]!r}, bound {bound[tuple(i)]:.3g}"
            for i in idx
        ]
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements off\n" + "\n".join(rows))


# --------------------------------------------------------------------------
# the module's surface
# --------------------------------------------------------------------------
def test_overrides_only_kernels_of_the_table():
    dispatchers = {
        name
        for name, obj in vars(cpu).items()
        if isinstance(obj, numba.core.registry.CPUDispatcher) and not name.startswith("_")
    }
    # dropout_mask is a Python wrapper (it turns the 64-bit key and counter into
    # uint64 scalars) around the njit loop _dropout_fill; API names what is public and not a
    # kernel of the table (round_bf16_bits: the bf16 GEMMs' operand rounding).
    assert (dispatchers - set(cpu.API)) | {"dropout_mask"} == set(FUSED)
    assert set(cpu.API).isdisjoint(reference.KERNELS)
    assert set(FUSED) <= set(reference.KERNELS)
    assert overrides(cpu) == []  # no public function that overrides nothing (a misspelt name)
    assert isinstance(cpu._dropout_fill, numba.core.registry.CPUDispatcher)


def test_every_fused_kernel_conforms_to_the_reference():
    assert "gelu_fwd" in FUSED and "gelu_bwd" in FUSED
    assert conformance.check(KernelSet(cpu)) == []


@pytest.mark.parametrize("name", FUSED)
def test_same_signature_as_reference(name):
    fused = getattr(cpu, name)
    assert inspect.signature(getattr(fused, "py_func", fused)) == inspect.signature(getattr(reference, name))
    # cache=True: compiled once per machine, not in every process.
    compiled = cpu._dropout_fill if name == "dropout_mask" else fused
    assert type(compiled._cache).__name__ != "NullCache"


# --------------------------------------------------------------------------
# activations: forward (in place) and backward (with the bias gradient)
# --------------------------------------------------------------------------
def run_fwd(act, z, b):
    """Fused result and float64 oracle for ``<act>_fwd``."""
    dtype = z.dtype.type
    got = z.copy()
    getattr(cpu, f"{act}_fwd")(got, b)
    # Both kernels start with the same float32 add; the oracle takes its
    # rounded result so that only the activation itself is compared.
    x = (z + b).astype(np.float64)
    want = x.copy()
    getattr(reference, f"{act}_fwd")(want, np.zeros(x.shape[1]))
    return got, want, dtype


def run_bwd(act, a, dy, alias):
    dtype = a.dtype.type
    n, k = a.shape
    dy_in = dy.copy()
    dz = dy_in if alias else poisoned((n, k), dtype)
    db = poisoned(k, dtype)
    getattr(cpu, f"{act}_bwd")(a, dy_in, dz, db)
    a64, dy64 = a.astype(np.float64), dy.astype(np.float64)
    wdz, wdb = np.empty((n, k)), np.empty(k)
    getattr(reference, f"{act}_bwd")(a64, dy64, wdz, wdb)
    if not alias:
        np.testing.assert_array_equal(dy_in, dy, err_msg="dy must not change when dz is not dy")
    return dz, db, wdz, wdb, dtype


def check_bwd(act, a, dy, alias):
    dz, db, wdz, wdb, dtype = run_bwd(act, a, dy, alias)
    n = a.shape[0]
    # 1 - a*a and a*(1 - a) cancel near |a| = 1: their error is ~eps absolute
    # (in the float64 oracle too; the fused kernel contracts to an FMA), so
    # the slack is relative to |dy|, not to the result.
    mag = np.abs(dy.astype(np.float64))
    assert_close(dz, wdz, dtype, atol=4 * EPS[dtype] * mag, what=f"{act}_bwd dz")
    # Column sums cancel: bound the error by the sum of magnitudes.
    atol = 4 * EPS[dtype] * (n + 1) * mag.sum(axis=0)
    assert_close(db, wdb, dtype, atol=atol, what=f"{act}_bwd db")


def activation_inputs(rng, shape, dtype, scale=3.0):
    n, k = shape
    z = (rng.standard_normal((n, k)) * scale).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    return z, b


def activation_output(act, rng, shape, dtype):
    """A plausible forward output ``a`` for the backward kernels."""
    z, b = activation_inputs(rng, shape, dtype)
    a = z.astype(np.float64)
    getattr(reference, f"{act}_fwd")(a, b.astype(np.float64))
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACT)
def test_fwd_conforms(act, shape, dtype, rng):
    z, b = activation_inputs(rng, shape, dtype)
    got, want, dtype = run_fwd(act, z, b)
    assert_close(got, want, dtype, atol=FWD_ATOL[dtype], what=f"{act}_fwd")


@pytest.mark.parametrize("alias", [False, True], ids=["dz-separate", "dz-is-dy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACT)
def test_bwd_conforms(act, shape, dtype, alias, rng):
    a = activation_output(act, rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    check_bwd(act, a, dy, alias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACT)
def test_fwd_extremes_are_finite_and_exact(act, dtype):
    x = np.array([[1e4, -1e4, 100.0, -100.0, 0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 89.0, -89.0]], dtype)
    got, want, dtype = run_fwd(act, x, np.zeros(x.shape[1], dtype))
    assert np.isfinite(got).all()
    assert_close(got, want, dtype, atol=FWD_ATOL[dtype], what=f"{act}_fwd")
    if act in ("sigmoid", "tanh"):
        lo = 0.0 if act == "sigmoid" else -1.0
        assert got[0, 0] == 1.0 and got[0, 1] == lo


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACT)
def test_fwd_propagates_nan_like_reference(act, dtype):
    x = np.array([[np.nan, 1.0, -1.0, np.inf, -np.inf]], dtype)
    b = np.zeros(x.shape[1], dtype)
    got, want = x.copy(), x.copy()
    with np.errstate(invalid="ignore"):
        getattr(cpu, f"{act}_fwd")(got, b)
        getattr(reference, f"{act}_fwd")(want, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=RTOL[dtype])


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_float32_transcendentals_dense_sweep(act):
    """Our own float32 exp-based sigmoid/tanh stay within a few ulp everywhere."""
    x = np.concatenate(
        [np.linspace(-90, 90, 200_001), np.logspace(-30, 2, 20_001), -np.logspace(-30, 2, 20_001)]
    ).astype(np.float32)
    got = x.reshape(1, -1).copy()
    getattr(cpu, f"{act}_fwd")(got, np.zeros(x.size, np.float32))
    x64 = x.astype(np.float64)
    want = 1 / (1 + np.exp(-x64)) if act == "sigmoid" else np.tanh(x64)
    normal = np.abs(want) >= np.finfo(np.float32).tiny
    rel = np.abs(got[0] - want)[normal] / np.abs(want[normal])
    assert rel.max() < 4e-7  # ~7 ulp; measured 1.7e-7 (sigmoid), 1.4e-7 (tanh)
    assert np.abs(got[0] - want)[~normal].max(initial=0) <= np.finfo(np.float32).tiny


# --------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------
def loss_targets(name, rng, shape, dtype, ydtype=np.int64):
    n, k = shape
    if name == "softmax_xent":
        return rng.integers(0, k, n).astype(ydtype)
    if name == "sigmoid_bce":
        t = rng.random((n, k))
        hard = rng.random((n, k)) < 0.5
        t[hard] = np.round(t[hard])  # hard 0/1 targets beside soft ones
        return t.astype(dtype)
    return rng.standard_normal((n, k)).astype(dtype)


def check_loss(name, logits, y, scale):
    dtype = logits.dtype.type
    n, k = logits.shape
    loss, grad = poisoned(n, dtype), poisoned((n, k), dtype)
    getattr(cpu, name)(logits, y, loss, grad, scale)
    y64 = y if name == "softmax_xent" else y.astype(np.float64)
    wl, wg = np.empty(n), np.empty((n, k))
    getattr(reference, name)(logits.astype(np.float64), y64, wl, wg, scale)
    assert np.isfinite(loss).all() and np.isfinite(grad).all(), f"{name}: non-finite output"
    # Loss: float32 rounding of O(|logit|) terms; gradient: of O(scale) terms.
    big = 1 + np.abs(logits.astype(np.float64)).max(axis=1) * (1 if name == "softmax_xent" else k)
    assert_close(loss, wl, dtype, atol=16 * EPS[dtype] * big, what=f"{name} loss")
    assert_close(grad, wg, dtype, atol=4 * EPS[dtype] * abs(scale), what=f"{name} grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_conforms(name, shape, dtype, rng):
    logits = (rng.standard_normal(shape) * 4).astype(dtype)
    y = loss_targets(name, rng, shape, dtype)
    check_loss(name, logits, y, 1.0 / shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (127, 10), (1000, 10)])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_huge_logits(name, shape, dtype, rng):
    logits = rng.uniform(-1e4, 1e4, shape).astype(dtype)
    logits[0, 0] = 1e4
    if shape[1] > 1:
        logits[0, 1] = -1e4
    y = loss_targets(name, rng, shape, dtype)
    check_loss(name, logits, y, 1.0 / shape[0])


@pytest.mark.parametrize("ydtype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_label_dtypes(ydtype, dtype, rng):
    logits = rng.standard_normal((33, 10)).astype(dtype)
    check_loss("softmax_xent", logits, rng.integers(0, 10, 33).astype(ydtype), 1 / 33)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_hand_worked(dtype):
    logits = np.array([[1e4, -1e4], [0.0, 0.0], [-1e4, 1e4]], dtype)
    y = np.array([1, 0, 1])
    loss, grad = poisoned(3, dtype), poisoned((3, 2), dtype)
    cpu.softmax_xent(logits, y, loss, grad, 0.5)
    np.testing.assert_allclose(loss, [2e4, np.log(2), 0.0], rtol=RTOL[dtype])
    np.testing.assert_allclose(grad, [[0.5, -0.5], [-0.25, 0.25], [0.0, 0.0]], rtol=RTOL[dtype])


# --------------------------------------------------------------------------
# optimizers
# --------------------------------------------------------------------------
HYPER = {
    "sgd_update": (0.1, 1e-4),
    "momentum_update": (0.1, 0.9, 1e-4),
    "nesterov_update": (0.1, 0.9, 1e-4),
    "adam_update": (1e-3, 0.9, 0.999, 1e-8, 1e-4, 1 - 0.9**3, 1 - 0.999**3),
    "adamw_update": (1e-3, 0.9, 0.999, 1e-8, 1e-2, 1 - 0.9**3, 1 - 0.999**3),
    "rmsprop_update": (1e-3, 0.9, 1e-8, 1e-4),
}
N_STATE = {"sgd_update": 0, "adam_update": 2, "adamw_update": 2}


def optimizer_arrays(name, rng, shape, dtype):
    w = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    n_state = N_STATE.get(name, 1)
    state = [(rng.standard_normal(shape) * 0.1).astype(dtype) for _ in range(n_state)]
    if name in ("adam_update", "adamw_update"):
        state[1] = np.abs(state[1])  # v >= 0
    if name == "rmsprop_update":
        state[0] = np.abs(state[0])
    return w, g, state


def check_optimizer(name, w, g, state, hyper):
    dtype = w.dtype.type
    fw, fs = w.copy(), [s.copy() for s in state]
    getattr(cpu, name)(fw, g, *fs, *hyper)
    rw, rs = w.astype(np.float64), [s.astype(np.float64) for s in state]
    getattr(reference, name)(rw, g.astype(np.float64), *rs, *hyper)
    for got, want, label in zip([fw, *fs], [rw, *rs], ["w", "state0", "state1"]):
        assert_close(got, want, dtype, atol=8 * EPS[dtype] * np.abs(want).max(initial=0), what=f"{name} {label}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (1270,), (128 * 512,), (7, 5), (3, 4, 5)])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_conforms(name, shape, dtype, rng):
    w, g, state = optimizer_arrays(name, rng, shape, dtype)
    check_optimizer(name, w, g, state, HYPER[name])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_on_flat_views_writes_through(name, rng):
    """fastnet's optimizers pass ``w.reshape(-1)``: the update must land in ``w``."""
    w, g, state = optimizer_arrays(name, rng, (6, 4), np.float32)
    w2d, state2d = w.copy(), [s.copy() for s in state]
    getattr(cpu, name)(w.reshape(-1), g.reshape(-1), *[s.reshape(-1) for s in state], *HYPER[name])
    getattr(cpu, name)(w2d, g, *state2d, *HYPER[name])
    for flat, full in zip([w, *state], [w2d, *state2d]):
        np.testing.assert_array_equal(flat, full)


# --------------------------------------------------------------------------
# hypothesis: random shapes and values
# --------------------------------------------------------------------------
dims = st.integers(1, 40)
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**32 - 1)
magnitudes = st.sampled_from([1e-3, 1.0, 10.0, 100.0, 1e4])


@HYPOTHESIS
@given(act=st.sampled_from(ACT), n=dims, k=dims, dtype=dtypes, seed=seeds, mag=magnitudes)
def test_fwd_hypothesis(act, n, k, dtype, seed, mag):
    rng = np.random.default_rng(seed)
    z, b = activation_inputs(rng, (n, k), dtype, scale=mag)
    got, want, dtype = run_fwd(act, z, b)
    assert np.isfinite(got).all()
    assert_close(got, want, dtype, atol=FWD_ATOL[dtype], what=f"{act}_fwd")


@HYPOTHESIS
@given(act=st.sampled_from(ACT), n=dims, k=dims, dtype=dtypes, seed=seeds, alias=st.booleans())
def test_bwd_hypothesis(act, n, k, dtype, seed, alias):
    rng = np.random.default_rng(seed)
    a = activation_output(act, rng, (n, k), dtype)
    dy = rng.standard_normal((n, k)).astype(dtype)
    check_bwd(act, a, dy, alias)


@HYPOTHESIS
@given(name=st.sampled_from(LOSSES), n=dims, k=dims, dtype=dtypes, seed=seeds, mag=magnitudes)
def test_loss_hypothesis(name, n, k, dtype, seed, mag):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, k)) * mag).astype(dtype)
    check_loss(name, logits, loss_targets(name, rng, (n, k), dtype), 1.0 / n)


@HYPOTHESIS
@given(name=st.sampled_from(OPTIMIZERS), size=st.integers(1, 300), dtype=dtypes, seed=seeds)
def test_optimizer_hypothesis(name, size, dtype, seed):
    rng = np.random.default_rng(seed)
    w, g, state = optimizer_arrays(name, rng, (size,), dtype)
    check_optimizer(name, w, g, state, HYPER[name])


# --------------------------------------------------------------------------
# the output activation: softmax (predict_proba's last step)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_fwd_hand_worked_extremes_and_nan_rows(dtype):
    ln2, ln3 = np.log(2.0), np.log(3.0)
    z = np.array([[0.0, ln2 - 1, ln3],           # + b: (0, ln 2, ln 3): 1/6, 2/6, 3/6
                  [1000.0, 0.0, -1000.0],        # exp would overflow without the max subtracted
                  [-1000.0, -1000.0, -1001.0],   # ... and underflow to 0 / 0
                  [np.nan, 0.0, 1.0],            # a NaN row stays NaN ...
                  [5.0, 4.0 + ln2, 5.0 + ln2]], dtype)  # ... and the rows around it do not
    b = np.array([0.0, 1.0, 0.0], dtype)
    got = z.copy()
    cpu.softmax_fwd(got, b)
    want = np.array([[1 / 6, 2 / 6, 3 / 6],
                     [1.0, 0.0, 0.0],                                        # (1000, 1, -1000)
                     np.array([1, np.e, 1 / np.e]) / (1 + np.e + 1 / np.e),  # -1000 + (0, 1, -1)
                     [np.nan] * 3,
                     [0.2, 0.4, 0.4]])                                       # 5 + (0, ln 2, ln 2)
    assert np.isnan(got[3]).all()
    keep = [0, 1, 2, 4]
    assert_close(got[keep], want[keep], dtype, atol=4 * EPS[dtype], what="softmax_fwd")
    assert np.allclose(got[keep].sum(axis=1), 1.0, rtol=0, atol=8 * EPS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (127, 10), (1000, 10), (3, 5000)])
def test_softmax_fwd_conforms(shape, dtype, rng):
    z, b = activation_inputs(rng, shape, dtype, scale=10.0)
    got = z.copy()
    cpu.softmax_fwd(got, b)
    want = z.astype(np.float64)
    reference.softmax_fwd(want, b.astype(np.float64))
    assert_close(got, want, dtype, atol=4 * EPS[dtype], what="softmax_fwd")

"""The GPU precisions (tf32, bf16, fp16 with loss scaling) on the CUDA backend's code, under
the simulator.

On a GPU the training GEMMs are cuBLAS's ``cublasGemmEx`` on float32 arrays with a "fast"
compute type (fastnet.backends.gemm_cublas).  Here the cuda-sim array module brings a stand-in of
CuPy's cuBLAS binding (``cupy_contract._CublasStandIn``): each call is bound against the
installed CuPy's ``gemmEx`` signature and computed from the raw pointers, leading
dimensions and operations as cuBLAS defines them, the inputs rounded to the format.  The
references below round with other code (ml_dtypes, NumPy's float16, frexp) and multiply
in float64.  What this cannot verify: cuBLAS itself and its speed (bench/gpu_check.sh).
"""
import pickle

import ml_dtypes
import numpy as np
import pytest

import fastnet
from fastnet.cuda_sim import contract as C
from fastnet.backends import precision as P
from fastnet.backends.gemm_cublas import CublasMatmul


def rounded(x, precision):
    """``x`` (float64 copy) with float32 values rounded to the precision's significand, to nearest even."""
    x = np.asarray(x, np.float32)
    if precision == "bf16":
        return x.astype(ml_dtypes.bfloat16).astype(np.float64)
    if precision == "fp16":
        return x.astype(np.float16).astype(np.float64)
    m, e = np.frexp(x.astype(np.float64))  # tf32: 11 significant bits (10 stored)
    return np.ldexp(np.round(m * 2.0 ** 11) / 2.0 ** 11, e)


def operand(xp, x, transposed):
    """``x`` on the device, as a C-contiguous array or as the transposed view of one."""
    return xp.asarray(np.ascontiguousarray(x.T)).T if transposed else xp.asarray(x)


@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("shape", [(5, 7, 3), (1, 1, 1), (33, 64, 17)])
def test_the_gemm_is_the_product_of_the_rounded_inputs(precision, ta, tb, shape):
    xp = C.module()
    n, k, m = shape
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal((k, m)).astype(np.float32)
    out = xp.full((n, m), np.nan, dtype=np.float32)
    CublasMatmul(precision, xp)(operand(xp, a, ta), operand(xp, b, tb), out)
    got = out.get()
    want = rounded(a, precision) @ rounded(b, precision)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.sqrt(k))
    if k > 1:  # and not float32's product: the format's rounding is there
        assert np.abs(got - a.astype(np.float64) @ b).max() > 1e-5


def test_empty_gemms_write_zeros_or_nothing():
    xp = C.module()
    mm = CublasMatmul("bf16", xp)
    out = xp.full((3, 4), np.nan, dtype=np.float32)
    mm(xp.zeros((3, 0), dtype=np.float32), xp.zeros((0, 4), dtype=np.float32), out)  # k = 0: a sum of nothing
    assert (out.get() == 0).all()
    mm(xp.zeros((0, 5), dtype=np.float32), xp.zeros((5, 4), dtype=np.float32), out[:0])  # no rows
    with pytest.raises(TypeError, match="float32 arrays, got a float64"):
        mm(xp.zeros((3, 5)), xp.zeros((5, 4), dtype=np.float32), out)
    with pytest.raises(ValueError, match=r"matmul shapes: \(3, 5\) @ \(6, 4\)"):
        mm(xp.zeros((3, 5), dtype=np.float32), xp.zeros((6, 4), dtype=np.float32), out)


def test_strided_operands_and_outputs_are_refused_not_misread():
    """cuBLAS reads a matrix as (pointer, leading dimension): a view that is neither C- nor
    F-contiguous (a column slice) would be read as other numbers; it is refused instead."""
    xp = C.module()
    mm = CublasMatmul("tf32", xp)
    a = xp.ones((4, 6), dtype=np.float32)
    b = xp.ones((3, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=r"C- or F-contiguous, got strides \(24, 8\) for shape \(4, 3\)"):
        mm(a[:, ::2], b, xp.empty((4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        mm(xp.ones((4, 3), dtype=np.float32), b, xp.empty((5, 4), dtype=np.float32).T)


def test_gemmex_calls_are_bound_against_the_installed_cupy():
    lib, handle = C.module().cublas_binding()
    args = [handle(), 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, lib.CUBLAS_COMPUTE_32F_FAST_16BF,
            lib.CUBLAS_GEMM_DEFAULT_TENSOR_OP]
    with pytest.raises(C.ContractError, match=r"gemmEx\(handle, transa, .*computeType, algo\)"):
        lib.gemmEx(*args[:-1])  # one argument short
    with pytest.raises(C.ContractError, match="compute type 12345"):
        lib.gemmEx(*args[:17], 12345, args[18])
    with pytest.raises(C.ContractError, match="leading dimension 0"):
        a = np.ones(1, np.float32)
        lib.gemmEx(*args[:7], a.ctypes.data, 0, 0, *args[10:])


def test_fp16_overflows_to_inf_and_underflows_to_zero_in_the_gemm():
    """What loss scaling is for: float16 inputs lose gradients below ~6e-8 and overflow above 65504."""
    xp = C.module()
    mm = CublasMatmul("fp16", xp)
    one = xp.ones((1, 1), dtype=np.float32)
    out = xp.empty((1, 1), dtype=np.float32)
    mm(xp.full((1, 1), 1e-8, dtype=np.float32), one, out)
    assert out.get()[0, 0] == 0.0
    mm(xp.full((1, 1), 1e-8 * 2.0 ** 16, dtype=np.float32), one, out)  # scaled: kept
    assert out.get()[0, 0] == pytest.approx(1e-8 * 2.0 ** 16, rel=1e-3)
    mm(xp.full((1, 1), 7e4, dtype=np.float32), one, out)
    assert np.isinf(out.get()[0, 0])
    CublasMatmul("bf16", xp)(xp.full((1, 1), 1e-8, dtype=np.float32), one, out)  # bf16: float32's range
    assert out.get()[0, 0] == pytest.approx(1e-8, rel=1e-2)


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 20)).astype(np.float32)
    return X, (X[:, :3] @ rng.standard_normal(3) > 0).astype(np.int64) + (X[:, 3] > 1)


@pytest.mark.once  # (training under the simulator: tens of seconds)
def test_each_gpu_precision_trains_near_float32_and_not_equal_to_it():
    X, y = data(128)
    fit = dict(epochs=2, batch_size=64, lr=0.03)
    # float32: the CPU's curve (cuda-sim's float32 equals it within 1e-4: test_cuda_sim_training)
    f32 = np.array(fastnet.MLP([20, 32, 3], backend="cpu", seed=0).fit(X, y, **fit)["loss"])
    assert f32[-1] < 0.9 * f32[0]  # it trained
    for p, tol in (("tf32", 2e-3), ("fp16", 2e-3), ("bf16", 2e-2)):  # 10, 10 and 7 stored significand bits
        m = fastnet.MLP([20, 32, 3], backend="cuda-sim", seed=0, precision=p)
        assert m.precision == p and m.backend_.precision == p
        loss = np.array(m.fit(X, y, **fit)["loss"])
        assert (m.loss_scaler_ is not None) == (p == "fp16")
        np.testing.assert_allclose(loss, f32, rtol=tol)
        assert not np.allclose(loss, f32, rtol=1e-6, atol=0)  # the GEMMs' rounding shows


def test_an_older_gpu_refuses_what_its_tensor_cores_lack(monkeypatch):
    monkeypatch.setenv(C.SIM_COMPUTE_CAPABILITY, "75")
    with pytest.raises(P.PrecisionUnavailableError, match=r"precision='bf16' is not available here: it needs "
                                                          r"bfloat16 tensor cores .* compute capability 7\.5"):
        fastnet.MLP([4, 2], backend="cuda-sim", precision="bf16")
    with pytest.raises(P.PrecisionUnavailableError, match="TF32 tensor cores"):
        fastnet.MLP([4, 2], backend="cuda-sim", precision="tf32")
    assert fastnet.MLP([4, 2], backend="cuda-sim", precision="fp16").precision == "fp16"
    monkeypatch.setenv(C.SIM_COMPUTE_CAPABILITY, "61")
    with pytest.raises(P.PrecisionUnavailableError, match="float16 tensor cores"):
        fastnet.MLP([4, 2], backend="cuda-sim", precision="fp16")
    assert fastnet.MLP([4, 2], backend="cuda-sim").precision == "float32"  # float32 asks nothing
    from fastnet.cli.info import precision_lines

    assert any(line.startswith("precisions (cuda-sim backend, compute capability 6.1): float32 yes; tf32 no")
               for line in precision_lines())


@pytest.mark.once  # (training under the simulator: tens of seconds)
def test_loss_scaling_keeps_gradients_float16_would_round_to_zero():
    """A linear model whose inputs and weights float16 holds exactly, MSE residuals of 1e-6
    over 128 rows: the loss gradient is ~1.6e-8, below half float16's smallest subnormal.
    Unscaled, the dW GEMM sees zeros; scaled by 2**16, not."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((128, 4)).astype(np.float16).astype(np.float32)
    changes = {}
    for scale in (1.0, 2.0 ** 16):
        m = fastnet.MLP([4, 1], output="linear", backend="cuda-sim", seed=0, precision="fp16")
        m.build(4)
        w = {k: v.astype(np.float16).astype(np.float32) for k, v in m.get_weights().items()}
        m.set_weights(w)
        target = X.astype(np.float64) @ w["dense_0.W"].astype(np.float64) + w["dense_0.b"] + 1e-6
        m.loss_scaler_ = P.LossScaler(scale=scale)
        m.fit(X, target.reshape(-1), epochs=1, batch_size=128, optimizer="sgd", lr=1.0)  # one full batch
        changes[scale] = np.abs(m.get_weights()["dense_0.W"] - w["dense_0.W"]).max()
    assert changes[1.0] == 0.0
    assert changes[2.0 ** 16] > 1e-9


@pytest.mark.once  # (training under the simulator: tens of seconds)
def test_an_overflowing_step_is_skipped_and_the_scale_halved():
    X, y = data(384)
    runs = []
    for scale, rows in ((2.0 ** 24, slice(None)), (None, None)):
        m = fastnet.MLP([20, 32, 3], backend="cuda-sim", seed=0, precision="fp16")
        if scale is None:  # the same from the first scale that fits, on the steps that were not skipped
            scale, rows = runs[0].loss_scaler_.scale, slice(64 * runs[0].loss_scaler_.skipped, None)
        m.loss_scaler_ = P.LossScaler(scale=scale)  # 2**24: the scaled loss gradient overflows float16
        # opt-out kept: shuffle=False, as the second run leaves out the first run's skipped batches
        h = m.fit(X[rows], y[rows], epochs=1, batch_size=64, shuffle=False, optimizer="sgd", lr=0.1)
        assert np.isfinite(h["loss"][0])
        runs.append(m)
    s = runs[0].loss_scaler_
    assert 1 <= s.skipped <= 4, s.get_state()  # the first steps overflow, then the scale fits
    assert s.scale == 2.0 ** 24 * 0.5 ** s.skipped and s.good_steps == 6 - s.skipped  # one halving per skip
    assert runs[1].loss_scaler_.skipped == 0
    for k, w in runs[1].get_weights().items():  # skipped steps changed nothing
        np.testing.assert_allclose(runs[0].get_weights()[k], w, rtol=1e-6, atol=1e-7)


@pytest.mark.once  # (training under the simulator: tens of seconds)
def test_the_loss_scale_is_kept_by_pickle_and_checkpoints_and_gpu_precisions_move_to_the_cpu_as_float32(tmp_path):
    X, y = data(128)
    m = fastnet.MLP([20, 8, 3], backend="cuda-sim", seed=0, precision="fp16")
    m.fit(X, y, epochs=1, batch_size=64, callbacks=[fastnet.ModelCheckpoint(tmp_path / "c.npz")])
    m.loss_scaler_.scale, m.loss_scaler_.good_steps = 1024.0, 7
    assert pickle.loads(pickle.dumps(m)).loss_scaler_.get_state() == m.loss_scaler_.get_state()
    r = fastnet.MLP([20, 8, 3], backend="cuda-sim", seed=0, precision="fp16")
    r.fit(X, y, epochs=1, batch_size=64, resume=tmp_path / "c.npz")
    assert r.loss_scaler_.good_steps == 2 and r.loss_scaler_.scale == 2.0 ** 16  # the checkpoint's (2 steps)
    cpu = m.clone(backend="cpu")
    assert cpu.precision == "float32" and m.to("cpu").precision == "float32"
    np.testing.assert_array_equal(cpu.predict(X), m.predict(X))

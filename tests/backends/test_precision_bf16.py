"""precision="bf16": bfloat16 GEMM inputs, float32 accumulation, weights and optimizer state.

The working path needs a CPU with avx512_bf16 (or amx_bf16) and oneDNN (the ``bf16``
extra): CI has both, and there a missing one fails instead of skipping.  The path of a
machine without them runs everywhere: ``FASTNET_CPU_FEATURES_OFF`` hides the CPU flags.
"""
import os
import pickle

import numpy as np
import pytest

import fastnet
from fastnet.backends import precision as P

WHY = P.bf16_problem()
needs_bf16 = pytest.mark.skipif(WHY is not None and not os.environ.get("CI"), reason=f"bf16 unavailable: {WHY}")


def data(n=512, k=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, k)).astype(np.float32)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)


def test_without_the_cpu_feature_bf16_is_refused_and_nothing_else_changes(monkeypatch):
    monkeypatch.setenv("FASTNET_CPU_FEATURES_OFF", "avx512_bf16,amx_bf16")
    assert not {"avx512_bf16", "amx_bf16"} & P.cpu_flags()
    with pytest.raises(P.PrecisionUnavailableError,
                       match=r"precision='bf16' is not available here: it needs a CPU with bfloat16 dot-product "
                             r"instructions \(avx512_bf16 or amx_bf16\), and this one has neither "
                             r"\(FASTNET_CPU_FEATURES_OFF='avx512_bf16,amx_bf16' hides them\)"):
        fastnet.MLP([20, 8, 3], seed=0, backend="cpu", precision="bf16")
    assert P.supported()["bf16"].startswith("no: it needs a CPU with bfloat16")
    # float32 trains as ever, bit for bit
    X, y = data()
    runs = []
    for env in ("avx512_bf16,amx_bf16", ""):
        monkeypatch.setenv("FASTNET_CPU_FEATURES_OFF", env)
        m = fastnet.MLP([20, 8, 3], seed=0, backend="cpu")
        runs.append(m.fit(X, y, epochs=2, diagnose=False)["loss"])
    assert runs[0] == runs[1]


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be one of 'float32', 'bf16'.*got 'fp8'"):
        fastnet.MLP([4, 2], backend="cpu", precision="fp8")
    with pytest.raises(P.PrecisionUnavailableError, match="dtype must be 'float32', got 'float64'"):
        P.check("bf16", "cpu", "float64")
    with pytest.raises(P.PrecisionUnavailableError, match="'fp16' is a GPU precision .*got backend='cpu'"):
        fastnet.MLP([4, 2], backend="cpu", precision="fp16")
    # GPUs: by compute capability (bounds included), and float32 weights only
    assert P.check("bf16", "cuda", "float32", 80) == "bf16" and P.check("fp16", "cuda", "float32", 70) == "fp16"
    assert P.check("tf32", "cuda-sim", "float32", 90) == "tf32"
    with pytest.raises(P.PrecisionUnavailableError, match=r"'bf16' is not available here: it needs bfloat16 tensor "
                                                          r"cores .*compute capability 7\.5"):
        P.check("bf16", "cuda", "float32", 75)
    with pytest.raises(P.PrecisionUnavailableError, match=r"float16 tensor cores .*compute capability 6\.1"):
        P.check("fp16", "cuda", "float32", 61)
    with pytest.raises(P.PrecisionUnavailableError, match="dtype must be 'float32', got 'float64'"):
        P.check("tf32", "cuda", "float64", 90)
    assert P.supported(75) == {"float32": "yes", "tf32": P.supported(75)["tf32"], "bf16": P.supported(75)["bf16"],
                               "fp16": "yes"}
    assert P.supported(75)["tf32"].startswith("no: it needs TF32 tensor cores")


def bf16_emulated(a, b, out):
    """What a bf16 GEMM must compute: both operands rounded to bfloat16 (nearest even),
    the products summed exactly enough (float64 here), written as float32."""
    from fastnet.backends.gemm_onednn import to_bf16_bits

    up = lambda x: (to_bf16_bits(x).astype(np.uint32) << np.uint32(16)).view(np.float32)  # noqa: E731
    out[...] = up(a).astype(np.float64) @ up(b).astype(np.float64)
    return out


class Emulated:
    """The backend's bf16 GEMM replaced by :func:`bf16_emulated` (its thread pool kept)."""

    def __init__(self, real):
        self.pool = real.pool

    def __call__(self, a, b, out):
        return bf16_emulated(a, b, out)


def gradients(precision, emulate=False, seed=1):
    X, y = data(256)
    m = fastnet.MLP([20, 64, 32, 3], seed=seed, backend="cpu", precision=precision)
    if emulate:
        m.backend_._matmul = Emulated(m.backend_._matmul)
    return m.gradients(X, y)[1]


@needs_bf16
def test_bf16_gradients_are_those_of_bfloat16_inputs_and_float32_sums():
    # every GEMM of forward and backward (x @ W, x.T @ dy, dy @ W.T) with its operands
    # rounded to bfloat16 and float32 accumulation: oneDNN's result against the emulation
    # (a transposed operand read in the wrong layout, or one left in float32, is far off)
    real, emulated, single = gradients("bf16"), gradients("bf16", emulate=True), gradients("float32")
    for k, g in real.items():
        assert g.dtype == np.float32
        scale = np.abs(emulated[k]).max()
        assert np.abs(g - emulated[k]).max() <= 1e-5 * scale, k
        # and bfloat16 is really used: float32 GEMMs give other gradients (bf16's rounding,
        # 2**-9 per input, grows through the backward pass to about 2% in the first layer)
        assert 1e-4 < np.linalg.norm(g - single[k]) / np.linalg.norm(single[k]) < 0.1, k


@needs_bf16
def test_bf16_training_steps_are_the_emulated_ones():
    # 3 epochs of 3 steps (the last one of 44 rows), dropout between the layers, two
    # hidden layers of one width (their activations, weights' gradients alike): a step
    # rounds each array once and its backward pass reuses the forward pass's roundings, so
    # a weight or an activation rounded in an earlier step (or before a dropout or an
    # activation kernel changed it) would leave the emulation, which rounds every operand
    # of every GEMM afresh; so would two arrays of one shape taken for one
    X, y = data(300)
    weights = []
    for emulate in (False, True):
        m = fastnet.MLP([20, 32, 32, 3], seed=2, backend="cpu", precision="bf16", dropout=0.25)
        if emulate:
            m.backend_._matmul = Emulated(m.backend_._matmul)
        m.fit(X, y, epochs=3, batch_size=128, optimizer="sgd", lr=0.5, diagnose=False)
        weights.append(m.get_weights())
    for k in weights[0]:
        assert np.abs(weights[0][k] - weights[1][k]).max() <= 1e-5 * np.abs(weights[1][k]).max(), k


@needs_bf16
def test_a_bf16_operand_is_rounded_when_prepared_and_kept_per_array():
    from fastnet.backends.gemm_onednn import Bf16Matmul, to_bf16_bits

    mm = Bf16Matmul()
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    xq, wq = mm.operand(x), mm.operand(w)
    assert xq.dtype == np.uint16 and np.array_equal(xq, to_bf16_bits(x)) and np.array_equal(wq, to_bf16_bits(w))
    assert np.array_equal(mm.operand(w.T), to_bf16_bits(w).T)  # a transposed view: its array's buffer
    out = np.empty((6, 4), np.float32)
    np.testing.assert_allclose(mm(xq, wq, out), bf16_emulated(x, w, np.empty_like(out)), rtol=1e-6)
    # prepared operands are what was rounded: changing x afterwards changes nothing read
    # through xq until x is prepared again (a slice of x is an operand of its own)
    before = xq.copy()
    x *= 3
    assert np.array_equal(xq, before)
    np.testing.assert_allclose(mm(x, wq, out), bf16_emulated(x, w, np.empty_like(out)), rtol=1e-6)
    head = mm.operand(x[:2])
    assert np.array_equal(xq, before) and np.array_equal(head, to_bf16_bits(x[:2]))
    mm.operand(x)
    assert np.array_equal(xq, to_bf16_bits(x))  # the same array again: its buffer, rounded again
    # a mixed-up operand is refused with its dtype and strides
    with pytest.raises(ValueError, match=r"float32, C-contiguous or transposed so: got float32 with strides"):
        mm.operand(x[:, ::2])


@needs_bf16
def test_bf16_trains_mnist_as_float32_does():
    from fastnet.cli import load_mnist_arrays

    (X, y), (Xt, yt) = load_mnist_arrays(subset=6000)
    scores = {}
    for p in ("float32", "bf16"):
        m = fastnet.MLP([784, 128, 10], seed=0, backend="cpu", precision=p)
        m.fit(X, y, epochs=3, batch_size=64, lr=2e-3, diagnose=False)
        scores[p] = m.score(Xt[:3000], yt[:3000])
    assert scores["float32"] > 0.9
    assert abs(scores["bf16"] - scores["float32"]) <= 0.01, scores


@needs_bf16
def test_precision_survives_save_pickle_clone_and_checkpoints(tmp_path):
    X, y = data()
    m = fastnet.MLP([20, 8, 3], seed=0, backend="cpu", precision="bf16")
    m.fit(X, y, epochs=1, diagnose=False)
    m.save(tmp_path / "m.npz")
    assert fastnet.load(tmp_path / "m.npz").precision == "bf16"
    assert pickle.loads(pickle.dumps(m)).precision == "bf16"
    assert m.clone().precision == "bf16"
    assert m.to("cpu").precision == "bf16" and m.backend_.precision == "bf16"
    assert "precision='bf16'" in repr(m.backend_)
    # the float32 config is unchanged (no key): files written before precision= read the same
    assert "precision" not in fastnet.MLP([20, 8, 3], backend="cpu").get_config()


@needs_bf16
def test_cli_trains_in_bf16(tmp_path):
    from fastnet.cli import main

    assert main(["train", "mnist", "--precision", "bf16", "--subset", "2000", "--test-subset", "500",
                 "--epochs", "1", "--quiet", "--no-augment"]) == 0


@needs_bf16
def test_the_thread_tuner_tunes_onednn_s_pool_in_bf16(monkeypatch):
    from fastnet.backends import gemm_onednn
    from fastnet.backends import threads

    monkeypatch.setenv("FASTNET_THREADS", "auto")
    configured = gemm_onednn.get_num_threads()
    if configured < 2:
        pytest.skip("one thread: nothing to tune")
    seen = []
    monkeypatch.setattr(gemm_onednn, "_threads", configured)
    real = gemm_onednn.set_num_threads

    def spy(n):
        seen.append(n)
        return real(n)

    monkeypatch.setattr(gemm_onednn, "set_num_threads", spy)
    blas = threads.blas_threads()
    X, y = data(4096)
    m = fastnet.MLP([20, 64, 3], seed=0, backend="cpu", precision="bf16")
    m.backend_._matmul.pool = ("onednn", gemm_onednn.get_num_threads, spy)
    h = m.fit(X, y, epochs=3, batch_size=32, diagnose=False)
    assert h.params["threads"] is not None and seen, h.params["threads"]
    assert seen[-1] == configured == gemm_onednn.get_num_threads()  # put back at the end
    assert threads.blas_threads() == blas  # NumPy's pool is not the step's: left alone


def test_float32_gemms_through_onednn_train_as_openblas_does(monkeypatch):
    """FASTNET_CPU_GEMM=onednn: the float32 training GEMMs are oneDNN's (float32: the same
    products, summed in another order); openblas (numpy): NumPy's matmul."""
    from fastnet.backends import gemm_onednn

    X, y = np.random.default_rng(5).standard_normal((300, 20)).astype(np.float32), np.arange(300) % 3
    losses = {}
    for provider in ("openblas", "onednn"):
        monkeypatch.setenv("FASTNET_CPU_GEMM", provider)
        m = fastnet.MLP([20, 64, 32, 3], seed=0, backend="cpu")
        assert isinstance(m.backend_._matmul, gemm_onednn.F32Matmul) == (provider == "onednn")
        calls = []
        if provider == "onednn":
            real = m.backend_._matmul
            m.backend_._matmul = lambda a, b, out: calls.append(a.shape) or real(a, b, out)
        losses[provider] = m.fit(X, y, epochs=3, batch_size=64, diagnose=False)["loss"]
        assert len(calls) == (0 if provider == "openblas" else 3 * 5 * 8)  # 8 GEMMs a step (3 x, 3 dW, 2 dX)
    np.testing.assert_allclose(losses["onednn"], losses["openblas"], rtol=1e-5)
    # the default (unset, or auto): measured at the first fit (fastnet.backends.gemm_choice; NumPy's until then)
    for unset_or_auto in (None, "auto"):
        if unset_or_auto is None:
            monkeypatch.delenv("FASTNET_CPU_GEMM")
        else:
            monkeypatch.setenv("FASTNET_CPU_GEMM", unset_or_auto)
        assert P.cpu_gemm_provider() == "auto" and fastnet.MLP([4, 2], backend="cpu").backend_._matmul is None
    monkeypatch.setenv("FASTNET_CPU_GEMM", "openblas")  # the old name of numpy
    assert P.cpu_gemm_provider() == "numpy"
    monkeypatch.setenv("FASTNET_CPU_GEMM", "blis")
    with pytest.raises(ValueError, match="FASTNET_CPU_GEMM must be one of 'auto', 'numpy', 'onednn', 'mkl', "
                                         "got 'blis'"):
        fastnet.MLP([4, 2], backend="cpu")


def test_loss_scaler_divides_backs_off_resets_and_grows_at_the_interval():
    """fp16's dynamic loss scale, step by step (NumPy arrays stand for the device's)."""
    s = P.LossScaler(scale=8, growth_interval=3)
    g = np.full(4, 8, np.float32)
    assert s.unscale(np, g) and (g == 1).all() and s.good_steps == 1  # divided by the scale
    g[:] = 8
    assert s.unscale(np, g) and s.good_steps == 2
    g[:] = 8
    g[0] = np.inf
    assert not s.unscale(np, g)  # skipped: halved, the run of good steps starts again
    assert s.get_state() == {"scale": 4.0, "good_steps": 0, "skipped": 1} and g[1] == 8  # not rescaled
    g[:] = 4
    g[1] = np.nan
    assert not s.unscale(np, g) and s.get_state() == {"scale": 2.0, "good_steps": 0, "skipped": 2}
    for good in (1, 2):
        g[:] = 2
        assert s.unscale(np, g) and (g == 1).all() and s.get_state() == {"scale": 2.0, "good_steps": good,
                                                                          "skipped": 2}
    assert s.unscale(np, g) and s.get_state() == {"scale": 4.0, "good_steps": 0, "skipped": 2}  # the 3rd: grows
    r = P.LossScaler()
    r.set_state(s.get_state())
    assert r.get_state() == s.get_state() and (r.scale, r.growth_interval) == (4.0, 2000)

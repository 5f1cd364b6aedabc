"""fastnet.backends.gemm_onednn: oneDNN matmul through ctypes, against NumPy float64.

Skipped when no oneDNN is installed (pip install onednn-cpu-gomp).  Error bounds:
float32 accumulation of K products, |error| <= c * K * 2^-24 * sum_k |a_ik||b_kj|;
bfloat16 operands are compared with the float64 product of the *rounded* operands (same
float32 bound), and the rounding itself is checked against the float32 product with a
bound of 2 * 2^-9 * sum_k |a_ik||b_kj| (each operand rounded to 8 mantissa bits).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastnet.backends import gemm_onednn as g

try:
    g.load()
    UNAVAILABLE = ""
except g.OneDNNUnavailable as e:
    UNAVAILABLE = str(e)
# CI installs the bf16 extra (oneDNN): there a missing oneDNN fails instead of skipping
pytestmark = pytest.mark.skipif(bool(UNAVAILABLE) and not os.environ.get("CI"), reason=UNAVAILABLE)

try:
    import ml_dtypes
    BF16 = [np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint16)]
except ImportError:  # pragma: no cover - the uint16 bit patterns still test bfloat16
    ml_dtypes = None
    BF16 = [np.dtype(np.uint16)]

# an MLP step 784-512-512-10 at batches 128 and 1024: forward, dW = x.T @ dy, dx = dy @ W.T
MLP = [(b, k, n) for b in (128, 1024) for k, n in ((784, 512), (512, 512), (512, 10))]
MLP += [(k, b, n) for b in (128, 1024) for k, n in ((784, 512), (512, 512), (512, 10))]
ODD = [(7, 13, 5), (1, 1, 1), (1, 9, 3), (5, 1, 4), (3, 8, 1), (33, 65, 17)]
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]


def operand(rng, rows, cols, transposed):
    """A (rows, cols) float32 array; transposed: the .T view of a (cols, rows) array."""
    if transposed:
        return rng.standard_normal((cols, rows), dtype=np.float32).T
    return rng.standard_normal((rows, cols), dtype=np.float32)


def bf16(x, dtype):
    """x rounded to bfloat16, as `dtype` (ml_dtypes.bfloat16 or uint16 bits), keeping x's layout."""
    bits = g.to_bf16_bits(x.T).T if not x.flags.c_contiguous else g.to_bf16_bits(x)
    return bits.view(dtype) if dtype != np.uint16 else bits


def as_f64(x):
    if x.dtype == np.uint16:
        return (x.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return x.astype(np.float64)


def check(out, a, b, bias=None, c=None, beta=0.0):
    a64, b64 = as_f64(a), as_f64(b)
    ref = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64)
    if bias is not None:
        ref = ref + bias
        scale = scale + np.abs(bias)
    if c is not None:
        ref = ref + beta * c.astype(np.float64)
        scale = scale + abs(beta) * np.abs(c)
    k = a.shape[1]
    tol = 4 * (k + 2) * 2.0 ** -24 * scale + 1e-30
    assert out.dtype == np.float32 and out.shape == ref.shape
    err = np.abs(out - ref)
    assert (err <= tol).all(), f"max error {err.max():.3g}, max allowed {tol[err > tol].min():.3g}"


@pytest.mark.parametrize("shape", MLP + ODD)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
def test_float32(shape, ta, tb):
    m, k, n = shape
    rng = np.random.default_rng(m * 100003 + k * 101 + n)
    a, b = operand(rng, m, k, ta), operand(rng, k, n, tb)
    assert (not ta or m == 1 or k == 1 or not a.flags.c_contiguous)   # really a strided view
    check(g.matmul(a, b), a, b)    # first call: checks, creates the primitive, runs through ctypes
    # new arrays, the same layouts: the Numba executor, with the new data pointers
    a, b = operand(rng, m, k, ta), operand(rng, k, n, tb)
    out = np.full((m, n), np.nan, np.float32)
    assert g.matmul(a, b, out) is out
    check(out, a, b)
    check(g.matmul(a, b), a, b)


# uint16 bit patterns beside ml_dtypes' bfloat16: the odd shapes and one MLP shape are enough
@pytest.mark.parametrize("shape,dtype", [(s, d) for d in BF16 for s in MLP + ODD
                                         if not (d == np.uint16 and len(BF16) > 1 and s in MLP[1:])], ids=str)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
def test_bfloat16(shape, ta, tb, dtype):
    m, k, n = shape
    rng = np.random.default_rng(m * 100003 + k * 101 + n + 7)
    for _ in range(2):   # through ctypes, then the Numba executor (new arrays, same layouts)
        a32, b32 = operand(rng, m, k, ta), operand(rng, k, n, tb)
        a, b = bf16(a32, dtype), bf16(b32, dtype)
        out = g.matmul(a, b)
        check(out, a, b)   # exact products of the rounded operands, float32 accumulation
        # and the rounding: each operand within 2^-9 relative
        scale = np.abs(a32.astype(np.float64)) @ np.abs(b32.astype(np.float64))
        err = np.abs(out - a32.astype(np.float64) @ b32.astype(np.float64))
        assert (err <= 2.5 * 2.0 ** -9 * scale).all()


@pytest.mark.parametrize("dtype", [np.dtype(np.float32)] + BF16, ids=str)
@pytest.mark.parametrize("shape", [(128, 784, 512), (7, 13, 5), (1, 3, 2)])
def test_bias_and_beta(shape, dtype):
    m, k, n = shape
    rng = np.random.default_rng(3)
    a, b = operand(rng, m, k, False), operand(rng, k, n, True)
    if dtype != np.float32:
        a, b = bf16(a, dtype), bf16(b, dtype)
    for _ in range(2):   # through ctypes, then through the Numba executor (another bias array)
        bias = rng.standard_normal(n, dtype=np.float32)
        check(g.matmul(a, b, bias=bias), a, b, bias=bias)
        check(g.matmul(a, b, bias=bias.reshape(1, n)), a, b, bias=bias)
    for beta in (1.0, 0.5, -2.0, 1.0, -2.0):
        c = rng.standard_normal((m, n), dtype=np.float32)
        out = c.copy()
        g.matmul(a, b, out, beta=beta)
        check(out, a, b, c=c, beta=beta)
        out = c.copy()
        g.matmul(a, b, out, bias=bias, beta=beta)
        check(out, a, b, bias=bias, c=c, beta=beta)


def test_out_is_written_in_place_and_views():
    rng = np.random.default_rng(5)
    a, b = operand(rng, 33, 20, False), operand(rng, 20, 17, False)
    big = np.zeros((40, 30), np.float32)
    view = big[3:36, 5:22]                     # a padded row-major output
    assert g.matmul(a, b, view) is view
    check(view, a, b)
    assert not big[:3].any() and not big[:, :5].any() and not big[:, 22:].any()
    # an operand without a unit stride is copied, still right
    wide = rng.standard_normal((66, 40), dtype=np.float32)
    check(g.matmul(wide[::2, ::2], b), wide[::2, ::2], b)


def test_cache_reuses_one_primitive_per_layout():
    rng = np.random.default_rng(6)
    a, b = operand(rng, 9, 11, False), operand(rng, 11, 6, False)
    g.matmul(a, b)
    before = len(g._here.cache)
    for _ in range(3):
        a2 = rng.standard_normal((9, 11), dtype=np.float32)
        check(g.matmul(a2, b), a2, b)           # new data, same primitive
    assert len(g._here.cache) == before
    g.matmul(np.ascontiguousarray(a.T).T, b)      # another layout: another primitive
    assert len(g._here.cache) == before + 1


def test_each_thread_computes_with_primitives_and_a_stream_of_its_own():
    # oneDNN's default build shares one scratchpad per thread between its primitives: a
    # primitive run from another thread than its maker's (while that one runs another) would
    # share it.  Four threads at once, each its own shapes and the main thread's, many times.
    import threading

    rng = np.random.default_rng(7)
    a, b = operand(rng, 64, 300, False), operand(rng, 300, 200, False)
    want = g.matmul(a, b)
    mine = dict(g._here.cache)
    results, made, errors = {}, {}, []

    def work(i):
        try:
            x = operand(np.random.default_rng(i), 32 + i, 300, False)
            for _ in range(40):
                results[i] = (g.matmul(a, b), g.matmul(x, b), x)
            made[i] = (dict(g._here.cache), g._here.stream.value)
        except Exception as e:  # (reported below, with the thread's number)
            errors.append((i, e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, (same, other, x) in results.items():
        assert np.array_equal(same, want)
        check(other, x, b)
    streams = {stream for _, stream in made.values()}
    assert len(streams) == 4 and g._here.stream.value not in streams
    for cache, _ in made.values():   # none of the main thread's primitives ran in another thread
        assert not {id(p) for p in cache.values()} & {id(p) for p in mine.values()}
    assert dict(g._here.cache) == mine


def test_read_only_operands_take_the_ctypes_path():
    rng = np.random.default_rng(8)
    a, b = operand(rng, 9, 11, False), operand(rng, 11, 6, True)
    a.flags.writeable = False
    for _ in range(2):
        check(g.matmul(a, b), a, b)


def test_empty_and_errors():
    z = g.matmul(np.ones((3, 0), np.float32), np.ones((0, 4), np.float32), bias=np.arange(4.0))
    assert (z == np.arange(4.0, dtype=np.float32)).all()
    with pytest.raises(ValueError):
        g.matmul(np.ones((3, 4), np.float32), np.ones((5, 4), np.float32))
    with pytest.raises(TypeError):
        g.matmul(np.ones((3, 4)), np.ones((4, 4)))                     # float64
    with pytest.raises(TypeError):
        g.matmul(np.ones((3, 4), np.float32), np.ones((4, 4), np.uint16))  # mixed
    with pytest.raises(ValueError):
        g.matmul(np.ones((3, 4), np.float32), np.ones((4, 4), np.float32), beta=1.0)


def test_to_bf16_bits_rounds_to_nearest_even():
    x = np.array([1.0, 1 + 2**-7, 1 + 3 * 2**-8, 1 + 2**-8, -0.0, np.inf, np.nan, 3.0e38],
                 np.float32)
    bits = g.to_bf16_bits(x)
    assert list(bits[:6]) == [0x3F80, 0x3F81, 0x3F82, 0x3F80, 0x8000, 0x7F80]
    assert (bits[6] & 0x7F80) == 0x7F80 and (bits[6] & 0x7F) != 0     # NaN
    if ml_dtypes is not None:
        y = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
        assert (g.to_bf16_bits(y) == y.astype(ml_dtypes.bfloat16).view(np.uint16)).all()


def test_threads_and_info():
    assert g.version() >= (3, 0, 0)
    assert os.path.exists(g.library_path())
    a = np.ones((64, 64), np.float32)
    assert g.implementation(a, a)
    if g.runtime() == "OMP":
        n = g.get_num_threads()
        assert g.set_num_threads(1) and g.get_num_threads() == 1
        check(g.matmul(a, a), a, a)
        g.set_num_threads(n)


def test_missing_library_names_the_package():
    code = ("import os; os.environ['FASTNET_ONEDNN'] = '/nonexistent/libdnnl.so.3.2'\n"
            "from fastnet.backends import gemm_onednn as g\n"
            "assert not g.available()\n"
            "import numpy as np\na = np.ones((2, 2), np.float32)\n"
            "try:\n    g.matmul(a, a)\nexcept g.OneDNNUnavailable as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install onednn-cpu-gomp" in out.stdout


@pytest.mark.skipif(not os.environ.get("FASTNET_TEST_BOTH_ONEDNN"), reason="set FASTNET_TEST_BOTH_ONEDNN=1 "
                    "to run this file again with the other installed oneDNN")
def test_other_onednn_package():
    other = "onednn" if g.runtime() == "OMP" else "onednn-cpu-gomp"
    env = dict(os.environ, FASTNET_ONEDNN=other, FASTNET_TEST_BOTH_ONEDNN="")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", __file__], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_process_forked_after_onednn_ran_trains_on_numpy_and_says_why_not_onednn():
    # GNU OpenMP keeps no threads across a fork: a child running oneDNN's primitives (or the
    # optimizer on its pool) waited forever for the parent's threads
    script = textwrap.dedent("""
        import os, sys
        os.environ["FASTNET_CPU_GEMM"] = "onednn"
        import numpy as np
        import fastnet
        import fastnet.backends.precision
        from fastnet.backends import gemm_onednn as g
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((512, 64)).astype(np.float32), rng.integers(0, 3, 512)
        m = fastnet.MLP([64, 128, 3], backend="cpu", seed=0)
        m.fit(X, y, epochs=1, batch_size=64, verbose=0, diagnose=False)
        mm = g.F32Matmul()
        for _ in range(5):
            m._infer(X[:300], mm)   # the parent's team has just run
        pid = os.fork()
        if pid == 0:
            try:
                m._infer(X[:300], mm)
                os._exit(4)
            except g.OneDNNUnavailable as e:
                if "forked from one that had loaded oneDNN" not in str(e):
                    os._exit(5)
            try:   # (the parent's pool, as a forked model's optimizer would run its update on it)
                mm.pool_runner.run(0, 0)
                os._exit(6)
            except g.OneDNNUnavailable:
                pass
            del os.environ["FASTNET_CPU_GEMM"]   # auto: measured among the providers that run here
            h = m.fit(X, y, epochs=1, batch_size=64, verbose=0, diagnose=False)
            ok = h.params["gemm"]["provider"] == "numpy" and np.isfinite(h["loss"][-1])
            ok = ok and "forked" in h.params["gemm"]["unavailable"]["onednn"]
            try:
                fastnet.MLP([64, 8, 3], backend="cpu", precision="bf16")
                ok = ok and not g.available()
            except fastnet.backends.precision.PrecisionUnavailableError as e:
                ok = ok and "forked" in str(e)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    try:
        proc = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child waited for oneDNN's threads, which stayed in the parent")
    assert proc.returncode == 0, proc.stderr[-3000:]

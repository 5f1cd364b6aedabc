"""Predictions of a few rows through the OpenMP forward kernel (fastnet.backends.small_batch,
fastnet.kernels.cpu.PoolForward): the outputs against NumPy in float64 for every activation the
kernel applies, the same bits on any thread count and beside any other rows, the fastest way
chosen by measurement, the model's live weights read (after fit, after a layer's array is
replaced), the fallbacks, and a forked child that does not hang."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastnet
from fastnet import datasets
from fastnet.backends import small_batch
from fastnet.kernels import cpu

pytestmark = pytest.mark.skipif(small_batch.runner() is None, reason="libgomp.so.1 does not load here")

GELU_C, GELU_A, LEAKY = 0.7978845608028654, 0.044715, 0.01
# Independent float64 activations (the textbook formulas, not fastnet's kernels)
ACT = {
    "identity": lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "tanh": np.tanh,
    "leaky_relu": lambda v: np.where(v > 0, v, LEAKY * v),
    "gelu": lambda v: 0.5 * v * (1 + np.tanh(GELU_C * (v + GELU_A * v ** 3))),
    "softmax": lambda v: np.exp(v - v.max(axis=1, keepdims=True)) / np.exp(v - v.max(axis=1, keepdims=True)).sum(
        axis=1, keepdims=True),
}


def layers(sizes, activations, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for (k, n), act in zip(zip(sizes[:-1], sizes[1:]), activations):
        W = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32) * 0.1
        out.append((W, b, act))
    return out


def reference(x, plan):
    a = x.astype(np.float64)
    for W, b, act in plan:
        a = ACT[act](a @ W.astype(np.float64) + b)
    return a


def forward(plan, parts):
    pool = small_batch.runner()
    return cpu.PoolForward(plan, small_batch.MAX_ROWS, parts, (*pool.thread_functions, pool.barrier), pool.run)


@pytest.mark.parametrize("act", sorted(cpu.FORWARD_ACTIVATIONS))
def test_each_activation_against_numpy_in_float64(act):
    # odd sizes: K not a multiple of 4 (the kernel's tail), N below one vector, blocks of unequal size
    # softmax: the output activation, on the last layer only (the others ReLU)
    plan = layers([37, 50, 33, 7], [act, act, "identity"] if act != "softmax" else ["relu", "relu", "softmax"])
    x = np.random.default_rng(1).standard_normal((5, 37)).astype(np.float32)
    want = reference(x, plan)
    for parts in (1, 2, 3):
        for threads in range(1, parts + 1):
            got = forward(plan, parts)(x, threads)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=f"{act}, {parts} parts, {threads} threads")


def test_the_same_bits_on_any_thread_count_and_beside_any_other_rows():
    plan = layers([61, 40, 29, 5], ["relu", "tanh", "identity"])
    X = np.random.default_rng(2).standard_normal((16, 61)).astype(np.float32)
    f = forward(plan, 3)
    whole = f(X, 3)
    for threads in (1, 2, 3):
        assert np.array_equal(f(X, threads), whole), threads
    for i in range(16):
        assert np.array_equal(f(X[i:i + 1], 2), whole[i:i + 1]), i
    assert np.array_equal(f(X[3:9], 1), whole[3:9])


def test_calls_from_several_python_threads_each_get_their_own_rows():
    plan = layers([64, 48, 6], ["relu", "identity"])
    f = forward(plan, 2)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1 + i % 4, 64)).astype(np.float32) for i in range(8)]
    wanted = [f(x, 1) for x in inputs]
    bad = []

    def work(i):
        for _ in range(200):
            if not np.array_equal(f(inputs[i], 2), wanted[i]):
                bad.append(i)
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_pool_forward_refuses_what_it_cannot_run():
    plan = layers([8, 4], ["relu"])
    with pytest.raises(ValueError, match="applies .* not 'swish'"):
        forward([(plan[0][0], plan[0][1], "swish")], 2)
    with pytest.raises(ValueError, match="softmax on the last layer only, got it on layer 0"):
        forward([(plan[0][0], plan[0][1], "softmax"), (np.zeros((4, 2), np.float32), np.zeros(2, np.float32), "relu")], 2)
    with pytest.raises(ValueError, match="float32"):
        forward([(plan[0][0].astype(np.float64), plan[0][1], "relu")], 2)
    with pytest.raises(ValueError, match="1 to 16 rows"):
        forward(plan, 2)(np.zeros((17, 8), np.float32), 1)
    with pytest.raises(ValueError, match="1 to 2 threads"):
        forward(plan, 2)(np.zeros((1, 8), np.float32), 3)


class Clock:
    """A fake time.perf_counter: each way costs what ``cost`` says."""

    def __init__(self, cost):
        self.now, self.cost = 0.0, cost

    def perf_counter(self):
        return self.now

    def run(self, way):
        self.now += self.cost[way]
        return way


def test_fastest_runs_the_way_measured_fastest_and_measures_again(monkeypatch):
    clock = Clock({1: 5.0, 2: 2.0, 4: 3.0})
    monkeypatch.setattr(small_batch, "time", clock)
    f = small_batch.Fastest([1, 2, 4])
    ran = [f(1, clock.run) for _ in range(3 * f.TRIES)]
    assert sorted(ran) == sorted([1, 2, 4] * f.TRIES)  # each way timed TRIES times
    assert f.chosen == {1: 2}
    assert [f(1, clock.run) for _ in range(f.KEEP_FIRST - 1)] == [2] * (f.KEEP_FIRST - 1)
    f(1, clock.run)
    assert 1 not in f.chosen  # kept KEEP_FIRST calls, then measured again
    clock.cost[2] = 9.0  # a load came: 4 threads now fastest
    for _ in range(3 * f.TRIES):
        f(1, clock.run)
    assert f.chosen == {1: 4}


def test_a_steady_choice_is_kept_twice_as_long_each_time(monkeypatch):
    clock = Clock({1: 5.0, 2: 2.0})
    monkeypatch.setattr(small_batch, "time", clock)
    f = small_batch.Fastest([1, 2])
    kept = []
    for _ in range(4):
        for _ in range(2 * f.TRIES):
            f(1, clock.run)
        n = 0
        while 1 in f.chosen:
            f(1, clock.run)
            n += 1
        kept.append(n)
    assert kept == [f.KEEP_FIRST, 2 * f.KEEP_FIRST, 4 * f.KEEP_FIRST, 8 * f.KEEP_FIRST]


def test_thread_counts():
    assert small_batch.thread_counts(1) == [1]
    assert small_batch.thread_counts(2) == [1, 2]
    assert small_batch.thread_counts(6) == [1, 2, 4, 6]
    assert small_batch.thread_counts(8) == [1, 2, 4, 8]


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 40)).astype(np.float32)
    y = np.argmax(X[:, :5] + 0.3 * rng.standard_normal((2000, 5)), axis=1)
    model = fastnet.MLP([40, 96, 64, 5], backend="cpu", seed=0)
    model.fit(X, y, epochs=2, batch_size=64, verbose=0)
    return model, X, y


def test_predict_of_a_few_rows_runs_the_kernel_and_agrees_with_many_rows(fitted):
    model, X, _ = fitted
    many = model.predict_proba(X[:1024])  # the BLAS's GEMMs, one chunk
    for n in (1, 2, 7, 16):
        few = model.predict_proba(X[:n])
        np.testing.assert_allclose(few, many[:n], rtol=0, atol=1e-6)
    assert set(small_batch.choices(model)) <= set(range(1, 17))
    assert small_batch._entries[model].forward is not None
    assert np.array_equal(model.predict(X[:5]), np.argmax(many[:5], axis=1))


def test_predict_reads_the_weights_that_fit_changed_and_a_replaced_array(fitted):
    model, X, y = fitted
    model.predict_proba(X[:1])
    model.fit(X, y, epochs=1, batch_size=64, verbose=0)  # weights change in place
    np.testing.assert_allclose(model.predict_proba(X[:3]), model.predict_proba(X[:1024])[:3], atol=1e-6)
    layer = model.layers[1]
    layer.W = model.backend_.parameter(np.asarray(layer.W) * 0.5)  # another array
    np.testing.assert_allclose(model.predict_proba(X[:3]), model.predict_proba(X[:1024])[:3], atol=1e-6)


def test_weights_start_on_a_cache_line(fitted):
    model, _, _ = fitted
    for layer in model.layers:
        assert layer.W.ctypes.data % 64 == 0, layer.name


def test_models_the_kernel_cannot_run_predict_as_before(fitted, monkeypatch):
    X, y = datasets.make_blobs(n_samples=300, seed=0)
    m64 = fastnet.MLP([2, 16, 3], backend="cpu", seed=0, dtype="float64")
    m64.fit(X, y, epochs=1, verbose=0)
    np.testing.assert_allclose(m64.predict_proba(X[:2]), m64.predict_proba(X)[:2], rtol=1e-12)
    assert small_batch.choices(m64) == {}
    model, Xf, _ = fitted
    monkeypatch.setenv("FASTNET_SMALL_BATCH", "0")
    monkeypatch.setattr(small_batch, "_runner", None)
    assert small_batch.runner() is None
    before = dict(small_batch.choices(model))
    blas = model.loss_.outputs(model._infer(np.ascontiguousarray(Xf[:2])))  # NumPy's GEMMs on these rows
    assert np.array_equal(model.predict_proba(Xf[:2]), blas)
    assert small_batch.choices(model) == before


def run_forked(script):
    """Run ``script`` (which forks a child that predicts) in a process of its own: a child that
    waits for threads that did not survive the fork never ends."""
    if not hasattr(os, "fork") or small_batch._cores() < 2:
        pytest.skip("needs fork and two cores")
    try:
        proc = subprocess.run([sys.executable, "-c", script], timeout=30, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child's predict waited for threads that did not survive the fork")
    assert proc.returncode == 0, proc.stderr


def test_a_forked_child_predicts_without_waiting_for_its_parents_threads():
    script = textwrap.dedent("""
        import os, sys
        import numpy as np
        import fastnet
        from fastnet.backends import small_batch
        m = fastnet.MLP([64, 256, 10], backend="cpu", seed=0)
        m.build(64)
        x = np.ones((1, 64), np.float32)
        small_batch._entries.clear()
        for _ in range(40):
            m.predict_proba(x)
        small_batch._entries[m].forward(x, 2)  # the parent has run an OpenMP team
        fastest = small_batch._entries[m].fastest
        fastest.chosen[1], fastest._last[1], fastest._calls[1] = 2, (2, 10**6), 0  # and one row runs on 2 threads
        pid = os.fork()
        if pid == 0:
            m.predict_proba(x)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    run_forked(script)


def test_a_non_finite_row_is_still_refused_by_name(fitted):
    model, X, _ = fitted
    row = X[:1].copy()
    row[0, 3] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value; the first is X\[0, 3\] = nan"):
        model.predict_proba(row)


def test_large_finite_rows_are_data_and_a_single_inf_is_not(fitted):
    from fastnet.core import validation

    big = np.full((1, 40), 3e19, np.float32)  # its sum of squares overflows: the exact count decides
    validation.check_finite("X", big)
    big[0, 7] = -np.inf
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value; the first is X\[0, 7\] = -inf"):
        validation.check_finite("X", big)


def test_fastnet_info_says_where_a_few_rows_run(monkeypatch):
    from fastnet.cli import info

    assert "the forward kernel on OpenMP threads" in info.small_batch_line()
    monkeypatch.setenv("FASTNET_SMALL_BATCH", "0")
    assert info.small_batch_line().endswith("NumPy's BLAS (FASTNET_SMALL_BATCH=0)")


def test_best_way_times_each_way_after_an_untimed_call(monkeypatch):
    clock = Clock({"numpy": 3.0, 1: 4.0, 2: 2.5})
    monkeypatch.setattr(small_batch, "time", clock)
    calls = []
    ways = {k: (lambda k=k: calls.append(clock.run(k))) for k in clock.cost}
    assert small_batch.best_way(ways, tries=3) == (2, 2.5)
    assert sorted(calls, key=str) == sorted([k for k in clock.cost for _ in range(4)], key=str)
    clock.cost[2] = 3.5
    assert small_batch.best_way(ways, tries=3) == ("numpy", 3.0)


def fresh(model, monkeypatch):
    """``model`` without its few-row decisions, and none for its shapes (as if never called)."""
    small_batch._entries.pop(model, None)
    monkeypatch.setattr(small_batch, "_gates", {})
    monkeypatch.setattr(small_batch, "_again", {})


def test_where_numpys_gemms_win_a_few_rows_keep_running_through_them(fitted, monkeypatch):
    model, X, _ = fitted
    fresh(model, monkeypatch)
    order = []

    def timed(ways):  # NumPy's GEMMs 1 s, the kernel 2 s
        order.append(sorted(ways, key=str))
        return ("numpy", 1.0) if "numpy" in ways else (2, 2.0)

    monkeypatch.setattr(small_batch, "best_way", timed)
    monkeypatch.setattr("fastnet.backends.gemm_choice.settle", lambda: order.append("settled"))
    x = np.ascontiguousarray(X[:3])
    blas = model.loss_.outputs(model._infer(x))
    assert np.array_equal(model.predict_proba(x), blas)
    assert np.array_equal(model.predict_proba(x), blas)
    assert small_batch.choices(model) == {3: "numpy"}
    # other threads idle first; the kernel's thread counts; its threads idle; NumPy: once per row count
    assert order == ["settled", small_batch._entries[model].ways, "settled", ["numpy"]]
    monkeypatch.setattr(small_batch, "best_way", lambda ways: ("numpy", 3.0) if "numpy" in ways else (2, 2.0))
    fresh(model, monkeypatch)
    few = model.predict_proba(x)
    assert not np.array_equal(few, blas)  # the kernel's sums, not the BLAS's
    np.testing.assert_allclose(few, blas, atol=1e-6)
    small_batch._entries.pop(model, None)


def test_where_numpys_gemms_won_the_kernel_is_weighed_again_and_kept_once_it_wins(fitted, monkeypatch):
    model, X, _ = fitted
    fresh(model, monkeypatch)
    monkeypatch.setattr(small_batch, "WEIGH_AGAIN", (4, 6, 9))
    kernel_seconds = [2.0]   # NumPy's GEMMs 1 s
    weighed = []

    def timed(ways):
        if "numpy" in ways:
            weighed.append(len(calls))
            return "numpy", 1.0
        return 1, kernel_seconds[0]

    monkeypatch.setattr(small_batch, "best_way", timed)
    monkeypatch.setattr("fastnet.backends.gemm_choice.settle", lambda: None)
    x = np.ascontiguousarray(X[:2])
    blas = model.loss_.outputs(model._infer(x))
    calls = []
    for _ in range(25):  # NumPy's GEMMs keep winning: weighed at the 1st call, then calls 4, 10, 19
        calls.append(model.predict_proba(x))
    assert weighed == [0, 3, 9, 18]
    assert all(np.array_equal(c, blas) for c in calls)
    assert small_batch.choices(model) == {2: "numpy"}
    # (after the last weighing NumPy's stand for good: the kernel faster now is not looked at)
    kernel_seconds[0] = 0.5
    for _ in range(20):
        calls.append(model.predict_proba(x))
    assert weighed == [0, 3, 9, 18] and all(np.array_equal(c, blas) for c in calls)

    # another row count: NumPy's GEMMs win the first weighing, the kernel the second
    x3 = np.ascontiguousarray(X[:3])
    blas3 = model.loss_.outputs(model._infer(x3))
    kernel_seconds[0], weighed[:], calls[:] = 2.0, [], []
    for _ in range(3):
        calls.append(model.predict_proba(x3))
    kernel_seconds[0] = 0.5
    for _ in range(12):
        calls.append(model.predict_proba(x3))
    assert weighed == [0, 3]  # and never again: the kernel's for good
    assert all(np.array_equal(c, blas3) for c in calls[:3])
    assert not np.array_equal(calls[3], blas3)  # the 4th call ran the kernel's sums
    np.testing.assert_allclose(calls[3], blas3, atol=1e-6)
    assert all(np.array_equal(c, calls[3]) for c in calls[3:])
    assert small_batch.choices(model)[3] != "numpy"
    small_batch._entries.pop(model, None)


# (the mse case: the doctor compares the first batch's loss, 1.8, with the first epoch's mean,
# 2.21, and flags lr_too_high although the loss falls every epoch: not this test's subject)
@pytest.mark.filterwarnings("ignore:.*lr_too_high")
@pytest.mark.parametrize("kind", ["softmax", "sigmoid", "mse"])
def test_the_kernel_applies_the_losss_output_activation_once(kind, monkeypatch):
    # the kernel wins, on the calling thread
    monkeypatch.setattr(small_batch, "best_way", lambda ways: ("numpy", 2.0) if "numpy" in ways else (1, 1.0))
    monkeypatch.setattr(small_batch, "_gates", {})
    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 12)).astype(np.float32)
    if kind == "softmax":
        y, m = rng.integers(0, 4, 400), fastnet.MLP([12, 32, 4], backend="cpu", seed=0)
    elif kind == "sigmoid":
        y, m = rng.integers(0, 2, 400), fastnet.MLP([12, 32, 1], output="sigmoid", backend="cpu", seed=0)
    else:
        y, m = 0.5 * X[:, 0], fastnet.MLP([12, 32, 1], loss="mse", backend="cpu", seed=0)
    m.fit(X, y, epochs=2, verbose=0)
    few = m.predict_proba(X[:3]) if kind != "mse" else m.predict(X[:3])
    many = m.predict_proba(X)[:3] if kind != "mse" else m.predict(X)[:3]
    assert small_batch._gates == {(small_batch._entries[m].shapes, 3): True}  # the kernel ran
    np.testing.assert_allclose(few, many, rtol=1e-5, atol=1e-6)


def test_reference_kernels_predict_through_the_tables_numpy_versions():
    m = fastnet.MLP([12, 32, 4], backend="cpu", seed=0, kernels="reference")
    m.build(12)
    m.predict_proba(np.ones((2, 12), np.float32))
    assert small_batch._entries[m].forward is None


def test_a_child_forked_after_another_librarys_openmp_team_predicts_through_numpy():
    # the parent ran an OpenMP team of its own (as oneDNN does while training) and never
    # predicted a few rows: small_batch had made no runner of its own before the fork
    script = textwrap.dedent("""
        import ctypes, os, sys
        import numpy as np
        import fastnet
        from fastnet.backends import small_batch
        from fastnet.backends.gemm_onednn import PoolRunner
        from fastnet.kernels import cpu
        m = fastnet.MLP([64, 256, 10], backend="cpu", seed=0)
        m.build(64)
        omp = ctypes.CDLL("libgomp.so.1")
        plan = [(m.layers[0].W, m.layers[0].b, "relu"), (m.layers[1].W, m.layers[1].b, "identity")]
        other = PoolRunner(omp)
        cpu.PoolForward(plan, 16, 2, (*other.thread_functions, other.barrier), other.run)(np.ones((1, 64), np.float32), 2)
        assert small_batch._runner is None
        pid = os.fork()
        if pid == 0:
            small_batch.best_way = lambda ways: ("numpy", 2.0) if "numpy" in ways else (2, 1.0)  # the kernel wins
            for _ in range(6):
                m.predict_proba(np.ones((1, 64), np.float32))
            os._exit(0 if small_batch._runner is False else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    run_forked(script)


def test_the_thread_counts_stay_within_openmps_count(fitted, monkeypatch):
    model, X, _ = fitted
    pool = small_batch.runner()
    before = pool.max_threads()
    fresh(model, monkeypatch)
    pool._omp.omp_set_num_threads(1)  # as OMP_NUM_THREADS=1 or fastnet's fixed thread count
    try:
        model.predict_proba(X[:1])
        assert small_batch._entries[model].ways == [1]
    finally:
        pool._omp.omp_set_num_threads(before)
    small_batch._entries.pop(model, None)


def test_a_layer_given_fortran_ordered_weights_predicts_through_numpy(monkeypatch):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 12)).astype(np.float32)
    m = fastnet.MLP([12, 16, 3], backend="cpu", seed=0)
    m.build(12)
    m.layers[0].W = np.asfortranarray(m.layers[0].W)
    x = X[:2]
    assert np.array_equal(m.predict_proba(x), m.loss_.outputs(m._infer(x)))
    assert small_batch._entries[m].forward is None

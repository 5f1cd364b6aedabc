"""Work of a training step shared by the threads of oneDNN's OpenMP pool (the threads that
run the step's GEMMs): SGD's, Adam's and AdamW's update, and ``precision="bf16"``'s
rounding of the GEMMs' operands.  Each must give the same bits as the one-thread kernel, whatever the
share boundaries; each runs where it was measured faster (``gemm_onednn.FasterOf``).

CI installs oneDNN (the ``bf16`` extra): there a missing one fails instead of skipping.
"""
import os
import time

import numpy as np
import pytest

import fastnet
from fastnet.backends import gemm_onednn as g
from fastnet.kernels import cpu, reference

try:
    g.load()
    UNAVAILABLE = None if g.pool_runner() is not None else "oneDNN's runtime is not OpenMP"
except g.OneDNNUnavailable as e:
    UNAVAILABLE = str(e)
pytestmark = pytest.mark.skipif(bool(UNAVAILABLE) and not os.environ.get("CI"), reason=str(UNAVAILABLE))

# Sizes whose sum (and most of them) is not a multiple of the 32-element share alignment:
# share boundaries fall inside tensors and the last share is short.
SIZES = (784 * 37, 37, 1, 5 * 13, 4096 + 3)


@pytest.fixture
def threads():
    """oneDNN's pool at ``n`` threads for the test, put back afterwards."""
    before = g.get_num_threads()
    yield lambda n: g.set_num_threads(n)
    g.set_num_threads(before)


def tensors(seed=0, sizes=SIZES, slots=2):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32),
             [rng.standard_normal(n).astype(np.float32) * 0.1, rng.random(n).astype(np.float32) * 0.01][:slots])
            for n in sizes]


#: Each kernel's scalars at step t (every one a different value, so a swapped pair shows).
SCALARS = {
    "adam_update": lambda t: (3e-3, 0.85, 0.995, 1e-7, 0.02, 1 - 0.85**t, 1 - 0.995**t),
    "adamw_update": lambda t: (3e-3, 0.85, 0.995, 1e-7, 0.02, 1 - 0.85**t, 1 - 0.995**t),
    "sgd_update": lambda t: (0.1 / t, 0.003),
}


@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("kernel", ["adam_update", "adamw_update", "sgd_update"])
def test_the_update_on_the_pool_is_the_one_thread_kernel_bit_for_bit(kernel, n_threads, threads):
    threads(n_threads)
    runner = g.pool_runner()
    slots = 0 if kernel == "sgd_update" else 2
    mine, theirs, ref = (tensors(slots=slots) for _ in range(3))
    update = cpu.pool_update(kernel, mine, runner.thread_functions)
    for t in (1, 2, 3):
        update.set(*SCALARS[kernel](t))
        runner.run(update.body, update.data)
        for w, gr, st in theirs:
            getattr(cpu, kernel)(w, gr, *st, *SCALARS[kernel](t))
        # ... and that is the optimizer: the reference formula (NumPy, float64 scalars)
        for w, gr, st in ref:
            getattr(reference, kernel)(w, gr, *st, *SCALARS[kernel](t))
    for (w, _, st), (w2, _, st2), (w3, _, _) in zip(mine, theirs, ref):
        assert np.array_equal(w, w2) and all(np.array_equal(a, b) for a, b in zip(st, st2))
        np.testing.assert_allclose(w, w3, rtol=1e-6, atol=1e-6)


def test_only_sgd_adam_and_float32_go_to_the_pool():
    ts = tensors(sizes=(40,))
    assert cpu.pool_update("rmsprop_update", ts, (0, 0)) is None
    with pytest.raises(ValueError, match="sgd_update keeps 0 state arrays"):
        cpu.pool_update("sgd_update", ts, (0, 0))
    as64 = [(w.astype(np.float64), gr.astype(np.float64), [s.astype(np.float64) for s in st]) for w, gr, st in ts]
    assert cpu.pool_update("adam_update", as64, (0, 0)) is None
    with pytest.raises(ValueError, match="flat C-contiguous float32"):
        cpu.PoolUpdate("adam_update", [(ts[0][0], ts[0][1][:20], ts[0][2])], (0, 0))


@pytest.mark.parametrize("n_threads", [2, 3])
def test_rounding_on_the_pool_is_ml_dtypes_rounding(n_threads, threads):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    threads(n_threads)
    runner = g.pool_runner()
    rounding = cpu.PoolRound(runner.thread_functions, runner.run)
    rng = np.random.default_rng(1)
    for n in (1, 31, 33, 4097, 100_003):
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(np.float32)
        x[::7] = np.float32(1.0) + np.float32(2.0**-8)   # a tie: to even (down)
        x[3::11] = np.float32(1.0) + np.float32(3 * 2.0**-8)   # a tie: to even (up)
        x[5::13] = np.inf
        x[6::17] = np.nan
        bits = np.empty(n, np.uint16)
        rounding(x.view(np.uint32), bits)
        want = x.astype(ml_dtypes.bfloat16).view(np.uint16)
        finite = ~np.isnan(x)
        assert np.array_equal(bits[finite], want[finite])
        got_nan = bits[~finite]
        assert np.all((got_nan & 0x7F80) == 0x7F80) and np.all(got_nan & 0x0040)   # quiet NaNs
        here = np.empty(n, np.uint16)
        cpu.round_bf16_bits(x.view(np.uint32), here)
        assert np.array_equal(bits, here)
    with pytest.raises(ValueError, match="flat uint32 and uint16"):
        rounding(np.zeros(4, np.uint32), np.zeros(3, np.uint16))


def test_faster_of_runs_the_way_measured_faster_and_measures_again(monkeypatch):
    monkeypatch.setattr(g.FasterOf, "KEEP", 10)
    calls = []

    def way(name, seconds):
        def run(*args):
            calls.append(name)
            time.sleep(seconds)
        return run

    where = g.FasterOf()
    slow_here, fast_pool = way("here", 0.004), way("pool", 0.0)
    for _ in range(2 * g.FasterOf.TRIES):
        where("k", slow_here, fast_pool)
    assert calls.count("here") == calls.count("pool") == g.FasterOf.TRIES   # alternated while measuring
    assert where.chosen == {"k": "pool"}
    calls.clear()
    for _ in range(5):
        where("k", slow_here, fast_pool)
    assert calls == ["pool"] * 5
    # another key is measured on its own; the other way round it keeps the calling thread
    where("other", way("here", 0.0), way("pool", 0.004))
    for _ in range(2 * g.FasterOf.TRIES):
        where("other", way("here", 0.0), way("pool", 0.004))
    assert where.chosen["other"] == "here"
    # after KEEP calls a choice is measured again: the load may have changed
    calls.clear()
    for _ in range(5 + 2 * g.FasterOf.TRIES):
        where("k", way("here", 0.0), way("pool", 0.004))
    assert where.chosen["k"] == "here" and "here" in calls


def fit_weights(monkeypatch, precision, pool, optimizer="adam"):
    """Weights after a short fit at oneDNN's 2 threads (fixed: the tuner's choices depend on
    timing), with or without the pool's share of the work; the number of pool runs."""
    monkeypatch.setenv("FASTNET_THREADS", "fixed")
    if precision == "float32":
        monkeypatch.setenv("FASTNET_CPU_GEMM", "onednn")
    g.set_num_threads(2)
    runs = []
    real_run = g.PoolRunner.run
    monkeypatch.setattr(g.PoolRunner, "run", lambda self, body, data: (runs.append(body), real_run(self, body, data)))
    if not pool:
        monkeypatch.setattr(g.PoolRunner, "threads", staticmethod(lambda: 1))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1200, 300)).astype(np.float32)
    y = (X[:, :3].sum(1) > 0).astype(int) + (X[:, 3] > 0.5)
    m = fastnet.MLP([300, 256, 256, 3], seed=0, backend="cpu", precision=precision)
    m.fit(X, y, epochs=2, batch_size=128, optimizer=optimizer, weight_decay=1e-4, diagnose=False, verbose=0)
    monkeypatch.undo()
    return m, len(runs)


@pytest.mark.parametrize("precision,optimizer", [("float32", "adam"), ("float32", "sgd"), ("bf16", "adamw")])
def test_fit_shares_its_update_with_the_gemms_pool_and_trains_the_same(monkeypatch, threads, precision, optimizer):
    if precision == "bf16":
        from fastnet.backends import precision as P

        if P.bf16_problem() is not None and not os.environ.get("CI"):
            pytest.skip(P.bf16_problem())
    from fastnet.cli.bench.profile import on_pool

    model, runs = fit_weights(monkeypatch, precision, True, optimizer)
    model_without, runs_without = fit_weights(monkeypatch, precision, False, optimizer)
    # 20 steps: the update's ways are measured on the first ones, each run at least TRIES times
    assert runs >= g.FasterOf.TRIES and runs_without == 0
    with_pool, without = model.get_weights(), model_without.get_weights()
    for name in with_pool:
        assert np.array_equal(with_pool[name], without[name]), name
    # the profile says where the work ran (bench --profile's JSON and table)
    where = on_pool(model)
    assert set(where["optimizer"]) == {"2"} and set(where["optimizer"].values()) <= {"pool", "here"}
    assert ("rounding" in where) == (precision == "bf16") and on_pool(model_without) == {}


def test_a_subclass_with_an_update_of_its_own_keeps_it(monkeypatch, threads):
    class Clipped(fastnet.Adam):
        name = None  # (not registered)
        calls = 0

        def _update(self, w, g, st, lr):
            Clipped.calls += 1
            np.clip(g, -1, 1, out=g)
            super()._update(w, g, st, lr)

    monkeypatch.setenv("FASTNET_THREADS", "fixed")
    monkeypatch.setenv("FASTNET_CPU_GEMM", "onednn")
    g.set_num_threads(2)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 20)).astype(np.float32)
    m = fastnet.MLP([20, 64, 3], seed=0, backend="cpu")
    m.fit(X, rng.integers(0, 3, 256), epochs=1, batch_size=64, optimizer=Clipped(), diagnose=False, verbose=0)
    assert Clipped.calls == 4 * 4  # every step, every tensor, through its own _update


def test_reference_kernels_never_run_on_the_pool(monkeypatch, threads):
    # kernels="reference" is the oracle: its update stays the NumPy formula, never the fused loop
    runs = []
    real_run = g.PoolRunner.run
    monkeypatch.setattr(g.PoolRunner, "run", lambda self, body, data: (runs.append(body), real_run(self, body, data)))
    monkeypatch.setenv("FASTNET_THREADS", "fixed")
    monkeypatch.setenv("FASTNET_CPU_GEMM", "onednn")
    g.set_num_threads(2)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 20)).astype(np.float32)
    m = fastnet.MLP([20, 64, 3], seed=0, backend="cpu", kernels="reference")
    m.fit(X, rng.integers(0, 3, 256), epochs=1, batch_size=64, diagnose=False, verbose=0)
    assert runs == [] and m.optimizer_._pool_update is False


# -- precision="bf16": the weights rounded by the step that updates them -----------------------------

@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("kernel", ["adam_update", "adamw_update", "sgd_update"])
def test_an_update_that_rounds_leaves_the_bits_of_the_updated_weights(kernel, n_threads, threads):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    threads(n_threads)
    runner = g.pool_runner()
    slots = 0 if kernel == "sgd_update" else 2
    sizes = SIZES + (3 * cpu._FUSE + 5,)   # (a tensor of several fused chunks and a short last one)
    mine, theirs = tensors(slots=slots, sizes=sizes), tensors(slots=slots, sizes=sizes)
    bits = [np.full(w.size, 0xABCD, np.uint16) if i % 2 == 0 else None for i, (w, _, _) in enumerate(mine)]
    update = cpu.pool_update(kernel, mine, runner.thread_functions, bits)
    for t, rounds in ((1, True), (2, False), (3, True)):
        update.set(*SCALARS[kernel](t))
        update.rounding(rounds)
        before = [None if b is None else b.copy() for b in bits]
        runner.run(update.body, update.data)
        for w, gr, st in theirs:
            getattr(cpu, kernel)(w, gr, *st, *SCALARS[kernel](t))
        for (w, _, st), (w2, _, st2), b, old in zip(mine, theirs, bits, before):
            assert np.array_equal(w, w2) and all(np.array_equal(x, y) for x, y in zip(st, st2))  # the same update
            if b is not None:   # rounded (as ml_dtypes rounds) exactly on the steps that round
                want = w.astype(ml_dtypes.bfloat16).view(np.uint16) if rounds else old
                assert np.array_equal(b, want), (t, w.size)
    with pytest.raises(ValueError, match="bits are a flat C-contiguous uint16 array"):
        cpu.pool_update(kernel, mine, runner.thread_functions, [np.zeros(3, np.uint16)] * len(mine))


def _bf16_fit(monkeypatch, fused, optimizer="adam", callbacks=(), epochs=2):
    """A bf16 fit on oneDNN's pool (2 threads) with the step's rounding of the weights (``fused``) or
    without it (the forward pass rounds them); returns the model and the weights' roundings there."""
    from fastnet.backends import precision as P

    if P.bf16_problem() is not None:
        pytest.skip(P.bf16_problem()) if not os.environ.get("CI") else pytest.fail(P.bf16_problem())
    monkeypatch.setenv("FASTNET_THREADS", "fixed")
    g.set_num_threads(2)
    if not fused:
        monkeypatch.setattr(g.Bf16Matmul, "step_bits", lambda self, params: [None] * len(params))
    # every update on the pool (the measured choice, FasterOf, would take the calling thread for
    # some steps: those round nothing)
    monkeypatch.setattr(g.FasterOf, "__call__", lambda self, key, here, pool, *args: pool(*args))
    rounded = []
    real = g.Bf16Matmul._round_bits
    monkeypatch.setattr(g.Bf16Matmul, "_round_bits", lambda self, src, dst: (rounded.append(src.size),
                                                                              real(self, src, dst)))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1200, 300)).astype(np.float32)
    y = (X[:, :3].sum(1) > 0).astype(int) + (X[:, 3] > 0.5)
    m = fastnet.MLP([300, 256, 256, 3], seed=0, backend="cpu", precision="bf16")
    m.fit(X, y, epochs=epochs, batch_size=128, optimizer=optimizer, verbose=0, diagnose=False,
          callbacks=list(callbacks))
    monkeypatch.undo()
    return m, rounded


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "momentum"])
def test_bf16_steps_that_round_the_weights_train_as_the_forward_rounding_does(monkeypatch, threads, optimizer):
    fused, fused_rounded = _bf16_fit(monkeypatch, True, optimizer)
    plain, plain_rounded = _bf16_fit(monkeypatch, False, optimizer)
    a, b = fused.get_weights(), plain.get_weights()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # 2 epochs of 10 steps: the forward pass rounds the first layer's weights at every step, or,
    # where the step rounded them (Adam's and SGD's updates on the pool), at each epoch's first
    w1 = 300 * 256
    assert plain_rounded.count(w1) == 20
    assert fused_rounded.count(w1) == (20 if optimizer == "momentum" else 2)  # (momentum: no pool version)
    # what the profile counts: operands taken from a step's bits (3 weights, 9 steps of 10 an epoch)
    assert fused.backend_._matmul.from_steps == (0 if optimizer == "momentum" else 2 * 9 * 3)
    assert plain.backend_._matmul.from_steps == 0


class _Shrink(fastnet.Callback):
    """Edits the first layer's weights in place: after every step, or at each epoch's end."""

    def __init__(self, when):
        self.when = when

    def on_step_end(self, model, epoch, step):
        if self.when == "step" and step % 3 == 0:
            model.layers[0].W *= np.float32(0.9)

    def on_epoch_end(self, model, epoch, logs):
        if self.when == "epoch":
            model.layers[0].W *= np.float32(0.9)


@pytest.mark.parametrize("when", ["step", "epoch"])
def test_a_callbacks_edit_of_the_weights_is_what_the_next_step_reads(monkeypatch, threads, when):
    fused, _ = _bf16_fit(monkeypatch, True, callbacks=[_Shrink(when)])
    plain, _ = _bf16_fit(monkeypatch, False, callbacks=[_Shrink(when)])
    a, b = fused.get_weights(), plain.get_weights()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_train_on_batch_after_fit_reads_the_weights_as_they_are_between_calls(monkeypatch, threads):
    from fastnet.backends import precision as P

    if P.bf16_problem() is not None:
        pytest.skip(P.bf16_problem())
    monkeypatch.setenv("FASTNET_THREADS", "fixed")
    g.set_num_threads(2)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((128, 300)).astype(np.float32)
    y = rng.integers(0, 3, 128)

    def train(fused):
        with monkeypatch.context() as mp:
            if not fused:
                mp.setattr(g.Bf16Matmul, "step_bits", lambda self, params: [None] * len(params))
            mp.setattr(g.FasterOf, "__call__", lambda self, key, here, pool, *args: pool(*args))
            m = fastnet.MLP([300, 256, 3], seed=0, backend="cpu", precision="bf16")  # (Adam: the default)
            m.fit(X, y, epochs=1, batch_size=32, verbose=0, diagnose=False)   # (its last step rounded W)
            m.layers[0].W *= np.float32(0.95)
            for i in range(12):
                m.train_on_batch(X, y)
                m.layers[0].W *= np.float32(0.95)   # the user's edit between two steps
            return m.get_weights()

    a, b = train(True), train(False)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_bits_a_step_left_go_only_to_the_array_they_were_rounded_from():
    from fastnet.backends import precision as P

    if P.bf16_problem() is not None:
        pytest.skip(P.bf16_problem())
    ml_dtypes = pytest.importorskip("ml_dtypes")
    mm = g.Bf16Matmul()
    w = np.random.default_rng(3).standard_normal((40, 24)).astype(np.float32)
    stale = np.zeros(w.shape, np.uint16)   # (not w's bits: what a step rounded before an edit)
    want = w.astype(ml_dtypes.bfloat16).view(np.uint16)
    with mm.steps_round():
        mm.rounded_by_step([(w, stale)])
        assert np.array_equal(mm.operand(w.view()), want)   # another array at w's address: rounded now
        assert mm.from_steps == 0                            # (and not counted as taken from a step)
        mm.rounded_by_step([(w, stale)])
        assert mm.operand(w) is stale                        # w itself: the step's bits, once
        assert mm.from_steps == 1
        assert np.array_equal(mm.operand(w), want)
        mm.rounded_by_step([(w, stale)])
    assert np.array_equal(mm.operand(w), want)   # nothing kept past the loop of steps
    mm.rounded_by_step([(w, stale)])             # (outside it nothing is kept at all)
    assert np.array_equal(mm.operand(w), want)

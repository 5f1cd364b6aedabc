"""The float32 GEMM provider of CPU training steps follows the measurement (fastnet.backends.gemm_choice):
simulated machines where each provider wins, the decision cached per CPU model, library
versions, thread count and shapes, FASTNET_CPU_GEMM overriding it, and the choice shown in
history.params and fastnet info."""
import time

import numpy as np
import pytest

import fastnet
from fastnet.backends import gemm_choice as gc
from fastnet.backends import gemm_mkl
from fastnet.backends import gemm_onednn
from fastnet.cli import info
from fastnet.kernels import kernel_set

ALL = {"numpy": None, "onednn": None, "mkl": None}
SHAPES = [(784, 512), (512,), (512, 512), (512,), (512, 10), (10,)]


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    """A decisions file of the test's own, no decision in memory, a simulated CPU and versions."""
    monkeypatch.setenv(gc.CACHE_ENV, str(tmp_path / "gemm-choice.json"))
    monkeypatch.delenv("FASTNET_CPU_GEMM", raising=False)
    monkeypatch.setattr(gc, "_memory", {})
    monkeypatch.setattr(gc, "cpu_model", lambda: "Simulated CPU 9000")
    monkeypatch.setattr(gc, "versions", lambda names: {"fastnet": "x", **{n: f"{n} 1.0" for n in names}})


def machine(rates, with_update=None):
    """A simulated machine: ``measure`` returning ``rates[provider]`` GFLOP/s (``with_update[provider]``
    where the steps are timed with an optimizer's update), counting calls and the updates timed."""
    calls, updates = [], []

    def measure(provider, problems, threads, update=None):
        calls.append((provider, len(problems), threads))
        updates.append(update)
        return (rates if update is None or with_update is None else with_update)[provider]

    measure.calls, measure.updates = calls, updates
    return measure


def test_step_problems_are_the_steps_gemms():
    assert gc.step_problems(128, SHAPES) == [
        (128, 784, 512, False, False), (784, 128, 512, True, False),                                # layer 1: no dx
        (128, 512, 512, False, False), (512, 128, 512, True, False), (128, 512, 512, False, True),
        (128, 512, 10, False, False), (512, 128, 10, True, False), (128, 10, 512, False, True)]
    assert gc.describe(gc.step_problems(128, SHAPES)) == "784-512-512-10 at batch 128"


@pytest.mark.parametrize("winner", ["numpy", "onednn", "mkl"])
def test_the_provider_measured_fastest_is_chosen(winner):
    rates = {p: 100.0 for p in ALL}
    rates[winner] = 150.0
    measure = machine(rates)
    choice = gc.choose(128, SHAPES, 2, "auto", measure=measure, providers=ALL)
    assert choice.provider == winner and choice.source == "measured"
    assert choice.gflops == rates
    assert {p for p, _, _ in measure.calls} == set(ALL)
    assert all(n == 8 and t == 2 for _, n, t in measure.calls)  # the step's 8 GEMMs, at the fit's threads
    assert choice.reason().startswith(f"measured 150 GFLOP/s vs ") and "784-512-512-10 at batch 128, 2 threads" \
        in choice.reason()


def test_a_provider_that_does_not_load_is_not_measured():
    measure = machine({"numpy": 100.0, "onednn": 90.0, "mkl": 500.0})
    providers = {"numpy": None, "onednn": None, "mkl": "MKL is not installed"}
    choice = gc.choose(128, SHAPES, 2, "auto", measure=measure, providers=providers)
    assert choice.provider == "numpy" and "mkl" not in {p for p, _, _ in measure.calls}
    assert choice.unavailable == {"mkl": "MKL is not installed"}
    only = gc.choose(64, SHAPES, 2, "auto", measure=measure, providers={"numpy": None, "onednn": "no", "mkl": "no"})
    assert only.provider == "numpy" and only.source == "the only provider here"


def test_the_decision_is_cached_in_the_process_and_on_disk(monkeypatch):
    first = gc.choose(128, SHAPES, 2, "auto", measure=machine({"numpy": 1.0, "onednn": 2.0, "mkl": 1.5}),
                      providers=ALL)
    assert first.provider == "onednn"
    # the same key again: no measurement, the same answer (even if a measurement now would differ)
    other = machine({"numpy": 9.0, "onednn": 1.0, "mkl": 1.0})
    assert gc.choose(128, SHAPES, 2, "auto", measure=other, providers=ALL) is first and not other.calls
    monkeypatch.setattr(gc, "_memory", {})  # a new process: from the file
    again = gc.choose(128, SHAPES, 2, "auto", measure=other, providers=ALL)
    assert (again.provider, again.source, again.gflops) == ("onednn", "cache", first.gflops) and not other.calls
    entry = gc.cached_decisions()[0]
    assert entry["provider"] == "onednn" and entry["cpu"] == "Simulated CPU 9000" and entry["threads"] == 2


@pytest.mark.parametrize("change", ["cpu", "versions", "threads", "shapes", "batch"])
def test_a_new_cpu_library_version_thread_count_or_shape_measures_again(monkeypatch, change):
    gc.choose(128, SHAPES, 2, "auto", measure=machine({"numpy": 1.0, "onednn": 2.0, "mkl": 1.5}), providers=ALL)
    monkeypatch.setattr(gc, "_memory", {})
    batch, shapes, threads = 128, SHAPES, 2
    if change == "cpu":
        monkeypatch.setattr(gc, "cpu_model", lambda: "Another CPU with AMX")
    elif change == "versions":
        monkeypatch.setattr(gc, "versions", lambda names: {"fastnet": "x", **{n: f"{n} 2.0" for n in names}})
    elif change == "threads":
        threads = 1
    elif change == "shapes":
        shapes = [(784, 128), (128, 10)]
    else:
        batch = 1024
    measure = machine({"numpy": 1.0, "onednn": 1.0, "mkl": 3.0})
    choice = gc.choose(batch, shapes, threads, "auto", measure=measure, providers=ALL)
    assert choice.provider == "mkl" and choice.source == "measured" and measure.calls


def test_the_cache_key_names_cpu_versions_threads_and_shapes():
    problems = gc.step_problems(128, SHAPES)
    base = gc.cache_key("CPU A", {"numpy": "1"}, 2, problems)
    assert base == gc.cache_key("CPU A", {"numpy": "1"}, 2, problems)
    assert len({base, gc.cache_key("CPU B", {"numpy": "1"}, 2, problems),
                gc.cache_key("CPU A", {"numpy": "2"}, 2, problems),
                gc.cache_key("CPU A", {"numpy": "1"}, 1, problems),
                gc.cache_key("CPU A", {"numpy": "1"}, 2, problems[:2])}) == 5


def test_the_choice_times_the_optimizers_update_with_the_gemms():
    # a simulated machine where MKL's GEMMs alone are fastest, but oneDNN's steps with Adam's
    # update are (its pool shares the update; beside MKL one thread does it): what a step costs wins
    kset = kernel_set("cpu")
    adam = fastnet.Adam().step_update(SHAPES, kset)
    measure = machine({"numpy": 100.0, "onednn": 110.0, "mkl": 120.0},
                      with_update={"numpy": 80.0, "onednn": 100.0, "mkl": 90.0})
    gemms = gc.choose(128, SHAPES, 2, "auto", measure=measure, providers=ALL)
    steps = gc.choose(128, SHAPES, 2, "auto", update=adam, measure=measure, providers=ALL)
    assert (gemms.provider, steps.provider) == ("mkl", "onednn")
    assert all(u is adam for u in measure.updates[-len(measure.calls) // 2:])
    assert steps.update == "adam" and steps.reason().endswith("2 threads, steps with adam's update")
    assert steps.as_dict()["update"] == "adam" and gemms.update == ""
    # another optimizer (or the same on other parameters) is another decision; the same one is not
    sgd = gc.choose(128, SHAPES, 2, "auto", update=fastnet.SGD().step_update(SHAPES, kset), measure=measure,
                    providers=ALL)
    assert sgd.source == "measured" and sgd is not steps
    n = len(measure.calls)
    assert gc.choose(128, SHAPES, 2, "auto", update=fastnet.Adam(lr=0.1).step_update(SHAPES, kset),
                     measure=measure, providers=ALL) is steps and len(measure.calls) == n
    keys = {gc.cache_key("CPU A", {}, 2, [], u) for u in (None, adam, fastnet.SGD().step_update(SHAPES, kset),
                                                       fastnet.Adam().step_update(SHAPES[:2], kset))}
    assert len(keys) == 4


def test_measure_times_the_update_in_every_step():
    problems = gc.step_problems(32, [(20, 16), (16, 3)])
    runners = []
    update = gc.StepUpdate("slow", ((4, 4),), lambda runner: runners.append(runner) or (lambda: steps.append(
        time.sleep(0.004))))
    steps = []
    rate = gc.measure("numpy", problems, 1, update=update)
    assert runners == [None]  # (beside NumPy's BLAS the update runs on the calling thread)
    assert len(steps) >= gc.WARM_STEPS + gc.MIN_REPS
    assert rate <= gc.problem_flops(problems) / 0.004 / 1e9  # every timed step waited 4 ms
    assert gc.measure("numpy", problems, 1) > 2 * rate
    with pytest.raises(ValueError, match="float32"):
        gc.measure("onednn", problems, 1, precision="bf16", update=update)


@pytest.mark.skipif(not gemm_onednn.available(), reason="oneDNN is not installed")
def test_onednns_steps_time_the_update_on_its_pool():
    problems = gc.step_problems(32, [(20, 16), (16, 3)])
    seen = []

    def make(runner):
        seen.append((runner, runner.threads()))
        return lambda: None

    gc.measure("onednn", problems, 2, update=gc.StepUpdate("x", (), make))
    assert seen == [(gemm_onednn.pool_runner(), 2)]  # oneDNN's pool, at the measured thread count


def test_step_update_steps_a_copy_of_the_optimizer_on_scratch_arrays():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 12)).astype(np.float32)
    model = fastnet.MLP([12, 16, 3], backend="cpu", seed=0)
    model.fit(X, rng.integers(0, 3, 64), epochs=1, batch_size=32, verbose=0, optimizer="adam", lr=0.01)
    opt = model.optimizer_
    before = opt.get_state()
    shapes = [a.shape for _, a in model.parameters()]
    step = opt.step_update(shapes, model.backend_.kernel_set).make(None)
    step()
    step()
    after = opt.get_state()
    assert after["t"] == before["t"] == 2
    for mine, theirs in zip(before["slots"], after["slots"]):
        for k in mine:
            np.testing.assert_array_equal(mine[k], theirs[k])
    # the scratch steps are Adam's at the optimizer's lr: a constant gradient moves each weight lr per step
    scratch = step.optimizer
    assert scratch is not opt and scratch.t == 2 and [p.shape for p in scratch._params[::-1]] == shapes
    for p in scratch._params:
        np.testing.assert_allclose(p, 0.01 - 2 * 0.01, rtol=1e-4)
    # a step of the instance's own (the scikit-learn estimators add their penalty's gradient to the
    # fit's gradients there) is the fit's, not the scratch steps'
    own = []
    opt.step = lambda lr: own.append(lr)
    step = opt.step_update(shapes, model.backend_.kernel_set).make(None)
    step()
    assert not own and step.optimizer.t == 1


def test_decisions_of_an_earlier_measurement_method_are_made_again(monkeypatch):
    # (method 1 timed oneDNN beside OpenBLAS's spinning threads: its cached "numpy" stays wrong)
    gc.choose(128, SHAPES, 2, "auto", measure=machine({"numpy": 2.0, "onednn": 1.0, "mkl": 1.0}), providers=ALL)
    monkeypatch.setattr(gc, "_memory", {})
    monkeypatch.setattr(gc, "METHOD", gc.METHOD + 1)
    again = machine({"numpy": 1.0, "onednn": 2.0, "mkl": 1.0})
    assert gc.choose(128, SHAPES, 2, "auto", measure=again, providers=ALL).provider == "onednn" and again.calls


@pytest.mark.parametrize("setting", ["numpy", "onednn", "mkl"])
def test_FASTNET_CPU_GEMM_overrides_the_measurement(monkeypatch, setting):
    measure = machine({"numpy": 1.0, "onednn": 1.0, "mkl": 1.0})
    monkeypatch.setenv("FASTNET_CPU_GEMM", setting)
    choice = gc.choose(128, SHAPES, 2, measure=measure, providers=ALL)
    assert choice.provider == setting and choice.source == "setting" and not measure.calls
    assert choice.reason().startswith(f"FASTNET_CPU_GEMM={setting} (not measured) on 784-512-512-10")


def test_a_bad_setting_is_refused_naming_the_variable_and_value(monkeypatch):
    monkeypatch.setenv("FASTNET_CPU_GEMM", "blis")
    with pytest.raises(ValueError, match="FASTNET_CPU_GEMM must be one of 'auto', 'numpy', 'onednn', 'mkl', "
                                         "got 'blis'"):
        gc.choose(128, SHAPES, 2, measure=machine({}), providers=ALL)


def _fit(monkeypatch, rates, providers):
    monkeypatch.setattr(gc, "measure", machine(rates))
    monkeypatch.setattr(gc, "available", lambda: dict(providers))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 12)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    model = fastnet.MLP([12, 16, 3], backend="cpu", seed=0)
    history = model.fit(X, y, epochs=1, batch_size=32, verbose=0, diagnose=False)
    return model, history


def test_fit_trains_with_the_chosen_provider_and_records_it(monkeypatch):
    model, history = _fit(monkeypatch, {"numpy": 50.0, "onednn": 10.0, "mkl": 10.0},
                          {"numpy": None, "onednn": None, "mkl": "no"})
    gemm = history.params["gemm"]
    assert gemm["provider"] == "numpy" and gemm["source"] == "measured" and model.backend_._matmul is None
    assert gemm["gflops"] == {"numpy": 50.0, "onednn": 10.0} and "12-16-3 at batch 32" in gemm["reason"]
    # the steps were timed with the fit's optimizer's update of the model's parameters
    name = model.optimizer_.name
    assert {(u.name, u.shapes) for u in gc.measure.updates} == {(name, ((12, 16), (16,), (16, 3), (3,)))}
    assert gemm["update"] == name and gemm["reason"].endswith(f"steps with {name}'s update")


@pytest.mark.skipif(not gemm_onednn.available(), reason="oneDNN is not installed")
def test_fit_runs_every_gemm_in_onednn_where_it_measures_fastest(monkeypatch):
    calls = []
    real = gemm_onednn.matmul
    monkeypatch.setattr(gemm_onednn, "matmul", lambda a, b, out=None, **kw: calls.append(a.shape) or
                        real(a, b, out=out, **kw))
    model, history = _fit(monkeypatch, {"numpy": 10.0, "onednn": 50.0, "mkl": 10.0},
                          {"numpy": None, "onednn": None, "mkl": "no"})
    assert history.params["gemm"]["provider"] == "onednn"
    assert isinstance(model.backend_._matmul, gemm_onednn.F32Matmul)
    assert len(calls) == 3 * 5  # 3 steps of 5 GEMMs (x@W, x.T@dy twice; dy@W.T once)
    # a second fit of the same model keeps the decision: same provider, no new measurement
    monkeypatch.setattr(gc, "measure", machine({"numpy": 99.0, "onednn": 1.0, "mkl": 1.0}))
    again = model.fit(np.zeros((32, 12), np.float32), np.zeros(32, int), epochs=1, batch_size=32, verbose=0,
                      diagnose=False)
    assert again.params["gemm"]["provider"] == "onednn" and not gc.measure.calls


@pytest.mark.skipif(not gemm_mkl.available(), reason="MKL is not installed (pip install '.[mkl]')")
def test_fit_runs_in_mkl_where_it_measures_fastest(monkeypatch):
    model, history = _fit(monkeypatch, {"numpy": 10.0, "onednn": 10.0, "mkl": 50.0}, ALL)
    assert history.params["gemm"]["provider"] == "mkl" and isinstance(model.backend_._matmul, gemm_mkl.F32Matmul)
    ref = fastnet.MLP([12, 16, 3], backend="cpu", seed=0)
    monkeypatch.setenv("FASTNET_CPU_GEMM", "numpy")
    rng = np.random.default_rng(0)
    ref.fit(rng.standard_normal((96, 12)).astype(np.float32), rng.integers(0, 3, 96), epochs=1, batch_size=32,
            verbose=0)
    for (_, a), (_, b) in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.skipif(not gemm_mkl.available(), reason="MKL is not installed (pip install '.[mkl]')")
@pytest.mark.parametrize("m,k,n", [(7, 5, 3), (1, 5, 3), (5, 1, 3), (5, 3, 1), (1, 1, 1), (128, 784, 512)])
def test_mkl_matmul_reads_transposes_in_place_and_copies_other_layouts(m, k, n):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    for A in (a, np.ascontiguousarray(a.T).T, np.repeat(a, 2, axis=1)[:, ::2]):
        for B in (b, np.ascontiguousarray(b.T).T):
            np.testing.assert_allclose(gemm_mkl.matmul(A, B), A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)


def test_mkl_that_does_not_load_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(gemm_mkl, "_lib", None)
    monkeypatch.setattr(gemm_mkl, "_load_error", None)
    monkeypatch.setenv("FASTNET_MKL", str(tmp_path / "libmkl_rt.so.3"))
    with pytest.raises(gemm_mkl.MKLUnavailable, match=r"FASTNET_MKL=.*libmkl_rt\.so\.3.*pip install \"\.\[mkl\]\""):
        gemm_mkl.load()
    assert not gemm_mkl.available()


def test_fastnet_info_shows_the_chosen_provider_and_why(monkeypatch):
    monkeypatch.setattr(gc, "measure", machine({"numpy": 180.0, "onednn": 210.0, "mkl": 150.0}))
    monkeypatch.setattr(gc, "available", lambda: dict(ALL))
    lines = info.precision_lines()
    text = "\n".join(lines)
    assert "float32 GEMMs of cpu training: auto (FASTNET_CPU_GEMM=auto: the fastest provider measured" in text
    assert "CPU: Simulated CPU 9000; providers here: numpy (numpy 1.0), onednn (onednn 1.0), mkl (mkl 1.0)" in text
    assert ("the default recipe's model: onednn: measured 210 GFLOP/s vs numpy 180, mkl 150 on 784-256-256-10 "
            "at batch 128, ") in text and "steps with adam's update [measured now in" in text
    assert {(u.name, u.shapes) for u in gc.measure.updates} == {("adam", ((784, 256), (256,), (256, 256), (256,),
                                                                          (256, 10), (10,)))}
    # an earlier decision for another model on this CPU is listed too
    gc.choose(1024, SHAPES, 2, "auto", measure=machine({"numpy": 1.0, "onednn": 1.0, "mkl": 3.0}), providers=ALL)
    assert "decided on this CPU: mkl: measured 3 GFLOP/s vs numpy 1, onednn 1 on 784-512-512-10 at batch 1024" \
        in "\n".join(info.precision_lines())


def test_measure_times_a_real_provider_quickly():
    choice_time = []
    import time

    t = time.perf_counter()
    rate = gc.measure("numpy", gc.step_problems(32, [(20, 16), (16, 3)]), 1)
    choice_time.append(time.perf_counter() - t)
    assert rate > 0 and choice_time[0] < 1.0


# -- measuring one provider while another's threads spin -----------------------------------------

def test_settle_sees_another_thread_of_the_process_spinning():
    # settle's premise: the process's CPU time counts the threads a pool let go (here a Python
    # thread) while the measuring thread sleeps; its waiting logic is the next test's
    import threading
    import time

    gc.settle(limit=1.0)  # (an earlier test's BLAS threads may still spin)
    assert gc.settle() < 0.05  # nothing else running: one quiet interval
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        c, t = time.process_time(), time.perf_counter()
        time.sleep(0.2)
        share = (time.process_time() - c) / (time.perf_counter() - t)
    finally:
        stop.set()
        thread.join()
    # a whole core where the machine is quiet (CI's other test processes take much of it);
    # a clock of the calling thread alone (time.thread_time) reads 0 here
    assert share > 0.05, share
    import inspect

    assert inspect.signature(gc.settle).parameters["cpu"].default is time.process_time
    assert 0.25 <= gc.settle(limit=0.25, cpu=lambda: time.perf_counter() * 2) < 0.35  # never quiet: the limit


def test_settle_counts_the_process_cpu_time_while_it_sleeps():
    # a simulated process: its other threads use a whole core for the first 3 intervals
    now, used, naps = [0.0], [0.0], []

    def sleep(seconds):
        naps.append(seconds)
        now[0] += seconds
        used[0] += seconds if len(naps) <= 3 else 0.0

    waited = gc.settle(limit=1.0, clock=lambda: now[0], cpu=lambda: used[0], sleep=sleep)
    assert len(naps) == 4 and waited == pytest.approx(4 * gc.QUIET_SECONDS)


def test_each_provider_is_timed_after_settle_and_its_untimed_steps(monkeypatch):
    # OpenBLAS's idle threads spin for about 0.13 s after NumPy's GEMMs; oneDNN timed meanwhile
    # measured 0.67-0.76x its speed alone (five fresh processes, Intel Xeon; 3 GFLOP/s instead
    # of 300 in one), and its first steps in a process include primitives made and a compile
    log = []
    monkeypatch.setattr(gc, "settle", lambda: log.append("settle"))

    class Provider:
        pool = ("fake", lambda: 2, lambda n: None)

        def __call__(self, a, b, out):
            log.append("gemm")
            np.matmul(a, b, out=out)

    monkeypatch.setattr(gc, "matmul_for", lambda provider: Provider())
    problems = gc.step_problems(8, [(4, 3)])  # one layer: x @ W and x.T @ dy
    ticks = iter(range(10**6))

    def clock():
        log.append("clock")
        return next(ticks) * 0.001

    gc.measure("onednn", problems, 2, clock=clock)
    assert gc.WARM_STEPS >= 2  # (the first makes oneDNN's primitives, the second compiles its fast call)
    untimed = 1 + gc.WARM_STEPS * len(problems)
    assert log[:untimed] == ["settle"] + ["gemm"] * (untimed - 1) and log[untimed] == "clock"
    assert "settle" not in log[untimed:]


# -- fit's validation on the training GEMMs' library ----------------------------------------------

def _validated_fit(monkeypatch, setting, precision="float32"):
    monkeypatch.setenv("FASTNET_CPU_GEMM", setting)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 12)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    Xv = rng.standard_normal((40, 12)).astype(np.float32)
    yv = rng.integers(0, 3, 40)
    model = fastnet.MLP([12, 16, 3], backend="cpu", seed=0, precision=precision)
    calls = []
    real = gemm_onednn.matmul
    monkeypatch.setattr(gemm_onednn, "matmul", lambda a, b, out=None, **kw: calls.append(a.shape) or
                        real(a, b, out=out, **kw))
    history = model.fit(X, y, epochs=2, batch_size=32, verbose=0, validation_data=(Xv, yv))
    return model, history, calls, (Xv, yv)


@pytest.mark.skipif(not gemm_onednn.available(), reason="oneDNN is not installed")
@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_fit_validates_on_onednn_when_its_steps_run_there(monkeypatch, precision):
    # (a switch to NumPy's BLAS between epochs left OpenBLAS's threads spinning beside the next
    # steps' oneDNN GEMMs: 0.08 s an epoch of 784-512-512-10 at batch 128, Intel Xeon)
    from fastnet.backends.precision import bf16_problem

    if precision == "bf16" and bf16_problem():
        pytest.skip(bf16_problem())
    model, history, calls, (Xv, yv) = _validated_fit(monkeypatch, "onednn", precision)
    assert calls.count((40, 12)) == 2 and calls.count((40, 16)) == 2  # each layer, each epoch's validation
    # float32 validation (not bf16), as evaluate computes it in NumPy: equal but for the last bits
    loss, accuracy = model.evaluate(Xv, yv)
    assert history["val_loss"][-1] == pytest.approx(loss, rel=1e-6)
    assert history["val_accuracy"][-1] == accuracy


@pytest.mark.skipif(not gemm_onednn.available(), reason="oneDNN is not installed")
def test_fit_validates_in_numpy_when_its_steps_run_there(monkeypatch):
    model, history, calls, (Xv, yv) = _validated_fit(monkeypatch, "numpy")
    assert calls == [] and model.backend_.evaluation_matmul() is None
    assert history["val_loss"][-1] == model.evaluate(Xv, yv)[0]

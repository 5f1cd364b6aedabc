"""The whole CUDA backend on the CuPy contract, kernels under the simulator.

``backend="cuda-sim"`` runs ``fastnet.backends.devices._CupyDevice`` (the code the
``cuda`` backend runs on a GPU) with ``fastnet.cuda_sim.contract`` standing in for
CuPy: every call is checked against the installed CuPy's real signatures, an
implicit host conversion is a TypeError, and device allocations, transfers
and synchronisations are counted.  Each user-facing feature runs here once.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastnet
from fastnet.backends import devices as B
from fastnet.cuda_sim import contract as C
from fastnet import datasets
from fastnet.kernels import cuda as kcuda

SIM = "cuda-sim"
#: Fewer simulated threads than the session's launches (tests/cuda_sim/conftest.py): the
#: kernels' reductions are tested there; here whole trainings run, ~0.1 s a step.
TINY_LAUNCH = dict(block=4, row_block=4, bwd_block=(2, 2), max_blocks=1)


@pytest.fixture(autouse=True, scope="module")
def tiny_launches():
    old = kcuda.set_launch_config(**TINY_LAUNCH)
    yield
    kcuda.set_launch_config(**old)


def blobs(n=64, seed=0):
    X, y = datasets.make_blobs(n_samples=n, seed=seed)
    return X.astype(np.float32), y


def small(backend=SIM, **kw):
    kw.setdefault("seed", 0)
    return fastnet.MLP([2, 8, 3], backend=backend, **kw)


def test_cuda_sim_is_the_cupy_device_on_the_contract():
    m = small()
    assert isinstance(m.backend_._device, B._CupyDevice)
    assert m.backend_.xp is C.module()
    assert B.backend_status("cuda-sim")[0]
    assert kcuda._DEVICE_TYPES[C.ndarray] == C.module().cuda.get_current_stream


def test_smoke_launch_on_the_contract():
    # The same one-element launch cuda_status makes on a GPU.
    assert B._smoke_launch(C.module()) == (True, "test launch and GEMM passed")


def test_smoke_launch_names_a_missing_cublas(monkeypatch):
    # CuPy loads cuBLAS at its first GEMM: an extra without cuda-toolkit[cublas] fails there,
    # with this error (CuPy 14.2, read in a venv holding `fastnet-mlp[cuda13]` without cuBLAS).
    def no_cublas(a, b, *args, **kwargs):
        raise ImportError('Failure finding "libcublasLt.so.13 or libcublasLt.so.12": No such file')

    monkeypatch.setattr(C.module(), "matmul", no_cublas, raising=False)
    ok, why = B._smoke_launch(C.module())
    assert not ok and why.startswith("cuBLASLt cannot be found or loaded, so no GEMM runs")
    assert "fastnet-mlp[cuda13]" in why or ".[cuda13]" in why
    monkeypatch.setattr(C.module(), "matmul", lambda a, b: a @ b * 0, raising=False)
    ok, why = B._smoke_launch(C.module())
    assert not ok and "test GEMM (cupy.matmul) computed 0.0, expected 2.0" in why
    monkeypatch.setattr(C.module(), "matmul", lambda a, b: 1 / 0, raising=False)
    assert "test GEMM (cupy.matmul) failed (ZeroDivisionError" in B._smoke_launch(C.module())[1]


def test_smoke_launch_reports_a_failing_launch(monkeypatch):
    def broken(z, b):
        raise RuntimeError("libNVVM cannot be found. Do `conda install cudatoolkit`")

    monkeypatch.setattr(kcuda, "relu_fwd", broken)
    ok, why = B._smoke_launch(C.module())
    assert not ok and "libNVVM cannot be found" in why and "fastnet-mlp[cuda13]" in why
    monkeypatch.setattr(kcuda, "relu_fwd", lambda z, b: None)  # computes nothing
    ok, why = B._smoke_launch(C.module())
    assert not ok and "computed 0.0, expected 3.0" in why
    monkeypatch.setattr(kcuda, "relu_fwd", lambda z, b: 1 / 0)
    assert "test launch of a fused kernel failed (ZeroDivisionError" in B._smoke_launch(C.module())[1]


# --------------------------------------------------------------------------
# no allocation, transfer or synchronisation inside an epoch
# --------------------------------------------------------------------------
class StepCounts(fastnet.Callback):
    def on_train_begin(self, model):
        self.steps, self.last = [], C.COUNTERS.snapshot()

    def on_step_end(self, model, epoch, step):
        self.steps.append(((epoch, step), C.COUNTERS.since(self.last)))
        self.last = C.COUNTERS.snapshot()

    def on_epoch_end(self, model, epoch, logs):
        self.last = C.COUNTERS.snapshot()  # the epoch-end reads are counted per epoch below


@pytest.mark.parametrize("kw,fit", [
    (dict(dropout=0.25), dict(optimizer="adam", lr_schedule="cosine")),
    (dict(output="sigmoid", loss="binary_cross_entropy"), dict(optimizer="momentum")),
    # opt-out kept: shuffle=False in this case, as the traffic of both orders is the subject
    (dict(output="linear", loss="mse"), dict(optimizer="rmsprop", shuffle=False)),
])
def test_no_device_traffic_per_step_after_the_first(kw, fit):
    X, y = blobs(64)
    if kw.get("loss") == "binary_cross_entropy":
        y = np.eye(3)[y]
    elif kw.get("loss") == "mse":
        y = np.eye(3)[y].astype(np.float32)
    m = small(**kw)
    counter = StepCounts()
    before = C.COUNTERS.snapshot()
    # opt-out kept: diagnose=False, as the per-epoch bound below counts the training loop's own
    # transfers; the doctor's per-layer norms (the default) add 3 reads an epoch (7, not <= 4)
    m.fit(X, y, epochs=3, batch_size=16, callbacks=[counter], diagnose=False, on_nan="ignore", **fit)
    total = C.COUNTERS.since(before)
    zero = dict(allocations=0, host_to_device=0, device_to_host=0, synchronizations=0)
    first, *rest = counter.steps
    assert len(counter.steps) == 12
    shuffle = fit.get("shuffle", True)
    for (epoch, step), seen in rest:
        # The first step of an epoch includes the epoch's permutation, copied in once.
        expected = dict(zero, host_to_device=int(shuffle and step == 1))
        assert seen == expected, f"epoch {epoch} step {step}: {seen}"
    # Per epoch: the permutation copied in, the step losses and correct counts read out.
    per_epoch = {k: (total[k] - first[1][k]) / 3 for k in total}
    assert per_epoch["device_to_host"] <= 4 and per_epoch["synchronizations"] <= 4, per_epoch
    assert per_epoch["host_to_device"] <= 2, per_epoch


def test_device_views_are_made_once_per_buffer(monkeypatch):
    X, y = blobs(64)
    m = small(dropout=0.2)
    # opt-out kept: diagnose=False, as the doctor's forward pass after each fit moves its rows to
    # the device anew, as predict does (a new buffer, so a new view); the subject is the training's
    m.fit(X, y, epochs=1, batch_size=16, optimizer="adam", diagnose=False)
    made = []
    make = kcuda._make_view
    monkeypatch.setattr(kcuda, "_make_view", lambda a: made.append(tuple(a.shape)) or make(a))
    m.fit(X, y, epochs=2, batch_size=16, optimizer="adam", diagnose=False)
    # A second fit reuses the views of the model's buffers (weights, gradients, activations,
    # optimizer state); only the fit's own copy of the data may be new (the views are keyed by
    # device address, and a new copy may or may not land where the last one was).
    assert set(made) <= {X.shape, y.shape}, made


def test_view_table_is_bounded(monkeypatch):
    monkeypatch.setattr(kcuda, "MAX_VIEWS", 3)
    kcuda._VIEWS.clear()
    xp = C.module()
    arrays = [xp.asarray(np.zeros(4, np.float32)) for _ in range(5)]
    for a in arrays:
        kcuda._view(a)
    assert len(kcuda._VIEWS) <= 3
    v = kcuda._view(arrays[-1])
    assert isinstance(v, np.ndarray) and v.shape == (4,)
    assert kcuda._view(arrays[-1]) is v


# --------------------------------------------------------------------------
# one random stream on every backend
# --------------------------------------------------------------------------
def test_same_seed_same_data_order_on_cpu_and_cuda_sim():
    cpu = B.get_backend("cpu", seed=5)
    sim = B.get_backend(SIM, seed=5)
    for n in (10, 1000):
        np.testing.assert_array_equal(cpu.permutation(n), sim.to_host(sim.permutation(n)))


def test_dropout_masks_are_the_same_on_cpu_and_cuda_sim():
    cpu = B.get_backend("cpu", seed=3)
    sim = B.get_backend(SIM, seed=3)
    a = np.empty((9, 33), np.float32)
    b = sim.xp.empty((9, 33), dtype=np.float32)
    for _ in range(2):
        cpu.dropout_mask(a, 0.3)
        sim.dropout_mask(b, 0.3)
        np.testing.assert_array_equal(a, sim.to_host(b))
    assert cpu.get_rng_state() == sim.get_rng_state()


def test_dropout_rows_of_a_global_batch_are_the_same_on_cpu_and_cuda_sim():
    # a data-parallel rank's rows 4..8 of a 9-row batch: the masks one process draws there
    cpu = B.get_backend("cpu", seed=5)
    sim = B.get_backend(SIM, seed=5)
    whole = np.empty((9, 33), np.float32)
    cpu.dropout_mask(whole, 0.3)
    sim.dropout_counter = 0
    sim.dropout_row = 4
    rows = sim.xp.empty((5, 33), dtype=np.float32)
    sim.dropout_mask(rows, 0.3)
    np.testing.assert_array_equal(sim.to_host(rows), whole[4:])


def test_training_with_dropout_and_shuffle_matches_cpu():
    X, y = blobs(96)
    curves, params = {}, {}
    for backend in ("cpu", SIM):
        m = small(backend, dropout=0.3)
        h = m.fit(X, y, epochs=2, batch_size=32, optimizer="adam", lr=1e-2)
        curves[backend], params[backend] = h["loss"], h.params
    np.testing.assert_allclose(curves[SIM], curves["cpu"], rtol=1e-5)
    # the loss before training and its standard error (the first batch's squared row losses, summed
    # on the device)
    for key in ("initial_loss", "initial_loss_se"):
        assert params[SIM][key] == pytest.approx(params["cpu"][key], rel=1e-5), key
    assert params[SIM]["initial_loss_se"] > 0


CHILD = textwrap.dedent("""
    import os, signal, sys, numpy as np, fastnet
    from fastnet import datasets
    from fastnet.kernels import cuda

    class KillMidEpoch(fastnet.Callback):
        def on_step_end(self, model, epoch, step):
            if epoch == 3 and step == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    cuda.set_launch_config(**%r)
    X, y = datasets.make_blobs(n_samples=64, seed=1)
    m = fastnet.MLP([2, 8, 3], backend="cuda-sim", seed=7, dropout=0.25)
    m.fit(X, y, epochs=4, batch_size=16, optimizer="adam", lr_schedule="cosine",
          callbacks=[fastnet.ModelCheckpoint(sys.argv[1]), KillMidEpoch()])
    print("finished", flush=True)
""" % TINY_LAUNCH)


@pytest.mark.once  # (tens of seconds under the simulator)
def test_sigkill_mid_epoch_with_dropout_then_resume_is_bit_identical(tmp_path):
    ckpt = tmp_path / "run.ckpt.npz"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, str(script), str(ckpt)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    meta = json.loads(np.load(ckpt)["__fastnet__"].tobytes())
    assert meta["history"]["epochs"] == [1, 2]
    assert meta["rng_state"]["dropout_counter"] == 2 * 4  # one mask per step, 4 steps an epoch

    X, y = datasets.make_blobs(n_samples=64, seed=1)
    fit = dict(batch_size=16, optimizer="adam", lr_schedule="cosine")
    reference = fastnet.MLP([2, 8, 3], backend=SIM, seed=7, dropout=0.25)
    reference.fit(X, y, epochs=4, **fit)
    resumed = fastnet.MLP([2, 8, 3], backend=SIM, seed=7, dropout=0.25)
    h = resumed.fit(X, y, epochs=4, resume=ckpt, **fit)
    assert h.epochs == [3, 4]
    for name, w in reference.get_weights().items():
        assert np.array_equal(w, resumed.get_weights()[name]), name
    assert resumed.loss_curve_ == reference.loss_curve_


# --------------------------------------------------------------------------
# every feature once on the contract
# --------------------------------------------------------------------------
class Recorder(fastnet.Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, model):
        self.events.append("begin")

    def on_epoch_end(self, model, epoch, logs):
        self.events.append(epoch)

    def on_train_end(self, model):
        self.events.append("end")


def test_fit_validation_early_stopping_callbacks_partial_fit():
    X, y = blobs(96)
    m = small()
    rec = Recorder()
    h = m.fit(X, y, epochs=3, batch_size=32, optimizer="adam", lr=1e-2, validation_split=0.25,
              callbacks=[rec])
    assert rec.events == ["begin", 1, 2, 3, "end"]
    assert set(h.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    h = m.fit(X[:64], y[:64], epochs=20, batch_size=32, optimizer="adam", lr=1e-2,
              validation_data=(X[64:], y[64:]),
              early_stopping=fastnet.EarlyStopping(patience=1, min_delta=10.0))
    assert len(h.epochs) == 2  # best at epoch 1; epoch 2 does not improve by 10: patience 1 spent, stops (Keras)
    n = m.n_iter_
    m.partial_fit(X, y, optimizer="adam", lr=1e-2)
    assert m.n_iter_ == n + 1
    assert m.score(X, y) > 0.8


def test_inference_api_and_metrics():
    X, y = blobs(96)
    m = small()
    m.fit(X, y, epochs=4, batch_size=32, optimizer="adam", lr=3e-2)
    ref = m.clone(backend="cpu")
    p = m.predict_proba(X)
    assert isinstance(p, np.ndarray) and p.shape == (96, 3)
    np.testing.assert_allclose(p, ref.predict_proba(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(m.predict(X), ref.predict(X))
    top = m.predict_top_k(X[:5], k=2)
    np.testing.assert_array_equal(top[0][:, 0], m.predict(X[:5]))
    ev = m.evaluate(X, y, return_dict=True)
    assert ev["accuracy"] == pytest.approx(ref.evaluate(X, y, return_dict=True)["accuracy"])
    assert ev["loss"] == pytest.approx(ref.evaluate(X, y, return_dict=True)["loss"], rel=1e-5)
    assert m.score(X, y) == ev["accuracy"]
    cm = fastnet.core.metrics.confusion_matrix(y, m.predict(X))
    assert cm.sum() == 96
    loss, grads = m.gradients(X[:16], y[:16])
    loss_ref, grads_ref = ref.gradients(X[:16], y[:16])
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    for k in grads:
        np.testing.assert_allclose(grads[k], grads_ref[k], rtol=1e-4, atol=1e-6)


def test_regression_score_on_the_contract():
    X, _ = blobs(64)
    t = (X[:, :1] * 0.5).astype(np.float32)
    m = fastnet.MLP([2, 8, 1], output="linear", loss="mse", backend=SIM, seed=0)
    m.fit(X, t, epochs=3, batch_size=16, optimizer="adam", lr=1e-2)
    assert m.score(X, t) == pytest.approx(m.clone(backend="cpu").score(X, t), rel=1e-4)


def test_gradcheck_float64():
    X, y = blobs(16)
    m = fastnet.MLP([2, 5, 3], activation="tanh", backend=SIM, dtype="float64", seed=0)
    m.build(2)
    assert fastnet.gradcheck(m, X[:8], y[:8]) < 1e-6


def test_weights_from_host_and_device_and_to_both_ways(tmp_path):
    X, y = blobs(64)
    m = small()
    m.fit(X, y, epochs=2, batch_size=16, optimizer="adam", lr=1e-2)
    host = m.get_weights()
    assert all(isinstance(v, np.ndarray) for v in host.values())
    other = small(seed=1)
    other.build(2)
    other.set_weights(dict(m.parameters()))  # device arrays
    np.testing.assert_array_equal(other.predict_proba(X), m.predict_proba(X))
    other.set_weights({k: v * 0 for k, v in host.items()})  # host arrays
    assert all(np.all(v == 0) for v in other.get_weights().values())
    # to("cpu") and back, optimizer state included
    p = m.predict_proba(X)
    m.to("cpu")
    assert m.backend_.name == "cpu" and isinstance(m.parameters()[0][1], np.ndarray)
    np.testing.assert_allclose(m.predict_proba(X), p, rtol=1e-6)
    m.fit(X, y, epochs=1, batch_size=16, optimizer="adam", lr=1e-2)
    m.to(SIM)
    assert isinstance(m.parameters()[0][1], C.ndarray)
    m.fit(X, y, epochs=1, batch_size=16, optimizer="adam", lr=1e-2)
    # save / load
    path = tmp_path / "m.npz"
    m.save(path)
    again = fastnet.load(path, backend=SIM)
    np.testing.assert_array_equal(again.predict_proba(X), m.predict_proba(X))


def test_on_nan_restores_the_last_good_epoch():
    X, y = blobs(64)
    m = small()
    m.fit(X, y, epochs=1, batch_size=16, optimizer="sgd", lr=0.1)
    good = m.get_weights()
    with pytest.raises(fastnet.TrainingDivergedError, match="epoch 2, step"):
        m.fit(X * 1e30, y, epochs=1, batch_size=16, optimizer="sgd", lr=1e6)
    for k, v in m.get_weights().items():
        np.testing.assert_array_equal(v, good[k])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        h = m.fit(X * 1e30, y, epochs=3, batch_size=16, optimizer="sgd", lr=1e6,
                  on_nan="restore")
    assert h.diverged is not None


def test_doctor_and_plots_on_a_cuda_model(tmp_path):
    pytest.importorskip("matplotlib")
    X, y = blobs(96)
    m = small(activation="sigmoid")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        h = m.fit(X * 300, y, epochs=2, batch_size=32, optimizer="sgd", lr=0.5)
    assert any("inputs_not_standardized" in str(w.message) for w in seen)
    report = fastnet.diagnose(h, m, X * 300)
    assert "inputs_not_standardized" in str(report)
    from fastnet import plots

    written = plots.write_training_plots(m, h, X, y, tmp_path)
    assert written and all(os.path.getsize(p) > 0 for p in written)
    plots.plot_decision_boundary(m, X, y, tmp_path / "boundary.png", resolution=20)


@pytest.mark.once  # (tens of seconds under the simulator)
def test_cli_train_mnist_on_cuda_sim(tmp_path, capsys):
    from fastnet import cli
    from fastnet.datasets import mnist

    if not (mnist.default_cache_dir() / mnist.CACHE_NAME).exists():
        pytest.skip("MNIST is not cached (tests/datasets/test_mnist_one_epoch.py fetches it)")
    results = {}
    for backend in ("cpu", SIM):
        # In this process, so that the small launches of this module apply.
        rc = cli.main(["train", "mnist", "--backend", backend, "--subset", "512", "--test-subset", "256",
                       "--hidden", "16", "--epochs", "3", "--batch-size", "64", "--lr", "0.005",
                       "--schedule", "constant", "--save", str(tmp_path / f"{backend}.npz")])
        out = capsys.readouterr().out
        assert rc in (0, None), out
        assert f"backend Backend('{backend}'" in out and "256 test images" in out
        results[backend] = float(out.split("test accuracy ")[1].split()[0])
    assert results["cpu"] > 0.6  # 512 images, 3 epochs: far above chance (0.1)
    assert results[SIM] == pytest.approx(results["cpu"], abs=2 / 256), results
    again = fastnet.load(tmp_path / f"{SIM}.npz", backend="cpu")
    assert again.n_features_in_ == 784


def test_the_cuda_backend_itself_trains_on_the_contract(monkeypatch):
    # backend="cuda" as on a GPU machine (cuda_status usable, CuPy imported), with the
    # contract standing in for the cupy module: the same training as on the CPU.
    monkeypatch.setattr(B, "cuda_status", lambda: (True, "stand-in"))
    monkeypatch.setattr(B, "_import_cupy", C.module)
    X, y = blobs(64)
    curves = {}
    for backend in ("cpu", "cuda"):
        m = small(backend, dropout=0.2)
        assert m.backend_.name == backend
        curves[backend] = m.fit(X, y, epochs=2, batch_size=16, optimizer="adam", lr=1e-2)["loss"]
    np.testing.assert_allclose(curves["cuda"], curves["cpu"], rtol=1e-5)


def test_cuda_sim_unavailable_without_cupy(monkeypatch):
    monkeypatch.setattr(C, "available", lambda: (False, "ModuleNotFoundError: No module named 'cupy'"))
    ok, why = B.backend_status("cuda-sim")
    assert not ok and "needs CuPy installed" in why
    with pytest.raises(B.BackendUnavailableError, match="needs CuPy installed"):
        small()


def test_device_arrays_as_training_and_inference_data():
    # A CuPy user passes CuPy arrays: they are copied to the host explicitly (.get()), checked,
    # and trained on like host arrays.
    X, y = blobs(64)
    xp = C.module()
    on_device, on_host = small(), small()
    on_device.fit(xp.asarray(X), xp.asarray(y), epochs=1, batch_size=16)
    on_host.fit(X, y, epochs=1, batch_size=16)
    np.testing.assert_array_equal(on_device.predict_proba(xp.asarray(X)), on_host.predict_proba(X))
    assert on_device.evaluate(xp.asarray(X), xp.asarray(y)) == on_host.evaluate(X, y)


def test_reference_kernels_on_the_contract_train_like_cpu():
    # kernels="reference" on the CUDA device: the plain array expressions (CuPy's ufuncs,
    # fancy indexing, uint64 shifts of the dropout generator) through the contract.
    X, y = blobs(64)
    curves = {}
    for backend in ("cpu", SIM):
        m = small(backend, dropout=0.2, kernels="reference")
        curves[backend] = m.fit(X, y, epochs=2, batch_size=16, optimizer="adam", lr=1e-2)["loss"]
    np.testing.assert_allclose(curves[SIM], curves["cpu"], rtol=1e-5)

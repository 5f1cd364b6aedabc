"""Inference on one model from many threads; one training at a time."""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastnet
from fastnet import datasets


@pytest.fixture(scope="module")
def fitted():
    X, y = datasets.make_blobs(n_samples=3000, seed=0)
    m = fastnet.MLP([2, 64, 64, 3], backend="cpu", seed=0)
    m.fit(X, y, epochs=2, batch_size=64, optimizer="adam")
    return m, X, y


def test_predict_proba_from_4_threads_is_identical_to_serial(fitted):
    m, X, y = fitted
    rng = np.random.default_rng(1)
    # Different sizes per call (more and fewer rows than one inference chunk of 1024).
    batches = [X[rng.integers(0, len(X), rng.integers(1, 2500))] for _ in range(200)]
    serial = [m.predict_proba(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:  # 4 threads x 50 calls
        threaded = list(pool.map(m.predict_proba, batches))
    for i, (a, b) in enumerate(zip(serial, threaded)):
        assert np.array_equal(a, b), f"call {i}: largest difference {np.abs(a - b).max()}"


def test_evaluate_and_predict_from_threads(fitted):
    m, X, y = fitted
    serial_eval = m.evaluate(X, y)
    serial_pred = m.predict(X)
    with ThreadPoolExecutor(4) as pool:
        evals = list(pool.map(lambda _: m.evaluate(X, y), range(20)))
        preds = list(pool.map(lambda _: m.predict(X), range(20)))
    assert all(e == serial_eval for e in evals)
    assert all(np.array_equal(p, serial_pred) for p in preds)


def test_fit_from_two_threads_at_once_is_refused():
    X, y = datasets.make_blobs(n_samples=300, seed=0)
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    started, release = threading.Event(), threading.Event()

    class Hold(fastnet.Callback):
        def on_epoch_end(self, model, epoch, logs):
            started.set()
            release.wait(30)

    errors = []
    t = threading.Thread(target=lambda: m.fit(X, y, epochs=1, callbacks=[Hold()]))
    t.start()
    try:
        assert started.wait(30)
        with pytest.raises(RuntimeError, match="fit is already running on this model in another thread"):
            m.fit(X, y, epochs=1)
        with pytest.raises(RuntimeError, match="already running"):
            m.partial_fit(X, y)
    except BaseException as exc:  # noqa: BLE001 - keep the other thread from hanging
        errors.append(exc)
    finally:
        release.set()
        t.join(30)
    assert not errors, errors
    assert m.n_iter_ == 1  # the first fit finished; the refused ones changed nothing
    m.fit(X, y, epochs=1)  # and the model trains again afterwards
    assert m.n_iter_ == 2


def test_a_fit_that_raises_releases_the_model():
    X, y = datasets.make_blobs(n_samples=300, seed=0)
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    with pytest.raises(ValueError, match="epochs"):
        m.fit(X, y, epochs=-1)
    with pytest.raises(fastnet.TrainingDivergedError):
        m.fit(X * 1e30, y, epochs=1, optimizer="sgd", lr=1e6)
    m.fit(X, y, epochs=1)  # not "already running"
    assert m.n_iter_ == 1

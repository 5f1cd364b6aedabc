"""Training API: backends, reproducibility, fit/partial_fit, save/load, callbacks."""
import numpy as np
import pytest

import fastnet
from fastnet import datasets


def _blobs(n=300, seed=0):
    return datasets.make_blobs(n_samples=n, seed=seed)


def test_cuda_backend_unavailable_says_what_is_missing():
    if "cuda" in fastnet.available_backends():
        pytest.skip("a CUDA GPU is usable here")
    with pytest.raises(fastnet.BackendUnavailableError) as info:
        fastnet.get_backend("cuda")
    msg = str(info.value)
    assert "cuda" in msg and ("CuPy" in msg or "GPU" in msg or "NUMBA_ENABLE_CUDASIM" in msg)
    with pytest.raises(fastnet.BackendUnavailableError):
        fastnet.MLP([2, 3, 2], backend="cuda")


def test_auto_picks_cpu_without_gpu():
    expected = "cuda" if "cuda" in fastnet.available_backends() else "cpu"
    assert fastnet.get_backend("auto").name == expected
    assert fastnet.MLP([2, 3, 2]).backend == expected


def test_backend_object():
    b = fastnet.get_backend("cpu", dtype="float64", seed=3)
    assert b.name == "cpu" and b.xp is np and b.dtype == np.float64
    a = b.asarray([[1, 2]], dtype=b.dtype)
    assert a.flags.c_contiguous and b.to_host(a).dtype == np.float64
    b.synchronize()
    assert sorted(b.permutation(5).tolist()) == [0, 1, 2, 3, 4]
    assert "cpu" in fastnet.available_backends()


@pytest.mark.parametrize("kernels", ["fused", "reference"])
def test_same_seed_bit_identical_weights(kernels):
    X, y = _blobs()
    runs = []
    for _ in range(2):
        m = fastnet.MLP([2, 16, 3], backend="cpu", seed=42, kernels=kernels)
        m.fit(X, y, epochs=2, batch_size=32, optimizer="adam")
        runs.append(m.get_weights())
    for name in runs[0]:
        assert np.array_equal(runs[0][name], runs[1][name]), name
    other = fastnet.MLP([2, 16, 3], backend="cpu", seed=43, kernels=kernels)
    other.fit(X, y, epochs=2, batch_size=32, optimizer="adam")
    assert not np.array_equal(other.get_weights()["dense_0.W"], runs[0]["dense_0.W"])


def test_fit_equals_repeated_partial_fit():
    X, y = _blobs()
    a = fastnet.MLP([2, 8, 3], backend="cpu", seed=5)
    a.fit(X, y, epochs=3, batch_size=50, optimizer="momentum", lr=0.05)
    b = fastnet.MLP([2, 8, 3], backend="cpu", seed=5)
    for _ in range(3):
        b.partial_fit(X, y, batch_size=50, optimizer="momentum", lr=0.05)
    for name, w in a.get_weights().items():
        np.testing.assert_array_equal(w, b.get_weights()[name])
    assert a.n_iter_ == b.n_iter_ == 3
    assert a.loss_curve_ == b.loss_curve_


def test_history_fields_and_learning():
    X, y = _blobs()
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    h = m.fit(X, y, epochs=5, batch_size=32, optimizer="adam", lr=0.01, validation_split=0.2)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
        assert len(h[key]) == 5, key
    assert h["loss"][-1] < h["loss"][0]
    assert m.evaluate(X, y, return_dict=True)["accuracy"] > 0.8


def test_one_hot_labels_equal_class_ids():
    X, y = _blobs()
    a = fastnet.MLP([2, 6, 3], backend="cpu", seed=1)
    a.fit(X, y, epochs=2)
    b = fastnet.MLP([2, 6, 3], backend="cpu", seed=1)
    b.fit(X, datasets.one_hot(y, 3), epochs=2)
    np.testing.assert_array_equal(a.get_weights()["dense_0.W"], b.get_weights()["dense_0.W"])


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])
def test_every_optimizer_learns(optimizer):
    X, y = _blobs()
    m = fastnet.MLP([2, 16, 3], backend="cpu", seed=0)
    lr = {"sgd": 0.2, "momentum": 0.05, "nesterov": 0.05}.get(optimizer, 0.01)
    h = m.fit(X, y, epochs=15, batch_size=32, optimizer=optimizer, lr=lr)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert m.score(X, y) > 0.9


@pytest.mark.parametrize("schedule", ["constant", "step", "exponential", "cosine", "onecycle"])
def test_schedules(schedule):
    X, y = _blobs()
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    if schedule == "step":
        schedule = fastnet.StepDecay(step_size=2, gamma=0.5)
    h = m.fit(X, y, epochs=4, optimizer="sgd", lr=0.1, lr_schedule=schedule)
    if schedule == "constant":
        assert h["lr"] == [0.1] * 4
    else:
        assert h["lr"][-1] < 0.1


def test_schedule_values():
    cos = fastnet.Cosine(warmup=1.0)
    cos.total_epochs = 11
    assert cos(0.5, 1.0) == pytest.approx(0.5)
    assert cos(1.0, 1.0) == pytest.approx(1.0)
    assert cos(11.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert fastnet.StepDecay(step_size=2, gamma=0.5)(4.5, 1.0) == 0.25
    one = fastnet.OneCycle()
    one.total_epochs = 10
    assert one(3.0, 1.0) == pytest.approx(1.0) and one(0.0, 1.0) == pytest.approx(1 / 25)


def test_early_stopping_restores_best():
    X, y = _blobs(200)
    Xv, yv = _blobs(200, seed=1)
    m = fastnet.MLP([2, 64, 3], backend="cpu", seed=0)
    stop = fastnet.EarlyStopping(patience=2, restore_best=True)
    h = m.fit(X, y, epochs=200, optimizer="adam", lr=0.05, validation_data=(Xv, yv), early_stopping=stop)
    assert len(h) < 200
    best = min(h["val_loss"])
    assert m.evaluate(Xv, yv)[0] == pytest.approx(best, rel=1e-5)
    assert stop.best_epoch == h.epochs[int(np.argmin(h["val_loss"]))]


def test_reduce_lr_on_plateau():
    X, y = _blobs()
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    cb = fastnet.ReduceLROnPlateau(factor=0.5, patience=0, min_delta=10.0, monitor="loss")
    h = m.fit(X, y, epochs=3, optimizer="sgd", lr=0.1, callbacks=[cb])
    # The rate is cut after epoch 2 (no improvement): epoch 3 runs at half of it.
    assert h["lr"] == [0.1, 0.1, 0.05]


def test_save_load_roundtrip(tmp_path):
    X, y = _blobs()
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0, dropout=0.1)
    m.fit(X, y, epochs=2)
    path = tmp_path / "model.npz"
    m.save(path)
    loaded = fastnet.load(path, backend="cpu")
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))
    assert loaded.get_config() == m.get_config()
    with np.load(path, allow_pickle=False) as z:  # no pickle needed to read it
        assert "__fastnet__" in z.files


def test_to_backend_keeps_weights_and_state():
    X, y = _blobs()
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    m.fit(X, y, epochs=1, optimizer="adam")
    before = m.predict_proba(X)
    m.to("cpu", dtype="float64")
    assert m.dtype == "float64"
    np.testing.assert_allclose(m.predict_proba(X), before, rtol=1e-5, atol=1e-6)
    m.fit(X, y, epochs=1, optimizer="adam")  # the optimizer state moved with it
    assert m.optimizer_.t == 2 * int(np.ceil(len(X) / 128))


def test_parameters_gradients_do_not_change_model():
    X, y = _blobs(50)
    m = fastnet.MLP([2, 4, 3], backend="cpu", seed=0)
    m.build(2)
    before = m.get_weights()
    loss, grads = m.gradients(X, y)
    assert loss > 0 and set(grads) == {n for n, _ in m.parameters()}
    for name, w in m.get_weights().items():
        np.testing.assert_array_equal(w, before[name])
    assert [n for n, _ in m.parameters()] == ["dense_0.W", "dense_0.b", "dense_1.W", "dense_1.b"]


def test_predict_shapes_and_proba():
    X, y = _blobs()
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    m.fit(X, y, epochs=2)
    p = m.predict_proba(X)
    assert p.shape == (len(X), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert m.predict(X).shape == (len(X),)
    bin_model = fastnet.MLP([2, 4, 1], output="sigmoid", backend="cpu", seed=0)
    bin_model.fit(X, (y == 0).astype(float), epochs=2)
    assert bin_model.predict_proba(X).shape == (len(X), 2)
    assert set(np.unique(bin_model.predict(X))) <= {0, 1}


def test_dropout_trains_and_is_off_at_inference():
    X, y = _blobs()
    m = fastnet.MLP([2, 32, 3], dropout=0.5, backend="cpu", seed=0)
    m.fit(X, y, epochs=10, optimizer="adam", lr=0.01)
    np.testing.assert_array_equal(m.predict_proba(X), m.predict_proba(X))
    assert m.score(X, y) > 0.9


def test_verbose_prints_progress(capsys):
    X, y = _blobs()
    m = fastnet.MLP([2, 4, 3], backend="cpu", seed=0)
    m.fit(X, y, epochs=2, verbose=1)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "samples/s" in err

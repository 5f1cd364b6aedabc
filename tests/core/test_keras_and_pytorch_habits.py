"""Habits users bring from Keras and PyTorch work, or are refused before training (issue 31).

Each test is one habit: ``loss, acc = model.evaluate(...)``, ``EarlyStopping``'s epoch count,
``save("m.keras")``, ``model.summary()`` printing, ``verbose="auto"``, an eval-able ``repr``,
``fastnet.diagnose`` at the REPL, Keras-style callbacks, ``class_weight``, ``Dense(input_dim=)``,
``Adam(learning_rate=)``, ``attach_optimizer`` before ``fit``, the regression hint, and the
command line's small things.  (``train_on_batch``: tests/train/test_train_on_batch.py.)
"""
import inspect
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastnet
from fastnet.core.callbacks import Callback, EarlyStopping, ReduceLROnPlateau

ROOT = Path(__file__).resolve().parents[2]
rng = np.random.default_rng(0)
X = rng.standard_normal((120, 4)).astype(np.float32)
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)


def small(**kw):
    m = fastnet.MLP([4, 8, 2], backend="cpu", seed=0, **kw)
    m.fit(X, Y, epochs=2)
    return m


def cli(*args, env=None, timeout=120):
    full = dict(os.environ)
    full.pop("FASTNET_DEBUG", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastnet", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full)


# ------------------------------------------------------------------- 1. evaluate as Keras returns it
def test_evaluate_returns_loss_and_accuracy_as_keras_does():
    m = small()
    loss, acc = m.evaluate(X, Y)
    as_dict = m.evaluate(X, Y, return_dict=True)
    assert as_dict == {"loss": loss, "accuracy": acc} and isinstance(loss, float) and 0 <= acc <= 1
    assert m.metrics_names == ["loss", "accuracy"]
    assert m.score(X, Y) == acc
    reg = fastnet.MLP([4, 8, 1], loss="mse", backend="cpu", seed=0)
    reg.fit(X, X[:, 0], epochs=1)
    value = reg.evaluate(X, X[:, 0])
    assert isinstance(value, float) and value == reg.evaluate(X, X[:, 0], return_dict=True)["loss"]
    assert reg.metrics_names == ["loss"]
    with pytest.raises(TypeError, match="return_dict must be True or False"):
        m.evaluate(X, Y, return_dict="yes")


# ------------------------------------------------------------------- 2. EarlyStopping is Keras's
class _Model:
    """What EarlyStopping reads and writes of a model."""

    def __init__(self):
        self.stop_training = False
        self.epoch = 0
        self.restored = None

    def get_weights(self):
        return {"epoch": self.epoch}

    def set_weights(self, weights):
        self.restored = weights["epoch"]


def keras_early_stopping(values, patience=0, min_delta=0.0, mode="min", baseline=None, start_from_epoch=0):
    """Keras 3's EarlyStopping.on_epoch_end, transcribed (epochs 0-based): (stopped epoch or None, best epoch)."""
    op = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    delta = -abs(min_delta) if mode == "min" else abs(min_delta)
    best, wait, best_epoch, best_weights = (math.inf if mode == "min" else -math.inf), 0, 0, None
    for epoch, current in enumerate(values):
        if epoch < start_from_epoch:
            continue
        if best_weights is None:
            best_weights, best_epoch = epoch, epoch
        wait += 1
        if op(current - delta, best):
            best, best_epoch, best_weights = current, epoch, epoch
            if baseline is None or op(current - delta, baseline):
                wait = 0
            continue
        if wait >= patience and epoch > 0:
            return epoch, best_epoch
    return None, best_epoch


# (values, keyword arguments, epoch it stops after (1-based) or None, best epoch (1-based))
EARLY_STOPPING_TABLE = [
    ([1.0, 0.9, 0.95, 0.96, 0.97, 0.98], dict(patience=2), 4, 2),         # two epochs without improvement
    ([1.0, 0.9, 0.95, 0.96, 0.97, 0.98], dict(patience=3), 5, 2),
    ([1.0, 1.1, 1.2], dict(patience=0), 2, 1),                            # the first epoch without one
    ([1.0, 0.9, 0.8, 0.7], dict(patience=0), None, 4),                    # always improving
    ([1.0, 0.95, 0.85, 0.8], dict(patience=1, min_delta=0.1), 2, 1),      # 0.05 < min_delta: no improvement
    ([1.0, 0.85, 0.8, 0.79, 0.6], dict(patience=2, min_delta=0.1), 4, 2),
    ([0.5, 0.6, 0.6, 0.59], dict(patience=2, mode="max"), 4, 2),          # accuracies: max
    ([0.8, 0.9, 0.9], dict(patience=2, baseline=0.5), 2, 1),              # the baseline never beaten
    ([0.8, 0.7, 0.6, 0.4, 0.45, 0.46, 0.47], dict(patience=3, baseline=0.5), 7, 4),
    ([5.0, 4.0, 3.0, 3.5, 3.6], dict(patience=1, start_from_epoch=2), 4, 3),
    ([1.0, float("nan"), float("nan")], dict(patience=1), 2, 1),          # NaN never improves
    ([1.0, 1.0, 1.0], dict(patience=1), 2, 1),                            # equal is not better
]


@pytest.mark.parametrize("values, kwargs, stops_after, best", EARLY_STOPPING_TABLE)
def test_early_stopping_decides_as_keras_epoch_for_epoch(values, kwargs, stops_after, best):
    keras_stop, keras_best = keras_early_stopping(values, **kwargs)
    assert (None if keras_stop is None else keras_stop + 1, keras_best + 1) == (stops_after, best)  # the table
    mode = kwargs.pop("mode", "min")
    stop = EarlyStopping(monitor="score", mode=mode, restore_best_weights=True, **kwargs)
    model = _Model()
    stop.on_train_begin(model)
    ran = 0
    for epoch, value in enumerate(values, 1):
        model.epoch = epoch
        stop.on_epoch_end(model, epoch, {"score": value})
        ran = epoch
        if model.stop_training:
            break
    stop.on_train_end(model)
    assert (stop.stopped_epoch, ran) == (stops_after, stops_after or len(values))
    assert stop.best_epoch == best and model.restored == best


class _Script(Callback):
    """Writes scripted values into the epoch logs before the callbacks after it read them."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, model, epoch, logs):
        logs["score"] = self.values[epoch - 1]


def test_early_stopping_patience_2_stops_fit_after_two_epochs_without_improvement():
    values = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0]
    m = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
    stop = EarlyStopping(patience=2, monitor="score", restore_best=False)
    h = m.fit(X, Y, epochs=8, callbacks=[_Script(values), stop])
    assert len(h) == 4 and stop.stopped_epoch == 4 and stop.best_epoch == 2


def test_early_stopping_verbose_says_so(capsys):
    m = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
    stop = EarlyStopping(patience=1, monitor="score", verbose=1)
    m.fit(X, Y, epochs=5, callbacks=[_Script([1.0, 2.0, 3.0, 4.0, 5.0]), stop])
    err = capsys.readouterr().err
    assert "Epoch 2: early stopping" in err and "Restoring model weights from the end of the best epoch: 1." in err


def test_reduce_lr_on_plateau_counts_as_keras():
    # Keras: wait += 1 per epoch without improvement, cut at wait >= patience, then `cooldown` epochs uncounted
    m = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
    cb = ReduceLROnPlateau(factor=0.5, patience=2, monitor="score", cooldown=1)
    h = m.fit(X, Y, epochs=7, optimizer="sgd", lr=0.1, callbacks=[_Script([1.0] * 7), cb])
    # epoch 1 best; 2, 3 without improvement: cut after 3 (cooldown 1); epoch 4 ends the cooldown and,
    # as in Keras, is counted (wait 1); 5: wait 2, cut after 5
    assert h["lr"] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    cb = ReduceLROnPlateau(factor=0.5, patience=2, monitor="score")
    m = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
    h = m.fit(X, Y, epochs=4, optimizer="sgd", lr=0.1, callbacks=[_Script([1.0] * 4), cb])
    assert h["lr"] == [0.1, 0.1, 0.1, 0.05]  # two epochs without improvement, not three


# ------------------------------------------------------------------- 3. save("m.keras")
@pytest.mark.parametrize("name", ["m.keras", "m.h5", "m.pt", "m.onnx", "m.pkl", "m", "m.npz.tmp"])
def test_save_refuses_names_that_are_not_npz_before_writing(tmp_path, name):
    m = small()
    with pytest.raises(ValueError, match=r"NumPy \.npz archives, so the name must end in \.npz, e\.g\. '.*\.npz'"):
        m.save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_save_takes_npz_in_any_case(tmp_path):
    m = small()
    for name in ("m.npz", "M.NPZ"):
        m.save(tmp_path / name)
        assert np.array_equal(fastnet.load(tmp_path / name, backend="cpu").predict(X), m.predict(X))
    with pytest.raises(ValueError, match="Keras's format"):
        m.save(str(tmp_path / "m.keras"))


def test_cli_save_name_is_checked_before_training(tmp_path):
    # (small, so that a fastnet that trains first does so quickly; MNIST is never loaded here)
    proc = cli("train", "mnist", "--epochs", 1, "--subset", 100, "--val-size", 20, "--test-subset", 50,
               "--hidden", 4, "--save", tmp_path / "m.keras", timeout=120)
    assert proc.returncode == 2 and "--save" in proc.stderr and "must end in .npz" in proc.stderr
    assert "MNIST:" not in proc.stdout and not (tmp_path / "m.keras").exists()


# ------------------------------------------------------------------- 4. summary prints
def test_summary_prints_the_table_and_returns_none(capsys):
    m = fastnet.MLP([784, 16, 10], backend="cpu")
    assert m.summary() is None
    out = capsys.readouterr().out
    assert "total parameters: 12,730" in out and out.count("\n") == 4
    lines = []
    assert m.summary(print_fn=lines.append) is None
    assert "\n".join(lines) + "\n" == out and capsys.readouterr().out == ""
    assert "<table>" in m._repr_html_()  # a notebook shows a model as its table
    with pytest.raises(TypeError, match="print_fn must be callable"):
        m.summary(print_fn="stdout")


# ------------------------------------------------------------------- 5. verbose="auto"
def test_fit_shows_progress_by_default_on_stderr(capfd):
    m = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
    m.fit(X, Y, epochs=2)
    out, err = capfd.readouterr()
    assert out == ""
    assert re.findall(r"^epoch (\d)/2  loss", err, re.M) == ["1", "2"]  # a log, not a terminal: lines only
    m.fit(X, Y, epochs=1, verbose="auto")
    assert "epoch 3/3" in capfd.readouterr().err
    m.fit(X, Y, epochs=1, verbose=0)  # opt-out kept: verbose=0 is what this test checks
    m.partial_fit(X, Y)  # scikit-learn's partial_fit: silent
    assert capfd.readouterr() == ("", "")
    with pytest.raises(ValueError, match=r'verbose must be "auto", 0, 1 or 2, got \'loud\''):
        m.fit(X, Y, verbose="loud")
    assert inspect.signature(fastnet.Sequential.fit).parameters["verbose"].default == "auto"


def test_sklearn_wrapper_stays_silent_by_default(capfd):
    from fastnet.integrations.sklearn import MLPClassifier

    MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, Y)
    assert capfd.readouterr() == ("", "")


# ------------------------------------------------------------------- 6. repr is the constructor call
@pytest.mark.parametrize("make", [
    lambda: fastnet.MLP([784, 512, 512, 10]),
    lambda: fastnet.MLP([4, 16, 1], loss="mse", seed=3),
    lambda: fastnet.MLP([4, 8, 8, 1], output="sigmoid", activation="tanh", dropout=0.25, use_bias=False),
    lambda: fastnet.MLP([4, 8, 3], dtype="float64", init="xavier", kernels="reference"),
    lambda: fastnet.Sequential([fastnet.Dense(8, "relu"), fastnet.Dropout(0.1), fastnet.Dense(3, "softmax")]),
    lambda: fastnet.Sequential([fastnet.Dense(8, "relu", input_dim=4), fastnet.Dense(2)], loss="sse", seed=1),
])
def test_repr_is_the_call_that_makes_the_model(make):
    model = make()
    text = repr(model)
    again = eval(text, {**vars(fastnet)})  # noqa: S307
    assert repr(again) == text and type(again) is type(model)
    assert again.get_config() == model.get_config()


def test_repr_of_an_mlp_lists_every_size():
    assert repr(fastnet.MLP([784, 512, 512, 10], backend="cpu")) == "MLP([784, 512, 512, 10], backend='cpu')"


# ------------------------------------------------------------------- 7. diagnose at the REPL
def test_diagnose_echoes_as_the_report_with_fits_figures():
    g = np.random.default_rng(1)
    y = g.integers(0, 4, 3000)
    X_raw = (g.normal(size=(3000, 20)) + y[:, None] * 0.5) * g.uniform(20, 90, 20) + 120  # unscaled, pixel-like
    X_raw = X_raw.astype(np.float32)
    m = fastnet.MLP([20, 32, 4], activation="sigmoid", backend="cpu", seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = m.fit(X_raw, y, epochs=5, optimizer="sgd", lr=0.5, batch_size=64, validation_split=0.2)
    said = [str(w.message) for w in caught if issubclass(w.category, fastnet.FastnetWarning)]
    assert said and any("inputs_not_standardized" in s for s in said)
    report = fastnet.diagnose(h, m, X_raw)
    assert repr(report) == str(report) and str(report).startswith("fastnet diagnose:")
    assert isinstance(report, list) and report.codes == [s.split("]")[0][1:] for s in said]
    assert [str(d) for d in report] == said  # the same figures, word for word
    assert str(fastnet.diagnose(model=m, X=X_raw)) == str(report)  # model.history_ says the same
    pretty = []

    class Printer:
        def text(self, t):
            pretty.append(t)

    report._repr_pretty_(Printer(), False)
    assert pretty == [str(report)]


# ------------------------------------------------------------------- 8. Keras-style callbacks
class KerasStyle(Callback):
    def __init__(self):
        self.seen = []

    def on_train_begin(self, logs=None):
        self.seen.append(("begin", logs, self.model.built))

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(("epoch_end", epoch, sorted(logs)))
        if epoch == 1:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.seen.append(("end", logs))


def test_keras_style_callbacks_are_called_keras_s_way():
    m = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
    cb = KerasStyle()
    h = m.fit(X, Y, epochs=5, callbacks=[cb])
    assert len(h) == 2 and cb.model is m and cb.params["epochs"] == 5
    assert cb.seen == [("begin", {}, True), ("epoch_begin", 0), ("epoch_end", 0, ["accuracy", "loss", "lr", "seconds"]),
                       ("epoch_begin", 1), ("epoch_end", 1, ["accuracy", "loss", "lr", "seconds"]), ("end", {})]


def test_fastnet_style_hooks_get_the_model_and_1_based_epochs():
    seen = []

    class Mixed(Callback):
        def on_epoch_begin(self, model, epoch, logs):
            seen.append(("begin", epoch, model.n_iter_))

        def on_epoch_end(self, epoch, logs=None):  # Keras's, in the same callback
            seen.append(("end", epoch))

    fastnet.MLP([4, 8, 2], backend="cpu", seed=0).fit(X, Y, epochs=2, callbacks=[Mixed()])
    assert seen == [("begin", 1, 0), ("end", 0), ("begin", 2, 1), ("end", 1)]


@pytest.mark.parametrize("body, message", [
    ("def on_epoch_end(self, epoch):\n    pass",
     r"on_epoch_end\(epoch\) does not take the arguments fit passes: fit calls on_epoch_end\(self, model, epoch, "
     r"logs\) or, Keras's, on_epoch_end\(self, epoch, logs=None\)"),
    ("def on_train_batch_end(self, batch, logs=None):\n    pass",
     r"defines on_train_batch_end, a Keras hook fastnet's fit does not call: after each optimizer step fit calls "
     r"on_step_end\(self, model, epoch, step\)"),
    ("def on_step_end(self, model, epoch):\n    pass", r"fit calls on_step_end\(self, model, epoch, step\)"),
    ("def on_epoch_begin(self, model, epoch):\n    pass",
     r"fit calls on_epoch_begin\(self, model, epoch, logs\) or, Keras's, on_epoch_begin\(self, epoch, logs=None\)"),
    ("def on_train_begin(self):\n    pass",
     r"on_train_begin\(self, model\) or, Keras's, on_train_begin\(self, logs=None\)"),
])
def test_a_hook_fit_cannot_call_is_refused_before_training(body, message):
    namespace = {}
    exec(body, namespace)  # noqa: S102
    Bad = type("Bad", (Callback,), {k: v for k, v in namespace.items() if k.startswith("on_")})
    m = fastnet.MLP([4, 8, 2], backend="cpu", seed=0).build(4)
    before = m.get_weights()
    with pytest.raises(TypeError, match=message):
        m.fit(X, Y, epochs=2, callbacks=[Bad()])
    assert all(np.array_equal(before[k], v) for k, v in m.get_weights().items()) and m.n_iter_ == 0


def test_every_hook_has_a_docstring():
    for name in ("on_train_begin", "on_epoch_begin", "on_step_end", "on_epoch_end", "on_train_end"):
        doc = inspect.getdoc(getattr(Callback, name))
        assert doc and len(doc) > 40, name
    assert "on_epoch_end(self, epoch, logs=None)" in Callback.__doc__


# ------------------------------------------------------------------- 9. class_weight, input_dim, learning_rate
@pytest.mark.parametrize("class_weight", [{0: 3.0, 1: 0.5}, {1: 2.0}, "balanced"])
def test_fit_class_weight_is_scikit_learns_sample_weight(class_weight):
    from sklearn.utils.class_weight import compute_sample_weight

    y = np.where(rng.random(len(X)) < 0.8, 0, 1)  # imbalanced
    w = rng.uniform(0.5, 2.0, len(X))
    for sample_weight in (None, w):
        a = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
        b = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
        a.fit(X, y, epochs=2, class_weight=class_weight, sample_weight=sample_weight)
        oracle = compute_sample_weight(class_weight, y) * (1 if sample_weight is None else sample_weight)
        b.fit(X, y, epochs=2, sample_weight=oracle)
        wa, wb = a.get_weights(), b.get_weights()
        for k in wa:
            np.testing.assert_allclose(wa[k], wb[k], rtol=1e-6, atol=1e-7)


def test_class_weight_keys_are_the_labels_of_y():
    from sklearn.utils.class_weight import compute_sample_weight

    names = np.array(["cat", "dog"])[Y]
    cw = {"cat": 1.0, "dog": 4.0}
    a = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
    a.fit(X, names, epochs=1, class_weight=cw)
    b = fastnet.MLP([4, 8, 2], backend="cpu", seed=0)
    b.fit(X, names, epochs=1, sample_weight=compute_sample_weight(cw, names))
    assert all(np.allclose(a.get_weights()[k], b.get_weights()[k]) for k in a.get_weights())
    sig = fastnet.MLP([4, 8, 1], output="sigmoid", backend="cpu", seed=0)
    sig.fit(X, Y, epochs=1, class_weight={1: 2.0})  # one sigmoid unit: classes 0/1
    fresh = fastnet.MLP([4, 8, 2], backend="cpu", seed=0).build(4)
    before = fresh.get_weights()
    with pytest.raises(ValueError, match=r"class_weight has a key 'bird' that is not a class of this model; "
                                         r"its classes are \['cat', 'dog'\]"):
        fresh.fit(X, names, class_weight={"bird": 2.0})
    with pytest.raises(ValueError, match="class_weight must be a dict"):
        fresh.fit(X, names, class_weight="equal")
    with pytest.raises(TypeError, match="class_weight is for classifiers"):
        fastnet.MLP([4, 8, 1], loss="mse", backend="cpu").fit(X, X[:, 0], class_weight={0: 1.0})
    assert all(np.array_equal(before[k], v) for k, v in fresh.get_weights().items())


def test_dense_takes_keras_input_dim_and_input_shape():
    a = fastnet.Sequential([fastnet.Dense(8, "relu", input_dim=4), fastnet.Dense(2, "softmax")], backend="cpu")
    b = fastnet.Sequential([fastnet.Dense(8, "relu", input_shape=(4,)), fastnet.Dense(2, "softmax")], backend="cpu")
    assert a.input_dim == b.input_dim == 4 and "total parameters: 58" in a._summary()
    with pytest.raises(ValueError, match="X has 5 features per sample, but the model expects 4"):
        a.fit(np.ones((3, 5)), [0, 1, 0])
    with pytest.raises(ValueError, match=r"a Dense layer takes flat rows, so give input_shape=\(784,\)"):
        fastnet.Dense(8, input_shape=(28, 28))
    with pytest.raises(ValueError, match="only the first layer takes the input size"):
        fastnet.Sequential([fastnet.Dense(8), fastnet.Dense(2, "softmax", input_dim=8)])
    with pytest.raises(ValueError, match="disagree"):
        fastnet.Sequential([fastnet.Dense(8, input_dim=4), fastnet.Dense(2, "softmax")], input_dim=5)


@pytest.mark.parametrize("name", sorted(fastnet.core.optimizers.OPTIMIZERS))
def test_every_optimizer_takes_learning_rate(name):
    cls = fastnet.core.optimizers.OPTIMIZERS[name]
    opt = cls(learning_rate=0.0123)
    assert opt.lr == opt.learning_rate == 0.0123 and cls(lr=0.0123).get_config() == opt.get_config()
    opt.learning_rate = 0.5
    assert opt.lr == 0.5
    with pytest.raises(ValueError, match="give lr or learning_rate"):
        cls(lr=0.1, learning_rate=0.2)


# ------------------------------------------------------------------- 10. attach_optimizer before fit
def test_attach_optimizer_before_fit():
    m = fastnet.MLP([784, 128, 10], backend="cpu", seed=0)
    opt = m.attach_optimizer(fastnet.Adam(lr=1e-3))
    assert m.built and len(opt.state) == 4 and m.optimizer_ is opt
    xb, yb = rng.random((16, 784)).astype(np.float32), rng.integers(0, 10, 16)
    w0 = m.get_weights()["dense_0.W"]
    m.gradients(xb, yb)  # a PyTorch user's loop: gradients into the model's buffers, then a step
    opt.step(opt.lr)
    assert not np.array_equal(w0, m.get_weights()["dense_0.W"])
    seq = fastnet.Sequential([fastnet.Dense(8, "relu"), fastnet.Dense(2, "softmax")], backend="cpu", seed=0)
    sgd = seq.attach_optimizer(fastnet.SGD(lr=0.1))  # input size unknown: set up when built
    assert not seq.built and seq.optimizer_ is sgd
    seq.fit(X, Y, epochs=1, optimizer=sgd)
    assert seq.optimizer_ is sgd and sgd.t > 0 and len(sgd.state) == 4
    with pytest.raises(TypeError, match="must be a fastnet Optimizer"):
        m.attach_optimizer("adam")


# ------------------------------------------------------------------- 11. a continuous y
def test_a_continuous_y_on_a_classifier_says_regression_and_mse():
    with pytest.raises(ValueError, match=r'integer class ids, got 0\.87.*regression.*loss="mse".*MLPRegressor'):
        fastnet.MLP([4, 8, 2], backend="cpu").fit(X, np.full(len(X), 0.872))
    with pytest.raises(ValueError, match=r'binary targets in \[0, 1\], got 3\.5.*loss="mse".*MLPRegressor'):
        fastnet.MLP([4, 8, 1], output="sigmoid", backend="cpu").fit(X, np.full(len(X), 3.5))
    with pytest.raises(ValueError, match=r'>= 2 units, got 1.*for regression.*loss="mse".*MLPRegressor'):
        fastnet.MLP([4, 8, 1])
    with pytest.raises(ValueError, match=r'distinct ones; here there are \d+ .*loss="mse"'):
        fastnet.MLP([4, 8, 2], backend="cpu").fit(X, np.arange(len(X)) * 3)


# ------------------------------------------------------------------- 13. small things
def test_docstrings_say_what_the_methods_do():
    doc = inspect.getdoc(fastnet.core.model.Network.get_config)
    assert doc and "#" not in doc and "architecture" in doc
    assert inspect.getcomments(fastnet.core.model.Network.get_config) is None or inspect.getdoc(
        fastnet.core.model.Network.get_config)
    import pydoc

    assert "# ---" not in pydoc.render_doc(fastnet.core.model.Network.get_config, renderer=pydoc.plaintext)
    predict = inspect.getdoc(fastnet.MLP.predict)
    assert "Class ids" not in predict and "labels" in predict and "classes_" in predict


def test_cli_evaluate_help_describes_every_argument():
    proc = cli("evaluate", "--help")
    assert proc.returncode == 0
    assert "saved model" in proc.stdout and "model file" in proc.stdout
    text = " ".join(proc.stdout.split())
    assert "where to run the model" in text and "MNIST cache folder" in text
    assert "the one line per epoch is still written" in " ".join(cli("train", "--help").stdout.split())


def test_cli_quiet_drops_the_bar_only():
    from fastnet.datasets import mnist

    if not (mnist.default_cache_dir() / "mnist.npz").exists():
        pytest.skip("MNIST is not cached")
    proc = cli("train", "mnist", "--epochs", 1, "--subset", 200, "--val-size", 20, "--test-subset", 50,
               "--hidden", 4, "--quiet")  # opt-out kept: --quiet is what this test checks
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^epoch 1/1  loss \d", proc.stderr, re.M) and "\r" not in proc.stderr


def test_cli_export_names_the_missing_folder_not_a_temporary_file(tmp_path):
    small().save(tmp_path / "m.npz")
    proc = cli("export", tmp_path / "m.npz", "/nonexistent/x.onnx")
    assert proc.returncode == 2
    assert "the folder '/nonexistent' does not exist" in proc.stderr and ".tmp" not in proc.stderr


def test_cli_info_says_an_unwritable_kernel_cache(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = cli("info", env={"FASTNET_KERNEL_CACHE": str(afile / "cache")})
    assert proc.returncode == 0
    assert (f"warning: the kernel cache '{afile / 'cache'}' cannot be created ('{afile}' is a file)" in proc.stdout
            and "set FASTNET_KERNEL_CACHE to a writable folder" in proc.stdout)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        from fastnet import cli as fcli

        # root writes through permission bits: then a folder of a read-only file system
        target = locked / "cache" if not os.access(locked, os.W_OK) else Path("/proc/fastnet-kernel-cache")
        os.environ["FASTNET_KERNEL_CACHE"] = str(target)
        try:
            note = fcli.kernel_cache_note()
        finally:
            del os.environ["FASTNET_KERNEL_CACHE"]
    finally:
        locked.chmod(0o700)
    assert note and "cannot be created" in note
    ok = cli("info", env={"FASTNET_KERNEL_CACHE": str(tmp_path / "fine")})
    assert "warning: the kernel cache" not in ok.stdout


def test_docs_dask_snippet_runs_as_a_script():
    text = (ROOT / "docs" / "pages" / "distributed.md").read_text()
    section = text[text.index("## Grid search on Dask"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    assert 'if __name__ == "__main__":' in code
    compile(code, "docs-dask", "exec")
    body = code[code.index('if __name__ == "__main__":'):]
    assert "LocalCluster(" in body and "Client(" in body  # the cluster starts under the guard

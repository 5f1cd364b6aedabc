"""Everyday use without surprises (issue 14): one sample, Keras names, logs, files, messages."""
import os
import re
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnet

rng = np.random.default_rng(0)
X = rng.standard_normal((60, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(int)


def small(**kw):
    m = fastnet.MLP([4, 6, 2], backend="cpu", seed=0, **kw)
    m.fit(X, Y, epochs=2)
    return m


# ------------------------------------------------------------------------ 6. a 1-unit softmax
def test_one_unit_softmax_says_what_to_use():
    with pytest.raises(ValueError, match=r'needs an output layer of >= 2 units, got 1: for two classes use one unit '
                                         r'with output="sigmoid" \(binary cross-entropy\), or 2 units'):
        fastnet.MLP([4, 1])


# ------------------------------------------------------------------------ 8. files
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_honour_the_umask(tmp_path, umask):
    code = textwrap.dedent(f"""
        import os, numpy as np, fastnet
        os.umask({umask:#o})
        m = fastnet.MLP([4, 3, 2], backend="cpu", seed=0).build(4)
        m.save({str(tmp_path / 'm.npz')!r})
        np.save({str(tmp_path / 'ref.npy')!r}, np.zeros(2))
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    mode = stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE(os.stat(tmp_path / "ref.npy").st_mode)


def test_overwriting_keeps_the_files_mode(tmp_path):
    m = small()
    path = tmp_path / "m.npz"
    m.save(path)
    os.chmod(path, 0o640)
    m.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_npy_and_junk_files_are_model_file_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 2)))
    with pytest.raises(fastnet.ModelFileError, match=r"holds a single NumPy array \(an \.npy file of shape \(3, 2\)\), "
                                                     r"not a fastnet model: fastnet reads \.npz archives"):
        fastnet.load(tmp_path / "a.npy")
    (tmp_path / "junk.bin").write_bytes(b"hello")
    with pytest.raises(fastnet.ModelFileError, match=r"is not a fastnet model file: it is neither a NumPy \.npz archive "
                                                     r"nor an \.npy array") as info:
        fastnet.load(tmp_path / "junk.bin")
    assert "allow_pickle" not in str(info.value)


# ------------------------------------------------------------------------ 4. progress in a log file
@pytest.mark.parametrize("verbose", [1, 2])
def test_progress_to_a_file_is_one_line_per_epoch(tmp_path, verbose):
    code = textwrap.dedent(f"""
        import numpy as np, fastnet
        rng = np.random.default_rng(0)
        X = rng.standard_normal((3000, 4)); y = (X[:, 0] > 0).astype(int)
        fastnet.MLP([4, 8, 2], backend="cpu", seed=0).fit(X, y, epochs=6, batch_size=8, verbose={verbose})
    """)
    with open(tmp_path / "log.txt", "w") as log:
        subprocess.run([sys.executable, "-c", code], stderr=log, check=True)
    text = (tmp_path / "log.txt").read_text()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 6 and all(re.match(rf"epoch {i + 1}/6  loss \d", line) for i, line in enumerate(lines))


def test_verbose_1_draws_a_bar_on_a_terminal_only():
    from fastnet.train.progress import EpochProgress

    class Terminal:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    term = Terminal()
    p = EpochProgress(1, 1, 10, stream=term)
    for step in range(1, 11):
        p.update(step)
    p.close({"loss": 0.5}, 100)
    assert "\r" in term.text and term.text.rstrip("\n").endswith("samples/s)")
    quiet = Terminal()
    p = EpochProgress(1, 1, 10, stream=quiet, show_bar=False)  # verbose=2
    p.update(10)
    p.close({"loss": 0.5}, 100)
    assert "\r" not in quiet.text and quiet.text.count("\n") == 1


# ------------------------------------------------------------------------ 2. Keras and scikit-learn names
def test_keras_and_sklearn_names(capsys):
    es = fastnet.EarlyStopping(patience=3, restore_best_weights=False)
    assert es.restore_best is False and fastnet.EarlyStopping(restore_best_weights=True).restore_best
    m = fastnet.MLP([4, 6, 2], backend="cpu", random_state=3)
    assert m.seed == 3
    with pytest.raises(ValueError, match="give seed or random_state"):
        fastnet.MLP([4, 2], seed=1, random_state=2)
    h = m.fit(X, Y, epochs=2)
    assert dict(h) == h.history and list(h.keys()) == list(h.history) and set(h) == set(h.history)
    assert dict(h.items())["loss"] == h["loss"] and h.get("nope") is None
    assert m.evaluate(X, Y, verbose=0) == m.evaluate(X, Y)  # opt-out kept: evaluate's verbose is the subject
    capsys.readouterr()
    m.evaluate(X, Y, verbose=1)
    assert re.match(r"evaluate: 60 samples  loss \d\.\d{4}  accuracy \d\.\d{4}\n$", capsys.readouterr().err)


def test_summary_before_fit_and_its_echo(capsys):
    m = fastnet.MLP([784, 16, 10], backend="cpu")
    assert m.summary() is None  # printed, as Keras's (at the interpreter or in a notebook cell alike)
    text = capsys.readouterr().out
    assert "total parameters: 12,730" in text  # 784*16 + 16 + 16*10 + 10, known before fit
    m2 = fastnet.Sequential([fastnet.Dense(3, "relu"), fastnet.Dense(2, "softmax")])  # input size unknown
    lines = []
    m2.summary(print_fn=lines.append)
    assert "total parameters: ? (the input size is known at the first fit)" in lines[-1]
    assert lines[1].split()[2] == "?" and lines[2].split()[2] == "8"


# ------------------------------------------------------------------------ 1. one sample
def test_one_sample_predicts_as_a_row_of_one():
    m = fastnet.MLP([784, 8, 10], backend="cpu", seed=0)
    Xi = rng.random((5, 28, 28)).astype(np.float32)
    m.fit(Xi, np.arange(5), epochs=1)
    one = m.predict_proba(Xi[:1])
    np.testing.assert_array_equal(m.predict_proba(Xi[0].reshape(-1)), one)  # shape (784,)
    assert m.predict(Xi[0].reshape(-1)).shape == (1,)
    # one 28x28 image is ambiguous (28 rows of 28 features?): the error says how to pass it
    with pytest.raises(ValueError, match=r"X has 28 features per sample, but the model expects 784 \(if this is "
                                         r"one sample of shape \(28, 28\), pass X.reshape\(1, -1\)\)"):
        m.predict(Xi[0])
    with pytest.raises(ValueError, match=r"X is 1-D with 5 values, but the model expects 784 features per sample"):
        m.predict(np.zeros(5))
    with pytest.raises(ValueError, match=r"for one sample use X.reshape\(1, -1\), for one feature X.reshape\(-1, 1\)"):
        fastnet.Sequential([fastnet.Dense(2, "softmax")]).fit(np.zeros(3), [1])
    with pytest.raises(ValueError, match="X has 28 features per sample, but the model expects 784$"):
        m.predict(Xi[0][:2])  # two rows of 28: not one sample


# ------------------------------------------------------------------------ 3. defaults train the toy sets
def test_the_defaults_train_the_sine_regression_for_every_seed():
    from fastnet import datasets

    for seed in range(5):
        Xs, ys = datasets.sine(seed=seed)
        m = fastnet.MLP([1, 16, 1], output="linear", loss="mse", backend="cpu", seed=seed)
        h = m.fit(Xs, ys, epochs=300)  # optimizer and lr: the defaults
        assert m.optimizer_.name == "adam" and h["loss"][-1] < 0.3 * h["loss"][0], (seed, h["loss"][::50])


# ------------------------------------------------------------------------ 5. the doctor's false alarms
def test_no_false_alarm_after_several_fit_calls_or_on_one_sample():
    import warnings

    from fastnet import datasets

    Xb, yb = datasets.make_blobs(300, seed=0)
    m = fastnet.MLP([2, 16, 3], backend="cpu", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastnet.FastnetWarning)  # a warning fails the test
        for _ in range(3):  # 1.95 -> 0.99 -> 0.59 ... : healthy
            m.fit(Xb, yb, epochs=2, optimizer="sgd", lr=0.05)
        assert fastnet.diagnose(model=m, X=Xb).codes == []  # the whole history, three calls
        for n in (1, 2):
            fastnet.MLP([2, 16, 3], backend="cpu", seed=0).fit(Xb[:n], yb[:n], epochs=5)


def test_one_cause_one_warning():
    from fastnet import datasets

    Xb, yb = datasets.make_blobs(300, seed=0)
    m = fastnet.MLP([2, 16, 3], backend="cpu", seed=0)
    with pytest.warns(fastnet.FastnetWarning) as record:
        m.fit(Xb, yb, epochs=5, optimizer="sgd", lr=50, on_nan="ignore")
    codes = [str(w.message).split("]")[0].lstrip("[") for w in record]
    assert codes == ["lr_too_high"]
    found = fastnet.diagnose(model=m, X=Xb)
    assert found.codes == ["lr_too_high"] and "It also left:" in found[0].explanation
    assert set(found[0].evidence["follow_on"]) >= {"exploding"}


def test_parameters_before_fit_when_the_input_size_is_known():
    m = fastnet.MLP([4, 6, 2], backend="cpu", seed=5)
    shapes = {name: a.shape for name, a in m.parameters()}
    assert shapes == {"dense_0.W": (4, 6), "dense_0.b": (6,), "dense_1.W": (6, 2), "dense_1.b": (2,)}
    before = m.get_weights()
    twin = fastnet.MLP([4, 6, 2], backend="cpu", seed=5)
    twin.fit(X, Y, epochs=0)  # the weights fit starts from
    for k, v in twin.get_weights().items():
        np.testing.assert_array_equal(before[k], v)
    with pytest.raises(fastnet.NotFittedError, match="call fit before parameters"):
        fastnet.Sequential([fastnet.Dense(2, "softmax")]).parameters()  # input size unknown



# ------------------------------------------------------------------------ found by review
def test_failed_fits_change_nothing(tmp_path):
    m = fastnet.MLP([4, 6, 3], backend="cpu", seed=0)
    y3 = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    with pytest.raises(fastnet.CheckpointError):
        m.fit(X, np.array(["a", "b", "c"])[y3], resume=tmp_path / "missing.npz")
    assert m.classes_ is None and not m.built
    m.fit(X, y3, epochs=1)  # ids work after it
    with pytest.raises(TypeError, match=r"bytes labels: decode them to str first"):
        fastnet.MLP([4, 6, 2], backend="cpu").fit(X, np.array([b"a", b"b"])[Y])
    fresh = fastnet.MLP([4, 6, 3], backend="cpu", seed=0)
    fresh.parameters()  # built (its input size is known), never fitted: no classes_
    with pytest.raises(ValueError, match="the model has no classes_ yet: fit it on these labels first"):
        fresh.evaluate(X[:3], ["a", "b", "c"])

"""Plots: each kind is written from a real (tiny) run, is a real picture, and
matplotlib stays optional and windowless."""
# Opt-out kept (issue 27): monkeypatch hides matplotlib: the message without it is the subject.
import builtins
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnet
from fastnet import plots
from fastnet.doctor.activations import activation_stats
from fastnet.datasets import spirals
from fastnet.doctor import NormRecorder


def _image(path):
    """The PNG as an array; fails unless it is a real, non-blank picture."""
    from matplotlib.image import imread

    assert os.path.getsize(path) > 2000
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05, "blank image"
    return img


@pytest.fixture(scope="module")
def digits():
    """An 8x8 'image' classification task: 4 classes, each a bright bar somewhere."""
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    X = rng.random((400, 8, 8)).astype(np.float32) * 0.3
    for i, c in enumerate(y):
        if c < 2:
            X[i, 2 * c + 2, :] += 1.0   # rows 2 or 4
        else:
            X[i, :, 2 * c - 2] += 1.0   # columns 2 or 4
    X = X.reshape(400, 64)
    model = fastnet.MLP([64, 16, 4], backend="cpu", seed=0)
    history = model.fit(X[:300], y[:300], epochs=6, optimizer="adam", lr=0.01, batch_size=32,
                        validation_data=(X[300:], y[300:]), callbacks=[NormRecorder()])
    return model, history, X[300:], y[300:]


@pytest.fixture(scope="module")
def toy():
    pytest.importorskip("matplotlib")
    X, y = spirals(300, 3, noise=0.2, seed=0)
    X = (X * 2).astype(np.float32)
    model = fastnet.MLP([2, 32, 32, 3], backend="cpu", seed=0)
    model.fit(X, y, epochs=20, optimizer="adam", lr=0.01, batch_size=32)
    return model, X, y


def test_plot_history(digits, tmp_path):
    model, history, _, _ = digits
    path = plots.plot_history(history, tmp_path / "h.png", title="tiny run")
    assert path == str(tmp_path / "h.png")
    img = _image(path)
    assert img.shape[1] > img.shape[0]  # two panels side by side


def test_plot_history_without_validation_or_accuracy(tmp_path):
    pytest.importorskip("matplotlib")
    h = fastnet.History()
    for e, loss in enumerate([1.0, 0.5, 0.3], start=1):
        h.append(e, {"loss": loss})
    _image(plots.plot_history(h, tmp_path / "loss_only.png"))
    with pytest.raises(ValueError, match="no 'loss'"):
        plots.plot_history(fastnet.History(), tmp_path / "empty.png")
    nan = fastnet.History()
    for e in (1, 2):
        nan.append(e, {"loss": float("nan")})
    with pytest.raises(ValueError, match="no 'loss'"):  # nothing finite to draw
        plots.plot_history(nan, tmp_path / "nan.png")


def test_history_knows_nothing_of_plotting():
    """Plotting takes a History (plots.plot_history); History, the doctor and the callbacks import no plot code."""
    from fastnet.doctor import run as doctor_run
    from fastnet.plots import training as plot_training

    assert not hasattr(fastnet.History, "plot")
    assert plot_training.learning_curve is doctor_run.learning_curve  # one curve reader for plots and doctor
    code = ("import sys, fastnet, fastnet.doctor, fastnet.core.callbacks\n"
            "print(sorted(m for m in sys.modules if m.startswith(('fastnet.plot', 'matplotlib'))))\n"
            "import fastnet.plots\n"
            "print('matplotlib' in sys.modules)")  # matplotlib is imported when a plot is made
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "False"]


def test_plot_confusion_matrix(digits, tmp_path):
    model, _, X, y = digits
    _image(plots.plot_confusion_matrix(y, model.predict_proba(X), tmp_path / "cm.png",
                                       class_names=["row 2", "row 4", "col 2", "col 4"]))
    _image(plots.plot_confusion_matrix(y, model.predict(X), tmp_path / "cm_norm.png", normalize=True))
    with pytest.raises(ValueError, match="class_names has 2 names for 4 classes"):
        plots.plot_confusion_matrix(y, model.predict(X), tmp_path / "x.png", class_names=["a", "b"])


def test_plot_first_layer_weights(digits, tmp_path):
    model, _, _, _ = digits
    _image(plots.plot_first_layer_weights(model, tmp_path / "w.png", max_units=16))
    _image(plots.plot_first_layer_weights(model, tmp_path / "w2.png", image_shape=(4, 16)))
    with pytest.raises(ValueError, match="does not hold 64 features"):
        plots.plot_first_layer_weights(model, tmp_path / "w3.png", image_shape=(5, 5))


def test_plot_first_layer_weights_needs_images(toy, tmp_path):
    model, _, _ = toy
    with pytest.raises(ValueError, match="pass image_shape"):
        plots.plot_first_layer_weights(model, tmp_path / "w.png")


def test_plot_decision_boundary(toy, tmp_path):
    model, X, y = toy
    img = _image(plots.plot_decision_boundary(model, X, y, tmp_path / "db.png", resolution=80))
    assert len(np.unique(img[..., :3].reshape(-1, 3).round(1), axis=0)) > 10  # regions in several colours
    with pytest.raises(ValueError, match="2 input features"):
        plots.plot_decision_boundary(model, np.zeros((3, 3)), [0, 1, 2], tmp_path / "x.png")


def test_plot_top_activating_images_and_vectors(digits, toy, tmp_path):
    model, _, X, _ = digits
    _image(plots.plot_top_activating(model, X, tmp_path / "top.png", k=5))
    _image(plots.plot_top_activating(model, X, tmp_path / "top_units.png", units=[0, 3], k=4))
    with pytest.raises(ValueError, match="unit 99 is out of range"):
        plots.plot_top_activating(model, X, tmp_path / "x.png", units=[99])
    toy_model, Xt, _ = toy
    _image(plots.plot_top_activating(toy_model, Xt, tmp_path / "top_2d.png", layer=1, k=4))
    with pytest.raises(ValueError, match="2 hidden layers"):
        plots.plot_top_activating(toy_model, Xt, tmp_path / "x.png", layer=2)


def test_plot_top_k(digits, tmp_path):
    model, _, X, y = digits
    for select in ("uncertain", "first"):
        _image(plots.plot_top_k(model, X, tmp_path / f"topk_{select}.png", y=y, k=3, n=6, select=select))
    with pytest.raises(ValueError, match="select must be"):
        plots.plot_top_k(model, X, tmp_path / "x.png", select="best")


def test_plot_norms_and_activation_stats(digits, tmp_path):
    model, _, X, _ = digits
    _image(plots.plot_norms(model.norms_, tmp_path / "norms.png"))
    _image(plots.plot_activation_stats(activation_stats(model, X), tmp_path / "act.png"))
    with pytest.raises(ValueError, match="NormRecorder"):
        plots.plot_norms({}, tmp_path / "x.png")


def test_write_training_plots_for_images(digits, tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    had_pyplot = "matplotlib.pyplot" in sys.modules
    model, history, X, y = digits
    paths = plots.write_training_plots(model, history, X, y, tmp_path / "out")
    # No pyplot, no GUI backend switched on: nothing can open a window.
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
    assert matplotlib.get_backend() == backend
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(["history.png", "confusion_matrix.png", "first_layer_weights.png",
                            "top_activating.png", "top_k.png", "norms.png", "activation_stats.png"])
    for p in paths:
        _image(p)


def test_write_training_plots_for_a_2d_toy_set(toy, tmp_path):
    model, X, y = toy
    paths = plots.write_training_plots(model, model.history_, X, y, tmp_path, prefix="spirals_")
    names = sorted(os.path.basename(p) for p in paths)
    expected = ["spirals_activation_stats.png", "spirals_confusion_matrix.png",
                "spirals_decision_boundary.png", "spirals_history.png"]
    if getattr(model, "norms_", None):  # fit records norms by default once the doctor is wired in
        expected.append("spirals_norms.png")
    assert names == sorted(expected)


def test_other_formats_and_new_folders(digits, tmp_path):
    model, history, _, _ = digits
    path = plots.plot_history(history, tmp_path / "a" / "b" / "h.svg")
    assert open(path).read(200).lstrip().startswith("<?xml")


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    h = fastnet.History()
    h.append(1, {"loss": 1.0})
    with pytest.raises(ImportError, match=r'pip install "\.\[plot\]" in fastnet'):
        plots.plot_history(h, tmp_path / "h.png")

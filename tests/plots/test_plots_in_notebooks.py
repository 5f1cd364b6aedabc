"""Plot functions in a notebook (issue 31): without a path they write nothing and return the
matplotlib Figure (which Jupyter displays); with one they write it and return the path."""
import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

import fastnet  # noqa: E402
from fastnet import plots  # noqa: E402


def test_every_plot_returns_its_figure_without_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (80, 16))
    y = (X[:, 0] > 0.5).astype(int)
    m = fastnet.MLP([16, 8, 2], seed=0)
    history = m.fit(X, y, epochs=2, verbose=0, validation_split=0.25)
    figures = [plots.plot_history(history), plots.plot_norms(m.norms_),
               plots.plot_confusion_matrix(y, m.predict(X)), plots.plot_first_layer_weights(m),
               plots.plot_top_activating(m, X), plots.plot_top_k(m, X, y=y, k=2)]
    flat = fastnet.MLP([2, 8, 2], seed=0)
    flat.fit(X[:, :2], y, epochs=1, verbose=0)
    figures.append(plots.plot_decision_boundary(flat, X[:, :2], y))
    for fig in figures:
        assert isinstance(fig, Figure) and fig.axes
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert plots.plot_history(history, tmp_path / "h.png") == str(tmp_path / "h.png")

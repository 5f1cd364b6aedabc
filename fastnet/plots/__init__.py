"""Pictures of a training run and of what the network learned, written to files.

Needs the optional ``plot`` extra (``pip install ".[plot]"``, i.e.
matplotlib).  matplotlib is imported only when a plot is made, and figures are
drawn on its Agg canvas directly: no window opens, no GUI backend is
touched, and pyplot's global state is left alone (safe in scripts, servers
and notebooks alike).

Every function writes one image (the format follows the file extension:
``.png``, ``.svg``, ``.pdf``...), creates the parent folder if needed, and
returns the path as a string.

The plots live in modules by subject, and are all importable from here:
:mod:`fastnet.plots.training` (learning curves, per-layer norms, unit
activity), :mod:`fastnet.plots.predictions` (confusion matrix, decision
regions, top-k guesses) and :mod:`fastnet.plots.units` (first-layer weights,
inputs that most activate hidden units); :mod:`fastnet.plots.figure` holds what
they share.  :func:`write_training_plots` makes every plot that applies.
"""
from __future__ import annotations

import os

import numpy as np

from fastnet.doctor.activations import activation_stats
from fastnet.plots.figure import INSTALL_HINT, as_image_shape  # noqa: F401  (INSTALL_HINT: importable from here as before)
from fastnet.plots.predictions import plot_confusion_matrix, plot_decision_boundary, plot_top_k
from fastnet.plots.training import plot_activation_stats, plot_history, plot_norms
from fastnet.plots.units import plot_first_layer_weights, plot_top_activating

__all__ = [
    "plot_history",
    "plot_confusion_matrix",
    "plot_first_layer_weights",
    "plot_decision_boundary",
    "plot_top_activating",
    "plot_top_k",
    "plot_norms",
    "plot_activation_stats",
    "write_training_plots",
]


def write_training_plots(model, history, X_test, y_test, folder, image_shape=None, prefix=""):
    """Write every plot that applies to this model and data into ``folder``.

    Parameters
    ----------
    model : Sequential
        The trained model.
    history : History
        ``fit``'s return value or ``model.history_``.
    X_test, y_test : array
        Held-out data for the confusion matrix and the unit pictures
        (``y_test`` may be None: the confusion matrix is then skipped).
    folder : str or PathLike
        Created if missing.
    image_shape : (int, int), optional
        Shape of image inputs; default: square when the feature count is a
        square >= 16 (784 -> 28x28).
    prefix : str
        Prepended to every file name.

    Returns
    -------
    list of str
        Paths written: ``history.png``; ``confusion_matrix.png`` (classifiers
        with class-id targets); ``first_layer_weights.png``,
        ``top_activating.png`` and ``top_k.png`` (image inputs with a hidden
        layer); ``decision_boundary.png`` (2 features); ``norms.png`` (when
        :class:`~fastnet.doctor.NormRecorder` ran); ``activation_stats.png``.
    """
    from fastnet.core.layers import Dense

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    out = lambda name: os.path.join(folder, prefix + name)  # noqa: E731
    paths = [plot_history(history, out("history.png"))]
    X = np.asarray(X_test)
    X = X.reshape(len(X), -1)
    loss = getattr(model, "loss_", None)
    is_class = loss is not None and loss.target_kind == "class"
    if is_class and y_test is not None:
        paths.append(plot_confusion_matrix(y_test, model.predict(X), out("confusion_matrix.png")))
    hidden = len([layer for layer in model.layers if isinstance(layer, Dense)]) > 1
    try:
        shape = as_image_shape(X.shape[1], image_shape)
    except ValueError:
        if image_shape is not None:
            raise
        shape = None
    if shape is not None and hidden:
        paths.append(plot_first_layer_weights(model, out("first_layer_weights.png"), image_shape=shape))
        paths.append(plot_top_activating(model, X, out("top_activating.png"), image_shape=shape))
    if shape is not None and is_class:
        paths.append(plot_top_k(model, X, out("top_k.png"), y=y_test, image_shape=shape))
    if X.shape[1] == 2 and is_class and y_test is not None:
        paths.append(plot_decision_boundary(model, X, y_test, out("decision_boundary.png")))
    norms = getattr(model, "norms_", None)
    if norms and norms.get("epochs"):
        paths.append(plot_norms(norms, out("norms.png")))
    if hidden:
        paths.append(plot_activation_stats(activation_stats(model, X), out("activation_stats.png")))
    return paths

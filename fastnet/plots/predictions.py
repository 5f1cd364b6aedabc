"""What the model predicts: confusion matrix, decision regions of 2-D data, top-k guesses per input."""
from __future__ import annotations

import numpy as np

from fastnet.plots.figure import as_image_shape, grid_shape, new_figure, save_figure

__all__ = ["plot_confusion_matrix", "plot_decision_boundary", "plot_top_k"]


def plot_confusion_matrix(y_true, y_pred, path=None, class_names=None, normalize=False, title=None):
    """Heat map of the confusion matrix (rows: true class, columns: predicted).

    Parameters
    ----------
    y_true, y_pred : array
        Class ids, or one-hot / probability rows (see :mod:`fastnet.core.metrics`).
    path : str or PathLike, optional
        Image file to write; ``None``: nothing is written and the matplotlib Figure is returned (a notebook shows it).
    class_names : list of str, optional
    normalize : bool
        Show each row as fractions of the true class (recall on the diagonal).
    title : str, optional

    Returns
    -------
    str or matplotlib.figure.Figure
    """
    from fastnet.core.metrics import accuracy, confusion_matrix

    cm = confusion_matrix(y_true, y_pred)
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names for {k} classes")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = max(4.0, 0.55 * k + 2.0)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "samples")
    top = shown.max() if shown.size else 1
    for i in range(k):
        for j in range(k):
            if cm[i, j] == 0 and i != j:
                continue
            text = f"{shown[i, j]:.2f}" if normalize else str(cm[i, j])
            ax.text(j, i, text, ha="center", va="center", fontsize=8 if k <= 12 else 6,
                    color="white" if shown[i, j] > 0.55 * top else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=45 if max(len(n) for n in names) > 3 else 0)
    ax.set_yticklabels(names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = accuracy(y_true, y_pred)
    ax.set_title(title or f"Confusion matrix: accuracy {acc:.3f} on {int(cm.sum())} samples")
    return save_figure(fig, path)


def plot_decision_boundary(model, X, y, path=None, resolution=200, padding=0.5, title=None):
    """Regions of the plane assigned to each class, with the data on top.

    Parameters
    ----------
    model : Sequential
        A fitted classifier with 2 input features.
    X : array (n, 2)
    y : array (n,) of class ids
    path : str or PathLike, optional
        Image file to write; ``None``: nothing is written and the matplotlib Figure is returned (a notebook shows it).
    resolution : int
        Grid points per axis.
    padding : float
        Margin around the data, in input units.
    title : str, optional

    Returns
    -------
    str or matplotlib.figure.Figure

    Notes
    -----
    Colour: the predicted class; shading: the model's confidence (its top
    probability); the black line is the decision boundary.
    """
    from fastnet.core.metrics import _labels, accuracy

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary needs 2 input features, got X of shape {X.shape}")
    labels = _labels("y", y)
    (x0, x1), (y0, y1) = [(X[:, i].min() - padding, X[:, i].max() + padding) for i in (0, 1)]
    gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    proba = model.predict_proba(grid)
    pred = proba.argmax(axis=1).reshape(gx.shape)
    conf = proba.max(axis=1).reshape(gx.shape)
    k = proba.shape[1]
    fig = new_figure(6.0, 5.2)
    from matplotlib.colors import ListedColormap, to_rgb

    colours = [to_rgb(f"C{i % 10}") for i in range(k)]
    ax = fig.add_subplot(1, 1, 1)
    rgb = np.array(colours)[pred]
    # Fade towards white where the model is unsure: confidence 1/k -> white, 1 -> full colour.
    strength = ((conf - 1.0 / k) / (1 - 1.0 / k)).clip(0, 1)[..., None] * 0.55 + 0.1
    ax.imshow(1 - strength * (1 - rgb), origin="lower", extent=(x0, x1, y0, y1), aspect="auto",
              interpolation="bilinear")
    ax.contour(gx, gy, pred, levels=np.arange(k) + 0.5, colors="k", linewidths=0.8)
    cmap = ListedColormap(colours)
    ax.scatter(X[:, 0], X[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=k - 0.5, s=14, edgecolors="k",
               linewidths=0.4)
    handles = [ax.scatter([], [], color=c, edgecolors="k", linewidths=0.4, label=f"class {i}")
               for i, c in enumerate(colours)]
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    acc = accuracy(labels, model.predict(X))
    ax.set_title(title or f"Decision regions (accuracy {acc:.3f} on the points shown)")
    return save_figure(fig, path)


def plot_top_k(model, X, path=None, y=None, k=3, n=12, image_shape=None, select="uncertain", title=None):
    """Inputs with the model's ``k`` best guesses and their probabilities.

    Parameters
    ----------
    model : Sequential
        A fitted classifier.
    X : array (n_samples, n_features)
        Image inputs.
    path : str or PathLike, optional
        Image file to write; ``None``: nothing is written and the matplotlib Figure is returned (a notebook shows it).
    y : array, optional
        True classes: printed above each image (red when the first guess is wrong).
    k : int
        Guesses per input (``predict_top_k``).
    n : int
        Number of inputs shown.
    image_shape : (int, int), optional
    select : {"uncertain", "mistakes", "first"}
        Which inputs: those whose best guess is least probable (where the
        second and third guesses matter), the most confident mistakes (needs
        ``y``), or the first ``n``.
    title : str, optional

    Returns
    -------
    str or matplotlib.figure.Figure
    """
    from fastnet.core.metrics import _labels, predict_top_k

    if select not in ("uncertain", "mistakes", "first"):
        raise ValueError(f"select must be 'uncertain', 'mistakes' or 'first', got {select!r}")
    rows = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    shape = as_image_shape(rows.shape[1], image_shape)
    classes, probs = predict_top_k(model, rows, k)
    truth = _labels("y", y) if y is not None else None
    if select == "mistakes":
        if truth is None:
            raise ValueError("select='mistakes' needs the true classes y")
        wrong = np.flatnonzero(classes[:, 0] != truth)
        idx = wrong[np.argsort(-probs[wrong, 0], kind="stable")]
    elif select == "uncertain":
        idx = np.argsort(probs[:, 0], kind="stable")
    else:
        idx = np.arange(len(rows))
    idx = idx[:n]
    if not len(idx):
        raise ValueError("no input to show (select='mistakes' and the model makes none?)")
    nrows, cols = grid_shape(len(idx), min(6, len(idx)))
    h, w = shape
    # One axes in image coordinates: per input, the image, then k bars (one per guess).
    bar_h = max(h / 6.0, 1.0)
    cell_w, cell_h = w * 1.6, h + (k + 0.8) * bar_h + h * 0.35
    fig = new_figure(1.9 * cols, 1.9 * nrows * cell_h / cell_w + 0.5)
    ax = fig.add_subplot(1, 1, 1)
    from matplotlib.patches import Rectangle

    lo, hi = float(rows.min()), float(rows.max())
    for p, i in enumerate(idx):
        r, c = divmod(p, cols)
        x0, y0 = c * cell_w + 0.3 * w, r * cell_h + 0.3 * h
        ax.imshow(rows[i].reshape(shape), cmap="gray_r", vmin=lo, vmax=hi if hi > lo else lo + 1,
                  extent=(x0, x0 + w, y0 + h, y0), interpolation="nearest")
        ax.add_patch(Rectangle((x0, y0), w, h, fill=False, lw=0.5, ec="0.6"))
        if truth is not None:
            wrong = classes[i, 0] != truth[i]
            ax.text(x0 + w / 2, y0 - 0.4, f"true class {truth[i]}", ha="center", va="bottom", fontsize=7,
                    color="firebrick" if wrong else "black")
        for j in range(k):
            yb = y0 + h + (0.4 + j) * bar_h
            ax.add_patch(Rectangle((x0, yb), w * probs[i, j], bar_h * 0.8, color="C0" if j == 0 else "C7"))
            ax.add_patch(Rectangle((x0, yb), w, bar_h * 0.8, fill=False, lw=0.3, ec="0.7"))
            ax.text(x0 - 0.5, yb + bar_h * 0.4, str(classes[i, j]), ha="right", va="center", fontsize=7)
            ax.text(x0 + w + 0.5, yb + bar_h * 0.4, f"{probs[i, j]:.2f}", ha="left", va="center", fontsize=6.5)
    ax.set_xlim(0, cols * cell_w)
    ax.set_ylim(nrows * cell_h, -0.6)
    ax.set_aspect("equal")
    ax.set_axis_off()
    what = {"uncertain": "the inputs it is least sure about", "mistakes": "its most confident mistakes",
            "first": "the first inputs"}[select]
    ax.set_title(title or f"The model's top {k} guesses and their probabilities: {what}", fontsize=10)
    return save_figure(fig, path)

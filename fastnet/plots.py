"""Pictures of a training run and of what the network learned, written to files.

Needs the optional ``plot`` extra (``pip install "fastnet[plot]"``, i.e.
matplotlib).  matplotlib is imported only when a plot is made, and figures are
drawn on its Agg canvas directly: no window opens, no GUI backend is
touched, and pyplot's global state is left alone (safe in scripts, servers
and notebooks alike).

Every function writes one image (the format follows the file extension:
``.png``, ``.svg``, ``.pdf``...), creates the parent folder if needed, and
returns the path as a string.
"""
from __future__ import annotations

import math
import os

import numpy as np

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

INSTALL_HINT = 'plotting needs matplotlib: pip install "fastnet[plot]"'


def _figure(width, height):
    """A matplotlib Figure on an Agg canvas (no pyplot, no window)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _values(history, key):
    if key not in history:
        return None
    vals = [np.nan if v is None else float(v) for v in history[key]]
    return np.array(vals) if vals and np.isfinite(vals).any() else None


def _image_shape(n_features, image_shape):
    if image_shape is not None:
        h, w = image_shape
        if h * w != n_features:
            raise ValueError(f"image_shape={tuple(image_shape)} does not hold {n_features} features")
        return int(h), int(w)
    side = math.isqrt(n_features)
    if side * side != n_features or side < 4:
        raise ValueError(
            f"cannot show {n_features} features as an image; pass image_shape=(height, width)")
    return side, side


def _plain_log_ticks(ax):
    """Tick labels like 0.5 and 20 on a log axis, instead of 5x10^-1 and 2x10^1.

    Minor ticks are labelled only when the axis spans less than a decade
    (otherwise there is a major label at each power of 10).
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 10:
        ax.yaxis.set_minor_formatter(fmt)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _grid(n, cols=None):
    cols = cols or min(n, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


# ----------------------------------------------------------------------------- curves
def plot_history(history, path, title=None):
    """Loss and accuracy per epoch, training and validation.

    Parameters
    ----------
    history : History
        What ``fit`` returned, or ``model.history_``.
    path : str or PathLike
        Image file to write.
    title : str, optional

    Returns
    -------
    str
        ``path``.

    Notes
    -----
    The epoch with the lowest validation loss is marked; the loss axis is
    logarithmic when the loss spans more than two decades.
    """
    epochs = np.asarray(getattr(history, "epochs", None) or [], dtype=float)
    loss = _values(history, "loss")
    if loss is None or not len(epochs):
        raise ValueError("history has no 'loss' values to plot (was the model trained?)")
    val_loss = _values(history, "val_loss")
    acc = _values(history, "accuracy")
    val_acc = _values(history, "val_accuracy")
    panels = 2 if acc is not None or val_acc is not None else 1
    fig = _figure(5.2 * panels, 3.8)
    ax = fig.add_subplot(1, panels, 1)
    ax.plot(epochs, loss, "o-", color="C0", ms=3, label="training")
    if val_loss is not None:
        ax.plot(epochs, val_loss, "s-", color="C1", ms=3, label="validation")
        best = int(np.nanargmin(val_loss))
        ax.axvline(epochs[best], color="0.5", ls="--", lw=1)
        right_half = epochs[best] > (epochs[0] + epochs[-1]) / 2
        ax.annotate(f"best validation\nepoch {int(epochs[best])}", (epochs[best], val_loss[best]),
                    xytext=(-6 if right_half else 6, 12), textcoords="offset points", fontsize=8, color="0.3",
                    ha="right" if right_half else "left")
    finite = np.concatenate([v[np.isfinite(v)] for v in (loss, val_loss) if v is not None])
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
        _plain_log_ticks(ax)
    diverged = getattr(history, "diverged", None)
    if isinstance(diverged, dict) and diverged.get("epoch") is not None:
        ax.axvline(diverged["epoch"], color="red", lw=1)
        ax.annotate("loss became NaN", (diverged["epoch"], finite.max() if len(finite) else 1), fontsize=8,
                    color="red", ha="right")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if panels == 2:
        ax2 = fig.add_subplot(1, 2, 2)
        if acc is not None:
            ax2.plot(epochs, acc, "o-", color="C0", ms=3, label="training")
        if val_acc is not None:
            ax2.plot(epochs, val_acc, "s-", color="C1", ms=3, label="validation")
            # Right of the last point, in the margin, where no curve runs.
            ax2.annotate(f"{val_acc[-1]:.3f}", (epochs[-1], val_acc[-1]), xytext=(6, 0),
                         textcoords="offset points", fontsize=8, color="C1", ha="left", va="center",
                         annotation_clip=False)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("accuracy")
        ax2.set_title("Accuracy")
        ax2.grid(alpha=0.3)
        ax2.legend()
    for a in fig.axes:
        a.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ----------------------------------------------------------------------------- confusion
def plot_confusion_matrix(y_true, y_pred, path, class_names=None, normalize=False, title=None):
    """Heat map of the confusion matrix (rows: true class, columns: predicted).

    Parameters
    ----------
    y_true, y_pred : array
        Class ids, or one-hot / probability rows (see :mod:`fastnet.metrics`).
    path : str or PathLike
    class_names : list of str, optional
    normalize : bool
        Show each row as fractions of the true class (recall on the diagonal).
    title : str, optional

    Returns
    -------
    str
    """
    from .metrics import accuracy, confusion_matrix

    cm = confusion_matrix(y_true, y_pred)
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names for {k} classes")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = max(4.0, 0.55 * k + 2.0)
    fig = _figure(size + 1.0, size)
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
    return _save(fig, path)


# ----------------------------------------------------------------------------- weights
def plot_first_layer_weights(model, path, image_shape=None, max_units=64, cols=None, title=None):
    """The first layer's weights, one image per hidden unit (e.g. 28x28 for MNIST).

    Parameters
    ----------
    model : Sequential
        A fitted model whose inputs are images.
    path : str or PathLike
    image_shape : (int, int), optional
        Default: square images (784 features -> 28x28).
    max_units : int
        Show the first ``max_units`` units.
    cols : int, optional
        Tiles per row.
    title : str, optional

    Returns
    -------
    str

    Notes
    -----
    Each tile has its own symmetric colour scale: red pixels push the unit up,
    blue pixels push it down; white ones are ignored.
    """
    from .layers import Dense

    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    if not getattr(model, "built", False) or not dense:
        raise ValueError("the model has no weights yet: fit it first")
    W = np.asarray(model.backend_.to_host(dense[0].W), dtype=np.float64)
    h, w = _image_shape(W.shape[0], image_shape)
    n = min(max_units, W.shape[1])
    rows, cols = _grid(n, cols)
    # Each tile scaled to [-1, 1] by its own largest weight, in one mosaic (one image, one axes:
    # drawing hundreds of small axes is slow).
    tiles = W[:, :n].T.reshape(n, h, w)
    tiles = tiles / np.maximum(np.abs(tiles).reshape(n, -1).max(axis=1), 1e-12)[:, None, None]
    mosaic, origins = _mosaic(tiles, rows, cols, fill=np.nan)
    fig = _figure(max(4.0, cols * 1.2), max(4.0, cols * 1.2) * mosaic.shape[0] / mosaic.shape[1])
    ax = fig.add_axes((0, 0, 1, 1))  # the mosaic fills the figure: no blank margins
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    for j, (r0, c0) in enumerate(origins):
        ax.text(c0, r0 - 0.6, str(j), fontsize=7, va="bottom", ha="left", color="0.3")
    ax.set_axis_off()
    ax.set_title(title or f"{dense[0].name}: weights of {n} of {W.shape[1]} hidden units "
                          f"({h}x{w} each; red +, blue -)", fontsize=10, pad=4)
    return _save(fig, path)


def _mosaic(tiles, rows, cols, fill=np.nan, gap=None):
    """Tiles (n, h, w) laid out in a grid with gaps; returns the image and each tile's (row, col)."""
    n, h, w = tiles.shape
    gap = gap if gap is not None else max(2, h // 7 + 2)
    H, Wd = rows * h + (rows + 1) * gap, cols * w + (cols + 1) * gap
    out = np.full((H, Wd), fill, dtype=np.float64)
    origins = []
    for j in range(n):
        r, c = divmod(j, cols)
        r0, c0 = gap + r * (h + gap), gap + c * (w + gap)
        out[r0:r0 + h, c0:c0 + w] = tiles[j]
        origins.append((r0, c0))
    return out, origins


# ----------------------------------------------------------------------------- 2-D toy sets
def plot_decision_boundary(model, X, y, path, resolution=200, padding=0.5, title=None):
    """Regions of the plane assigned to each class, with the data on top.

    Parameters
    ----------
    model : Sequential
        A fitted classifier with 2 input features.
    X : array (n, 2)
    y : array (n,) of class ids
    path : str or PathLike
    resolution : int
        Grid points per axis.
    padding : float
        Margin around the data, in input units.
    title : str, optional

    Returns
    -------
    str

    Notes
    -----
    Colour: the predicted class; shading: the model's confidence (its top
    probability); the black line is the decision boundary.
    """
    from .metrics import _labels, accuracy

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
    fig = _figure(6.0, 5.2)
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
    return _save(fig, path)


# ----------------------------------------------------------------------------- hidden units
def plot_top_activating(model, X, path, layer=0, units=None, k=8, image_shape=None, max_samples=10_000,
                        title=None):
    """The inputs that most activate chosen hidden units: one row per unit.

    Parameters
    ----------
    model : Sequential
    X : array (n_samples, n_features)
        Inputs to search (e.g. the test set).
    path : str or PathLike
    layer : int
        Index among the hidden Dense layers (0 = first hidden layer).
    units : list of int, optional
        Units to show; default: the 6 units whose activation varies most over ``X``.
    k : int
        Inputs shown per unit, strongest first.
    image_shape : (int, int), optional
        Show inputs as images of this shape (default: square images when the
        feature count is a square >= 16); other inputs are drawn as bar charts.
    max_samples : int
        Rows of ``X`` searched (evenly spaced).
    title : str, optional

    Returns
    -------
    str
    """
    from .activations_stats import _as_rows, hidden_activations

    acts = hidden_activations(model, X, max_samples=max_samples)
    if not acts:
        raise ValueError("the model has no hidden layer")
    if not -len(acts) <= layer < len(acts):
        raise ValueError(f"layer must index one of the {len(acts)} hidden layers, got {layer}")
    a = acts[layer]
    rows_X = _as_rows(model, X, max_samples)
    if units is None:
        units = _diverse_units(a, rows_X, 6, k)
    units = list(units)
    for u in units:
        if not 0 <= u < a.shape[1]:
            raise ValueError(f"unit {u} is out of range: layer {layer} has {a.shape[1]} units")
    k = min(k, len(a))
    try:
        shape = _image_shape(rows_X.shape[1], image_shape)
    except ValueError:
        if image_shape is not None:
            raise
        shape = None
    from .layers import Dense

    name = [lay for lay in model.layers if isinstance(lay, Dense)][layer].name
    tops = [np.argsort(-a[:, u], kind="stable")[:k] for u in units]
    if shape is not None:
        # One mosaic: a row of k input images per unit, activation under each.
        h, w = shape
        tiles = np.stack([rows_X[i].reshape(shape) for top in tops for i in top]).astype(np.float64)
        mosaic, origins = _mosaic(tiles, len(units), k, fill=0.0, gap=max(2, h // 3))
        gap = origins[0][0]
        left = 2.2 * w  # room for the "unit j" labels
        width = 1.0 * k + 1.0
        fig = _figure(width, width * mosaic.shape[0] / (mosaic.shape[1] + left))
        ax = fig.add_axes((0, 0, 1, 1))  # the mosaic fills the figure: no blank margins
        lo, hi = float(np.min(rows_X)), float(np.max(rows_X))
        ax.imshow(mosaic, cmap="gray_r", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        for p, (r0, c0) in enumerate(origins):
            r, c = divmod(p, k)
            ax.text(c0 + w / 2, r0 + h + 0.3, f"{a[tops[r][c], units[r]]:.2f}", fontsize=7, ha="center",
                    va="top", color="C0")
        for r, u in enumerate(units):
            ax.text(gap - 1.5, origins[r * k][0] + h / 2, f"unit {u}", fontsize=8, ha="right", va="center")
        ax.set_axis_off()
        ax.set_xlim(-left, mosaic.shape[1])
        ax.set_ylim(mosaic.shape[0], 0)
    else:
        # Vector inputs: the top-k inputs of each unit as rows of a heat map (features across).
        fig = _figure(max(5.0, 0.35 * rows_X.shape[1] + 2.0), 0.45 * k * len(units) + 1.0)
        lim = float(np.abs(rows_X).max()) or 1.0
        for r, (u, top) in enumerate(zip(units, tops)):
            ax = fig.add_subplot(len(units), 1, r + 1)
            ax.imshow(rows_X[top], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
            ax.set_yticks(range(len(top)))
            ax.set_yticklabels([f"{a[i, u]:.2f}" for i in top], fontsize=7)
            ax.set_ylabel(f"unit {u}", fontsize=8)
            ax.set_xticks(range(rows_X.shape[1]) if rows_X.shape[1] <= 30 else [])
            ax.tick_params(axis="x", labelsize=7)
        fig.axes[-1].set_xlabel("input feature")
    heading = title or f"{name}: the {k} inputs (of {len(a)}) that most activate each unit (activation under each)"
    if shape is not None:
        fig.axes[0].set_title(heading, fontsize=10, pad=4)
    else:
        fig.suptitle(heading, fontsize=10)
    return _save(fig, path)


def _diverse_units(a, X, n, k):
    """``n`` strongly varying units whose favourite inputs differ from one another.

    Among the 4n units whose activation varies most, pick greedily the one whose
    mean top-``k`` input is least similar (cosine) to those already picked, so
    the picture does not show six detectors of the same digit.
    """
    spread = np.nan_to_num(a.std(axis=0), nan=0.0)
    candidates = [int(u) for u in np.argsort(-spread, kind="stable")[:4 * n] if spread[u] > 0]
    if not candidates:  # every unit constant (dead): show the first ones anyway
        return list(range(min(n, a.shape[1])))
    protos = {}
    for u in candidates:
        top = np.argsort(-a[:, u], kind="stable")[:k]
        p = X[top].astype(np.float64).mean(axis=0)
        protos[u] = p / (np.linalg.norm(p) or 1.0)
    chosen = candidates[:1]
    while len(chosen) < min(n, len(candidates)):
        rest = [u for u in candidates if u not in chosen]
        sim = [max(float(protos[u] @ protos[c]) for c in chosen) for u in rest]
        chosen.append(rest[int(np.argmin(sim))])
    return chosen


def plot_top_k(model, X, path, y=None, k=3, n=12, image_shape=None, select="uncertain", title=None):
    """Inputs with the model's ``k`` best guesses and their probabilities.

    Parameters
    ----------
    model : Sequential
        A fitted classifier.
    X : array (n_samples, n_features)
        Image inputs.
    path : str or PathLike
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
    str
    """
    from .metrics import _labels, predict_top_k

    if select not in ("uncertain", "mistakes", "first"):
        raise ValueError(f"select must be 'uncertain', 'mistakes' or 'first', got {select!r}")
    rows = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    shape = _image_shape(rows.shape[1], image_shape)
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
    nrows, cols = _grid(len(idx), min(6, len(idx)))
    h, w = shape
    # One axes in image coordinates: per input, the image, then k bars (one per guess).
    bar_h = max(h / 6.0, 1.0)
    cell_w, cell_h = w * 1.6, h + (k + 0.8) * bar_h + h * 0.35
    fig = _figure(1.9 * cols, 1.9 * nrows * cell_h / cell_w + 0.5)
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
    return _save(fig, path)


# ----------------------------------------------------------------------------- doctor's charts
def plot_norms(norms, path, title=None):
    """Per-layer weight and gradient norms over epochs (from :class:`~fastnet.diagnostics.NormRecorder`).

    Parameters
    ----------
    norms : dict
        ``model.norms_``.
    path : str or PathLike
    title : str, optional

    Returns
    -------
    str
    """
    if not norms or not norms.get("epochs"):
        raise ValueError("norms has no epochs recorded: train with callbacks=[NormRecorder()]")
    epochs = norms["epochs"]
    fig = _figure(10.4, 3.8)
    shown = []
    for p, (kind, label) in enumerate([("weight", "weight norm ||W||"), ("grad", "gradient norm ||dW|| (last step)")]):
        ax = fig.add_subplot(1, 2, p + 1)
        for i, name in enumerate(norms["layers"]):
            values = np.array(norms[kind][name], dtype=np.float64)
            xs, ys = [0] + list(epochs), [norms["initial_weight"][name]] + list(values)
            if kind == "grad":
                xs, ys = list(epochs), list(values)
            ys = np.array(ys)
            ys[~np.isfinite(ys) | (ys <= 0)] = np.nan
            ax.plot(xs, ys, "o-", ms=3, color=f"C{i % 10}", label=name)
            shown.extend(ys[np.isfinite(ys)])
        # A log axis when the norms span more than a decade (growth or decay by orders of magnitude).
        if shown and max(shown) > 10 * min(shown):
            ax.set_yscale("log")
            _plain_log_ticks(ax)
        shown = []
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title or "Per-layer norms (dense_0 is next to the input)", fontsize=10)
    return _save(fig, path)


def plot_activation_stats(stats, path, title=None):
    """Histograms of how often each hidden unit is active (and saturated).

    Parameters
    ----------
    stats : list of LayerActivationStats
        From :func:`fastnet.activations_stats.activation_stats`.
    path : str or PathLike
    title : str, optional

    Returns
    -------
    str
    """
    from .activations_stats import ALWAYS_ON_FRACTION

    if not stats:
        raise ValueError("no hidden layers to plot")
    fig = _figure(4.4 * len(stats), 3.6)
    bins = np.linspace(0, 1, 21)
    for p, s in enumerate(stats):
        ax = fig.add_subplot(1, len(stats), p + 1)
        ax.hist(s.active, bins=bins, color="C0", alpha=0.8, label="active")
        if s.saturated is not None:
            ax.hist(s.saturated, bins=bins, color="C3", alpha=0.6, label="saturated")
        ax.axvspan(ALWAYS_ON_FRACTION, 1.0, color="C1", alpha=0.12, lw=0,
                   label=f"active on >{ALWAYS_ON_FRACTION:.0%}")
        ax.set_xlabel("fraction of samples")
        ax.set_ylabel("units")
        ax.set_title(f"{s.name} ({s.activation}): {len(s.dead)} dead, {len(s.always_on)} on >"
                     f"{ALWAYS_ON_FRACTION:.0%}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(title or "How often each hidden unit is active", fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- all at once
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
        :class:`~fastnet.diagnostics.NormRecorder` ran); ``activation_stats.png``.
    """
    from .layers import Dense

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
        shape = _image_shape(X.shape[1], image_shape)
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
        from .activations_stats import activation_stats

        paths.append(plot_activation_stats(activation_stats(model, X), out("activation_stats.png")))
    return paths

"""What the hidden units learned: the first layer's weights as images, and the inputs that most
activate chosen units."""
from __future__ import annotations

import numpy as np

from fastnet.doctor.activations import _as_rows, hidden_activations
from fastnet.plots.figure import as_image_shape, grid_shape, new_figure, save_figure, tile_mosaic

__all__ = ["plot_first_layer_weights", "plot_top_activating"]


def plot_first_layer_weights(model, path=None, image_shape=None, max_units=64, cols=None, title=None):
    """The first layer's weights, one image per hidden unit (e.g. 28x28 for MNIST).

    Parameters
    ----------
    model : Sequential
        A fitted model whose inputs are images.
    path : str or PathLike, optional
        Image file to write; ``None``: nothing is written and the matplotlib Figure is returned (a notebook shows it).
    image_shape : (int, int), optional
        Default: square images (784 features -> 28x28).
    max_units : int
        Show the first ``max_units`` units.
    cols : int, optional
        Tiles per row.
    title : str, optional

    Returns
    -------
    str or matplotlib.figure.Figure

    Notes
    -----
    Each tile has its own symmetric colour scale: red pixels push the unit up,
    blue pixels push it down; white ones are ignored.
    """
    from fastnet.core.layers import Dense

    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    if not getattr(model, "built", False) or not dense:
        raise ValueError("the model has no weights yet: fit it first")
    W = np.asarray(model.backend_.to_host(dense[0].W), dtype=np.float64)
    h, w = as_image_shape(W.shape[0], image_shape)
    n = min(max_units, W.shape[1])
    rows, cols = grid_shape(n, cols)
    # Each tile scaled to [-1, 1] by its own largest weight, in one mosaic (one image, one axes:
    # drawing hundreds of small axes is slow).
    tiles = W[:, :n].T.reshape(n, h, w)
    tiles = tiles / np.maximum(np.abs(tiles).reshape(n, -1).max(axis=1), 1e-12)[:, None, None]
    mosaic, origins = tile_mosaic(tiles, rows, cols, fill=np.nan)
    fig = new_figure(max(4.0, cols * 1.2), max(4.0, cols * 1.2) * mosaic.shape[0] / mosaic.shape[1])
    ax = fig.add_axes((0, 0, 1, 1))  # the mosaic fills the figure: no blank margins
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    for j, (r0, c0) in enumerate(origins):
        ax.text(c0, r0 - 0.6, str(j), fontsize=7, va="bottom", ha="left", color="0.3")
    ax.set_axis_off()
    ax.set_title(title or f"{dense[0].name}: weights of {n} of {W.shape[1]} hidden units "
                          f"({h}x{w} each; red +, blue -)", fontsize=10, pad=4)
    return save_figure(fig, path)


def plot_top_activating(model, X, path=None, layer=0, units=None, k=8, image_shape=None, max_samples=10_000,
                        title=None):
    """The inputs that most activate chosen hidden units: one row per unit.

    Parameters
    ----------
    model : Sequential
    X : array (n_samples, n_features)
        Inputs to search (e.g. the test set).
    path : str or PathLike, optional
        Image file to write; ``None``: nothing is written and the matplotlib Figure is returned (a notebook shows it).
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
    str or matplotlib.figure.Figure
    """
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
        shape = as_image_shape(rows_X.shape[1], image_shape)
    except ValueError:
        if image_shape is not None:
            raise
        shape = None
    from fastnet.core.layers import Dense

    name = [lay for lay in model.layers if isinstance(lay, Dense)][layer].name
    tops = [np.argsort(-a[:, u], kind="stable")[:k] for u in units]
    if shape is not None:
        # One mosaic: a row of k input images per unit, activation under each.
        h, w = shape
        tiles = np.stack([rows_X[i].reshape(shape) for top in tops for i in top]).astype(np.float64)
        mosaic, origins = tile_mosaic(tiles, len(units), k, fill=0.0, gap=max(2, h // 3))
        gap = origins[0][0]
        left = 2.2 * w  # room for the "unit j" labels
        width = 1.0 * k + 1.0
        fig = new_figure(width, width * mosaic.shape[0] / (mosaic.shape[1] + left))
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
        fig = new_figure(max(5.0, 0.35 * rows_X.shape[1] + 2.0), 0.45 * k * len(units) + 1.0)
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
    return save_figure(fig, path)


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

"""What every plot module shares: a matplotlib figure off pyplot, saving it, and laying out tiles.

matplotlib is imported inside these functions only, so the plot modules import
without it; :func:`new_figure` raises ImportError naming the ``plot`` extra.
"""
from __future__ import annotations

import math
import os

import numpy as np

INSTALL_HINT = 'plotting needs matplotlib: pip install ".[plot]" in fastnet\'s clone, or pip install matplotlib'


def new_figure(width, height):
    """A matplotlib Figure on an Agg canvas (no pyplot, no window)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    """Write ``fig`` to ``path`` (format from the extension), creating the folder; returns the path.
    ``path=None``: returns the Figure itself (notebooks display it), writing nothing."""
    if path is None:
        return fig
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def as_image_shape(n_features, image_shape):
    """``(height, width)`` of inputs of ``n_features`` shown as images: ``image_shape``, checked, or square.

    Raises ValueError when ``image_shape`` does not hold the features, or (when it
    is None) the features do not make a square image of side >= 4.
    """
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


def plain_log_ticks(ax):
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


def grid_shape(n, cols=None):
    """``(rows, cols)`` of a grid for ``n`` tiles: ``cols`` given, or about square."""
    cols = cols or min(n, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def tile_mosaic(tiles, rows, cols, fill=np.nan, gap=None):
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

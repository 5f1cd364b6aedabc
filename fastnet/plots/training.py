"""Charts of a training run: learning curves, per-layer norms, how often the hidden units fire.

These draw what :class:`~fastnet.core.callbacks.History`, :class:`~fastnet.doctor.norms.NormRecorder`
and :func:`~fastnet.doctor.activations.activation_stats` record; the doctor reads the same numbers.
"""
from __future__ import annotations

import numpy as np

from fastnet.doctor.activations import ALWAYS_ON_FRACTION
from fastnet.doctor.run import learning_curve
from fastnet.plots.figure import new_figure, plain_log_ticks, save_figure

__all__ = ["plot_history", "plot_norms", "plot_activation_stats"]


def plot_history(history, path=None, title=None):
    """Loss and accuracy per epoch, training and validation.

    Parameters
    ----------
    history : History
        What ``fit`` returned, or ``model.history_``.
    path : str or PathLike, optional
        Image file to write. ``None``: nothing is written and the matplotlib Figure is returned (a notebook shows it).
    title : str, optional

    Returns
    -------
    str or matplotlib.figure.Figure
        ``path`` (the matplotlib Figure when ``path`` is None).

    Notes
    -----
    The epoch with the lowest validation loss is marked; the loss axis is
    logarithmic when the loss spans more than two decades.
    """
    epochs = np.asarray(getattr(history, "epochs", None) or [], dtype=float)
    loss = learning_curve(history, "loss", need_finite=True)
    if loss is None or not len(epochs):
        raise ValueError("history has no 'loss' values to plot (was the model trained?)")
    val_loss = learning_curve(history, "val_loss", need_finite=True)
    acc = learning_curve(history, "accuracy", need_finite=True)
    val_acc = learning_curve(history, "val_accuracy", need_finite=True)
    panels = 2 if acc is not None or val_acc is not None else 1
    fig = new_figure(5.2 * panels, 3.8)
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
        plain_log_ticks(ax)
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
    return save_figure(fig, path)


def plot_norms(norms, path=None, title=None):
    """Per-layer weight and gradient norms over epochs (from :class:`~fastnet.doctor.NormRecorder`).

    Parameters
    ----------
    norms : dict
        ``model.norms_``.
    path : str or PathLike, optional
        Image file to write; ``None``: nothing is written and the matplotlib Figure is returned (a notebook shows it).
    title : str, optional

    Returns
    -------
    str or matplotlib.figure.Figure
    """
    if not norms or not norms.get("epochs"):
        raise ValueError("norms has no epochs recorded: train with callbacks=[NormRecorder()]")
    epochs = norms["epochs"]
    fig = new_figure(10.4, 3.8)
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
            plain_log_ticks(ax)
        shown = []
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title or "Per-layer norms (dense_0 is next to the input)", fontsize=10)
    return save_figure(fig, path)


def plot_activation_stats(stats, path=None, title=None):
    """Histograms of how often each hidden unit is active (and saturated).

    Parameters
    ----------
    stats : list of LayerActivationStats
        From :func:`fastnet.doctor.activations.activation_stats`.
    path : str or PathLike, optional
        Image file to write; ``None``: nothing is written and the matplotlib Figure is returned (a notebook shows it).
    title : str, optional

    Returns
    -------
    str or matplotlib.figure.Figure
    """
    if not stats:
        raise ValueError("no hidden layers to plot")
    fig = new_figure(4.4 * len(stats), 3.6)
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
    return save_figure(fig, path)

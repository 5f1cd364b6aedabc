"""The run under examination: what the doctor's checks read, computed once.

A :class:`Run` holds a training run's learning curves (:func:`learning_curve`),
its settings (``history.params``), where its loss became NaN, and, on demand,
the scale of its inputs (:func:`input_scale_stats`) and its hidden units'
statistics (:func:`~fastnet.doctor.activations.activation_stats`), both on the
same evenly spaced rows of ``X``.
"""
from __future__ import annotations

import math

import numpy as np

from fastnet.doctor.activations import activation_stats, sample_rows
from fastnet.core.validation import as_array

__all__ = ["learning_curve", "input_scale_stats", "Run"]


def learning_curve(history, key, *, need_finite=False):
    """``history[key]``, one value per epoch, as a float64 array (None entries as NaN).

    The one reader of learning curves, for the doctor and the plots alike.
    Returns None when the history has no ``key`` or no epoch, and, with
    ``need_finite``, when no value is finite (nothing to draw).
    """
    if key not in history:
        return None
    values = np.array([np.nan if v is None else float(v) for v in history[key]], dtype=np.float64)
    if not len(values) or (need_finite and not np.isfinite(values).any()):
        return None
    return values


def chance_loss(model):
    """Loss of a classifier that outputs uniform probabilities (None for regression)."""
    if model is None:
        return None
    loss = getattr(model, "loss_", None)
    k = getattr(model, "n_outputs_", None)
    if loss is None or k is None:
        return None
    if loss.name == "cross_entropy":
        return math.log(k), f"ln {k}"
    if loss.name == "binary_cross_entropy":
        return k * math.log(2), (f"{k} ln 2" if k > 1 else "ln 2")
    return None


def learning_rate(params, model):
    lr = params.get("lr")
    if lr is None and model is not None and getattr(model, "optimizer_", None) is not None:
        lr = model.optimizer_.lr
    return lr


def first_epoch(history):
    return history.epochs[0] if getattr(history, "epochs", None) else 1


def input_scale_stats(X, max_samples=10_000):
    """Per-feature mean, standard deviation and RMS of ``X`` (a row sample).

    Returns
    -------
    dict
        ``mean``, ``std``, ``rms`` arrays (n_features,), and ``max_rms``,
        ``argmax_rms``, ``median_std``, ``pixels`` (True when X looks like
        8-bit images: integers in [0, 255] with a maximum above 1).
    """
    a = np.asarray(X)
    if a.ndim > 2:
        a = a.reshape(len(a), -1)
    if a.ndim != 2 or len(a) == 0:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {a.shape}")
    f = sample_rows(a, max_samples).astype(np.float64)
    mean = f.mean(axis=0)
    std = f.std(axis=0)
    rms = np.sqrt(mean ** 2 + std ** 2)
    hi = float(f.max()) if f.size else 0.0
    pixels = bool(f.min() >= 0 and hi > 1 and hi <= 255 and np.all(f == np.round(f)))
    return {"mean": mean, "std": std, "rms": rms, "max_rms": float(rms.max()),
            "argmax_rms": int(rms.argmax()), "median_std": float(np.median(std)), "pixels": pixels}


#: Fewest rows of ``X`` the dead, always-on and saturated-unit checks judge from.
MIN_UNIT_SAMPLES = 32


class Run:
    """What the detectors read, computed once."""

    def __init__(self, history, model, X, norms, error, max_samples):
        self.history = history
        self.model = model
        # Every statistic reads the same evenly spaced sample of rows, taken once here: on
        # large data the doctor costs the same as on max_samples rows.
        self.X = X if X is None else as_array("X", X)
        if self.X is not None and self.X.ndim >= 2:
            self.X = sample_rows(self.X, max_samples)
        self.params = dict(getattr(history, "params", None) or {})
        self.loss = learning_curve(history, "loss")
        self.val = learning_curve(history, "val_loss")
        self.first_epoch = first_epoch(history)
        self.norms = norms
        self.error = error
        self.max_samples = max_samples
        self._stats = None
        self._inputs = None
        self.diverged = self._divergence()

    def epoch(self, i):
        """Epoch number of curve index ``i``."""
        epochs = getattr(self.history, "epochs", None)
        return epochs[i] if epochs and i < len(epochs) else self.first_epoch + i

    def _divergence(self):
        info = getattr(self.history, "diverged", None)
        if isinstance(info, dict):
            return dict(info)
        if self.error is not None:
            return {"epoch": getattr(self.error, "epoch", None), "step": getattr(self.error, "step", None),
                    "loss": float("nan"), "message": str(self.error)}
        if self.loss is not None and not np.all(np.isfinite(self.loss)):
            i = int(np.argmax(~np.isfinite(self.loss)))
            return {"epoch": self.epoch(i), "step": None, "loss": float(self.loss[i])}
        return None

    @property
    def batch_size(self):
        bs = self.params.get("batch_size")
        return int(bs) if isinstance(bs, (int, np.integer)) and bs > 0 else None

    @property
    def stats(self):
        """Hidden-unit statistics, or none below :data:`MIN_UNIT_SAMPLES` rows of ``X`` (on a
        handful of samples every unit looks dead or always on)."""
        enough = self.X is not None and len(self.X) >= MIN_UNIT_SAMPLES
        if self._stats is None and enough and getattr(self.model, "built", False):
            self._stats = activation_stats(self.model, self.X, max_samples=self.max_samples)
        return self._stats or []

    @property
    def inputs(self):
        if self._inputs is None and self.X is not None:
            self._inputs = input_scale_stats(self.X, self.max_samples)
        return self._inputs

"""What the hidden units do on a data set: activations and per-unit statistics.

The activations are read through the model's own inference pass (each layer's
``infer``: the backend's GEMM and the kernel table's activation kernels, the
same pass as ``predict``), in chunks, with arrays of their own per call.  It
never touches the model's training workspace, so it is safe from a callback
in the middle of ``fit`` and on any backend; ``Dropout`` is the identity here,
as at inference.  Every activation of the kernel table works, whatever its
kernels' signature (GELU's forward also writes its input).

A unit is *active* on a sample when its output is in the activation's
working range, and *saturated* when its derivative is nearly zero; both rules
are the activation's record in the kernel table (``active_above``,
``saturated``, ``dies``).  For the table's activations today:

===========  =====================  ==============================
activation   active                 saturated
===========  =====================  ==============================
relu         a > 0                  (never: relu does not saturate)
leaky_relu   a > 0                  (never)
sigmoid      a > 0.5                a < 0.01 or a > 0.99
tanh         a > 0                  abs(a) > 0.99
identity     a > 0                  (never)
gelu         a > 0                  (never)
===========  =====================  ==============================
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastnet.kernels import reference

__all__ = ["hidden_activations", "activation_stats", "LayerActivationStats",
           "SATURATION", "ALWAYS_ON_FRACTION"]

#: Saturation bounds ``(low, high)`` by activation, from the kernel table (sigmoid output
#: within 0.01 of 0 or 1, |tanh| above 0.99): outputs below ``low`` or above ``high``.
SATURATION = {name: act.saturated for name, act in reference.ACTIVATIONS.items() if act.saturated}
#: A unit active on more than this fraction of samples is reported as always-on.
ALWAYS_ON_FRACTION = 0.8
#: Rows of X used by default: statistics of 10k samples are stable to ~1%.
DEFAULT_MAX_SAMPLES = 10_000


def _hidden_dense_layers(model):
    """``[(layer, activation)]`` for the hidden Dense layers (every Dense layer but the last)."""
    if not getattr(model, "built", False):
        from fastnet.core.validation import NotFittedError

        raise NotFittedError("this model is not fitted yet: call fit before computing activations")
    from fastnet.core.layers import Dense

    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    return [(layer, layer.kernel_activation) for layer in dense[:-1]]


def sample_rows(a, max_samples):
    """At most ``max_samples`` rows of ``a``, evenly spaced from the first row to the last.

    Deterministic, without repeats, and a data set sorted by class keeps all its
    classes.  ``a`` itself when it has no more rows (or ``max_samples`` is None).
    The one row sampler of the statistics: hidden-unit statistics and the
    doctor's input-scale check look at the same rows.
    """
    if max_samples is None or len(a) <= max_samples:
        return a
    return a[np.linspace(0, len(a) - 1, max_samples).astype(np.int64)]


def _as_rows(model, X, max_samples):
    from fastnet.core.validation import check_X

    return sample_rows(check_X(X, model.n_features_in_, "X"), max_samples)


def hidden_activations(model, X, max_samples=None, chunk=4096):
    """Outputs of every hidden Dense layer (after its activation), on the host.

    Parameters
    ----------
    model : Sequential
        A built (fitted) model.
    X : array (n_samples, n_features)
    max_samples : int, optional
        Use at most this many rows of ``X`` (evenly spaced); default all.
    chunk : int
        Rows computed at a time (memory bound: chunk x widest layer).

    Returns
    -------
    list of numpy.ndarray
        One ``(n, units)`` array per hidden Dense layer, in the model's dtype,
        in layer order (``model.layers`` without Dropout and the output layer).
    """
    hidden = _hidden_dense_layers(model)
    rows = _as_rows(model, X, max_samples)
    backend = model.backend_
    dtype = backend.dtype
    outs = [np.empty((len(rows), layer.units), dtype=dtype) for layer, _ in hidden]
    if not hidden:
        return outs
    # The layers up to the last hidden Dense one (the output layer is not needed).
    last = model.layers.index(hidden[-1][0])
    where = {id(layer): i for i, (layer, _) in enumerate(hidden)}
    # A diverged model's inf/NaN weights give inf/NaN outputs, as they should: no warnings for that.
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, len(rows), chunk):
            x = backend.asarray(rows[start:start + chunk], dtype=dtype)
            for layer in model.layers[:last + 1]:
                x = layer.infer(x)  # the model's own forward pass, in new arrays
                i = where.get(id(layer))
                if i is not None:
                    outs[i][start:start + x.shape[0]] = backend.to_host(x)
    return outs


@dataclass
class LayerActivationStats:
    """Per-unit statistics of one hidden layer on a data set.

    Attributes
    ----------
    name : str
        Layer name, e.g. ``"dense_0"``.
    activation : str
    n_samples : int
    active : numpy.ndarray (units,)
        Fraction of samples on which each unit is active (see the module table).
    saturated : numpy.ndarray (units,) or None
        Fraction of samples on which each unit is saturated (sigmoid and tanh only).
    mean : numpy.ndarray (units,)
        Mean output of each unit.
    dead : numpy.ndarray of int
        Units active on no sample (relu-like units that never fire).
    always_on : numpy.ndarray of int
        Units active on more than ``ALWAYS_ON_FRACTION`` of the samples.
    """

    name: str
    activation: str
    n_samples: int
    active: np.ndarray
    saturated: np.ndarray | None
    mean: np.ndarray
    dead: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    always_on: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def units(self):
        return len(self.active)

    @property
    def dead_fraction(self):
        return len(self.dead) / self.units

    @property
    def always_on_fraction(self):
        return len(self.always_on) / self.units

    @property
    def saturated_fraction(self):
        """Mean over units of the fraction of samples saturated (0 when it cannot saturate)."""
        return 0.0 if self.saturated is None else float(self.saturated.mean())

    def __str__(self):
        text = (f"{self.name} ({self.activation}, {self.units} units, {self.n_samples} samples): "
                f"{len(self.dead)} dead, {len(self.always_on)} active on >{ALWAYS_ON_FRACTION:.0%} of samples, "
                f"mean active fraction {self.active.mean():.2f}")
        if self.saturated is not None:
            text += f", saturated {self.saturated_fraction:.1%} of the time"
        return text


def _unit_stats(name, act, a):
    # What counts as active, saturated or dead is the activation's, in the kernel table.
    spec = reference.ACTIVATIONS.get(act, reference.ACTIVATIONS["identity"])
    active = a > spec.active_above
    saturated = None if spec.saturated is None else (a < spec.saturated[0]) | (a > spec.saturated[1])
    active_frac = active.mean(axis=0)
    dead = np.flatnonzero(active_frac == 0) if spec.dies else np.zeros(0, np.int64)
    return LayerActivationStats(
        name=name, activation=act, n_samples=len(a), active=active_frac,
        saturated=None if saturated is None else saturated.mean(axis=0),
        mean=a.mean(axis=0, dtype=np.float64),
        dead=dead, always_on=np.flatnonzero(active_frac > ALWAYS_ON_FRACTION),
    )


def activation_stats(model, X, max_samples=DEFAULT_MAX_SAMPLES):
    """Activity and saturation of every hidden unit on ``X``.

    Parameters
    ----------
    model : Sequential
    X : array (n_samples, n_features)
    max_samples : int or None
        Rows of ``X`` used (evenly spaced); ``None`` for all.

    Returns
    -------
    list of LayerActivationStats
        One per hidden Dense layer; ``print`` one for a summary line.
    """
    layers = _hidden_dense_layers(model)
    acts = hidden_activations(model, X, max_samples=max_samples)
    with np.errstate(over="ignore", invalid="ignore"):
        return [_unit_stats(layer.name, act, a) for (layer, act), a in zip(layers, acts)]

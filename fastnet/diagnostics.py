"""The training doctor: say why a training run went wrong, and what to change.

:func:`diagnose` reads a run's :class:`~fastnet.callbacks.History` (and,
when given, the model, its per-layer norms and a sample of the inputs) and
returns a list of :class:`Diagnosis`, empty for a healthy run::

    history = model.fit(X, y, epochs=20, validation_split=0.1,
                        callbacks=[NormRecorder()])
    for d in fastnet.diagnose(history, model, X):
        print(d)

What each detector needs, and what it looks for:

=========================  =====================  ==============================================
code                       needs                  fires when
=========================  =====================  ==============================================
lr_too_high                history                the loss became NaN/inf; or the first epoch's
                                                  loss is 1.2x the initial loss (or 2.5x a blind
                                                  guess's when that is unknown); or the loss
                                                  jumps, rises or oscillates (batches > 8)
noisy_batches              history.params         batches of <= 8 samples and a jagged loss curve
overfitting                val_loss               validation loss rose after its best epoch while
                                                  the training loss kept falling (unless the run
                                                  was stopped early)
inputs_not_standardized    X                      feature scales far from 1 (RMS > 10 or < 0.01),
                                                  or > 3 with saturated sigmoid/tanh units
saturated_units            model, X               sigmoid/tanh units saturated > 50% of the time
exploding                  norms                  weights or gradients non-finite, a weight norm
                                                  5x larger within one epoch (or 10x in all and
                                                  still growing 10%/epoch), or first-layer
                                                  gradients 100x the last layer's
vanishing                  norms                  first-layer gradients < 1/100 of the last
                                                  layer's, or weights shrunk below 1/10
dead_relu                  model, X               >= 50% of a ReLU layer's units never active
always_on                  model, X               >= 80% of a ReLU layer's live units active on
                                                  more than 80% of the samples (a linear layer)
=========================  =====================  ==============================================

The thresholds are module constants, chosen from measured healthy and failing
runs (healthy MNIST and toy runs stay well inside them).  ``norms`` come
from a :class:`NormRecorder` (``model.norms_``); ``history.params`` (set by
``fit``: ``batch_size``, ``n_samples``, ``optimizer``, ``lr``, ``initial_loss``)
tells the batch size and the loss before the first step; without them the
batch-size detector is skipped and the first-epoch check compares with a
blind guess's loss instead.  A run stopped by a NaN loss is recognised from
NaN in ``history["loss"]`` (``on_nan="ignore"``), from ``history.diverged``
(``{"epoch", "step", "loss"}``, set by fit under ``on_nan="restore"``) or
from the ``error`` argument (the ``TrainingDivergedError`` of ``on_nan="raise"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .callbacks import Callback

__all__ = ["Diagnosis", "Diagnoses", "diagnose", "NormRecorder", "FastnetWarning", "CODES",
           "input_scale_stats"]

CODES = ("lr_too_high", "noisy_batches", "overfitting", "inputs_not_standardized", "saturated_units",
         "exploding", "vanishing", "dead_relu", "always_on")

#: First-epoch mean loss above this multiple of the loss before training (``history.params
#: ["initial_loss"]``) means the first steps diverged (measured: healthy runs <= 0.75x, too high an lr >= 1.7x).
BLOWUP_FACTOR = 1.2
#: Without the initial loss, the same against a blind guess's loss (ln k); a fresh network's loss can
#: be 2x that with large initial logits, so the bar is higher.
BLOWUP_FACTOR_CHANCE = 2.5
#: The initial loss is one batch's: trusted from batches of this size up.
INITIAL_LOSS_MIN_BATCH = 16
#: A loss jump: at least this multiple of the best loss so far ...
SPIKE_FACTOR = 2.0
#: ... and at least this fraction of max(first loss, blind-guess loss) in absolute terms.
SPIKE_MIN_RISE = 0.1
#: Roughness (sum of the rises / range of the curve) of a training loss that oscillates.
ROUGH_TRAIN = 0.25
#: Smallest range a roughness is measured against, as a fraction of the first loss.
ROUGH_MIN_SPAN = 0.2
#: Training loss at the end above this multiple of the first epoch's: a rising loss.
RISE_FACTOR = 1.25
#: Batches of at most this many samples are "small" (their gradients are mostly noise).
SMALL_BATCH = 8
#: Roughness of the training / validation loss that makes a small-batch curve "jagged".
ROUGH_TRAIN_SMALL_BATCH = 0.1
ROUGH_VAL_SMALL_BATCH = 0.3
#: Overfitting: the validation loss rose by this fraction of its best value ...
OVERFIT_RISE = 0.1
#: ... and by this fraction of what it had improved from epoch 1 to its best.
OVERFIT_RISE_OF_GAIN = 0.05
#: Feature RMS (sqrt(mean^2 + std^2)) beyond which inputs are "not standardized".
INPUT_SCALE_HIGH = 10.0
INPUT_SCALE_LOW = 0.01
#: With saturated sigmoid/tanh units, a lower bar for the input scale.
INPUT_SCALE_HIGH_SATURATED = 3.0
#: Mean fraction of samples on which a sigmoid/tanh layer's units are saturated.
SATURATED_LAYER = 0.5
#: Exploding weights: a layer's weight norm multiplied by this much within one epoch ...
WEIGHT_JUMP = 5.0
#: ... or grown this much in all and still growing by this factor per epoch at the end.
WEIGHT_GROWTH = 10.0
WEIGHT_STILL_GROWING = 1.1
#: Weight norm below this fraction of its initial value: vanishing weights.
WEIGHT_SHRINK = 0.1
#: Median first-layer / last-layer gradient norm ratio: vanishing below, exploding above.
GRAD_RATIO_VANISHING = 1e-2
GRAD_RATIO_EXPLODING = 1e2
#: Fraction of a ReLU layer's units that are dead for a diagnosis.
DEAD_FRACTION = 0.5
#: Fraction of a ReLU layer's live units that are active on > ALWAYS_ON_FRACTION of samples.
ALWAYS_ON_LAYER = 0.8


class FastnetWarning(UserWarning):
    """A training diagnosis, as emitted by ``fit`` (filter with ``warnings.simplefilter``)."""


# ----------------------------------------------------------------------------- results
@dataclass
class Diagnosis:
    """One problem found in a training run.

    Attributes
    ----------
    code : str
        Stable identifier, one of :data:`CODES` (e.g. ``"overfitting"``).
    title : str
        One line: what is wrong, with the key number.
    explanation : str
        What the data show and why it is a problem.
    suggestion : str
        What to change, concretely (argument values included).
    evidence : dict
        The numbers the decision rests on (epochs, losses, norms, fractions).
    """

    code: str
    title: str
    explanation: str
    suggestion: str
    evidence: dict = field(default_factory=dict)

    def __str__(self):
        return (f"[{self.code}] {self.title}\n"
                f"  why: {self.explanation}\n"
                f"  fix: {self.suggestion}")


class Diagnoses(list):
    """A list of :class:`Diagnosis` that prints as a report."""

    @property
    def codes(self):
        return [d.code for d in self]

    def __str__(self):
        if not self:
            return "fastnet diagnose: no problem found."
        head = f"fastnet diagnose: {len(self)} problem{'s' if len(self) > 1 else ''} found"
        return "\n".join([head] + [str(d) for d in self])


# ----------------------------------------------------------------------------- norms
def _frobenius(backend, a):
    return float(backend.xp.linalg.norm(a.ravel()))


class NormRecorder(Callback):
    """Record per-layer weight and gradient norms at the end of every epoch.

    The log is kept on the model as ``model.norms_`` (and as ``self.norms``),
    a plain dict of lists (JSON-friendly) that grows across ``fit`` calls like
    ``model.history_``::

        {
          "epochs":  [1, 2, ...],                    # epoch numbers, as in History
          "layers":  ["dense_0", "dense_1"],         # the Dense layers, in order
          "size":    {"dense_0": 100352, ...},       # number of weights in each W
          "initial_weight": {"dense_0": 27.9, ...},  # ||W|| when first recorded
          "weight":  {"dense_0": [28.1, ...], ...},  # ||W|| at each epoch's end
          "grad":    {"dense_0": [0.41, ...], ...},  # ||dW|| of each epoch's last step
        }

    Norms are Frobenius norms of the weight matrices (biases are left out);
    ``dW`` is the gradient of the mean batch loss of the epoch's last step, as
    the optimizer saw it (before weight decay).  Reading them costs one device
    synchronisation per layer per epoch.
    """

    def __init__(self):
        self.norms = None

    def on_train_begin(self, model):
        from .layers import Dense

        dense = [layer for layer in model.layers if isinstance(layer, Dense)]
        names = [layer.name for layer in dense]
        log = getattr(model, "norms_", None)
        fresh = (not isinstance(log, dict) or log.get("layers") != names
                 or (log["epochs"] and log["epochs"][-1] > model.n_iter_))
        if fresh:
            b = model.backend_
            log = {
                "epochs": [],
                "layers": names,
                "size": {layer.name: int(np.prod(layer.W.shape)) for layer in dense},
                "initial_weight": {layer.name: _frobenius(b, layer.W) for layer in dense},
                "weight": {name: [] for name in names},
                "grad": {name: [] for name in names},
            }
        self.norms = log
        self._dense = dense
        model.norms_ = log

    def on_epoch_end(self, model, epoch, logs):
        b = model.backend_
        log = self.norms
        log["epochs"].append(epoch)
        for layer in self._dense:
            log["weight"][layer.name].append(_frobenius(b, layer.W))
            log["grad"][layer.name].append(_frobenius(b, layer.dW))


# ----------------------------------------------------------------------------- helpers
def _curve(history, key):
    if key not in history:
        return None
    values = [np.nan if v is None else float(v) for v in history[key]]
    return np.array(values, dtype=np.float64) if values else None


def _roughness(curve, level=0.0):
    """Sum of the rises of a curve over its range: 0 when it never goes up.

    The range counts as at least ``ROUGH_MIN_SPAN`` of the curve's start (or of
    ``level``), so the jitter of a flat curve is not mistaken for oscillation.
    """
    c = curve[np.isfinite(curve)]
    if len(c) < 3:
        return 0.0
    span = max(c.max() - c.min(), ROUGH_MIN_SPAN * max(abs(c[0]), level))
    if span <= 0:
        return 0.0
    return float(np.clip(np.diff(c), 0, None).sum() / span)


def _spike(curve, floor):
    """``(epoch_index, best_before, value)`` of the largest jump over the best loss so far, or None."""
    best = None
    for i in range(1, len(curve)):
        prior = np.nanmin(curve[:i]) if np.isfinite(curve[:i]).any() else np.nan
        v = curve[i]
        if not (np.isfinite(prior) and np.isfinite(v)):
            continue
        if v >= SPIKE_FACTOR * prior and v - prior >= SPIKE_MIN_RISE * floor:
            if best is None or v - prior > best[2] - best[1]:
                best = (i, float(prior), float(v))
    return best


def _fmt(x):
    if x is None:
        return "?"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _times(x):
    """A ratio as ``"13x"``, ``"2.4e+06x"`` when huge."""
    if x < 10:
        return f"{x:.1f}x"
    return f"{x:.0f}x" if x < 1e4 else f"{x:.1e}x"


def _chance_loss(model):
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


def _learning_rate(params, model):
    lr = params.get("lr")
    if lr is None and model is not None and getattr(model, "optimizer_", None) is not None:
        lr = model.optimizer_.lr
    return lr


def _first_epoch(history):
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
    if len(a) > max_samples:
        a = a[np.linspace(0, len(a) - 1, max_samples).astype(np.int64)]
    f = a.astype(np.float64)
    mean = f.mean(axis=0)
    std = f.std(axis=0)
    rms = np.sqrt(mean ** 2 + std ** 2)
    hi = float(f.max()) if f.size else 0.0
    pixels = bool(f.min() >= 0 and hi > 1 and hi <= 255 and np.all(f == np.round(f)))
    return {"mean": mean, "std": std, "rms": rms, "max_rms": float(rms.max()),
            "argmax_rms": int(rms.argmax()), "median_std": float(np.median(std)), "pixels": pixels}


# ----------------------------------------------------------------------------- detectors
class _Run:
    """What the detectors read, computed once."""

    def __init__(self, history, model, X, norms, error, max_samples):
        self.history = history
        self.model = model
        self.X = X
        self.params = dict(getattr(history, "params", None) or {})
        self.loss = _curve(history, "loss")
        self.val = _curve(history, "val_loss")
        self.first_epoch = _first_epoch(history)
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
        if self._stats is None and self.X is not None and getattr(self.model, "built", False):
            from .activations_stats import activation_stats

            self._stats = activation_stats(self.model, self.X, max_samples=self.max_samples)
        return self._stats or []

    @property
    def inputs(self):
        if self._inputs is None and self.X is not None:
            self._inputs = input_scale_stats(self.X, self.max_samples)
        return self._inputs


def _check_lr(run):
    params, model = run.params, run.model
    lr = _learning_rate(params, model)
    lr_txt = f"lr={_fmt(lr)}" if lr is not None else "the learning rate"
    lower = f"lr={_fmt(lr / 10)}" if lr is not None else "a learning rate 10x lower"
    opt = params.get("optimizer") or getattr(getattr(model, "optimizer_", None), "name", None)
    findings, evidence = [], {"lr": lr, "optimizer": opt}
    loss = run.loss
    if run.diverged is not None:
        d = run.diverged
        where = f"epoch {d.get('epoch', '?')}" + (f", step {d['step']}" if d.get("step") else "")
        findings.append(f"the training loss became {_fmt(d.get('loss'))} at {where}")
        evidence["diverged"] = d
    # With small batches a jagged curve is the noisy_batches finding; with shrinking
    # weights a rising loss is weight decay's doing (the vanishing finding).
    defer = run.batch_size is not None and run.batch_size <= SMALL_BATCH
    defer = defer or bool(_weights_shrank(run.norms))
    # Unscaled inputs make every step erratic: that finding comes first (inputs_not_standardized).
    defer = defer or (run.inputs is not None and run.inputs["max_rms"] > INPUT_SCALE_HIGH)
    if loss is not None and len(loss) and np.isfinite(loss[0]):
        chance = _chance_loss(model)
        initial = params.get("initial_loss")
        trusted = (isinstance(initial, (int, float, np.floating)) and math.isfinite(initial) and initial > 0
                   and (run.batch_size or 0) >= INITIAL_LOSS_MIN_BATCH)
        if trusted and loss[0] > BLOWUP_FACTOR * initial:
            findings.append(
                f"the first epoch's mean loss, {_fmt(loss[0])}, is {_times(loss[0] / initial)} the loss before "
                f"training ({_fmt(initial)}): the first steps made the network worse")
            evidence["first_loss"], evidence["initial_loss"] = float(loss[0]), float(initial)
        elif not trusted and chance is not None and loss[0] > BLOWUP_FACTOR_CHANCE * chance[0]:
            findings.append(
                f"the first epoch's mean loss, {_fmt(loss[0])}, is {_times(loss[0] / chance[0])} the loss of "
                f"blind guessing ({chance[1]} = {_fmt(chance[0])}): the first steps made the network worse")
            evidence["first_loss"], evidence["chance_loss"] = float(loss[0]), chance[0]
        finite = loss[np.isfinite(loss)]
        if len(finite) >= 3 and not defer:
            floor = max(finite[0], chance[0] if chance else 0.0)
            spike = _spike(loss, floor)
            rough = _roughness(loss, chance[0] if chance else 0.0)
            if spike is not None:
                i, prior, value = spike
                findings.append(f"the training loss jumped from {_fmt(prior)} to {_fmt(value)} at epoch "
                                f"{run.epoch(i)}")
                evidence["spike"] = {"epoch": run.epoch(i), "from": prior, "to": value}
            elif len(finite) >= 3 and finite[-1] > RISE_FACTOR * finite[0]:
                findings.append(f"the training loss rose from {_fmt(finite[0])} to {_fmt(finite[-1])}")
                evidence["rise"] = {"from": float(finite[0]), "to": float(finite[-1])}
            if rough >= ROUGH_TRAIN:
                ups = int((np.diff(finite) > 0).sum())
                findings.append(f"it went up in {ups} of {len(finite) - 1} epochs (roughness {rough:.2f})")
                evidence["roughness"] = rough
    if not findings:
        return None
    title = "Learning rate too high" + (f" ({lr_txt} with {opt})" if lr is not None and opt else "")
    explanation = ("; ".join(findings) + ". Steps that are too large overshoot the minimum: the loss "
                   "climbs, oscillates or overflows instead of falling.")
    if run.inputs is not None and (run.inputs["max_rms"] > INPUT_SCALE_HIGH):
        explanation += (" Unscaled inputs (see inputs_not_standardized) make every step larger, so fix "
                        "them first.")
    suggestion = (f"lower the learning rate about 10x ({lower}); keep lowering it until the loss falls "
                  "smoothly. A decaying schedule (lr_schedule=\"cosine\") also helps")
    if opt in ("adam", "adamw", "rmsprop"):
        suggestion += f"; {opt} usually starts well at lr=1e-3."
    else:
        suggestion += "; or optimizer=\"adam\" with lr=1e-3."
    return Diagnosis("lr_too_high", title, explanation, suggestion, evidence)


def _check_noisy_batches(run):
    bs = run.batch_size
    if bs is None or bs > SMALL_BATCH or run.loss is None:
        return None
    finite = run.loss[np.isfinite(run.loss)]
    if len(finite) < 3:
        return None
    chance = _chance_loss(run.model)
    level = chance[0] if chance else 0.0
    rough_train = _roughness(run.loss, level)
    rough_val = _roughness(run.val, level) if run.val is not None else 0.0
    spike = _spike(run.loss, max(finite[0], chance[0] if chance else 0.0))
    jagged = rough_train >= ROUGH_TRAIN_SMALL_BATCH or rough_val >= ROUGH_VAL_SMALL_BATCH or spike is not None
    if not jagged:
        return None
    n = run.params.get("n_samples")
    steps = run.params.get("steps") or (-(-n // bs) if n else None)
    parts = [f"batches of {bs} sample{'s' if bs > 1 else ''}"]
    if steps:
        parts.append(f"{steps} noisy steps per epoch")
    facts = [f"training-loss roughness {rough_train:.2f}"]
    if run.val is not None:
        facts.append(f"validation-loss roughness {rough_val:.2f}")
    if spike is not None:
        facts.append(f"a jump from {_fmt(spike[1])} to {_fmt(spike[2])} at epoch {run.epoch(spike[0])}")
    explanation = (f"With {', '.join(parts)}, each gradient is estimated from too few samples to represent "
                   f"the data: the steps follow the noise and the learning curve is jagged "
                   f"({'; '.join(facts)}; 0 means a curve that never goes up).")
    suggestion = ("use batch_size=32 to 128 (and raise the learning rate with it if training slows), or keep "
                  "the small batches and lower the learning rate ~10x.")
    return Diagnosis("noisy_batches", f"Batches too small (batch_size={bs}): noisy learning curve",
                     explanation, suggestion,
                     {"batch_size": bs, "steps_per_epoch": steps, "roughness_train": rough_train,
                      "roughness_val": rough_val if run.val is not None else None})


def _check_overfitting(run):
    val, loss = run.val, run.loss
    if val is None or loss is None or len(val) < 3 or not np.all(np.isfinite(val)):
        return None
    planned = run.params.get("epochs")
    if isinstance(planned, (int, np.integer)) and len(val) < planned and run.diverged is None:
        return None  # stopped early (EarlyStopping): the cure for overfitting is already applied
    best = int(np.argmin(val))
    if best > len(val) - 3:
        return None  # fewer than two epochs after the best: too early to tell
    tail = float(np.mean(val[-2:]))
    rise = tail - val[best]
    gain = val[0] - val[best]
    if rise < OVERFIT_RISE * val[best] or rise < OVERFIT_RISE_OF_GAIN * gain:
        return None
    if not (np.isfinite(loss[best]) and np.isfinite(loss[-1]) and loss[-1] < loss[best]):
        return None  # the training loss rose too: that is not overfitting
    if loss[-1] >= val[best]:
        return None  # it does not even fit the training set better than it generalised: not memorising
    began = run.epoch(best + 1)
    best_epoch = run.epoch(best)
    last = run.epoch(len(val) - 1)
    explanation = (f"the validation loss was lowest at epoch {best_epoch} ({_fmt(val[best])}) and rose to "
                   f"{_fmt(val[-1])} by epoch {last}, while the training loss kept falling "
                   f"({_fmt(loss[best])} -> {_fmt(loss[-1])}): from epoch {began} on, the network learns the "
                   f"training samples by heart instead of what generalises.")
    acc = _curve(run.history, "val_accuracy")
    if acc is not None and np.all(np.isfinite(acc)):
        explanation += f" Validation accuracy: {acc[best]:.3f} at epoch {best_epoch}, {acc[-1]:.3f} at the end"
        explanation += (": it held up, but the model grew over-confident on the samples it gets wrong."
                        if acc[-1] >= acc[best] else ".")
    suggestion = (f"stop at the best epoch: early_stopping=EarlyStopping(patience=3, restore_best=True) would "
                  f"have kept epoch {best_epoch}'s weights; regularise (weight_decay=1e-4, or dropout=0.2 on "
                  "MLP), use a smaller network, or train on more data.")
    return Diagnosis("overfitting", f"Overfitting from epoch {began}", explanation, suggestion,
                     {"best_epoch": best_epoch, "began": began, "best_val_loss": float(val[best]),
                      "last_val_loss": float(val[-1]), "train_loss_at_best": float(loss[best]),
                      "last_train_loss": float(loss[-1])})


def _saturation_summary(stats):
    layers = [s for s in stats if s.saturated is not None]
    return [(s.name, s.activation, s.saturated_fraction) for s in layers]


def _check_inputs(run):
    info = run.inputs
    if info is None:
        return None
    sat = _saturation_summary(run.stats)
    first_sat = sat[0][2] if sat and run.stats and run.stats[0].saturated is not None else 0.0
    high = info["max_rms"] > INPUT_SCALE_HIGH
    low = info["max_rms"] < INPUT_SCALE_LOW
    saturating = first_sat > SATURATED_LAYER and info["max_rms"] > INPUT_SCALE_HIGH_SATURATED
    if not (high or low or saturating):
        return None
    j = info["argmax_rms"]
    mean, std = info["mean"], info["std"]
    if low:
        what = (f"all features are tiny: the largest RMS is {_fmt(info['max_rms'])} (feature {j}), so the "
                "first layer's outputs barely change with the input and its gradients are tiny")
    else:
        what = (f"feature {j} has mean {_fmt(mean[j])} and standard deviation {_fmt(std[j])} (RMS "
                f"{_fmt(info['max_rms'])}; median std over features {_fmt(info['median_std'])}), where the "
                "initial weights assume inputs of scale ~1: pre-activations are huge, and the loss surface is "
                "steep along the large features and flat along the small ones")
    if sat and sat[0][2] >= 0.1:
        name, act, frac = sat[0]
        what += (f"; the {act} units of {name} are saturated on {frac:.0%} of (unit, sample) pairs, where "
                 "their gradient is ~0")
    suggestion = ("standardize the features with the training set's statistics: "
                  "`X_train, X_test, _ = fastnet.datasets.standardize(X_train, X_test)`")
    if info["pixels"]:
        suggestion = "these look like 8-bit pixels: divide by 255 (X = X / 255.0), or " + suggestion
    return Diagnosis("inputs_not_standardized",
                     f"Inputs not standardized (largest feature RMS {_fmt(info['max_rms'])})",
                     what + ".", suggestion,
                     {"max_rms": info["max_rms"], "feature": j, "mean": float(mean[j]), "std": float(std[j]),
                      "median_std": info["median_std"], "pixels": info["pixels"],
                      "saturated": {n: f for n, _, f in sat}})


def _check_saturation(run, inputs_flagged):
    if inputs_flagged:
        return None  # already explained by the input scale
    bad = [(n, a, f) for n, a, f in _saturation_summary(run.stats) if f > SATURATED_LAYER]
    if not bad:
        return None
    desc = ", ".join(f"{n} ({a}) {f:.0%}" for n, a, f in bad)
    explanation = (f"saturated units (sigmoid output < 0.01 or > 0.99, |tanh| > 0.99) pass almost no gradient, so "
                   f"their weights stop learning; saturated share of (unit, sample) pairs: {desc}. The inputs are "
                   "of reasonable scale, so the weights themselves grew too large (often from a learning rate "
                   "too high).")
    suggestion = ("lower the learning rate, add weight_decay (e.g. 1e-4), or use activation=\"relu\" in the "
                  "hidden layers.")
    return Diagnosis("saturated_units", f"Saturated {bad[0][1]} units in {bad[0][0]} ({bad[0][2]:.0%} of the time)",
                     explanation, suggestion, {n: f for n, _, f in bad})


def _norm_series(norms, kind, name):
    return np.array(norms[kind][name], dtype=np.float64)


def _check_exploding(run):
    norms = run.norms
    if not norms or not norms.get("epochs"):
        return None
    findings, evidence = [], {}
    epochs = norms["epochs"]
    for name in norms["layers"]:
        w = _norm_series(norms, "weight", name)
        g = _norm_series(norms, "grad", name)
        bad = ~np.isfinite(w) | ~np.isfinite(g)
        if bad.any():
            i = int(np.argmax(bad))
            findings.append(f"{name}'s {'weights' if not np.isfinite(w[i]) else 'gradient'} became "
                            f"{_fmt(w[i] if not np.isfinite(w[i]) else g[i])} at epoch {epochs[i]}")
            evidence[name] = {"non_finite_at": epochs[i]}
            continue
        w0 = norms["initial_weight"][name]
        if w0 <= 0:
            continue
        path = np.concatenate([[w0], w])
        steps = path[1:] / np.maximum(path[:-1], 1e-30)
        jump = int(np.argmax(steps))
        growth = float(w[-1] / w0)
        # Abrupt (one epoch multiplies the norm) or still going (large and growing at the end). A slow
        # growth that has levelled off is how small nets fit sharp targets (XOR), not an explosion.
        if steps[jump] >= WEIGHT_JUMP or (growth >= WEIGHT_GROWTH and steps[-1] >= WEIGHT_STILL_GROWING):
            when = (f", {_times(steps[jump])} of it in epoch {epochs[jump]}" if steps[jump] >= WEIGHT_JUMP
                    else ", and still growing")
            findings.append(f"{name}'s weight norm grew {_times(growth)}, from {_fmt(w0)} to {_fmt(w[-1])}{when}")
            evidence[name] = {"initial_weight": w0, "weight": float(w[-1]), "growth": growth,
                              "largest_epoch_growth": float(steps[jump]), "at_epoch": epochs[jump]}
    ratio = _grad_ratio(norms)
    if ratio is not None and ratio[0] > GRAD_RATIO_EXPLODING:
        findings.append(f"the first layer's gradients are {_times(ratio[0])} the last layer's (median over epochs)")
        evidence["grad_ratio_first_to_last"] = ratio[0]
    if not findings:
        return None
    explanation = ("; ".join(findings) + ". Updates proportional to ever larger gradients make the weights "
                   "grow until activations saturate or overflow.")
    suggestion = "lower the learning rate, add weight_decay (e.g. 1e-4), and standardize the inputs."
    if getattr(run.model, "loss", None) == "sse":
        suggestion += (" The \"sse\" loss sums over the batch, so its gradients grow with batch_size: "
                       "loss=\"mse\" averages instead.")
    return Diagnosis("exploding", "Exploding weights or gradients", explanation, suggestion, evidence)


def _grad_ratio(norms):
    layers = norms["layers"]
    if len(layers) < 2:
        return None
    first = _norm_series(norms, "grad", layers[0])
    last = _norm_series(norms, "grad", layers[-1])
    ok = np.isfinite(first) & np.isfinite(last)
    if not ok.any():
        return None
    f, l_ = float(np.median(first[ok])), float(np.median(last[ok]))
    if l_ <= 0:
        return None
    return f / l_, f, l_


def _hidden_activations(model):
    from .layers import Dense

    return {layer.activation for layer in model.layers[:-1] if isinstance(layer, Dense) and layer.activation}


def _weights_shrank(norms):
    """Names of the layers whose weight norm fell below WEIGHT_SHRINK of its initial value."""
    if not norms or not norms.get("epochs"):
        return []
    out = []
    for name in norms["layers"]:
        w = norms["weight"][name][-1]
        w0 = norms["initial_weight"][name]
        if w0 > 0 and math.isfinite(w) and w <= WEIGHT_SHRINK * w0:
            out.append(name)
    return out


def _check_vanishing(run):
    norms = run.norms
    if not norms or not norms.get("epochs"):
        return None
    findings, evidence = [], {}
    layers = norms["layers"]
    ratio = _grad_ratio(norms)
    # ReLU derivatives are 0 or 1: tiny gradients in a ReLU net mean dead units
    # (the dead_relu check), not a product of small derivatives.
    saturating = run.model is None or bool(_hidden_activations(run.model) & {"sigmoid", "tanh"})
    if ratio is not None and saturating and len(layers) >= 3 and ratio[0] < GRAD_RATIO_VANISHING:
        r, f, l_ = ratio
        per_layer = ", ".join(f"{n} {_fmt(float(np.median(_norm_series(norms, 'grad', n))))}" for n in layers)
        how = "is zero" if f == 0 else f"is {_times(1 / r)} smaller than the last layer's ({_fmt(l_)})"
        findings.append(f"the first layer's gradient norm ({_fmt(f)}) {how}; median per layer, input to "
                        f"output: {per_layer}")
        evidence["grad_ratio_first_to_last"] = r
    for name in _weights_shrank(norms):
        w = _norm_series(norms, "weight", name)
        w0 = norms["initial_weight"][name]
        findings.append(f"{name}'s weight norm shrank to {w[-1] / w0:.1%} of its initial value "
                        f"({_fmt(w0)} -> {_fmt(w[-1])})")
        evidence[name] = {"initial_weight": w0, "weight": float(w[-1])}
    if not findings:
        return None
    acts = sorted(_hidden_activations(run.model)) if run.model is not None else []
    explanation = "; ".join(findings) + "."
    if "grad_ratio_first_to_last" in evidence:
        explanation += (" Each sigmoid/tanh layer multiplies the backpropagated gradient by its derivative "
                        "(at most 0.25 for sigmoid), so early layers barely learn.")
    suggestion = ("use activation=\"relu\" (or \"tanh\" rather than \"sigmoid\") in the hidden layers, fewer "
                  "layers, or optimizer=\"adam\"; if the weights shrank, lower weight_decay.")
    title = "Vanishing gradients" if "grad_ratio_first_to_last" in evidence else "Vanishing weights"
    if acts:
        evidence["hidden_activations"] = acts
    return Diagnosis("vanishing", title, explanation, suggestion, evidence)


def _relu_layers(stats):
    return [s for s in stats if s.activation in ("relu", "leaky_relu")]


def _check_dead(run):
    bad = [s for s in _relu_layers(run.stats) if s.dead_fraction >= DEAD_FRACTION and len(s.dead) >= 2]
    if not bad:
        return None
    desc = "; ".join(f"{s.name}: {len(s.dead)} of {s.units} units ({s.dead_fraction:.0%})" for s in bad)
    explanation = (f"these ReLU units output 0 on every one of the {bad[0].n_samples} samples checked, so they "
                   f"get no gradient and can never recover: {desc}. Usual cause: a step too large pushed their "
                   "bias/weights far negative (learning rate too high, or unscaled inputs).")
    suggestion = ("lower the learning rate, standardize the inputs, or use activation=\"leaky_relu\" (its "
                  "units keep a small gradient).")
    return Diagnosis("dead_relu", f"Dead ReLU units ({desc})", explanation, suggestion,
                     {s.name: {"dead": int(len(s.dead)), "units": s.units} for s in bad})


def _check_always_on(run):
    from .activations_stats import ALWAYS_ON_FRACTION

    bad = []
    for s in _relu_layers(run.stats):
        live = s.units - len(s.dead)
        if live >= 4 and len(s.always_on) >= ALWAYS_ON_LAYER * live:
            bad.append((s, live))
    if not bad:
        return None
    desc = "; ".join(f"{s.name}: {len(s.always_on)} of {live} live units" for s, live in bad)
    explanation = (f"units active on more than {ALWAYS_ON_FRACTION:.0%} of the samples are in their linear part "
                   f"nearly always, so the layer computes an almost linear function: {desc}. Usual cause: inputs "
                   "that are not centred (a large positive mean) push every pre-activation the same way.")
    suggestion = ("center the inputs (fastnet.datasets.standardize), or lower the learning rate if the biases "
                  "grew large.")
    return Diagnosis("always_on", f"ReLU units almost always active ({desc})", explanation, suggestion,
                     {s.name: {"always_on": int(len(s.always_on)), "live": live} for s, live in bad})


def diagnose(history=None, model=None, X=None, *, norms=None, error=None, max_samples=10_000):
    """Find what went wrong in a training run, and say what to change.

    Parameters
    ----------
    history : History, optional
        What ``fit`` returned, or ``model.history_`` (the default).  Uses
        ``loss``, ``val_loss``, ``val_accuracy``; ``history.params`` (batch size)
        and ``history.diverged`` (where the loss became NaN) when present.
    model : Sequential, optional
        Needed for activation statistics and the blind-guess loss; its
        ``norms_`` (from :class:`NormRecorder`) are used when ``norms`` is None.
    X : array (n_samples, n_features), optional
        Training inputs (a sample is enough): enables the input-scale, dead-,
        always-on- and saturated-unit checks.
    norms : dict, optional
        A :class:`NormRecorder` log; default ``model.norms_``.
    error : TrainingDivergedError, optional
        The exception ``fit`` raised when the loss became NaN.
    max_samples : int
        Rows of ``X`` used (evenly spaced).

    Returns
    -------
    Diagnoses
        A list of :class:`Diagnosis` (empty when nothing is wrong); ``print``
        it for a report.
    """
    if history is None:
        if model is None:
            raise TypeError("diagnose needs a history or a model (whose history_ is used)")
        history = model.history_
    if norms is None and model is not None:
        norms = getattr(model, "norms_", None)
    # A diverged run has inf/NaN weights and losses: that is what is being diagnosed, not news.
    with np.errstate(all="ignore"):
        run = _Run(history, model, X, norms, error, max_samples)
        found = []
        for check in (_check_lr, _check_noisy_batches, _check_overfitting):
            d = check(run)
            if d is not None:
                found.append(d)
        inputs = _check_inputs(run)
        if inputs is not None:
            found.append(inputs)
        for check in (lambda r: _check_saturation(r, inputs is not None), _check_exploding, _check_vanishing,
                      _check_dead, _check_always_on):
            d = check(run)
            if d is not None:
                found.append(d)
    return Diagnoses(found)

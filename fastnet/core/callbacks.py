"""Training history and callbacks (early stopping, reduce-on-plateau)."""
from __future__ import annotations

import math
import sys


class History:
    """Per-epoch records of a training run.

    ``history["loss"]`` is the list of training losses, one per epoch; other
    keys: ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``
    (present when measured).  ``history.epochs`` lists the epoch numbers.
    To draw it: ``fastnet.plots.plot_history(history, "history.png")``.
    """

    def __init__(self):
        self.epochs = []
        self.history = {}
        #: The settings of the run: batch_size, n_samples, steps, epochs, optimizer, lr, and of an
        #: untrained model initial_loss (the loss before training, from the first batch's rows, on the
        #: scale of an epoch's loss) and initial_loss_se (its standard error).
        self.params = {}
        #: Where the loss became NaN/inf ({"epoch", "step", "loss"}), or None.
        self.diverged = None

    def append(self, epoch, logs):
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, [None] * (len(self.epochs) - 1)).append(value)
        for key, values in self.history.items():
            if len(values) < len(self.epochs):
                values.append(None)

    def extend(self, other):
        for epoch, logs in zip(other.epochs, other.rows()):
            self.append(epoch, logs)

    def rows(self):
        """One dict per epoch."""
        return [{k: v[i] for k, v in self.history.items()} for i in range(len(self.epochs))]

    # a mapping of metric name -> per-epoch values, as Keras' History.history
    def __getitem__(self, key):
        return self.history[key]

    def __iter__(self):
        return iter(self.history)

    def keys(self):
        return self.history.keys()

    def values(self):
        return self.history.values()

    def items(self):
        return self.history.items()

    def get(self, key, default=None):
        return self.history.get(key, default)

    def __contains__(self, key):
        return key in self.history

    def __len__(self):
        return len(self.epochs)

    def __repr__(self):
        return f"History(epochs={len(self.epochs)}, keys={sorted(self.history)})"

    def _repr_html_(self):
        """A notebook shows a history as a table, one row per epoch."""
        import html

        keys = list(self.history)
        cell = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else html.escape(str(v)))  # noqa: E731
        head = "<tr><th>epoch</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>"
        rows = "".join("<tr><td>" + str(e) + "</td>" + "".join(f"<td>{cell(self.history[k][i])}</td>" for k in keys)
                       + "</tr>" for i, e in enumerate(self.epochs))
        return f"<table>{head}{rows}</table>"


class Callback:
    """Hooks called by ``fit``; subclass it and override the ones you need.

    fastnet's hooks get the model as their first argument and 1-based epoch numbers
    (``model.n_iter_`` after the epoch: they continue across calls of ``fit``)::

        on_train_begin(self, model)
        on_epoch_begin(self, model, epoch, logs)     # logs: {} (Keras's)
        on_step_end(self, model, epoch, step)
        on_epoch_end(self, model, epoch, logs)       # may set model.stop_training = True
        on_train_end(self, model)

    Keras's signatures are accepted too: ``on_train_begin(self, logs=None)``,
    ``on_epoch_begin(self, epoch, logs=None)``, ``on_epoch_end(self, epoch, logs=None)``,
    ``on_train_end(self, logs=None)``.  ``fit`` reads each overridden hook's signature
    once, before training, and calls it the way it is written: a Keras-style hook gets
    Keras's arguments (the epoch 0-based, as Keras counts it; a second ``fit`` goes on
    counting, as Keras's ``initial_epoch`` would) and finds the model in
    ``self.model`` (and the run's settings in ``self.params``), as Keras's
    ``set_model`` leaves them.  A hook neither way fits, or a Keras hook ``fit`` does not
    call (``on_train_batch_end``, ``on_batch_end``, ``on_test_*``, ``on_predict_*``...),
    is refused with a ``TypeError`` before anything trains.

    ``on_step_end`` is called after every optimizer step, but only for the
    callbacks that override it: the others cost the training step nothing.  There
    are no per-step logs: a step's loss stays on the device until the epoch ends.
    """

    def on_train_begin(self, model):
        """Called once at the start of ``fit``, after the model is built and its optimizer
        attached (``model.optimizer_``), before the first epoch."""

    def on_epoch_begin(self, model, epoch, logs):
        """Called at the start of each epoch; ``epoch`` is 1-based (the number it will have
        in ``model.history_``); ``logs`` is an empty dict, as Keras passes."""

    def on_step_end(self, model, epoch, step):
        """Called after each optimizer step (``step`` 1-based within ``epoch``), for
        callbacks that override it only.  Keep it cheap: it runs inside the step loop."""

    def on_epoch_end(self, model, epoch, logs):
        """Called after each epoch with its ``logs`` (``loss``, ``accuracy``, ``val_loss``,
        ``val_accuracy``, ``lr``, ``seconds``: the row ``history`` gets); set
        ``model.stop_training = True`` to end training after this epoch."""

    def on_train_end(self, model):
        """Called once when ``fit`` ends (after the last epoch, an early stop, or a
        ``on_nan="restore"`` stop; not when ``fit`` raises)."""


#: Keras hooks ``fit`` does not call: a callback that overrides one is refused before training.
KERAS_ONLY_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end",
                    "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
                    "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end")

#: hook: (fastnet's arguments, Keras's arguments or None)
_HOOKS = {
    "on_train_begin": (("model",), ("logs",)),
    "on_epoch_begin": (("model", "epoch", "logs"), ("epoch", "logs")),
    "on_step_end": (("model", "epoch", "step"), None),
    "on_epoch_end": (("model", "epoch", "logs"), ("epoch", "logs")),
    "on_train_end": (("model",), ("logs",)),
}


def _hook_style(callback, index, name):
    """``"fastnet"`` or ``"keras"``: how ``callback.<name>`` (overridden) takes its arguments;
    a ``TypeError`` naming both signatures when neither fits."""
    import inspect

    ours, keras = _HOOKS[name]
    method = getattr(callback, name)
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin): called the fastnet way
        return "fastnet"
    kinds = inspect.Parameter
    if any(p.kind == kinds.VAR_POSITIONAL for p in params):
        return "fastnet"
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    required_kw = [p for p in params if p.kind == kinds.KEYWORD_ONLY and p.default is p.empty]

    def takes(n):
        return len(required) <= n <= len(positional) and not required_kw

    if len(ours) == 1 and keras is not None:  # (model) or (logs=None): told apart by the name
        if takes(1):
            return "keras" if positional[0].name == "logs" else "fastnet"
    elif takes(len(ours)):
        return "fastnet"
    elif keras is not None and takes(len(keras)) and positional[0].name != "model":
        return "keras"
    accepted = f"{name}(self, {', '.join(ours)})"
    if keras is not None:
        accepted += f" or, Keras's, {name}(self, {', '.join(keras[:-1] + ('logs=None',))})"
    raise TypeError(f"callbacks[{index}] ({type(callback).__name__}): {name}{inspect.signature(method)} "
                    f"does not take the arguments fit passes: fit calls {accepted}")


class _KerasStyle(Callback):
    """A callback whose hooks (some or all) are written Keras's way, called Keras's way:
    ``model`` in ``self.model`` (and the run's settings in ``self.params``), the hook given
    ``(logs)`` or ``(epoch, logs)`` with the epoch 0-based."""

    def __init__(self, callback, styles):
        self.callback = callback
        self.styles = styles

    def _call(self, name, model, epoch=None, logs=None):
        method = getattr(self.callback, name)
        keras = self.styles.get(name) == "keras"
        if epoch is None:  # on_train_begin / on_train_end
            method({}) if keras else method(model)
        else:
            method(epoch - 1, logs) if keras else method(model, epoch, logs)

    def on_train_begin(self, model):
        self.callback.model = model  # Keras's set_model / set_params
        self.callback.params = dict(getattr(model.history_, "params", None) or {})
        self._call("on_train_begin", model)

    def on_epoch_begin(self, model, epoch, logs):
        self._call("on_epoch_begin", model, epoch, logs)

    def on_epoch_end(self, model, epoch, logs):
        self._call("on_epoch_end", model, epoch, logs)

    def on_train_end(self, model):
        self._call("on_train_end", model)


class _KerasStyleWithSteps(_KerasStyle):
    def on_step_end(self, model, epoch, step):
        self.callback.on_step_end(model, epoch, step)


def calls_on_step_end(callback) -> bool:
    """Whether ``fit`` must call ``callback.on_step_end`` after every step (it overrides it)."""
    return type(callback).on_step_end is not Callback.on_step_end


def prepare_callbacks(callbacks) -> list:
    """``fit``'s callbacks, checked before anything trains: each must be a :class:`Callback`;
    a Keras hook ``fit`` never calls, or a hook that takes neither fastnet's nor Keras's
    arguments, is refused (``TypeError``); a callback with Keras-style hooks comes back
    wrapped so that ``fit`` calls them Keras's way."""
    prepared = []
    for i, cb in enumerate(list(callbacks or [])):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}] must be a fastnet Callback, got {cb!r}")
        for name in KERAS_ONLY_HOOKS:
            if callable(getattr(type(cb), name, None)):
                raise TypeError(
                    f"callbacks[{i}] ({type(cb).__name__}) defines {name}, a Keras hook fastnet's fit does not call: "
                    "after each optimizer step fit calls on_step_end(self, model, epoch, step) (no per-step logs: "
                    "the losses stay on the device until the epoch ends); per epoch, on_epoch_begin / on_epoch_end")
        styles = {name: _hook_style(cb, i, name) for name in _HOOKS
                  if getattr(type(cb), name) is not getattr(Callback, name)}
        if "keras" in styles.values():
            cb = (_KerasStyleWithSteps if calls_on_step_end(cb) else _KerasStyle)(cb, styles)
        prepared.append(cb)
    return prepared


def _monitored(logs, monitor):
    value = logs.get(monitor)
    if value is None:
        raise ValueError(
            f"monitor={monitor!r} is not in the epoch logs (have: {sorted(k for k, v in logs.items() if v is not None)}); "
            "pass validation_data or validation_split to monitor validation metrics"
        )
    return value


class _Monitor(Callback):
    def __init__(self, monitor, mode, min_delta):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor, self.min_delta = monitor, min_delta
        self.mode = mode if mode != "auto" else ("max" if "acc" in (monitor or "") else "min")

    def _resolve(self, logs):
        if self.monitor is None:
            self.monitor = "val_loss" if logs.get("val_loss") is not None else "loss"

    def _improved(self, value, best):
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Keras's algorithm, epoch for epoch: after each epoch (from ``start_from_epoch`` on) a
    counter ``wait`` goes up by one; an epoch whose value beats the best one so far by more
    than ``min_delta`` becomes the best and resets ``wait`` to 0 (with a ``baseline``, only
    if it beats the baseline too); otherwise training stops once ``wait >= patience``.  So
    ``patience=2`` stops after two epochs in a row without improvement, and ``patience=0``
    after the first one.  A NaN or infinite value is never an improvement.

    Parameters
    ----------
    patience : int
        Epochs without improvement before stopping (default 5; Keras's is 0).
    min_delta : float
        An improvement must be larger than this (>= 0).
    restore_best : bool
        Put back the weights of the best epoch when training ends, stopped early or not
        (``restore_best_weights``, Keras's name, is the same).  Default True (Keras's
        default is False: pass ``restore_best_weights=False`` for Keras's behaviour).
    monitor : str or None
        A key of the epoch logs.  Default: ``"val_loss"`` when validation data is given,
        else ``"loss"`` (Keras's default is ``"val_loss"`` always).  A key missing from
        the logs is an error (Keras warns and never stops).
    mode : {"auto", "min", "max"}
        ``"auto"``: ``"max"`` for accuracies (a name with ``"acc"``), else ``"min"``.
    baseline : float, optional
        Keras's: until an epoch beats it, ``wait`` is not reset, so training stops after
        ``patience`` epochs unless the baseline is beaten.
    start_from_epoch : int
        Keras's: epochs (of the model's count, ``model.n_iter_``) before monitoring starts.
    verbose : {0, 1}
        1: say on stderr when training is stopped and which epoch's weights are restored.

    Attributes
    ----------
    best, best_epoch : the best value and its epoch (1-based, as ``history.epochs``)
    stopped_epoch : the epoch after which training stopped, or None
    wait : epochs counted since the last improvement
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0, restore_best: bool = True, monitor: str | None = None,
                 mode: str = "auto", restore_best_weights: bool | None = None, baseline: float | None = None,
                 start_from_epoch: int = 0, verbose: int = 0) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        if isinstance(start_from_epoch, bool) or not isinstance(start_from_epoch, int) or start_from_epoch < 0:
            raise ValueError(f"start_from_epoch must be a non-negative integer, got {start_from_epoch!r}")
        if baseline is not None and not (isinstance(baseline, (int, float)) and math.isfinite(baseline)):
            raise ValueError(f"baseline must be a finite number or None, got {baseline!r}")
        if verbose not in (0, 1, True, False):
            raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
        super().__init__(monitor, mode, min_delta)
        if restore_best_weights is not None:  # Keras's name
            restore_best = restore_best_weights
        self.patience, self.restore_best = patience, bool(restore_best)
        self.baseline, self.start_from_epoch, self.verbose = baseline, start_from_epoch, int(verbose)

    def on_train_begin(self, model):
        """Start counting afresh (an instance can be given to several fits)."""
        self.best = None
        self.best_epoch = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None

    def on_epoch_end(self, model, epoch, logs):
        """Count the epoch, keep it if it is the best so far, stop once ``wait >= patience``."""
        self._resolve(logs)
        value = _monitored(logs, self.monitor)
        if epoch - 1 < self.start_from_epoch:  # Keras's 0-based epoch index
            return
        if self.restore_best and self.best_weights is None:  # the first epoch monitored is the best so far
            self.best_weights, self.best_epoch = model.get_weights(), epoch
        self.wait += 1
        if math.isfinite(value) and self._improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best:
                self.best_weights = model.get_weights()
            if self.baseline is None or self._improved(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 1:
            self.stopped_epoch = epoch
            model.stop_training = True

    def on_train_end(self, model):
        """Put the best epoch's weights back (``restore_best``)."""
        if self.verbose and self.stopped_epoch is not None:
            print(f"Epoch {self.stopped_epoch}: early stopping", file=sys.stderr, flush=True)
        if self.restore_best and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch}.", file=sys.stderr,
                      flush=True)
            model.set_weights(self.best_weights)


class ReduceLROnPlateau(_Monitor):
    """Multiply the base learning rate by ``factor`` after ``patience`` epochs without improvement.

    Keras's algorithm: each epoch without an improvement larger than ``min_delta`` adds one
    to ``wait``; at ``wait >= patience`` the rate is cut (not below ``min_lr``), ``wait``
    goes back to 0 and ``cooldown`` epochs follow in which nothing is counted.
    """

    def __init__(self, factor: float = 0.5, patience: int = 3, min_delta: float = 0.0, min_lr: float = 0.0,
                 monitor: str | None = None, mode: str = "auto", cooldown: int = 0) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        if isinstance(cooldown, bool) or not isinstance(cooldown, int) or cooldown < 0:
            raise ValueError(f"cooldown must be a non-negative integer, got {cooldown!r}")
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience, self.min_lr, self.cooldown = factor, patience, min_lr, cooldown

    def on_train_begin(self, model):
        """Start counting afresh."""
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, model, epoch, logs):
        """Count the epoch; cut the rate once ``wait >= patience``."""
        self._resolve(logs)
        value = _monitored(logs, self.monitor)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value, self.best):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                opt = model.optimizer_
                if opt.lr > self.min_lr:
                    opt.lr = max(opt.lr * self.factor, self.min_lr)
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

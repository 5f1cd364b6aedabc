"""Training history and callbacks (early stopping, reduce-on-plateau)."""
from __future__ import annotations

import math


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
        #: The settings of the run: batch_size, n_samples, steps, epochs, optimizer, lr, initial_loss.
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
    """Hooks called by ``fit``.  ``on_epoch_end`` may set ``model.stop_training``.

    ``on_step_end`` is called after every optimizer step, but only for the
    callbacks that override it: the others cost the training step nothing.
    """

    def on_train_begin(self, model):
        pass

    def on_step_end(self, model, epoch, step):
        pass

    def on_epoch_end(self, model, epoch, logs):
        pass

    def on_train_end(self, model):
        pass


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
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    patience : int
    min_delta : float
    restore_best : bool
        Put back the weights of the best epoch when training ends
        (``restore_best_weights``, Keras's name, is the same).
    monitor : str or None
        ``"val_loss"`` when validation data is given, else ``"loss"``.
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0, restore_best: bool = True, monitor: str | None = None,
                 mode: str = "auto", restore_best_weights: bool | None = None) -> None:
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        super().__init__(monitor, mode, min_delta)
        if restore_best_weights is not None:  # Keras's name
            restore_best = restore_best_weights
        self.patience, self.restore_best = patience, bool(restore_best)

    def on_train_begin(self, model):
        self.best = None
        self.best_epoch = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None

    def on_epoch_end(self, model, epoch, logs):
        self._resolve(logs)
        value = _monitored(logs, self.monitor)
        if math.isfinite(value) and self._improved(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_weights = model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            model.stop_training = True

    def on_train_end(self, model):
        if self.restore_best and self.best_weights is not None:
            model.set_weights(self.best_weights)


class ReduceLROnPlateau(_Monitor):
    """Multiply the base learning rate by ``factor`` after ``patience`` epochs without improvement."""

    def __init__(self, factor: float = 0.5, patience: int = 3, min_delta: float = 0.0, min_lr: float = 0.0,
                 monitor: str | None = None, mode: str = "auto") -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience, self.min_lr = factor, patience, min_lr

    def on_train_begin(self, model):
        self.best, self.wait = None, 0

    def on_epoch_end(self, model, epoch, logs):
        self._resolve(logs)
        value = _monitored(logs, self.monitor)
        if self._improved(value, self.best):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            opt = model.optimizer_
            opt.lr = max(opt.lr * self.factor, self.min_lr)
            self.wait = 0

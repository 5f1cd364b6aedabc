"""Models: ``Sequential`` and the ``MLP`` shorthand, with the training loop.

One training step, on every backend (see ``docs/design.md``):

* the training set is on the device already; a batch is gathered from it with
  ``take(..., out=buffer)`` through the epoch's index permutation (drawn on the
  host, the same on every backend, copied to the device once per epoch);
* forward: per Dense layer one GEMM into a preallocated buffer, then one fused
  bias+activation kernel; the output activation is fused into the loss kernel,
  which writes the per-row loss and the gradient of the logits;
* backward: per layer one fused kernel (activation derivative and bias
  gradient), a GEMM for dW and, except for the first layer, one for dX;
* one fused optimizer call per parameter tensor;
* the batch loss and the count of correct predictions are summed on the device
  into per-step slots (``out=``: no allocation) and read once per epoch.
"""
from __future__ import annotations

import contextlib
import threading
import time
import warnings

import numpy as np

from . import validation as V
from .backend import get_backend
from .validation import check_choice
from .callbacks import Callback, EarlyStopping, History
from .layers import Dense, Dropout, Layer, canonical_activation, layer_from_config
from .losses import default_loss, get_loss
from .optimizers import Optimizer, get_optimizer
from .progress import EpochProgress
from .schedules import get_schedule

#: Rows per chunk in predict/evaluate.
INFERENCE_CHUNK = 1024


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; ``epoch`` and ``step`` say where (1-based)."""

    def __init__(self, message, epoch=None, step=None):
        super().__init__(message)
        self.epoch, self.step = epoch, step


class _GoodState:
    """Device copies of the parameters and optimizer state at the last epoch boundary."""

    def __init__(self, model):
        self.model = model
        xp = model.backend_.xp
        opt = model.optimizer_
        self.live = model._params() + [a for st in opt.state for a in st.values()]
        self.copies = [xp.empty_like(a) for a in self.live]
        self.t = opt.t

    def save(self):
        xp = self.model.backend_.xp
        for dst, src in zip(self.copies, self.live):
            xp.copyto(dst, src)
        self.t = self.model.optimizer_.t

    def restore(self):
        xp = self.model.backend_.xp
        for dst, src in zip(self.live, self.copies):
            xp.copyto(dst, src)
        self.model.optimizer_.t = self.t


def _device_seed(seed):
    # The device generator (shuffling, dropout) gets its own stream, derived
    # from the model seed, so that weights and data order never share draws.
    return None if seed is None else int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0])


class Sequential:
    """A stack of layers trained with one loss.

    Parameters
    ----------
    layers : list of Layer
        ``Dense`` and ``Dropout`` layers; the last one must be ``Dense``.
    loss : str or Loss, optional
        ``"cross_entropy"``, ``"binary_cross_entropy"``, ``"mse"`` or ``"sse"``.
        Default: from the last layer's activation (softmax -> cross-entropy,
        sigmoid -> binary cross-entropy, else mse).
    backend : {"auto", "cpu", "cuda", "cuda-sim"}
    dtype : {"float32", "float64"}
    seed : int, optional
        Seeds the weight initialisation, the shuffling and dropout: the same
        seed gives bit-identical training on the same backend.
    kernels : {"fused", "reference"}
        The Numba kernels, or the plain array expressions they are tested against.
    input_dim : int, optional
        Number of input features; inferred at the first ``fit`` when omitted.

    Attributes (after fit)
    ----------------------
    history_ : History
        All epochs trained so far (``loss_curve_`` is ``history_["loss"]``).
    n_iter_ : int
        Epochs trained so far.
    optimizer_ : Optimizer
    """

    def __init__(self, layers, loss=None, backend="auto", dtype="float32", seed=None,
                 kernels="fused", input_dim=None):
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"layers must be a non-empty list of layers, got {layers!r}")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastnet layer (Dense, Dropout), got {layer!r}")
        if not isinstance(layers[-1], Dense):
            raise ValueError(f"the last layer must be Dense, got {type(layers[-1]).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        if input_dim is not None and (isinstance(input_dim, bool) or not isinstance(input_dim, (int, np.integer))
                                      or input_dim < 1):
            raise ValueError(f"input_dim must be a positive integer or None, got {input_dim!r}")
        self.layers = list(layers)
        self.seed = seed
        self.input_dim = input_dim
        self.backend_ = get_backend(backend, dtype=dtype, seed=_device_seed(seed), kernels=kernels)
        self.backend = self.backend_.name
        self.dtype = self.backend_.dtype.name
        self.kernels = kernels
        last = canonical_activation(self.layers[-1].activation)
        self.n_outputs_ = self.layers[-1].units
        self.loss_ = get_loss(loss if loss is not None else default_loss(last))
        self.loss = self.loss_.name
        self._wire_output()
        if self.loss_.target_kind == "class" and self.n_outputs_ < 2:
            raise ValueError(f"cross_entropy needs an output layer of >= 2 units, got {self.n_outputs_}")
        self.built = False
        self.optimizer_ = None
        self.history_ = History()
        self.stop_training = False
        self._max_batch = 0
        # One training at a time per model (fit's buffers are the model's); inference
        # uses buffers of its own per call and needs no lock.
        self._training = threading.Lock()

    # ------------------------------------------------------------------ build
    def _wire_output(self):
        for i, layer in enumerate(self.layers[:-1]):
            if isinstance(layer, Dense) and layer.activation == "softmax":
                raise ValueError(f"softmax is only supported on the last layer, got it on layer {i}")
        last = self.layers[-1]
        act = canonical_activation(last.activation)
        if act not in self.loss_.accepts:
            raise ValueError(
                f"loss {self.loss_.name!r} does not go with a {act!r} output layer "
                f"(it accepts: {', '.join(self.loss_.accepts)})"
            )
        # A softmax/sigmoid output is computed inside the loss kernel.
        last.kernel_activation = "identity" if self.loss_.fused_activation else act

    def build(self, n_features):
        """Create the parameters for ``n_features`` inputs."""
        if self.input_dim is not None and n_features != self.input_dim:
            raise ValueError(
                f"X has {n_features} features per sample, but the model expects {self.input_dim}"
            )
        rng = np.random.default_rng(self.seed)
        n = n_features
        trainable_before = False
        counts = {}
        for layer in self.layers:
            kind = type(layer).__name__.lower()
            layer.name = f"{kind}_{counts.get(kind, 0)}"
            counts[kind] = counts.get(kind, 0) + 1
            layer.need_dx = trainable_before
            n = layer.build(n, self.backend_, rng)
            trainable_before = trainable_before or layer.trainable
        self.n_features_in_ = n_features
        self.n_outputs_ = n
        self.loss_.bind(self.backend_)
        self.built = True
        self._max_batch = 0
        return self

    def _ensure_workspace(self, batch):
        if batch <= self._max_batch:
            return
        xp, dt = self.backend_.xp, self.backend_.dtype
        for layer in self.layers:
            layer.allocate(batch)
        self._xb = xp.empty((batch, self.n_features_in_), dtype=dt)
        self._yb = xp.empty((batch,) + self._y_tail(), dtype=self._y_dtype())
        self._loss_rows = xp.empty(batch, dtype=dt)
        self._grad = xp.empty((batch, self.n_outputs_), dtype=dt)
        # Buffers of the accuracy count, so that a training step allocates no arrays.
        self._pred = xp.empty(batch, dtype=np.int64)
        self._hit = xp.empty((batch,) + self._y_tail(), dtype=bool)
        self._hit2 = xp.empty((batch,) + self._y_tail(), dtype=bool)
        self._max_batch = batch

    def _y_dtype(self):
        return np.int32 if self.loss_.target_kind == "class" else self.backend_.dtype

    def _y_tail(self):
        return () if self.loss_.target_kind == "class" else (self.n_outputs_,)

    def _check_fitted(self, what):
        if not self.built:
            raise V.NotFittedError(f"this model is not fitted yet: call fit before {what}")

    # ------------------------------------------------------------ data prep
    def _prepare_X(self, X, argument="X"):
        return V.check_X(X, self.n_features_in_ if self.built else self.input_dim, argument)

    def _prepare_y(self, y, argument="y"):
        kind = self.loss_.target_kind
        if kind == "class":
            return V.check_class_targets(y, self.n_outputs_, argument)
        return V.check_real_targets(y, self.n_outputs_, binary=(kind == "binary"), argument=argument)

    def _to_device(self, X, y=None):
        b = self.backend_
        Xd = b.asarray(X, dtype=b.dtype)
        Yd = None if y is None else b.asarray(y, dtype=self._y_dtype())
        return Xd, Yd

    # --------------------------------------------------------------- passes
    def _forward(self, x, training):
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def _infer(self, x):
        """Inference forward with new arrays per call: safe from any number of threads."""
        for layer in self.layers:
            x = layer.infer(x)
        return x

    def _backward(self, grad):
        dy = grad
        for layer in reversed(self.layers):
            dy = layer.backward(dy, layer.need_dx)
            if dy is None:
                break

    def _correct(self, out, y, into, buffers=None):
        """Number of correct predictions in a batch, written into the 1-element array ``into``.

        ``buffers`` = ``(pred, hit, hit2)`` scratch arrays of at least ``len(out)`` rows
        (default: the training workspace's)."""
        xp = self.backend_.xp
        m = out.shape[0]
        pred, hit, above = buffers or (self._pred, self._hit, self._hit2)
        hit = hit[:m]
        if self.loss_.target_kind == "class":
            xp.equal(xp.argmax(out, axis=1, out=pred[:m]), y, out=hit)
        else:
            # logit > 0 (p > 0.5) agrees with target >= 0.5
            above = above[:m]
            xp.greater(out, 0, out=above)
            xp.greater_equal(y, 0.5, out=hit)
            xp.equal(hit, above, out=hit)
        hit.reshape(hit.size).sum(axis=0, dtype=np.int64, out=into, keepdims=True)
        return into

    def _accuracy_denominator(self, n):
        return n if self.loss_.target_kind == "class" else n * self.n_outputs_

    # ------------------------------------------------------------- training
    def _select_optimizer(self, optimizer, lr, weight_decay):
        current = self.optimizer_
        if isinstance(optimizer, Optimizer):
            return get_optimizer(optimizer, lr, weight_decay)
        keep = (
            current is not None
            and optimizer == current.name
            and (lr is None or float(lr) == current.lr)
            and (weight_decay is None or float(weight_decay) == current.weight_decay)
        )
        return current if keep else get_optimizer(optimizer, lr, weight_decay)

    def _split_validation(self, X, y, validation_data, validation_split):
        if validation_data is not None and validation_split:
            raise ValueError("give either validation_data or validation_split, not both")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(
                    f"validation_data must be a pair (X_val, y_val), got {type(validation_data).__name__}"
                )
            Xv = V.check_X(validation_data[0], X.shape[1], "validation_data[0]")
            yv = self._prepare_y(validation_data[1], "validation_data[1]")
            V.check_lengths(Xv, yv, "validation_data[1]")
            return X, y, (Xv, yv)
        if validation_split:
            if isinstance(validation_split, bool) or not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split!r}")
            n_val = int(round(len(X) * validation_split))
            if n_val < 1 or n_val >= len(X):
                raise ValueError(
                    f"validation_split={validation_split!r} leaves {n_val} validation samples of {len(X)}"
                )
            # The last samples, before any shuffling, as Keras does.
            return X[:-n_val], y[:-n_val], (X[-n_val:], y[-n_val:])
        return X, y, None

    def fit(self, X, y, epochs=10, batch_size=128, optimizer="sgd", lr=None, lr_schedule=None,
            weight_decay=None, validation_data=None, validation_split=0.0, early_stopping=None,
            callbacks=None, shuffle=True, verbose=0, on_nan="raise", resume=None, diagnose=True):
        """Train the model; training continues from the current weights.

        Parameters
        ----------
        X : array (n_samples, n_features)
            Images (n, 28, 28) are flattened; integer arrays are converted;
            bool, object and string arrays, NaN and inf are rejected.
        y : array
            Class ids (n,) or one-hot rows (n, k) for cross-entropy; 0/1 targets
            for binary cross-entropy; values (n,) or (n, k) for regression.
        epochs : int
            Epochs to train (with ``resume``: the total to reach).
        batch_size : int or None
            Rows per step; ``None`` is full batch.  A batch size larger than the
            data is clipped to it (full batch).
        optimizer : str or Optimizer
            ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"``, ``"adamw"``,
            ``"rmsprop"``.  Calling fit again with the same optimizer keeps
            its state (``fit`` twice == ``fit`` once with the epochs added).
        lr : float, optional
            Base learning rate (default: the optimizer's).
        lr_schedule : str or Schedule, optional
            ``"constant"``, ``"step"``, ``"exponential"``, ``"cosine"``, ``"onecycle"``.
        weight_decay : float, optional
        validation_data : (X_val, y_val), optional
        validation_split : float
            Fraction of the last samples held out for validation.
        early_stopping : EarlyStopping, optional
        callbacks : list of Callback, optional
        shuffle : bool
        verbose : {0, 1}
            1 prints a progress bar and a line per epoch.
        diagnose : bool
            Record per-layer norms (``model.norms_``) and, at the end, warn
            (:class:`~fastnet.diagnostics.FastnetWarning`) about each problem
            :func:`fastnet.diagnose` finds: learning rate too high, overfitting,
            unscaled inputs, exploding/vanishing weights, dead units...
        on_nan : {"raise", "restore", "ignore"}
            When an epoch's loss is NaN or infinite: ``"raise"`` puts back the
            weights and optimizer state of the last good epoch and raises
            :class:`TrainingDivergedError` naming the epoch and step;
            ``"restore"`` does the same but stops with a warning instead;
            ``"ignore"`` trains on.
        resume : path, optional
            A :class:`~fastnet.checkpoint.ModelCheckpoint` file: restore the
            weights, optimizer, random state and history from it and train
            until ``epochs`` epochs in all.

        Returns
        -------
        History
            The epochs of this call: loss, accuracy, val_loss, val_accuracy, lr, seconds.

        Notes
        -----
        Every argument and the data are checked before anything changes: after a
        ``ValueError``/``TypeError`` the weights and optimizer state are as before.
        """
        with self._exclusive_training():
            epochs = V.check_epochs(epochs)
            batch_size = V.check_batch_size(batch_size)
            if verbose not in (0, 1, 2, True, False):
                raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
            check_choice("on_nan", on_nan, ("raise", "restore", "ignore"))
            if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
                raise TypeError(f"early_stopping must be an EarlyStopping, got {early_stopping!r}")
            callbacks = list(callbacks or [])
            for i, cb in enumerate(callbacks):
                if not isinstance(cb, Callback):
                    raise TypeError(f"callbacks[{i}] must be a fastnet Callback, got {cb!r}")
            if early_stopping is not None:
                callbacks.append(early_stopping)
            schedule = get_schedule(lr_schedule)
            if not isinstance(shuffle, (bool, np.bool_)):
                raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
            X = self._prepare_X(X)
            y_raw = V.as_array("y", y)
            V.check_lengths(X, y_raw)
            y = self._prepare_y(y_raw)
            X, y, val = self._split_validation(X, y, validation_data, validation_split)
            opt = self._select_optimizer(optimizer, lr, weight_decay)
            if not self.built:
                self.build(X.shape[1])
            if resume is not None:
                from .checkpoint import restore_checkpoint

                restored = restore_checkpoint(self, resume)
                opt = self._select_optimizer(optimizer, lr, weight_decay)
                if restored is not None and opt is not restored and opt.get_config() == restored.get_config():
                    # An optimizer object like the checkpoint's: it continues the saved state.
                    opt.setup(self._params(), self._grads(), self.backend_)
                    for mine, saved in zip(opt.state, restored.state):
                        for slot in mine:
                            self.backend_.xp.copyto(mine[slot], saved[slot])
                    opt.t = restored.t
                    self.optimizer_ = opt
                total = epochs
                epochs = max(epochs - self.n_iter_, 0)
            else:
                total = self.n_iter_ + epochs
            if opt is not self.optimizer_:
                opt.setup(self._params(), self._grads(), self.backend_)
                self.optimizer_ = opt
            schedule.total_epochs = total
            if diagnose:
                # The doctor sits above the model (it reads histories and models): imported here.
                from .diagnostics import FastnetWarning, NormRecorder
                from .diagnostics import diagnose as run_diagnosis

                if not any(isinstance(cb, NormRecorder) for cb in callbacks):
                    callbacks.insert(0, NormRecorder())  # per-layer norms for the doctor: model.norms_
            # Overflow to inf/NaN is detected per epoch (on_nan); NumPy's own warnings would only repeat it.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"), self.backend_.compute_env():
                history = self._fit_loop(X, y, val, epochs, batch_size, schedule, callbacks, shuffle, verbose, on_nan)
                found = run_diagnosis(history, self, X, max_samples=2000) if diagnose else []
            for d in found:
                warnings.warn(str(d), FastnetWarning, stacklevel=2)
            return history

    @contextlib.contextmanager
    def _exclusive_training(self):
        """One ``fit`` at a time on a model: a second one, from another thread, is refused."""
        if not self._training.acquire(blocking=False):
            raise RuntimeError(
                "fit is already running on this model in another thread: a model trains in one "
                "thread at a time (predict, predict_proba and evaluate are safe from any number "
                "of threads; train copies made with model.clone() in parallel instead)")
        try:
            yield
        finally:
            self._training.release()

    def partial_fit(self, X, y, **kwargs):
        """One epoch over ``(X, y)``, continuing from the current state: ``fit(X, y, epochs=1, ...)``
        (without the end-of-fit diagnosis unless ``diagnose=True`` is given)."""
        kwargs.setdefault("epochs", 1)
        kwargs.setdefault("diagnose", False)  # one epoch says little, and a loop of calls would repeat it
        return self.fit(X, y, **kwargs)

    def _fit_loop(self, X, y, val, epochs, batch_size, schedule, callbacks, shuffle, verbose, on_nan):
        xp = self.backend_.xp
        n = len(X)
        bs = n if batch_size is None else min(batch_size, n)
        self._ensure_workspace(bs)
        Xd, Yd = self._to_device(X, y)
        Xv, Yv = self._to_device(*val) if val is not None else (None, None)
        steps = -(-n // bs)
        step_losses = xp.zeros(steps, dtype=np.float64)
        step_correct = xp.zeros(steps, dtype=np.int64)
        guard = _GoodState(self) if on_nan != "ignore" else None
        history = History()
        history.params = {"batch_size": bs, "n_samples": n, "steps": steps, "epochs": epochs,
                          "optimizer": self.optimizer_.name, "lr": self.optimizer_.lr}
        self.history_.params = history.params
        self.stop_training = False
        step_callbacks = [cb for cb in callbacks if type(cb).on_step_end is not Callback.on_step_end]
        for cb in callbacks:
            cb.on_train_begin(self)
        for _ in range(epochs):
            epoch = self.n_iter_
            t0 = time.perf_counter()
            if guard is not None:
                guard.save()
            progress = EpochProgress(epoch + 1, schedule.total_epochs, steps, enabled=bool(verbose))
            lr = self._train_epoch(Xd, Yd, n, bs, steps, shuffle, epoch, schedule, progress,
                                   step_losses, step_correct, step_callbacks)
            # The epoch's one read from the device: per-step losses and correct counts.
            host_losses = self.backend_.to_host(step_losses)
            loss = float(host_losses.sum()) * self.loss_.scale(n, self.n_outputs_)
            correct = int(self.backend_.to_host(step_correct).sum())
            if "initial_loss" not in history.params:
                # The first batch's loss, computed before the first update: the loss before training.
                history.params["initial_loss"] = float(host_losses[0]) * self.loss_.scale(min(bs, n), self.n_outputs_)
            if not np.isfinite(loss):
                progress.close({"loss": loss}, n)
                if history.diverged is None:  # the first divergence (on_nan="ignore" trains on)
                    history.diverged = self.history_.diverged = {
                        "epoch": epoch + 1, "loss": loss,
                        "step": int(np.argmax(~np.isfinite(host_losses))) + 1}
                if self._diverged(loss, host_losses, epoch, steps, guard, on_nan):
                    break
            logs = {"loss": loss}
            if self.loss_.is_classifier:
                logs["accuracy"] = correct / self._accuracy_denominator(n)
            if Xv is not None:
                logs.update({f"val_{k}": v for k, v in self._evaluate_device(Xv, Yv).items()})
            logs["lr"] = lr
            logs["seconds"] = time.perf_counter() - t0
            history.append(epoch + 1, logs)
            self.history_.append(epoch + 1, logs)
            if np.isfinite(loss):
                progress.close(logs, n)
            for cb in callbacks:
                cb.on_epoch_end(self, epoch + 1, logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end(self)
        return history

    def _diverged(self, loss, step_losses, epoch, steps, guard, on_nan):
        """Handle a non-finite epoch loss; True when training must stop."""
        if on_nan == "ignore":
            return False
        step = int(np.argmax(~np.isfinite(step_losses))) + 1
        guard.restore()
        where = f"epoch {epoch + 1}, step {step} of {steps}"
        msg = (f"the training loss became {loss} at {where}; the weights and optimizer state were "
               f"restored to the end of epoch {epoch} ({'the initial weights' if epoch == 0 else 'last good epoch'}). "
               f"Usual causes: a learning rate too high (lr={self.optimizer_.lr}), unscaled inputs, "
               "or an exploding gradient")
        if on_nan == "raise":
            raise TrainingDivergedError(msg, epoch=epoch + 1, step=step)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
        return True

    def _train_epoch(self, Xd, Yd, n, bs, steps, shuffle, epoch, schedule, progress, step_losses,
                     step_correct, step_callbacks=()):
        """One epoch; the step losses and correct counts stay on the device, in
        ``step_losses[step]`` and ``step_correct[step]`` (written with ``out=``)."""
        b = self.backend_
        xp = b.xp
        order = b.permutation(n) if shuffle else None
        classify = self.loss_.is_classifier
        base_lr = self.optimizer_.lr
        lr = base_lr
        for step in range(steps):
            start = step * bs
            m = min(bs, n - start)
            if order is None:
                xb, yb = Xd[start:start + m], Yd[start:start + m]
            else:
                idx = order[start:start + m]
                xb = b.gather(Xd, idx, self._xb[:m])
                yb = b.gather(Yd, idx, self._yb[:m])
            lr = schedule(epoch + step / steps, base_lr)
            out = self._forward(xb, True)
            rows = self._loss_rows[:m]
            grad = self._grad[:m]
            self.loss_(out, yb, rows, grad)
            rows.sum(axis=0, out=step_losses[step:step + 1], keepdims=True)
            if classify:
                self._correct(out, yb, step_correct[step:step + 1])
            self._backward(grad)
            self.optimizer_.step(lr)
            progress.update(step + 1)
            for cb in step_callbacks:
                cb.on_step_end(self, epoch + 1, step + 1)
        return lr

    @property
    def n_iter_(self):
        """Epochs trained so far."""
        return len(self.history_)

    @property
    def loss_curve_(self):
        """Training loss per epoch, as in scikit-learn."""
        return list(self.history_.history.get("loss", []))

    # ------------------------------------------------------------ inference
    def _chunk(self):
        # A fixed chunk, whatever the training batch was: GEMM results can differ in
        # the last bit with the number of rows, and predictions must not depend on it.
        return INFERENCE_CHUNK

    def _evaluate_device(self, Xd, Yd):
        """Loss and accuracy on device arrays, with buffers of this call's own (thread-safe)."""
        xp, dt = self.backend_.xp, self.backend_.dtype
        n = Xd.shape[0]
        chunk = min(self._chunk(), max(n, 1))
        loss_rows = xp.empty(chunk, dtype=dt)
        grad = xp.empty((chunk, self.n_outputs_), dtype=dt)
        buffers = (xp.empty(chunk, dtype=np.int64), xp.empty((chunk,) + self._y_tail(), dtype=bool),
                   xp.empty((chunk,) + self._y_tail(), dtype=bool))
        chunks = -(-n // chunk)
        losses = xp.zeros(chunks, dtype=np.float64)
        corrects = xp.zeros(chunks, dtype=np.int64)
        for i in range(chunks):
            start = i * chunk
            xb, yb = Xd[start:start + chunk], Yd[start:start + chunk]
            m = xb.shape[0]
            out = self._infer(xb)
            rows = loss_rows[:m]
            self.loss_(out, yb, rows, grad[:m])
            rows.sum(axis=0, out=losses[i:i + 1], keepdims=True)
            if self.loss_.is_classifier:
                self._correct(out, yb, corrects[i:i + 1], buffers)
        result = {"loss": float(self.backend_.to_host(losses).sum()) * self.loss_.scale(n, self.n_outputs_)}
        if self.loss_.is_classifier:
            result["accuracy"] = int(self.backend_.to_host(corrects).sum()) / self._accuracy_denominator(n)
        return result

    def evaluate(self, X, y):
        """Loss (and accuracy for classifiers) on ``(X, y)``, as a dict."""
        self._check_fitted("evaluate")
        X = self._prepare_X(X)
        y = self._prepare_y(y)
        V.check_lengths(X, y)
        return self._evaluate_device(*self._to_device(X, y))

    def _outputs(self, X):
        """Network outputs after the output activation (probabilities for classifiers)."""
        self._check_fitted("predict")
        X = self._prepare_X(X)
        xp = self.backend_.xp
        Xd, _ = self._to_device(X)
        n = Xd.shape[0]
        chunk = self._chunk()
        result = xp.empty((n, self.n_outputs_), dtype=self.backend_.dtype)
        fused = self.loss_.fused_activation
        for start in range(0, n, chunk):
            out = self._infer(Xd[start:start + chunk])
            dest = result[start:start + out.shape[0]]
            if fused == "softmax":
                shifted = out - out.max(axis=1, keepdims=True)
                e = xp.exp(shifted)
                dest[...] = e / e.sum(axis=1, keepdims=True)
            elif fused == "sigmoid":
                dest[...] = 0.5 * xp.tanh(0.5 * out) + 0.5
            else:
                dest[...] = out
        return self.backend_.to_host(result).copy()

    def predict_proba(self, X):
        """Class probabilities, shape (n, k); (n, 2) for one sigmoid output."""
        if not self.loss_.is_classifier:
            raise TypeError(f"predict_proba is for classifiers; this model's loss is {self.loss_.name!r}")
        p = self._outputs(X)
        if self.loss_.target_kind == "binary" and p.shape[1] == 1:
            return np.hstack([1 - p, p])
        return p

    def predict_top_k(self, X, k=3):
        """The ``k`` most probable classes per sample and their probabilities: see :func:`fastnet.metrics.predict_top_k`."""
        from .metrics import predict_top_k

        return predict_top_k(self, X, k)

    def predict(self, X):
        """Class ids (n,) for classifiers (0/1 per output for multi-label), values otherwise."""
        p = self._outputs(X)
        kind = self.loss_.target_kind
        if kind == "class":
            return np.argmax(p, axis=1)
        if kind == "binary":
            labels = (p >= 0.5).astype(np.int64)
            return labels[:, 0] if labels.shape[1] == 1 else labels
        return p[:, 0] if p.shape[1] == 1 else p

    def score(self, X, y):
        """Accuracy for classifiers, R^2 for regression (as scikit-learn)."""
        if self.loss_.is_classifier:
            return self.evaluate(X, y)["accuracy"]
        p = self._outputs(X)
        t = V.check_real_targets(y, self.n_outputs_)
        ss_res = ((t - p) ** 2).sum()
        ss_tot = ((t - t.mean(axis=0)) ** 2).sum()
        return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0

    # ------------------------------------------------------------ parameters
    def _params(self):
        return [a for layer in self.layers for _, a in layer.params()]

    def _grads(self):
        return [g for layer in self.layers for g in layer.grads()]

    def parameters(self):
        """``[(name, array)]`` in layer order, e.g. ``("dense_0.W", W)``: the live device arrays."""
        self._check_fitted("parameters")
        return [(f"{layer.name}.{p}", a) for layer in self.layers for p, a in layer.params()]

    def get_weights(self):
        """``{name: numpy array}``: host copies of every parameter."""
        return {name: self.backend_.to_host(a).copy() for name, a in self.parameters()}

    def set_weights(self, weights):
        """Copy ``{name: array}`` into the parameters (shapes must match)."""
        params = dict(self.parameters())
        missing = set(params) - set(weights)
        if missing:
            raise ValueError(f"weights lack {sorted(missing)}")
        for name, a in params.items():
            w = V.as_array(f"weights[{name!r}]", weights[name])  # host, list or device (CuPy) array
            if w.shape != a.shape:
                raise ValueError(f"weights[{name!r}] has shape {w.shape}, expected {a.shape}")
            a[...] = self.backend_.asarray(w, dtype=a.dtype)

    def gradients(self, X, y):
        """``(loss, {name: gradient})`` on all of ``(X, y)``, without changing the model.

        Dropout is off (as at inference), so the result is deterministic.
        """
        X = self._prepare_X(X)
        y = self._prepare_y(y)
        V.check_lengths(X, y)
        if not self.built:
            self.build(X.shape[1])
        Xd, Yd = self._to_device(X, y)
        n = len(X)
        self._ensure_workspace(n)
        out = self._forward(Xd, False)
        rows, grad = self._loss_rows[:n], self._grad[:n]
        self.loss_(out, Yd, rows, grad)
        loss = float(self.backend_.to_host(rows).sum()) * self.loss_.scale(n, self.n_outputs_)
        self._backward(grad)
        grads = {}
        for layer in self.layers:
            for (p, _), g in zip(layer.params(), layer.grads()):
                grads[f"{layer.name}.{p}"] = self.backend_.to_host(g).copy()
        return loss, grads

    # ------------------------------------------------------------ structure
    def get_config(self):
        return {
            "layers": [layer.get_config() for layer in self.layers],
            "loss": self.loss_.name,
            "dtype": self.dtype,
            "seed": self.seed,
            "input_dim": self.n_features_in_ if self.built else self.input_dim,
        }

    @classmethod
    def from_config(cls, config, backend="auto", kernels="fused", dtype=None):
        layers = [layer_from_config(c) for c in config["layers"]]
        return cls(layers, loss=config["loss"], backend=backend, dtype=dtype or config["dtype"],
                   seed=config.get("seed"), kernels=kernels, input_dim=config.get("input_dim"))

    def clone(self, backend=None, dtype=None, kernels=None):
        """A new model with the same architecture and weights (no optimizer state)."""
        other = Sequential.from_config(
            self.get_config(), backend=backend or self.backend_.name,
            kernels=kernels or self.kernels, dtype=dtype or self.dtype,
        )
        if self.built:
            other.build(self.n_features_in_)
            other.set_weights(self.get_weights())
        return other

    def to(self, backend, dtype=None):
        """Move the model (weights and optimizer state) to another backend, in place."""
        weights = self.get_weights() if self.built else None
        opt = self.optimizer_
        state = None
        if opt is not None:
            state = [{k: self.backend_.to_host(v).copy() for k, v in st.items()} for st in opt.state]
        new = get_backend(backend, dtype=dtype or self.dtype, seed=_device_seed(self.seed), kernels=self.kernels)
        self.backend_ = new
        self.backend, self.dtype = new.name, new.dtype.name
        if weights is not None:
            self.build(self.n_features_in_)
            self.set_weights(weights)
            if opt is not None:
                t = opt.t
                opt.setup(self._params(), self._grads(), new)
                opt.t = t
                for st, host in zip(opt.state, state):
                    for k in st:
                        st[k][...] = new.asarray(host[k], dtype=st[k].dtype)
        return self

    def save(self, path):
        """Write the model to ``path`` (``.npz``, no pickle); see :func:`fastnet.load`."""
        from .npzfile import save_model

        save_model(self, path)

    def summary(self):
        """A table of layers, output shapes and parameter counts, as a string."""
        lines = [f"{'layer':<14}{'output':>10}{'params':>12}  activation"]
        total = 0
        for layer in self.layers:
            count = sum(int(np.prod(a.shape)) for _, a in layer.params()) if self.built else 0
            total += count
            act = getattr(layer, "activation", None) or "-"
            width = layer.n_out if self.built else getattr(layer, "units", "?")
            lines.append(f"{layer.name or type(layer).__name__:<14}{width!s:>10}{count:>12,}  {act}")
        lines.append(f"total parameters: {total:,}  loss: {self.loss_.name}  backend: {self.backend_!r}")
        return "\n".join(lines)

    def __repr__(self):
        sizes = [getattr(layer, "units", f"dropout({getattr(layer, 'rate', '')})") for layer in self.layers]
        return f"{type(self).__name__}({sizes}, loss={self.loss_.name!r}, backend={self.backend_.name!r})"


class MLP(Sequential):
    """A multilayer perceptron from layer sizes: ``MLP([784, 256, 10])``.

    Parameters
    ----------
    sizes : list of int
        Input size, hidden sizes, output size.
    activation : str
        Activation of the hidden layers.
    output : str, optional
        Output activation: ``"softmax"`` (default for ``loss=None``),
        ``"sigmoid"``, ``"linear"``...  Default: the one that goes with ``loss``.
    loss : str, optional
        Default: cross-entropy (with softmax output) unless ``output`` says otherwise.
    dropout : float
        Dropout rate after each hidden layer (0 = none).
    use_bias, init, backend, dtype, seed, kernels
        As in :class:`Dense` and :class:`Sequential`.
    """

    def __init__(self, sizes, activation="relu", output=None, loss=None, dropout=0.0, use_bias=True,
                 init="auto", backend="auto", dtype="float32", seed=None, kernels="fused"):
        if not isinstance(sizes, (list, tuple)) or len(sizes) < 2:
            raise ValueError(f"sizes must list at least an input and an output size, got {sizes!r}")
        for i, s in enumerate(sizes):
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
                raise ValueError(f"sizes[{i}] must be a positive integer, got {s!r}")
        if output is None:
            output = "softmax" if loss is None else (get_loss(loss).fused_activation or "linear")
        layers = []
        for units in sizes[1:-1]:
            layers.append(Dense(units, activation, use_bias=use_bias, init=init))
            if dropout:
                layers.append(Dropout(dropout))
        layers.append(Dense(sizes[-1], output, use_bias=use_bias, init=init))
        self.sizes = list(sizes)
        super().__init__(layers, loss=loss, backend=backend, dtype=dtype, seed=seed, kernels=kernels,
                         input_dim=int(sizes[0]))

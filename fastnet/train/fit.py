"""The training run: :func:`fit` trains a model, from outside it.

The model (``fastnet.core.model.Network``) is the network: layers, forward and
backward passes, parameters, inference.  This module is the run: it checks the
arguments and data, picks the optimizer, resumes from a checkpoint, loops over
epochs and steps, guards against NaN, calls the callbacks and, at the end, the
training doctor (``fastnet.doctor``).  ``Sequential.fit`` is :func:`fit`.

One training step, on every backend:

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

Data-parallel (``distributed=``, :mod:`fastnet.train.distributed`): each rank runs the
same step on its share of the global batch, and one all-reduce of the flat
gradient buffer sits between the backward pass and the optimizer.

``docs/pages/architecture.md`` follows one step through its buffers and kernels.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
import time
import warnings

import numpy as np
from numpy.typing import ArrayLike

from fastnet.train import distributed as data_parallel
from fastnet.core import validation
from fastnet.train.augment import Augment
from fastnet.core.callbacks import Callback, EarlyStopping, History, calls_on_step_end, prepare_callbacks
from fastnet.train.checkpoint import hold_checkpoints, restore_checkpoint
from fastnet.doctor import FastnetWarning, NormRecorder
from fastnet.doctor import diagnose as run_diagnosis
from fastnet.train.interrupt import StopSignals, TrainingInterrupted
from fastnet.core.optimizers import Optimizer, get_optimizer
from fastnet.train.progress import EpochProgress
from fastnet.core.schedules import Schedule, get_schedule
from fastnet.backends import threads
from fastnet.backends.threads import NoTuner
from fastnet.core.validation import check_choice

if TYPE_CHECKING:  # the model is given, never imported: it sits below this module
    from fastnet.core.model import Network


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; ``epoch`` and ``step`` say where (1-based)."""

    def __init__(self, message, epoch=None, step=None):
        super().__init__(message)
        self.epoch, self.step = epoch, step


class _GoodState:
    """Device copies of the parameters and optimizer state, and the random state, at the last
    epoch boundary: put back when an epoch diverges (``on_nan``) or is interrupted."""

    def __init__(self, model):
        self.model = model
        xp = model.backend_.xp
        self.live = [a for _, a in model.parameters()]
        self.copies = [xp.empty_like(a) for a in self.live]
        self.optimizer = None

    def save(self):
        xp = self.model.backend_.xp
        for dst, src in zip(self.copies, self.live):
            xp.copyto(dst, src)
        self.optimizer = self.model.optimizer_.get_state(device=True, into=self.optimizer)
        self.rng = self.model.backend_.get_rng_state()

    def restore(self):
        xp = self.model.backend_.xp
        for dst, src in zip(self.live, self.copies):
            xp.copyto(dst, src)
        self.model.optimizer_.set_state(self.optimizer)


def fit(model: Network, X: ArrayLike, y: ArrayLike, epochs: int = 10, batch_size: int | None = 128,
        optimizer: str | Optimizer = "adam", lr: float | None = None, lr_schedule: str | Schedule | None = None,
        weight_decay: float | None = None, validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        validation_split: float = 0.0, early_stopping: EarlyStopping | None = None,
        callbacks: Sequence[Callback] | None = None, shuffle: bool = True, verbose: int | str = "auto",
        on_nan: str = "raise",
        resume: str | os.PathLike[str] | None = None, diagnose: bool = True,
        sample_weight: ArrayLike | None = None, augment: Augment | None = None,
        distributed: Any = None, class_weight: dict[Any, float] | str | None = None,
        resume_strict: bool = True) -> History:
    """Train the model; training continues from the current weights.

    Parameters
    ----------
    X : array (n_samples, n_features)
        Images (n, 28, 28) are flattened; integer arrays are converted;
        bool, object and string arrays, NaN and inf are rejected.
    y : array
        For cross-entropy: class labels (n,), either ids in ``[0, k)`` or exactly
        ``k`` distinct labels of any kind ``np.unique`` sorts (strings, other
        integers, booleans: the first fit keeps them in ``model.classes_`` and
        ``predict`` returns them), or one-hot rows (n, k); 0/1 targets for binary
        cross-entropy; values (n,) or (n, k) for regression.
    epochs : int
        Epochs to train (with ``resume``: the total to reach).
    batch_size : int or None
        Rows per step; ``None`` is full batch.  A batch size larger than the
        data is clipped to it (full batch).
    optimizer : str or Optimizer
        A name of ``fastnet.core.optimizers.OPTIMIZERS`` (``"sgd"``, ``"adam"``...) or
        an instance.  Default ``"adam"`` (learning rate 1e-3): it trains unscaled
        toy problems that plain SGD at its default rate of 0.1 can blow up on.
        Calling fit again with the same optimizer keeps its state (``fit`` twice
        == ``fit`` once with the epochs added).
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
        Hooks written fastnet's way or Keras's (``on_epoch_end(self, epoch,
        logs=None)``, ``self.model``): see :class:`~fastnet.core.callbacks.Callback`.
    shuffle : bool
    verbose : {"auto", 0, 1, 2}
        Progress on stderr (stdout stays the program's): 1 draws a bar over each
        epoch's steps (on a terminal or in a notebook only) and writes a line per
        epoch; 2 (Keras's) writes the line per epoch only; 0 is silent.
        ``"auto"`` (the default, as Keras's) is 1.  Written to a file (stderr
        redirected), each epoch is exactly one complete line.
    diagnose : bool
        Record per-layer norms (``model.norms_``) and, at the end, warn
        (:class:`~fastnet.doctor.FastnetWarning`) about each problem
        :func:`fastnet.diagnose` finds: learning rate too high, overfitting,
        unscaled inputs, exploding/vanishing weights, dead units...
    on_nan : {"raise", "restore", "ignore"}
        When an epoch's loss is NaN or infinite, or its last updates made a
        weight so (each step's loss is taken before its update): ``"raise"`` puts back the
        weights and optimizer state of the last good epoch and raises
        :class:`TrainingDivergedError` naming the epoch and step;
        ``"restore"`` does the same but stops with a warning instead;
        ``"ignore"`` trains on.
    resume : path, optional
        A :class:`~fastnet.train.checkpoint.ModelCheckpoint` file: restore the
        weights, optimizer, random state and history from it and train
        until ``epochs`` epochs in all.  Everything is checked before the
        model changes (a refused resume leaves it as it was), and a
        checkpoint of another run is refused, the differences named: another
        seed, dtype, optimizer or hyper-parameter (``lr``, ``weight_decay``...),
        batch size or number of training rows.
    resume_strict : bool
        ``False`` continues a checkpoint deliberately with changed settings
        (as PyTorch's ``load_state_dict(strict=False)``): a ``RuntimeWarning``
        names the changes and what was kept (weights, history and random
        state; the optimizer's state only if the optimizer is unchanged).
        The architecture and the input width must match either way.
    sample_weight : array (n_samples,), optional
        Non-negative weight of each sample (times its class's weight with
        ``class_weight``): each row's loss and gradient are
        multiplied by its weight, scaled so the weights average 1 over the
        training rows (a full-batch epoch then minimises
        ``sum(w_i loss_i) / sum(w_i)``: a weight of 2 counts like a repeated row,
        0 like a dropped one).  Validation losses are not weighted.
    class_weight : dict or "balanced", optional
        Classifiers: a weight per class, as Keras's and scikit-learn's:
        ``{label: weight}`` (labels as in ``y``; a class left out weighs 1) or
        ``"balanced"`` (``n / (n_classes * count)`` over the training rows,
        scikit-learn's ``compute_sample_weight``).  Each row's weight is its
        class's, times its ``sample_weight`` when given; then scaled as
        ``sample_weight`` is.
    augment : Augment, optional
        On-the-fly augmentation of image rows (:class:`fastnet.Augment`): each
        step, every image of the gathered training batch is written into a
        buffer under its own random shift, rotation and scale (bilinear, zero
        outside; the table's ``affine_warp`` kernel), drawn from the model's
        seeded augmentation stream, so a seed gives the same images on every
        backend.  Validation data, ``predict`` and ``evaluate`` are never
        augmented; all ranges 0 trains exactly as without it.  The rows must be
        square images, or ``Augment(image_shape=(h, w))`` says their shape.
    distributed : bool or Communicator, optional
        Data-parallel training (:mod:`fastnet.train.distributed`): ``True`` joins the
        MPI job this process was started in (``mpiexec -n N``; MPI on the CPU,
        NCCL between GPUs).  Every rank calls ``fit`` with the same data and
        arguments; ``batch_size`` is per rank, each step trains on a global batch
        of ``batch_size * N`` rows, and N ranks train as one process at batch
        ``batch_size * N`` would (same order, masks and augmentations).  Only rank
        0 shows progress, warns and writes checkpoints.

    Returns
    -------
    History
        The epochs of this call: loss, accuracy, val_loss, val_accuracy, lr, seconds.

    Notes
    -----
    Every argument and the data are checked before anything changes: after a
    ``ValueError``/``TypeError`` the weights and optimizer state are as before.

    On the CPU, ``fit`` chooses NumPy's BLAS thread count by timing its steps
    (``fastnet.backends.threads``; ``history.params["threads"]`` says what it chose).  Set
    ``FASTNET_THREADS=fixed`` for the same result from the same seed on the same
    machine: OpenBLAS's results differ in the last bits between thread counts.
    """
    with _exclusive_training(model), contextlib.ExitStack() as held:
        epochs = validation.check_epochs(epochs)
        batch_size = validation.check_batch_size(batch_size)
        verbose = validation.check_verbose(verbose)
        check_choice("on_nan", on_nan, ("raise", "restore", "ignore"))
        threads.mode()  # FASTNET_THREADS, checked before anything changes
        comm = data_parallel.resolve(distributed, model.backend_)
        run = data_parallel.DataParallel(comm, batch_size) if comm is not None else data_parallel.Single()
        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be an EarlyStopping, got {early_stopping!r}")
        callbacks = prepare_callbacks(callbacks)  # Keras-style hooks adapted; others refused before training
        if early_stopping is not None:
            callbacks.append(early_stopping)
        schedule = get_schedule(lr_schedule)
        shuffle = validation.check_bool("shuffle", shuffle)
        Xa = model._prepare_X(X, fitting=True)
        y_raw = validation.as_array("y", y)
        validation.check_lengths(Xa, y_raw)
        ya = model._prepare_y(y_raw, fitting=True)
        weights = validation.check_sample_weight(sample_weight, len(Xa))
        X_doctor = Xa  # the end-of-fit doctor reads the rows given (validation split or not), as diagnose() would
        Xa, ya, val = _split_validation(model, Xa, ya, validation_data, validation_split)
        if class_weight is not None:  # each training row's class weight, times its sample weight
            rows = validation.class_weight_rows(class_weight, ya, model.loss_.target_kind, getattr(model, "_fit_classes", None))
            weights = rows if weights is None else rows * weights[:len(Xa)]
        if augment is not None:  # checked here; its buffers are made once the model is built
            if not isinstance(augment, Augment):
                raise TypeError(f"augment must be a fastnet.Augment, got {augment!r}")
            augment.shape_for(Xa.shape[1])
        if weights is not None:  # the training rows' weights, scaled to a mean of 1
            weights = weights[:len(Xa)]
            if not weights.sum() > 0:
                raise ValueError("sample_weight: the training rows (before the validation split) all weigh 0")
            weights = weights * (len(weights) / weights.sum())
        # one writer per checkpoint path, from before the resume to the end of the fit
        held.enter_context(hold_checkpoints(callbacks, root=run.comm is None or run.comm.is_root))
        opt = _select_optimizer(model, optimizer, lr, weight_decay)
        if resume is not None:
            # read and checked whole (file, model, data, the run's settings) before it changes the model
            restored = restore_checkpoint(model, resume, run.layout, strict=resume_strict, fit={
                "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size,
                "ranks": run.size, "X": Xa})
            opt = _select_optimizer(model, optimizer, lr, weight_decay)
            if restored is not None and opt is not restored and opt.get_config() == restored.get_config():
                # An optimizer object like the checkpoint's: it continues the saved state.
                model.attach_optimizer(opt)
                opt.set_state(restored.get_state(device=True))
            total = epochs
            epochs = max(epochs - model.n_iter_, 0)
        else:
            total = model.n_iter_ + epochs
        if model.loss_.target_kind == "class":
            model.classes_ = model._fit_classes  # every check passed: the labels are the model's now
        model.feature_names_in_ = model._fit_feature_names  # (a DataFrame's column names, else None)
        one = validation.single_class(ya, model.loss_.target_kind, getattr(model, "classes_", None)) \
            if diagnose and len(ya) > 1 else None  # (one row holds one class: nothing to say)
        if one is not None:
            warnings.warn(f"y holds a single class ({one!r}) in its {len(ya):,} training rows: the model learns "
                          "to predict it for every input (a classifier needs rows of at least 2 classes)",
                          FastnetWarning, stacklevel=3)
        if not model.built:
            model.build(Xa.shape[1])
        if opt is not model.optimizer_:
            model.attach_optimizer(opt)
        if isinstance(run, data_parallel.DataParallel):  # every rank starts from rank 0's state, on the same data and settings
            run.start(model, Xa, ya, {
                "config": model.get_config(), "optimizer": opt.get_config(), "epochs": epochs,
                "total_epochs": total, "layout": run.layout, "shuffle": shuffle, "schedule": data_parallel.describe(schedule),
                "validation": None if val is None else len(val[0]),
                "weights": None if weights is None else data_parallel._digest(weights, np.zeros(0)),
                "augment": data_parallel.describe(augment)})
        schedule.total_epochs = total
        if diagnose and not any(isinstance(cb, NormRecorder) for cb in callbacks):
            callbacks.insert(0, NormRecorder())  # per-layer norms for the doctor: model.norms_
        # Overflow to inf/NaN is detected per epoch (on_nan); NumPy's own warnings would only repeat it.
        # fit(augment=...): this call's distortions
        augmenting = None if augment is None else augment._start(
            model, len(Xa), len(Xa) if batch_size is None else min(batch_size, len(Xa)))
        # SIGINT/SIGTERM: stop at a step boundary (fastnet.train.interrupt); not in a data-parallel fit,
        # whose ranks would stop at different steps
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), model.backend_.compute_env(), \
                _data_parallel(model, run), StopSignals(enabled=run.comm is None) as stop:
            settings = _Settings(epochs, batch_size, schedule, callbacks, shuffle, verbose, on_nan,
                                 parallel=run, stop=stop, augment=augmenting)
            history = _fit_loop(model, Xa, ya, val, weights, settings)
            if stop.signum is not None:
                raise TrainingInterrupted(stop.signum, model.n_iter_, stop.undone)
            # fastnet.diagnose(history, model, X) reads the same rows (history.params["doctor_rows"])
            history.params["doctor_rows"] = doctor_rows(len(Xa) * len(history.epochs))
            found = run_diagnosis(history, model, X_doctor, max_samples=history.params["doctor_rows"]) \
                if diagnose and data_parallel.is_root(model) else []
        for d in found:
            warnings.warn(str(d), FastnetWarning, stacklevel=2)
        return history


def doctor_rows(rows_trained: int) -> int:
    """Rows of the training data the end-of-fit doctor reads: about 1% of the rows this fit
    trained on (its forward pass then costs ~0.3% of the training's), at least 500 (the
    statistics need them) and at most 2000."""
    return int(min(2000, max(500, rows_trained // 100)))


def partial_fit(model: Network, X: ArrayLike, y: ArrayLike, **kwargs: Any) -> History:
    """One epoch over ``(X, y)``, continuing from the current state: ``fit(X, y, epochs=1, ...)``
    (without the end-of-fit diagnosis unless ``diagnose=True`` is given)."""
    kwargs.setdefault("epochs", 1)
    kwargs.setdefault("diagnose", False)  # one epoch says little, and a loop of calls would repeat it
    kwargs.setdefault("verbose", 0)  # silent, as scikit-learn's partial_fit: a loop of calls would print a line each
    return fit(model, X, y, **kwargs)


@contextlib.contextmanager
def _exclusive_training(model):
    """One ``fit`` at a time on a model: a second one, from another thread, is refused."""
    if not model._training.acquire(blocking=False):
        raise RuntimeError(
            "fit is already running on this model in another thread: a model trains in one "
            "thread at a time (predict, predict_proba and evaluate are safe from any number "
            "of threads; train copies made with model.clone() in parallel instead)")
    try:
        yield
    finally:
        model._training.release()


@contextlib.contextmanager
def _data_parallel(model, run):
    """``fastnet.train.distributed.running(model)``: the data-parallel step of this fit (read by
    checkpoints and callbacks: only rank 0 writes), else None; the backend's dropout row
    offset put back to 0 at the end."""
    try:
        with data_parallel.stepping(model, run):
            yield
    finally:
        model.backend_.dropout_row = 0


def _select_optimizer(model, optimizer, lr, weight_decay):
    current = model.optimizer_
    if isinstance(optimizer, Optimizer):
        return get_optimizer(optimizer, lr, weight_decay)
    keep = (
        current is not None
        and optimizer == current.name
        and (lr is None or float(lr) == current.lr)
        and (weight_decay is None or float(weight_decay) == current.weight_decay)
    )
    return current if keep else get_optimizer(optimizer, lr, weight_decay)


def _split_validation(model, X, y, validation_data, validation_split):
    if validation_data is not None and validation_split:
        raise ValueError("give either validation_data or validation_split, not both")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(
                f"validation_data must be a pair (X_val, y_val), got {type(validation_data).__name__}"
            )
        Xv = validation.check_X(validation_data[0], X.shape[1], "validation_data[0]", dtype=model.backend_.dtype)
        yv = model._prepare_y(validation_data[1], "validation_data[1]", classes=getattr(model, "_fit_classes", None))
        validation.check_lengths(Xv, yv, "validation_data[1]")
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


@dataclass
class _Settings:
    """What one ``fit`` call asked for, after its checks."""
    epochs: int
    batch_size: int | None
    schedule: Schedule
    callbacks: list
    shuffle: bool
    verbose: int | str
    on_nan: str
    parallel: Any = None   # the data-parallel step (fastnet.train.distributed), or one process
    stop: Any = None       # the SIGINT/SIGTERM watch (fastnet.train.interrupt.StopSignals)
    augment: Any = None    # this fit's augmentation (fastnet.Augment._start), or None


@dataclass
class _Run:
    """One fit's state while it trains: the data on the device, the batch geometry, the
    per-step buffers, the history being written, the thread tuner and the settings.  The
    model keeps its parameters and optimizer; everything here ends with the fit."""
    settings: _Settings
    Xd: Any
    Yd: Any
    Xv: Any
    Yv: Any
    n: int           # training rows (this call's, all ranks')
    bs: int          # the global batch: every rank's rows of one step
    steps: int
    step_losses: Any  # per-step loss sums and correct counts, on the device
    step_correct: Any
    guard: _GoodState
    history: History
    step_callbacks: list = field(default_factory=list)
    weighting: Any = None  # (weights (n, 1), a batch's buffer (bs, 1)) of sample weights, or None
    tuner: Any = field(default_factory=NoTuner)
    #: An untrained model's first batch: the sum of its rows' squared losses (one float64 on the
    #: device, written at the first step), for the standard error of the loss before training.
    first_squares: Any = None


def _fit_loop(model, X, y, val, weights, settings):
    xp = model.backend_.xp
    parallel = settings.parallel = settings.parallel or data_parallel.Single()
    n = len(X)
    # bs: the global batch (all ranks'); each rank works on at most `rank_rows` of its rows
    bs = n if settings.batch_size is None else min(settings.batch_size * parallel.size, n)
    rank_rows = -(-bs // parallel.size)
    model._ensure_workspace(rank_rows)
    Xd, Yd = model._to_device(X, y)
    # Sample weights (mean 1) as a column, and a buffer for a batch's: rows of the loss and
    # of its gradient are scaled by them.
    weighting = None
    if weights is not None:
        weighting = (model.backend_.asarray(weights[:, None], dtype=model.backend_.dtype),
                     xp.empty((rank_rows, 1), dtype=model.backend_.dtype))
    Xv, Yv = model._to_device(*val) if val is not None else (None, None)
    steps = -(-n // bs)
    history = History()
    history.params = {"batch_size": bs, "n_samples": n, "steps": steps, "epochs": settings.epochs,
                      "optimizer": model.optimizer_.name, "lr": model.optimizer_.lr}
    if parallel.comm is not None:
        history.params["distributed"] = {"ranks": parallel.size, "rank": parallel.comm.rank,
                                         "collective": parallel.comm.name, "batch_size_per_rank": rank_rows}
    run = _Run(settings, Xd, Yd, Xv, Yv, n, bs, steps, xp.zeros(steps, dtype=np.float64),
               xp.zeros(steps, dtype=np.int64), _GoodState(model), history,
               [cb for cb in settings.callbacks if calls_on_step_end(cb)], weighting)
    if model.n_iter_ == 0:  # (an untrained model: its first batch's loss is the loss before training)
        run.first_squares = xp.zeros(1, dtype=np.float64)
    model.history_.params = history.params
    model.stop_training = False
    for cb in settings.callbacks:
        cb.on_train_begin(model)
    # the float32 GEMMs' library by measurement on this step's shapes with the optimizer's update
    # (fastnet.backends.gemm_choice), then
    # its threads by measurement (fastnet.backends.threads), continuing the last run of the same step
    gemm = model.backend_.choose_gemm(rank_rows, [a.shape for _, a in model.parameters()], parallel.comm,
                                      model.optimizer_)
    if gemm is not None:
        history.params["gemm"] = gemm
    run.tuner = model.backend_.thread_tuner((bs, tuple(a.shape for _, a in model.parameters())),
                                            ranks=None if parallel.comm is None else parallel.comm.local_size)
    try:
        _epochs(model, run)
    finally:
        run.tuner.close()
        history.params["threads"] = run.tuner.summary()
    for cb in settings.callbacks:
        cb.on_train_end(model)
    return history


def _epochs(model, run):
    settings, history, stop = run.settings, run.history, run.settings.stop
    n, bs, steps = run.n, run.bs, run.steps
    for _ in range(settings.epochs):
        epoch = model.n_iter_
        t0 = time.perf_counter()
        run.guard.save()
        for cb in settings.callbacks:
            cb.on_epoch_begin(model, epoch + 1, {})
        progress = EpochProgress(epoch + 1, settings.schedule.total_epochs, steps,
                                 enabled=bool(settings.verbose) and data_parallel.is_root(model),
                                 show_bar=settings.verbose == 1)
        t_steps = time.perf_counter()
        with model.backend_.steps_round():  # (bf16: a step's rounded weights kept for the next one only here)
            lr = _train_epoch(model, run, epoch, progress)
        if stop is not None and stop.undone is not None:  # interrupted mid-epoch: the epoch is undone
            progress.abandon()
            run.guard.restore()
            model.backend_.set_rng_state(run.guard.rng)
            break
        # the steps alone (with the epoch's permutation): the rest of fit is its fixed cost
        history.params["step_seconds"] = history.params.get("step_seconds", 0.0) + time.perf_counter() - t_steps
        # The epoch's one read from the device: per-step losses and correct counts.
        # (data-parallel: summed over the ranks)
        host_losses = model.backend_.to_host(run.step_losses)
        first = run.first_squares is not None and "initial_loss" not in history.params
        if first:  # (the first batch's squares, summed over the ranks with the step losses)
            host_losses = np.append(host_losses, model.backend_.to_host(run.first_squares))
        host_losses, host_correct = settings.parallel.reduce_epoch(host_losses,
                                                                   model.backend_.to_host(run.step_correct))
        if first:
            host_losses, squares = host_losses[:steps], float(host_losses[steps])
        loss = float(host_losses.sum()) * model.loss_.scale(n, model.n_outputs_)
        correct = int(host_correct.sum())
        if first:
            history.params.update(_loss_before_training(model, float(host_losses[0]), squares, min(bs, n), n))
            history.params["initial_epoch"] = epoch + 1  # the epoch whose first batch that was
        # (each step's loss is taken before its update: the epoch's last updates can overflow the
        # weights while every loss is finite, so the weights are checked too)
        finite = np.isfinite(loss) and _params_finite(model)
        if not finite:
            progress.close({"loss": loss}, n)
            if history.diverged is None:  # the first divergence (on_nan="ignore" trains on)
                history.diverged = model.history_.diverged = {
                    "epoch": epoch + 1, "loss": loss, "step": _first_bad_step(host_losses, steps)}
            if _diverged(model, loss, host_losses, epoch, steps, run.guard, settings.on_nan):
                break
        logs = {"loss": loss}
        if model.loss_.is_classifier:
            logs["accuracy"] = correct / model._accuracy_denominator(n)
        if run.Xv is not None:
            # (on the training GEMMs' thread pool: a switch to NumPy's BLAS and back slows the next steps)
            logs.update({f"val_{k}": v for k, v in
                         model._evaluate_device(run.Xv, run.Yv, model.backend_.evaluation_matmul()).items()})
        logs["lr"] = lr
        logs["seconds"] = time.perf_counter() - t0
        history.append(epoch + 1, logs)
        model.history_.append(epoch + 1, logs)
        if finite:
            progress.close(logs, n)
        for cb in settings.callbacks:
            cb.on_epoch_end(model, epoch + 1, logs)
        if model.stop_training or (stop is not None and stop.signum is not None):
            break


def _params_finite(model) -> bool:
    """Whether every parameter is finite: a float64 sum per array on the device (NaN and inf
    propagate), read back at once."""
    b = model.backend_
    sums = [b.xp.sum(a, dtype=np.float64) for layer in model.layers for _, a in layer.params()]
    return not sums or bool(np.isfinite(b.to_host(b.xp.stack(sums)).sum()))


def _loss_before_training(model, total, squares, m, n):
    """``initial_loss``: the loss before training, estimated from the first batch's ``m`` row losses
    (their sum ``total``, the sum of their squares ``squares``; taken before the first update) on the
    scale of an epoch's loss over the ``n`` rows (the mean row's loss times the rows' factor: the same
    as the batch's own loss for the mean losses, ``n / m`` times it for ``"sse"``, a sum); and
    ``initial_loss_se``, its standard error: the rows' spread over ``sqrt(m)``, for ``m`` of ``n``
    rows drawn without replacement (0 when the batch is every row).

    Only of an untrained model: a trained one's batches differ far more from their mean than a
    fresh one's do (measured: 0.14 against an epoch's 0.20 on MNIST), so in a fit that continues
    training one batch says nothing of the epoch before it.  The doctor's bar for the first epoch
    is 1.2x it plus two standard errors: the first 32 rows of a 120-row set measured 1.10 (standard
    error 0.084) where the whole set's loss was 1.345, so one batch alone can look 1.2x better."""
    factor = model.loss_.scale(n, model.n_outputs_) * n  # an epoch's loss = factor * its mean row loss
    mean = total / m
    variance = max(squares - total * mean, 0.0) / (m - 1) if m > 1 else 0.0
    se = math.sqrt(variance / m * (n - m) / (n - 1)) if n > 1 else 0.0
    return {"initial_loss": mean * factor, "initial_loss_se": se * factor}


def _first_bad_step(step_losses, steps):
    """The first step whose loss is not finite; the epoch's last step when all are (the weights
    overflowed in its last updates)."""
    bad = ~np.isfinite(step_losses)
    return int(np.argmax(bad)) + 1 if bad.any() else steps


def _diverged(model, loss, step_losses, epoch, steps, guard, on_nan):
    """Handle a non-finite epoch loss or weights; True when training must stop."""
    if on_nan == "ignore":
        return False
    step = _first_bad_step(step_losses, steps)
    guard.restore()
    where = f"epoch {epoch + 1}, step {step} of {steps}"
    what = (f"the training loss became {loss}" if not np.isfinite(loss) else
            f"the weights became infinite or NaN (the loss, {loss:.3g}, was still finite)")
    msg = (f"{what} at {where}; the weights and optimizer state were "
           f"restored to the end of epoch {epoch} ({'the initial weights' if epoch == 0 else 'last good epoch'}). "
           f"Usual causes: a learning rate too high (lr={model.optimizer_.lr}), unscaled inputs, "
           "or an exploding gradient")
    if on_nan == "raise":
        raise TrainingDivergedError(msg, epoch=epoch + 1, step=step)
    warnings.warn(msg, RuntimeWarning, stacklevel=4)
    return True


def _loss_scaler(model):
    """``precision="fp16"``: the model's dynamic loss scaler (made at its first fit, kept
    across fits and in checkpoints), else None."""
    if model.backend_.precision != "fp16":
        return None
    if getattr(model, "loss_scaler_", None) is None:
        from fastnet.backends.precision import LossScaler

        model.loss_scaler_ = LossScaler()
    return model.loss_scaler_


def _train_epoch(model, run, epoch, progress):
    """One epoch of ``run`` (a :class:`_Run`); the step losses and correct counts stay on the
    device, in ``run.step_losses[step]`` and ``run.step_correct[step]`` (written with ``out=``).
    The data-parallel step (:mod:`fastnet.train.distributed`) gives this process its share of
    each global batch of ``run.bs`` rows and sums the gradients.  After a signal
    (:class:`~fastnet.train.interrupt.StopSignals`) the epoch ends at the next step boundary,
    ``stop.undone`` set to ``(epoch, steps done, steps)``."""
    b = model.backend_
    xp = b.xp
    settings = run.settings
    Xd, Yd, n, bs, steps = run.Xd, run.Yd, run.n, run.bs, run.steps
    step_losses, step_correct, weighting, tuner = run.step_losses, run.step_correct, run.weighting, run.tuner
    first_squares = run.first_squares if "initial_loss" not in run.history.params else None
    schedule, stop, parallel = settings.schedule, settings.stop, settings.parallel
    order = b.permutation(n) if settings.shuffle else None
    augment = settings.augment  # fit(augment=...): this epoch's distortions
    if augment is not None:
        augment.new_epoch()
    classify = model.loss_.is_classifier
    base_lr = model.optimizer_.lr
    lr = base_lr
    scaler = _loss_scaler(model)
    tuner.mark()
    for step in range(steps):
        # the global batch [step * bs, + m); this process's rows of it: [start, + mr)
        m = min(bs, n - step * bs)
        start, mr = parallel.rows(step * bs, m)
        b.dropout_row = start - step * bs
        wb = None
        if order is None:
            xb, yb = Xd[start:start + mr], Yd[start:start + mr]
            if weighting is not None:
                wb = weighting[0][start:start + mr]
        else:
            idx = order[start:start + mr]
            xb = b.gather(Xd, idx, model._xb[:mr])
            yb = b.gather(Yd, idx, model._yb[:mr])
            if weighting is not None:
                wb = b.gather(weighting[0], idx, weighting[1][:mr])
        if augment is not None:  # the batch's images, each distorted, into the augmentation buffer
            xb = augment.apply(xb, start, mr)
        lr = schedule(epoch + step / steps, base_lr)
        out = model._forward(xb, True)
        rows = model._loss_rows[:mr]
        grad = model._grad[:mr]
        if mr:  # (a rank can get no rows of a last batch smaller than the rank count)
            model.loss_(out, yb, rows, grad)
        if wb is not None:  # each row's loss and gradient times its weight
            xp.multiply(grad, wb, out=grad)
            xp.multiply(rows, wb.reshape(mr), out=rows)
        # The batch loss, accumulated in float64 straight into its slot: one reduction kernel on a
        # GPU.  (A whole-array sum, rows.sum(out=...), goes through CuPy's CUB routine there: a
        # float32 sum into a temporary, a pool workspace, then a second kernel casting it into the
        # slot; summed as a column with dtype= it takes neither CUB path.  NumPy: the same bits.)
        rows.reshape(mr, 1).sum(axis=0, dtype=np.float64, out=step_losses[step:step + 1])
        if step == 0 and first_squares is not None:  # (an untrained model's first batch)
            xp.square(rows, dtype=np.float64).reshape(mr, 1).sum(axis=0, out=first_squares)
        if classify:
            model._correct(out, yb, step_correct[step:step + 1])
        if scaler is not None:  # fp16: the loss gradient scaled up, out of float16's underflow
            scaler.scale_loss_gradient(xp, grad)
        model._backward(grad)
        parallel.reduce_gradients(model, m, mr)  # data-parallel: the global batch's gradient on every rank
        if scaler is None or scaler.unscale(xp, model._grad_flat):  # (fp16: a step that overflowed is skipped)
            model.optimizer_.step(lr)
        tuner.step_done(m == bs)
        progress.update(step + 1)
        for cb in run.step_callbacks:
            cb.on_step_end(model, epoch + 1, step + 1)
        if run.step_callbacks:  # (a callback may have changed the weights: rounded again)
            b.forget_rounded()
        if stop is not None and stop.signum is not None and step + 1 < steps:
            stop.undone = (epoch + 1, step + 1, steps)
            break
    return lr

"""Hyper-parameter sweeps of fastnet models on Ray Tune.

Needs Ray Tune (``pip install '.[ray]'``, which is ``ray[tune]``); ``import
fastnet`` never imports Ray, and importing this module without it raises an
``ImportError`` that says what to install.

:func:`trainable` is a Ray Tune function trainable: it builds a
:class:`fastnet.MLP` from the trial's config, trains it with ``fit`` and, at the end
of every epoch (a fastnet :class:`~fastnet.Callback`), reports the epoch's
validation metrics with a checkpoint to Tune, so that a scheduler such as ASHA
can stop a poor trial after any epoch.  When Tune restores a trial (after a
failure, or a paused trial resumed), it continues from the last checkpoint:
weights, optimizer state, random state and epoch count, bit for bit.
:func:`run_sweep` runs a whole sweep and returns the best config and a table::

    from ray import tune
    from fastnet.integrations.tune import run_sweep

    sweep = run_sweep({"lr": tune.grid_search([1e-3, 3e-3]), "width": tune.grid_search([64, 256]),
                       "epochs": 6}, scheduler="asha")
    print(sweep.markdown())
    print(sweep.best_config)
    model = sweep.best_model()          # the best trial's last checkpoint, as a fastnet model

Config keys (all optional; :data:`DEFAULTS` has the defaults)
-------------------------------------------------------------
lr
    Base learning rate.
width, depth
    ``depth`` hidden layers of ``width`` units each; or ``hidden``, a list of
    hidden sizes (give one or the other).
activation, dropout
    Of the hidden layers.
optimizer
    A name of ``fastnet.core.optimizers.OPTIMIZERS`` (``"adam"``, ``"sgd"``...).
schedule
    ``fit``'s ``lr_schedule`` names: ``"constant"``, ``"step"``,
    ``"exponential"``, ``"cosine"``, ``"onecycle"`` (over ``epochs`` in all).
epochs, batch_size, weight_decay, seed, backend
    As in ``fit`` and ``MLP``; ``epochs`` is also ASHA's ``max_t`` in :func:`run_sweep`.
subset
    Train on the first ``subset`` rows of the training data only (CI-sized sweeps).
validation_split
    Fraction of the (subset) training rows held out, the last ones, as the
    validation set whose loss and accuracy are reported (default 0.1).

Data
----
By default each trial loads MNIST's 60,000 training images with
:func:`fastnet.datasets.load_mnist` (from its cache) as float32 rows in [0, 1];
the test set is never used, so a sweep does not choose on it.  Other data
arrives through ``tune.with_parameters(trainable, data=...)`` (which
:func:`run_sweep` does for you): ``(X, y)``, split as above, or ``(X, y,
X_val, y_val)`` with an explicit validation set (``validation_split`` is then
not used).  Classification only: the output layer has one unit per class.

Metrics
-------
Reported after every epoch: ``epoch`` (1-based, counting the epochs of a
restored trial's earlier runs), ``val_loss``, ``val_accuracy`` (on the
validation rows), ``loss``, ``accuracy`` (the training epoch's running means),
``lr`` (the last step's rate) and ``diverged`` (False).  A trial whose training
loss becomes NaN or infinite reports once more, with ``diverged`` True,
``val_loss`` inf and ``val_accuracy`` 0, and ends: schedulers and
``get_best_result`` rank it last instead of the sweep collecting errors.

Threads
-------
A trial's GEMMs use as many threads as the trial has CPUs in Tune
(``cpus_per_trial``, 1 by default): NumPy's BLAS and, where oneDNN loads, oneDNN's
pool (which runs bf16 GEMMs, and float32 ones with ``FASTNET_CPU_GEMM=onednn``:
:mod:`fastnet.backends.precision`); and
``FASTNET_THREADS=fixed`` is set in the
trial's process: fit's thread tuner (:mod:`fastnet.backends.threads`) would otherwise
time its steps against the other trials on the same cores, and pick counts that
differ from run to run; fixed, a trial's result depends on its config and seed
only (on the same machine), so a restored trial continues exactly as an
uninterrupted one.

Checkpoints
-----------
Each report carries a ``ray.tune.Checkpoint`` of a folder holding
:data:`CHECKPOINT_FILE`, a fastnet training checkpoint
(:func:`fastnet.train.checkpoint.save_checkpoint`: an ``.npz`` with a checksum).
:func:`load_model` turns one into a fastnet model.  A trial restored with a
changed config (Population Based Training) continues from the checkpoint's weights;
the optimizer's state carries over only when ``optimizer``, ``lr`` and
``weight_decay`` are unchanged (``fit(resume=...)``'s rule), and a different
architecture is refused with a ``CheckpointError``.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fastnet.backends import threads
from fastnet.core.callbacks import Callback
from fastnet.train.checkpoint import read_checkpoint, restore_checkpoint, save_checkpoint
from fastnet.core.layers import hidden_activations
from fastnet.core.optimizers import OPTIMIZERS
from fastnet.core.schedules import SCHEDULES
from fastnet.core.sequential import MLP, Sequential
from fastnet.core.validation import check_choice, check_int, check_real

# Imported by name: mypy then leaves Ray (a typed package, and a large one) out of
# fastnet's type check, and Ray stays an optional dependency.
try:
    ray = importlib.import_module("ray")
    ray_tune = importlib.import_module("ray.tune")
except ImportError as exc:
    raise ImportError(
        f"fastnet.integrations.tune needs Ray Tune, which is not installed or incomplete ({exc}): "
        "pip install '.[ray]' in fastnet's clone (or: pip install 'ray[tune]')") from exc

__all__ = ["DEFAULTS", "CHECKPOINT_FILE", "trainable", "resolve_config", "split_data", "build_model",
           "load_model", "run_sweep", "Sweep", "markdown_table"]

#: The file inside each Tune checkpoint folder: a fastnet training checkpoint.
CHECKPOINT_FILE = "fastnet-checkpoint.npz"

#: Config defaults: a 784-128-128-10 ReLU net, Adam at 1e-3, 5 epochs of batch 128 on MNIST.
DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "width": 128,
    "depth": 2,
    "activation": "relu",
    "dropout": 0.0,
    "optimizer": "adam",
    "schedule": "constant",
    "epochs": 5,
    "batch_size": 128,
    "weight_decay": 0.0,
    "seed": 0,
    "backend": "cpu",
    "subset": None,
    "validation_split": 0.1,
}
_KEYS = (*DEFAULTS, "hidden")


def _name(key):
    return f"config[{key!r}]"


def _check_hidden(value):
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{_name('hidden')} must be a list of hidden layer sizes, got {value!r}")
    return [check_int(f"{_name('hidden')}[{i}]", units) for i, units in enumerate(value)]


def _check_value(key, value):
    """``config[key]`` checked and normalised; errors name the key and the value."""
    name = _name(key)
    if key == "lr":
        return check_real(name, value, low=0, low_open=True)
    if key == "width":
        return check_int(name, value)
    if key == "depth":
        return check_int(name, value, minimum=0)
    if key == "hidden":
        return _check_hidden(value)
    if key == "activation":
        return check_choice(name, value, hidden_activations())
    if key == "dropout":
        return check_real(name, value, low=0, high=1, high_open=True)
    if key == "optimizer":
        return check_choice(name, value, tuple(OPTIMIZERS))
    if key == "schedule":
        return check_choice(name, value, tuple(SCHEDULES))
    if key == "epochs":
        return check_int(name, value)
    if key == "batch_size":
        return check_int(name, value, allow_none=True)
    if key == "weight_decay":
        return check_real(name, value, low=0)
    if key == "seed":
        return check_int(name, value, minimum=0)
    if key == "backend":
        from fastnet.backends.devices import backend_names

        return check_choice(name, value, backend_names())
    if key == "subset":
        return check_int(name, value, allow_none=True)
    if key == "validation_split":
        return check_real(name, value, low=0, high=1, low_open=True, high_open=True)
    raise KeyError(key)


def _check_keys(keys):
    unknown = sorted(str(k) for k in keys if k not in _KEYS)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}: fastnet.integrations.tune.trainable takes {list(_KEYS)}")
    if "hidden" in keys and ("width" in keys or "depth" in keys):
        raise ValueError("give config['hidden'] (a list of hidden sizes) or config['width'] and config['depth'], "
                         "not both")


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's settings: ``config`` checked, with :data:`DEFAULTS` for what it leaves out
    and ``hidden`` (the list of hidden sizes) from ``width`` and ``depth`` unless given.

    Raises ``ValueError``/``TypeError`` naming the key and value, e.g.
    ``config['lr'] must be > 0, got -0.1``, or listing unknown keys."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    _check_keys(config)
    settings = dict(DEFAULTS)
    settings.update({key: _check_value(key, value) for key, value in config.items()})
    if "hidden" not in config:
        settings["hidden"] = [settings["width"]] * settings["depth"]
    return settings


def _mnist_train():
    from fastnet.datasets import load_mnist

    (x, y), _ = load_mnist()
    return x.reshape(len(x), -1).astype(np.float32) / np.float32(255.0), y


def split_data(config: Mapping[str, Any], data: Sequence[Any] | None = None):
    """``((X, y), (X_val, y_val))``: the training and validation rows a trial with ``config`` uses.

    ``data``: None (MNIST's training set), ``(X, y)`` or ``(X, y, X_val, y_val)``; see
    the module's docstring.  With a trial's config, it gives the validation rows to
    evaluate that trial's checkpoints on."""
    s = resolve_config(config)
    if data is None:
        X, y = _mnist_train()
        explicit = None
    elif isinstance(data, (tuple, list)) and len(data) in (2, 4):
        X, y = np.asarray(data[0]), np.asarray(data[1])
        explicit = (np.asarray(data[2]), np.asarray(data[3])) if len(data) == 4 else None
    else:
        raise ValueError("data must be None (MNIST), (X, y) or (X, y, X_val, y_val), "
                         f"got a {type(data).__name__}" + (f" of {len(data)}" if hasattr(data, "__len__") else ""))
    if len(X) != len(y):
        raise ValueError(f"data: X has {len(X)} rows but y has {len(y)}")
    if s["subset"] is not None:
        if s["subset"] > len(X):
            raise ValueError(f"{_name('subset')}={s['subset']} is more than the {len(X)} training rows")
        X, y = X[:s["subset"]], y[:s["subset"]]
    if explicit is not None:
        return (X, y), explicit
    n_val = int(round(len(X) * s["validation_split"]))
    if n_val < 1 or n_val >= len(X):
        raise ValueError(f"{_name('validation_split')}={s['validation_split']!r} leaves {n_val} validation rows "
                         f"of {len(X)}")
    return (X[:-n_val], y[:-n_val]), (X[-n_val:], y[-n_val:])


def build_model(config: Mapping[str, Any], n_features: int, n_classes: int) -> MLP:
    """The untrained :class:`fastnet.MLP` of ``config``: ``n_features`` inputs, its hidden
    layers, a softmax output of ``n_classes`` units."""
    s = resolve_config(config)
    return MLP([n_features, *s["hidden"], n_classes], activation=s["activation"], dropout=s["dropout"],
               backend=s["backend"], seed=s["seed"])


def _n_classes(y, y_val):
    if y.ndim == 2:  # one-hot rows
        return y.shape[1]
    labels = np.unique(np.concatenate([y, y_val]))
    if labels.dtype.kind in "iu" and labels[0] >= 0:  # class ids: a subset may lack some of them
        return max(len(labels), int(labels[-1]) + 1)
    return len(labels)


def _pin_blas_threads():
    """In a Tune trial: the GEMMs' threads = the trial's CPUs, and fit's thread tuner off
    (the module's docstring says why).  Called outside a trial, it changes nothing."""
    try:
        with warnings.catch_warnings():  # outside a trial Tune warns that there is no session
            warnings.simplefilter("ignore")
            resources = ray_tune.get_context().get_trial_resources()
    except Exception:  # no Tune session: leave this process's settings alone
        return
    if resources is None:  # outside a trial, Tune warns and returns None
        return
    os.environ[threads.ENV] = "fixed"
    cpus = resources.required_resources.get("CPU")
    threads.set_gemm_threads(max(1, int(cpus or 1)))


class _Report(Callback):
    """After each epoch: a fastnet checkpoint in a fresh folder, reported to Tune with the metrics."""

    def __init__(self, folder):
        self.folder = folder

    def on_epoch_end(self, model, epoch, logs):
        metrics = {"epoch": epoch, "val_loss": logs["val_loss"], "val_accuracy": logs["val_accuracy"],
                   "loss": logs["loss"], "accuracy": logs.get("accuracy"), "lr": logs["lr"], "diverged": False}
        folder = os.path.join(self.folder, f"epoch-{epoch}")
        os.makedirs(folder)
        save_checkpoint(model, os.path.join(folder, CHECKPOINT_FILE))
        # Tune copies the folder to the trial's storage before report returns.
        ray_tune.report(metrics, checkpoint=ray_tune.Checkpoint.from_directory(folder))
        shutil.rmtree(folder, ignore_errors=True)


def trainable(config: Mapping[str, Any], data: Sequence[Any] | None = None,
              callbacks: Sequence[Callback] | None = None) -> None:
    """Ray Tune function trainable: train the MLP of ``config``, reporting every epoch.

    Parameters
    ----------
    config : dict
        The trial's config; keys in the module's docstring, defaults in :data:`DEFAULTS`.
    data : tuple, optional
        ``(X, y)`` or ``(X, y, X_val, y_val)``; None trains on MNIST.  Pass it with
        ``tune.with_parameters(trainable, data=...)`` (Ray's object store carries it
        to the trials once, not once per trial).
    callbacks : list of fastnet Callback, optional
        More callbacks for ``fit``, called after the one that reports to Tune.

    Use: ``tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space=...)``,
    or :func:`run_sweep`.
    """
    settings = resolve_config(config)
    (X, y), (X_val, y_val) = split_data(config, data)
    _pin_blas_threads()
    model = build_model(config, X.reshape(len(X), -1).shape[1], _n_classes(np.asarray(y), np.asarray(y_val)))
    with tempfile.TemporaryDirectory(prefix="fastnet-tune-") as work:
        resume = None
        checkpoint = ray_tune.get_checkpoint()
        if checkpoint is not None:  # Tune restores this trial: continue from its last report
            resume = os.path.join(work, "resume.npz")
            with checkpoint.as_directory() as folder:
                shutil.copyfile(os.path.join(folder, CHECKPOINT_FILE), resume)
        with warnings.catch_warnings():
            # on_nan="restore" warns when the loss diverges; the report below says it to Tune
            warnings.filterwarnings("ignore", message="the training loss became", category=RuntimeWarning)
            model.fit(X, y, epochs=settings["epochs"], batch_size=settings["batch_size"],
                      optimizer=settings["optimizer"], lr=settings["lr"], lr_schedule=settings["schedule"],
                      weight_decay=settings["weight_decay"], validation_data=(X_val, y_val),
                      callbacks=[_Report(work), *(callbacks or [])], on_nan="restore", resume=resume,
                      # a scheduler such as PBT restores a checkpoint into a trial whose lr or
                      # weight decay it has changed on purpose: continue it, warning what changed
                      resume_strict=False, diagnose=False, verbose=0)
        diverged = model.history_.diverged
        if diverged is not None:
            ray_tune.report({"epoch": diverged["epoch"], "val_loss": math.inf, "val_accuracy": 0.0,
                             "loss": diverged["loss"], "accuracy": None, "lr": settings["lr"], "diverged": True})


def load_model(checkpoint: Any, backend: str = "cpu") -> Sequential:
    """The fastnet model in a checkpoint reported by :func:`trainable` (a ``ray.tune.Checkpoint``
    or the path of its folder): weights, optimizer state and history, ready to predict or to
    train on (``model.n_iter_`` is the epoch it was reported at)."""
    context = checkpoint.as_directory() if hasattr(checkpoint, "as_directory") else _folder(checkpoint)
    with context as folder:
        path = os.path.join(folder, CHECKPOINT_FILE)
        meta, _ = read_checkpoint(path)
        model = MLP.from_config(meta["config"], backend=backend)
        restore_checkpoint(model, path)
    return model


class _folder:
    def __init__(self, path):
        self.path = os.fspath(path)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- sweeps
def _is_grid(value):
    return isinstance(value, dict) and set(value) == {"grid_search"}


def _is_search_space(value):
    return _is_grid(value) or type(value).__module__.startswith("ray.tune.search")


def _check_space(param_space):
    """Fixed values and grid values of ``param_space`` checked before any trial starts."""
    if not isinstance(param_space, Mapping):
        raise TypeError(f"param_space must be a dict, got {type(param_space).__name__}")
    _check_keys(param_space)
    for key, value in param_space.items():
        if _is_grid(value):
            for v in value["grid_search"]:
                _check_value(key, v)
        elif not _is_search_space(value):
            _check_value(key, value)


def _max_epochs(param_space):
    epochs = param_space.get("epochs", DEFAULTS["epochs"])
    if _is_grid(epochs):
        return max(epochs["grid_search"])
    if _is_search_space(epochs):
        raise ValueError("param_space['epochs'] must be a number or a grid_search for ASHA (its max_t), "
                         f"got {epochs!r}")
    return epochs


def _scheduler(scheduler, epochs, grace_period, reduction_factor):
    if scheduler is None or scheduler == "fifo":
        return None
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        if not 1 <= grace_period <= epochs:
            raise ValueError(f"grace_period must be in [1, epochs={epochs}], got {grace_period!r}")
        if not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor!r}")
        return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=grace_period,
                             reduction_factor=reduction_factor)
    if isinstance(scheduler, str):
        raise ValueError(f"scheduler must be 'asha', 'fifo', None or a Tune scheduler, got {scheduler!r}")
    return scheduler


@dataclasses.dataclass
class Sweep:
    """What :func:`run_sweep` returns.

    Attributes
    ----------
    best_config : dict
        The best trial's config (as Tune gave it: the keys of ``param_space``); the
        best has the best last-reported ``metric``, ties broken by ``val_loss``.
    best_metrics : dict
        Its last reported metrics (``val_accuracy``, ``val_loss``, ``epoch``...).
    best_checkpoint : ray.tune.Checkpoint
        Its last checkpoint (:func:`load_model` or :meth:`best_model` reads it).
    table : list of dict
        One row per trial, best first: the swept keys, ``epochs_run`` (the last epoch reported),
        ``stopped_early`` (fewer epochs than its config asked for: the scheduler
        stopped it), ``val_accuracy`` and ``val_loss`` (last reported),
        ``seconds`` and ``status``.
    results : ray.tune.ResultGrid
        Everything Tune recorded (``results[i].metrics_dataframe`` has a trial's epochs).
    seconds : float
        Wall time of the sweep.
    """

    best_config: dict[str, Any]
    best_metrics: dict[str, Any]
    best_checkpoint: Any
    table: list[dict[str, Any]]
    results: Any
    seconds: float

    def best_model(self, backend: str = "cpu") -> Sequential:
        """The best trial's model, from its last checkpoint."""
        return load_model(self.best_checkpoint, backend=backend)

    def markdown(self, digits: int = 4) -> str:
        """:attr:`table` as a Markdown table."""
        return markdown_table(self.table, digits=digits)


def markdown_table(rows: Sequence[Mapping[str, Any]], digits: int = 4) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys); floats to ``digits`` significant digits."""
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def _finite(value):
    return isinstance(value, numbers.Real) and math.isfinite(value)


def _ranked(results, metric, mode):
    """The results best first: by the last reported ``metric``; ties by the lower ``val_loss``
    (the higher ``val_accuracy`` when ranking by ``val_loss``); trials without a finite
    ``metric`` (divergence) after those, and trials that ended in ERROR last, whatever they
    reported before the error (their last checkpoint is not a finished trial's)."""
    sign = -1.0 if mode == "max" else 1.0
    tie, tie_sign = ("val_accuracy", -1.0) if metric == "val_loss" else ("val_loss", 1.0)

    def key(result):
        m = result.metrics or {}
        value, second = m.get(metric), m.get(tie)
        return (result.error is not None, not _finite(value), sign * value if _finite(value) else 0.0,
                tie_sign * second if _finite(second) else math.inf)

    return sorted(results, key=key)


def _row(result, swept):
    config = result.config or {}
    metrics = result.metrics or {}
    epochs_asked = resolve_config({k: v for k, v in config.items() if k in _KEYS})["epochs"]
    epoch = metrics.get("epoch")
    row = {key: (list(config[key]) if isinstance(config.get(key), (list, tuple)) else config.get(key))
           for key in swept}
    row.update({
        "epochs_run": epoch,
        "stopped_early": bool(epoch is not None and epoch < epochs_asked and not metrics.get("diverged")),
        "val_accuracy": metrics.get("val_accuracy"),
        "val_loss": metrics.get("val_loss"),
        "seconds": metrics.get("time_total_s"),
        "status": "ERROR" if result.error else ("DIVERGED" if metrics.get("diverged") else "OK"),
    })
    return row


def run_sweep(param_space: Mapping[str, Any], num_samples: int = 1, *, data: Sequence[Any] | None = None,
              scheduler: Any = "asha", metric: str = "val_accuracy", mode: str = "max", grace_period: int = 1,
              reduction_factor: float = 2, cpus_per_trial: float = 1, num_cpus: int | None = None,
              max_concurrent_trials: int | None = None, storage_path: str | os.PathLike[str] | None = None,
              name: str | None = None, keep_checkpoints: int = 1, max_failures: int = 0,
              callbacks: Sequence[Callback] | None = None, verbose: int = 1) -> Sweep:
    """Run a Tune sweep of :func:`trainable` and return the best config and a table.

    Parameters
    ----------
    param_space : dict
        Config keys (the module's docstring) to values or Tune search spaces
        (``tune.grid_search([...])``, ``tune.loguniform(...)``...).  Fixed values and
        grid values are checked before Ray starts.
    num_samples : int
        Tune's: samples of the space (each grid point ``num_samples`` times).
    data : tuple, optional
        ``(X, y)`` or ``(X, y, X_val, y_val)`` for every trial (through Ray's object
        store); default MNIST's training set (loaded once here first, so that the
        trials find it in the cache).
    scheduler : "asha", "fifo", None or a Tune scheduler
        ``"asha"``: ``ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period,
        reduction_factor)``.  At its rungs, epochs ``grace_period * reduction_factor**k``,
        it stops a trial whose ``metric`` there is worse than the ``1 - 1/reduction_factor``
        quantile of those the trials before it had there (with 2: worse than their
        median), so about ``1/reduction_factor`` of the trials go on past each rung.
        ``"fifo"`` or None: every trial runs all its epochs.  A scheduler instance must
        not set ``metric`` and ``mode`` itself (Tune takes them from here).
    metric, mode : str
        What schedulers see and trials are ranked by; default the highest
        last-reported ``val_accuracy`` (ties: the lower ``val_loss``).
    grace_period, reduction_factor
        ASHA's: the first rung (epochs) and the rungs' ratio.
    cpus_per_trial : float
        Tune resources of a trial (its BLAS threads; see the module's docstring).
    num_cpus : int, optional
        CPUs of the local Ray started here when none is running (default: all).
        A running Ray (``ray.init`` called before) is used as it is, and left running.
    max_concurrent_trials : int, optional
        Default: as many as the CPUs allow.
    storage_path, name : optional
        Where Tune writes results and checkpoints (default ``~/ray_results``) and the
        experiment's folder name.
    keep_checkpoints : int
        Checkpoints kept per trial, the latest ones.
    max_failures : int
        Restarts of a failed trial, each from its last checkpoint.
    callbacks : list of fastnet Callback, optional
        Passed to every trial's ``fit`` (they must pickle).
    verbose : int
        Tune's progress output (0 silent, 1 status updates, 2 trial results).

    Returns
    -------
    Sweep
        ``best_config``, ``best_metrics``, ``best_checkpoint``, ``table`` (and
        ``markdown()``), ``results`` (Tune's ResultGrid), ``seconds``.

    Raises
    ------
    RuntimeError
        When no trial reported a finite ``metric`` (the trials' errors are in the message).
    """
    import time

    _check_space(param_space)
    num_samples = check_int("num_samples", num_samples)
    check_choice("mode", mode, ("min", "max"))
    epochs = _max_epochs(param_space)
    sched = _scheduler(scheduler, epochs, grace_period, reduction_factor)
    if not isinstance(cpus_per_trial, numbers.Real) or cpus_per_trial <= 0:
        raise ValueError(f"cpus_per_trial must be > 0, got {cpus_per_trial!r}")
    if data is None:
        from fastnet.datasets import load_mnist

        load_mnist()  # fetched into the cache once, before trials read it at the same time
    # keep_checkpoints makes Tune save its experiment state at each checkpoint (a few ms on a
    # local disk), and warn every few seconds that it does: the warning is off unless set.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = False
    if not ray.is_initialized():
        # the trials' own log lines ("Checkpoint successfully created", each epoch) at verbose=2 only
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=verbose >= 2,
                 logging_level="INFO" if verbose > 0 else "WARNING")
        started = True
    t0 = time.perf_counter()
    try:
        fn = ray_tune.with_parameters(trainable, data=data, callbacks=list(callbacks or []))
        tuner = ray_tune.Tuner(
            ray_tune.with_resources(fn, {"cpu": cpus_per_trial}),
            param_space=dict(param_space),
            tune_config=ray_tune.TuneConfig(metric=metric, mode=mode, scheduler=sched, num_samples=num_samples,
                                            max_concurrent_trials=max_concurrent_trials),
            run_config=ray_tune.RunConfig(
                name=name, storage_path=None if storage_path is None else os.fspath(storage_path),
                checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=keep_checkpoints),
                failure_config=ray_tune.FailureConfig(max_failures=max_failures), verbose=verbose))
        results = tuner.fit()
    finally:
        seconds = time.perf_counter() - t0
        if started:
            ray.shutdown()
    reported = [r for r in results if r.metrics and metric in r.metrics]
    if not reported:
        errors = "; ".join(f"{type(r.error).__name__}: {r.error}" for r in results if r.error)
        raise RuntimeError(f"no trial of the sweep reported {metric!r}: {errors or 'no errors recorded'}")
    if results.errors:
        warnings.warn(f"{len(results.errors)} of {len(results)} trials failed; the first: {results.errors[0]}",
                      RuntimeWarning, stacklevel=2)
    ranked = _ranked(results, metric, mode)
    best = ranked[0]
    if best.error is not None:
        raise RuntimeError(f"every trial of the sweep ended in ERROR; the first: {type(best.error).__name__}: "
                           f"{best.error}")
    if not _finite(best.metrics.get(metric)):
        raise RuntimeError(f"no trial of the sweep reported a finite {metric!r} (all diverged?)")
    swept = [k for k in param_space if _is_search_space(param_space[k])]
    return Sweep(best_config=dict(best.config), best_metrics=dict(best.metrics), best_checkpoint=best.checkpoint,
                 table=[_row(r, swept) for r in ranked], results=results, seconds=seconds)

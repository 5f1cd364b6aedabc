"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint is an ``.npz`` archive (read without pickle) holding the model
file's content plus the optimizer state, the device random generator's state,
the history and the run's settings (batch size, training rows).  Two checksums
are stored inside it: ``sha256`` over every array and ``meta_sha256`` over the
metadata (configuration, optimizer, history, random state, ``sha256``), so a
truncated or damaged file is detected.  Reading checks sizes before it takes
memory (:class:`fastnet.core.npzfile.Archive`).  Writes are atomic (temporary file,
fsync, rename), the previous checkpoint is kept as ``<path>.prev``, and one
writer per path is enforced: a fit holds ``<path>.lock`` (``flock``) from before
it resumes until it ends, and a second run on the same path is refused at once.

``fit(..., resume=path)`` (:func:`restore_checkpoint`) is all or nothing: the file,
the model, the data and the fit's settings are all checked before anything
changes, and a checkpoint of another run (another seed, optimizer, learning rate,
weight decay, batch size, dtype or number of training rows) is refused, the
differences named, unless ``resume_strict=False`` says to continue it deliberately.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

import numpy as np

from fastnet.core.callbacks import Callback
from fastnet.train.distributed import is_root, running
from fastnet.core.io import check_classes, check_config, check_entries, finite_or_fail, layers_of
from fastnet.core.npzfile import (FORMAT_VERSION, META_KEY, Archive, ModelFileError, NotAnArchive, array_digest,  # noqa: F401
                      atomic_write, check_target, checksums, encode_meta, json_type, os_reason, verify_checksums,
                      writer_lock)
from fastnet.core.optimizers import Optimizer, get_optimizer
from fastnet.core.validation import check_int

CHECKPOINT_KIND = "fastnet-checkpoint"


class CheckpointError(ModelFileError):
    """A checkpoint is missing, truncated, damaged, another run's, in use by another run, or does
    not fit the model."""


_digest = array_digest  # (its name before fastnet.core.npzfile had it)


def _run_settings(model):
    """What a checkpoint records of the fit writing it, beyond the model: the global batch
    size and the number of training rows (``history_.params``), when a fit set them."""
    params = getattr(model.history_, "params", None) or {}
    return {k: params[k] for k in ("batch_size", "n_samples") if isinstance(params.get(k), int)}


def save_checkpoint(model, path):
    """Write ``model``'s full training state to ``path`` atomically, under its writer lock."""
    path = os.fspath(path)
    arrays = {f"param/{k}": v for k, v in model.get_weights().items()}
    opt = model.optimizer_
    opt_meta = None
    if opt is not None:
        state = opt.get_state()  # host copies
        opt_meta = {"config": state["config"], "t": state["t"], "slots": list(opt.slots)}
        for i, st in enumerate(state["slots"]):
            for slot, a in st.items():
                arrays[f"opt/{i}/{slot}"] = a
    meta = checksums({
        "kind": CHECKPOINT_KIND,
        "format_version": FORMAT_VERSION,
        "config": model.get_config(),
        "optimizer": opt_meta,
        "rng_state": model.backend_.get_rng_state(),
        "history": {"epochs": model.history_.epochs, "history": model.history_.history},
        # the ranks of a data-parallel fit (fastnet.train.distributed), else None
        "distributed": getattr(running(model), "layout", None),
        # precision="fp16": the dynamic loss scale (fastnet.backends.precision.LossScaler), else None
        "loss_scaler": None if getattr(model, "loss_scaler_", None) is None else model.loss_scaler_.get_state(),
        "run": _run_settings(model),
    }, arrays)
    arrays[META_KEY] = encode_meta(meta)
    check_target(path, CheckpointError, "checkpoint")
    with writer_lock(path, CheckpointError, "checkpoint"):
        try:
            atomic_write(path, lambda f: np.savez(f, **arrays), keep_previous=path + ".prev", locked=True)
        except OSError as exc:
            raise CheckpointError(
                f"could not write the checkpoint of epoch {model.n_iter_} to {path!r}: {os_reason(exc)}; "
                f"{_survivor(path)}. The model in memory holds epoch {model.n_iter_} (weights and optimizer "
                f"state): free space and call fit again (resume={path!r} continues from the checkpoint), "
                "or model.save() it elsewhere") from exc


def _last_epoch(path):
    try:
        epochs = read_checkpoint(path)[0]["history"]["epochs"]
    except CheckpointError:
        return None
    return epochs[-1] if epochs else 0


def _survivor(path):
    """Which checkpoint is still good, in words."""
    for candidate in (path, path + ".prev"):
        epoch = _last_epoch(candidate)
        if epoch is not None:
            return f"the last good checkpoint is {candidate!r} (epoch {epoch})"
    return "no earlier checkpoint is readable"


# ------------------------------------------------------------------ reading
def _is_int(value, low=0):
    return type(value) is int and value >= low


def _check_rng_state(state):
    """Raises (TypeError, ValueError, KeyError...) unless ``state`` is one a backend can take:
    tried on scratch generators, never on the model's."""
    scratch = np.random.default_rng()
    if not isinstance(state, dict):
        raise TypeError(f"a JSON {json_type(state)}")
    if "host" in state:
        scratch.bit_generator.state = state["host"]
        if not (_is_int(state.get("dropout_key")) and _is_int(state.get("dropout_counter"))):
            raise ValueError("dropout_key and dropout_counter must be non-negative integers")
        if "augment" in state:
            np.random.default_rng().bit_generator.state = state["augment"]
    else:
        scratch.bit_generator.state = state


def _check_history(history):
    if not isinstance(history, dict) or not isinstance(history.get("epochs"), list) \
            or not isinstance(history.get("history"), dict):
        raise ValueError("'history' must be an object with the lists 'epochs' and 'history'")
    epochs = history["epochs"]
    if not all(_is_int(e, 1) for e in epochs) or any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ValueError("'history.epochs' must be increasing positive integers")
    for key, values in history["history"].items():
        if not isinstance(values, list) or len(values) != len(epochs):
            raise ValueError(f"'history.history[{key!r}]' must be a list of {len(epochs)} values")
        if not all(v is None or type(v) in (int, float, bool, str) for v in values):
            raise ValueError(f"'history.history[{key!r}]' must hold numbers")


def _expected_arrays(meta, fail):
    """Check the metadata's every part (structure, types, values a model can take) and return
    ``{array name: shape}`` the archive must hold; raises ``fail(detail)``."""
    config = meta.get("config")
    check_config(config, fail)
    n_in = config.get("input_dim")
    if not _is_int(n_in, 1):
        raise fail(f"damaged metadata: input_dim {n_in!r}")
    _, shapes = layers_of(config, fail)
    check_classes(config, fail)
    expected = {f"param/{k}": v for k, v in shapes.items()}
    saved = meta.get("optimizer")
    if saved is not None:
        try:
            if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
                raise TypeError("'optimizer' must be an object with a 'config' object")
            scratch = Optimizer.from_config(saved["config"])
            if not _is_int(saved.get("t")):
                raise ValueError(f"optimizer step count t={saved.get('t')!r}")
            if saved.get("slots") != list(scratch.slots):
                raise ValueError(f"optimizer slots {saved.get('slots')!r}, {scratch.name} has {list(scratch.slots)}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise fail(f"damaged optimizer state ({type(exc).__name__}: {exc})") from None
        for i, shape in enumerate(shapes.values()):
            for slot in scratch.slots:
                expected[f"opt/{i}/{slot}"] = shape
    checks = [("rng_state", _check_rng_state), ("history", _check_history)]
    for key, check in checks:
        if key == "history" or meta.get(key) is not None:
            try:
                check(meta.get(key))
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                raise fail(f"damaged metadata: {key} ({type(exc).__name__}: {exc})") from None
    if meta.get("loss_scaler") is not None:
        from fastnet.backends.precision import LossScaler

        try:
            if not isinstance(meta["loss_scaler"], dict):
                raise TypeError("not an object")
            LossScaler().set_state(meta["loss_scaler"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise fail(f"damaged metadata: loss_scaler ({type(exc).__name__}: {exc})") from None
    for key in ("distributed", "run"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise fail(f"damaged metadata: {key} is a JSON {json_type(meta[key])}")
    return expected


def read_checkpoint(path):
    """``(meta, arrays)`` of a checkpoint, verified; raises :class:`CheckpointError`.

    The zip directory and ``.npy`` headers are checked against the metadata's
    architecture and optimizer before any array is read; then both checksums."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        archive = Archive(path, "checkpoint", CheckpointError)
    except NotAnArchive:
        raise CheckpointError(f"{path!r} is not a fastnet checkpoint (not an .npz archive)" + _prev_hint(path)) \
            from None
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{_prev_hint(path)}") from None
    fail = lambda detail: CheckpointError(f"checkpoint {path!r}: {detail}")  # noqa: E731
    try:
        with archive:
            meta = archive.read_meta()
            if meta is None or meta.get("kind") != CHECKPOINT_KIND:
                raise CheckpointError(f"{path!r} is not a fastnet checkpoint")
            version = meta.get("format_version")
            if type(version) is int and version > FORMAT_VERSION:
                raise CheckpointError(f"{path!r} was written by a newer fastnet (format {version})")
            if type(version) is not int or version < 1:
                raise fail(f"has format version {version!r}, not a positive integer: damaged")
            expected = _expected_arrays(meta, fail)
            check_entries(archive, expected, fail)
            arrays = {name: archive.read(name) for name in sorted(expected)}
        verify_checksums(meta, array_digest(arrays), fail, required=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{_prev_hint(path)}") from None
    return meta, arrays


def _prev_hint(path):
    prev = path + ".prev"
    return f"; the previous checkpoint is kept at {prev!r}" if os.path.exists(prev) else ""


def _read_or_previous(path):
    """The checkpoint at ``path``; if it is missing or damaged and ``path.prev`` is good,
    that one, with a warning that says so."""
    try:
        return read_checkpoint(path)
    except CheckpointError as exc:
        previous = path + ".prev"
        if not os.path.exists(previous):
            raise
        try:
            meta, arrays = read_checkpoint(previous)
        except CheckpointError as prev_exc:
            raise CheckpointError(f"{exc}; the previous checkpoint is unusable too: {prev_exc}") from None
        epochs = meta["history"]["epochs"]
        warnings.warn(f"{exc}; resuming from the previous checkpoint {previous!r} "
                      f"(epoch {epochs[-1] if epochs else 0}) instead", RuntimeWarning, stacklevel=4)
        return meta, arrays


# ------------------------------------------------------------------ resuming
def _fit_optimizer_config(fit, saved):
    """The configuration of the optimizer ``fit`` will train with, given the checkpoint's
    (``saved``): ``fit``'s own rule (``training._select_optimizer``) applied after the restore."""
    optimizer, lr, weight_decay = fit.get("optimizer", "adam"), fit.get("lr"), fit.get("weight_decay")
    if isinstance(optimizer, Optimizer):
        config = optimizer.get_config()
    elif saved is not None and optimizer == saved.get("name"):
        config = dict(saved)
    else:
        return get_optimizer(optimizer, lr, weight_decay).get_config()
    if lr is not None:
        config["lr"] = float(lr)
    if weight_decay is not None:
        config["weight_decay"] = float(weight_decay)
    return config


def _differences(model, meta, fit):
    """``[(setting, checkpoint's, this fit's)]`` for every setting of the run's identity that
    this fit changes."""
    theirs = meta["config"]
    diffs = []
    for key, mine, default in (("seed", model.seed, None), ("dtype", model.dtype, None),
                               ("precision", model.precision, "float32")):
        if theirs.get(key, default) != mine:
            diffs.append((key, theirs.get(key, default), mine))
    if fit is None:
        return diffs
    saved = None if meta["optimizer"] is None else meta["optimizer"]["config"]
    if saved is not None:
        mine = _fit_optimizer_config(fit, saved)
        if mine.get("name") != saved.get("name"):
            diffs.append(("optimizer", saved.get("name"), mine.get("name")))
        else:
            for key in sorted(set(saved) | set(mine)):
                if key != "name" and saved.get(key) != mine.get(key):
                    diffs.append((key, saved.get(key), mine.get(key)))
    run = meta.get("run") or {}
    n = len(fit["X"])
    batch = fit.get("batch_size")
    bs = n if batch is None else min(batch * fit.get("ranks", 1), n)
    if run.get("batch_size") is not None and run["batch_size"] != bs:
        diffs.append(("batch size", run["batch_size"], bs))
    if run.get("n_samples") is not None and run["n_samples"] != n:
        diffs.append(("training rows", run["n_samples"], n))
    return diffs


def _check_fits(model, meta, arrays, path, layout, fit):
    """What no option overrides: the architecture, the input width (the model's and the data's),
    the class labels, the ranks, finite values."""
    mine, theirs = model.get_config(), meta["config"]
    if mine["layers"] != theirs["layers"] or mine["loss"] != theirs["loss"]:
        raise CheckpointError(f"checkpoint {path!r} holds a different architecture: {theirs['layers']}")
    n_in = theirs["input_dim"]
    model_in = model.n_features_in_ if model.built else model.input_dim
    if model_in is not None and model_in != n_in:
        raise CheckpointError(f"checkpoint {path!r} holds a model of {n_in} input features; this model takes "
                              f"{model_in}")
    if fit is not None:
        n_x = fit["X"].shape[1]
        if n_x != n_in:
            raise CheckpointError(f"checkpoint {path!r} holds a model of {n_in} input features, but X has {n_x} "
                                  "features per sample")
        classes = getattr(model, "_fit_classes", None) if model.loss_.target_kind == "class" else None
        saved = theirs.get("classes")
        if classes is not None and saved is not None and np.asarray(classes).tolist() != list(saved):
            shown = lambda c: ", ".join(map(repr, list(c)[:10])) + (", ..." if len(c) > 10 else "")  # noqa: E731
            raise CheckpointError(f"checkpoint {path!r} was trained on the classes [{shown(saved)}], and y's "
                                  f"are [{shown(np.asarray(classes).tolist())}]: the outputs would mean other labels")
    saved = meta.get("distributed")
    if saved != layout and (saved is not None or layout is not None):
        said = lambda d: "one process" if d is None else (  # noqa: E731
            f"{d.get('ranks')} ranks at batch_size={d.get('batch_size_per_rank')} per rank")
        raise CheckpointError(
            f"checkpoint {path!r} was written by a training of {said(saved)}, and this fit runs "
            f"{said(layout)}: resume with the same number of ranks and batch size (the global batch, its "
            "shares and the data order depend on them)")
    fail = lambda detail: CheckpointError(f"checkpoint {path!r}: {detail}; it cannot be resumed")  # noqa: E731
    for name in sorted(arrays):
        finite_or_fail(name, arrays[name], fail)


def _words(value):
    return "none" if value is None else repr(value) if isinstance(value, str) else f"{value}"


def restore_checkpoint(model, path, layout=None, *, fit=None, strict=True):
    """Load a checkpoint into ``model`` (same architecture); returns the optimizer it held.

    ``layout``: the ranks of the data-parallel fit resuming (``DataParallel.layout``), or
    None; a checkpoint of a data-parallel fit resumes with the same ranks and batch size.
    ``fit``: the resuming fit's settings (``optimizer``, ``lr``, ``weight_decay``,
    ``batch_size``, ``ranks``, ``X``: its training rows), compared with the checkpoint's run.

    All or nothing: the file, the model, the data and the run's identity (seed, dtype,
    optimizer and its hyper-parameters, batch size, training rows) are checked before
    anything changes; after a :class:`CheckpointError` the model is as it was.  With
    ``strict=False`` a changed identity is accepted with a ``RuntimeWarning`` naming the
    changes and what is kept.
    """
    path = os.fspath(path)
    meta, arrays = _read_or_previous(path)
    _check_fits(model, meta, arrays, path, layout, fit)
    diffs = _differences(model, meta, fit)
    if diffs:
        listed = "; ".join(f"{what} {_words(a)} -> {_words(b)}" for what, a, b in diffs)
        if strict:
            raise CheckpointError(
                f"checkpoint {path!r} is another run's, or this fit changes its settings: {listed} (checkpoint -> "
                "this fit). A resume continues a run with the settings it was written with; pass "
                "resume_strict=False to continue it deliberately with these changes")
        epochs = meta["history"]["epochs"]
        opt = meta["optimizer"]
        kept = [f"weights (epoch {epochs[-1] if epochs else 0})", "history", "random state"]
        opt_changed = any(what in ("optimizer", "lr", "weight_decay") or (opt and what in opt["config"])
                          for what, _, _ in diffs)
        if opt is not None and not opt_changed:
            kept.append(f"{opt['config']['name']} state (t={opt['t']})")
        note = ("; the optimizer state is not kept: the optimizer changed, so it starts afresh"
                if opt is not None and opt_changed else "")
        dtype_note = "; weights converted to the model's dtype" if any(w == "dtype" for w, _, _ in diffs) else ""
        warnings.warn(f"resuming checkpoint {path!r} with changed settings (resume_strict=False): {listed}. "
                      f"Kept from the checkpoint: {', '.join(kept)}{note}{dtype_note}",
                      RuntimeWarning, stacklevel=3)
    snapshot = _snapshot(model)
    try:
        return _apply(model, meta, arrays)
    except BaseException:
        _rollback(model, snapshot)
        raise


def _snapshot(model):
    """What :func:`_apply` may change, to put back should it fail midway."""
    return {"vars": dict(vars(model)), "layers": [dict(vars(layer)) for layer in model.layers],
            "rng": model.backend_.get_rng_state(), "weights": model.get_weights() if model.built else None}


def _rollback(model, snapshot):
    vars(model).clear()
    vars(model).update(snapshot["vars"])
    for layer, saved in zip(model.layers, snapshot["layers"]):
        vars(layer).clear()
        vars(layer).update(saved)
    if snapshot["weights"] is not None:
        model.set_weights(snapshot["weights"])
    model.backend_.set_rng_state(snapshot["rng"])


def _apply(model, meta, arrays):
    from fastnet.core.callbacks import History

    if not model.built:
        model.build(meta["config"]["input_dim"])
    model.set_weights({k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")})
    opt = None
    if meta["optimizer"] is not None:
        saved = meta["optimizer"]
        opt = model.attach_optimizer(Optimizer.from_config(saved["config"]))
        opt.set_state({"t": saved["t"], "slots": [{slot: arrays[f"opt/{i}/{slot}"] for slot in opt.slots}
                                                  for i in range(len(opt.state))]})
    if meta.get("rng_state") is not None:
        model.backend_.set_rng_state(meta["rng_state"])
    if meta.get("loss_scaler") is not None:
        from fastnet.backends.precision import LossScaler

        model.loss_scaler_ = LossScaler()
        model.loss_scaler_.set_state(meta["loss_scaler"])
    history = History()
    history.epochs = list(meta["history"]["epochs"])
    history.history = {k: list(v) for k, v in meta["history"]["history"].items()}
    model.history_ = history
    return opt


@contextlib.contextmanager
def hold_checkpoints(callbacks, root=True):
    """The paths of the :class:`ModelCheckpoint` callbacks among ``callbacks`` locked for one
    writer (this fit) while the ``with`` block runs: ``fit`` enters it before it resumes and
    leaves it however it ends.  ``root``: False on the ranks of a data-parallel fit that
    write nothing."""
    with contextlib.ExitStack() as stack:
        if root:
            for cb in callbacks:
                if isinstance(cb, ModelCheckpoint):
                    stack.enter_context(writer_lock(cb.path, CheckpointError, "checkpoint"))
        yield


class ModelCheckpoint(Callback):
    """Save the full training state every ``every`` epochs (and at the end of training), or
    as Keras's ``ModelCheckpoint`` does, with Keras's arguments and meanings.

    Parameters
    ----------
    filepath : str or path-like
        The checkpoint file; the one before it is kept as ``<path>.prev``.  As Keras's, it may
        hold format fields filled at each save from ``epoch`` (1-based) and the epoch logs,
        e.g. ``"ck-{epoch:02d}-{val_loss:.2f}.npz"``: one file per save.  ``path=`` is
        the same argument.
    monitor : str
        Keras's: the epoch log ``save_best_only`` follows (default ``"val_loss"``); one
        missing from the logs is an error naming the keys there are (Keras warns and skips).
    verbose : {0, 1}
        1: say on stderr at each epoch what was saved (Keras's messages).
    save_best_only : bool
        Keras's: save only when ``monitor`` improves on the best so far (strictly), so the
        file holds the best epoch's state; nothing more is written at the end of training.
    save_weights_only : bool
        Keras's: write the model file (``model.save``: architecture and weights, an ``.npz``
        name required; read with ``fastnet.load``) instead of the training state
        (weights, optimizer, random state and history, which ``fit(resume=...)`` continues;
        ``fastnet.load`` reads it too).
    mode : {"auto", "min", "max"}
        Keras's: ``"auto"`` is ``"max"`` for a monitor with ``"acc"`` in its name, else ``"min"``.
    save_freq : "epoch"
        Keras's default; a number of batches is refused (fastnet saves at epoch ends:
        ``every=N`` for every N epochs).
    initial_value_threshold : float, optional
        Keras's: with ``save_best_only``, the value the first save must beat.
    every : int
        Epochs between saves (keyword only).

    Notes
    -----
    ``fit(..., resume=path)`` continues from the file.  A fit holds the path's writer
    lock (``<path>.lock``, for a path with format fields the pattern's) from its start to
    its end: a second run given the same path is refused at once, naming the process that
    holds it.
    """

    #: What a format field of ``filepath`` may name: the epoch and the epoch logs' keys.
    FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")

    def __init__(self, filepath=None, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None, *, every=1, path=None):
        from fastnet.core.callbacks import _Monitor
        from fastnet.core.validation import check_bool, check_real

        if path is not None and filepath is not None:
            raise TypeError("give filepath or path (the same argument), not both")
        if filepath is None and path is None:
            raise TypeError("ModelCheckpoint needs filepath, the checkpoint file")
        self.path = os.fspath(path if path is not None else filepath)
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of an epoch log ('val_loss', 'accuracy'...), got {monitor!r} "
                            "(Keras's second argument; epochs between saves: every=N)")
        self.every = check_int("every", every)
        if save_freq != "epoch":
            raise ValueError(f"save_freq={save_freq!r}: fastnet saves at the end of epochs only (save_freq='epoch'); "
                             "every=N saves every N epochs")
        if verbose not in (0, 1, True, False):
            raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
        self.save_best_only = check_bool("save_best_only", save_best_only)
        self.save_weights_only = check_bool("save_weights_only", save_weights_only)
        self.verbose = int(verbose)
        self.initial_value_threshold = None if initial_value_threshold is None else \
            check_real("initial_value_threshold", initial_value_threshold)
        self._rule = _Monitor(monitor, mode, 0.0)  # mode checked; "auto" resolved from the name, as Keras's
        self.monitor, self.mode = monitor, self._rule.mode
        import string

        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.path) if f is not None]
        except ValueError as exc:
            raise ValueError(f"filepath {self.path!r} is not a valid format pattern: {exc}") from None
        unknown = [f for f in fields if f.split(".")[0].split("[")[0] not in self.FIELDS]
        if unknown:
            raise ValueError(f"filepath {self.path!r} names {unknown[0]!r}: a format field may name the epoch or "
                             f"an epoch log ({', '.join(self.FIELDS)})")
        self._templated = bool(fields)
        if self.save_weights_only and not self.path.endswith(".npz"):
            raise ValueError(f"filepath {self.path!r}: save_weights_only writes a fastnet model file, whose name "
                             "must end in .npz")
        self._saved_epoch = None
        self.best = self.initial_value_threshold
        self._last_logs = {}

    def on_train_begin(self, model):
        # (``best`` is kept across fits, as Keras's: it starts from initial_value_threshold)
        self._last_logs = {}

    def _file(self, epoch, logs):
        if not self._templated:
            return self.path
        values = {k: v for k, v in logs.items() if v is not None}
        try:
            return self.path.format(epoch=epoch, **values)
        except KeyError as exc:
            raise ValueError(f"filepath {self.path!r} names {exc.args[0]!r}, which is not in the epoch logs "
                             f"(have: {sorted(values)}); pass validation_data or validation_split for the "
                             "validation metrics") from None

    def _save(self, model, epoch, logs):
        target = self._file(epoch, logs)
        if self.save_weights_only:
            model.save(target)
        else:
            save_checkpoint(model, target)
        self._saved_epoch = epoch
        return target

    def on_epoch_end(self, model, epoch, logs):
        if not is_root(model):  # data-parallel: rank 0 writes, the other ranks hold the same state
            return
        self._last_logs = dict(logs)
        if epoch % self.every:
            return
        if not self.save_best_only:
            target = self._save(model, epoch, logs)
            if self.verbose:
                print(f"Epoch {epoch}: saving model to {target}", file=sys.stderr, flush=True)
            return
        from fastnet.core.callbacks import _monitored

        value = _monitored(logs, self.monitor)
        if self._rule._improved(value, self.best) and value == value:
            before = self.best
            target = self._save(model, epoch, logs)
            self.best = value
            if self.verbose:
                print(f"Epoch {epoch}: {self.monitor} improved from {self._shown(before)} to {value:.5f}, saving model to {target}",
                      file=sys.stderr, flush=True)
        elif self.verbose:
            print(f"Epoch {epoch}: {self.monitor} did not improve from {self._shown(self.best)}", file=sys.stderr, flush=True)

    def _shown(self, best):
        return ("inf" if self.mode == "min" else "-inf") if best is None else f"{best:.5f}"

    def on_train_end(self, model):
        # The last epoch too, when `every` did not fall on it (not with save_best_only: the
        # file holds the best epoch's state).
        if is_root(model) and not self.save_best_only and model.n_iter_ and model.n_iter_ != self._saved_epoch:
            self._save(model, model.n_iter_, self._last_logs)

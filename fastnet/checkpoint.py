"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint is an ``.npz`` archive (read without pickle) holding the model
file's content plus the optimizer state, the device random generator's state
and the history.  A SHA-256 over every array is stored inside it, so a
truncated or damaged file is detected.  Writes are atomic (temporary file,
fsync, rename) and the previous checkpoint is kept as ``<path>.prev``.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile

import numpy as np

from .callbacks import Callback
from .distributed import is_root
from .npzfile import FORMAT_VERSION, META_KEY, ModelFileError, atomic_write, encode_meta, os_reason
from .optimizers import Optimizer
from .validation import check_int

CHECKPOINT_KIND = "fastnet-checkpoint"


class CheckpointError(ModelFileError):
    """A checkpoint is missing, truncated, damaged or does not fit the model."""


def _digest(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(model, path):
    """Write ``model``'s full training state to ``path`` atomically."""
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
    meta = {
        "kind": CHECKPOINT_KIND,
        "format_version": FORMAT_VERSION,
        "config": model.get_config(),
        "optimizer": opt_meta,
        "rng_state": model.backend_.get_rng_state(),
        "history": {"epochs": model.history_.epochs, "history": model.history_.history},
        # the ranks of a data-parallel fit (fastnet.distributed), else None
        "distributed": None if model._data_parallel is None else model._data_parallel.layout,
        # precision="fp16": the dynamic loss scale (fastnet.precision.LossScaler), else None
        "loss_scaler": None if getattr(model, "loss_scaler_", None) is None else model.loss_scaler_.get_state(),
        "sha256": _digest(arrays),
    }
    arrays[META_KEY] = encode_meta(meta)
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays), keep_previous=path + ".prev")
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


def read_checkpoint(path):
    """``(meta, arrays)`` of a checkpoint, verified; raises :class:`CheckpointError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or damaged ({type(exc).__name__}: {exc})" + _prev_hint(path)
        ) from None
    raw = arrays.pop(META_KEY, None)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8")) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path!r} is not a fastnet checkpoint" + _prev_hint(path))
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path!r} was written by a newer fastnet (format {meta['format_version']})")
    if _digest(arrays) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {path!r} failed its checksum: the file is damaged" + _prev_hint(path))
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


def restore_checkpoint(model, path, layout=None):
    """Load a checkpoint into ``model`` (same architecture); returns the optimizer it held.
    ``layout``: the ranks of the data-parallel fit resuming (``DataParallel.layout``), or
    None; a checkpoint of a data-parallel fit resumes with the same ranks and batch size."""
    from .callbacks import History

    meta, arrays = _read_or_previous(os.fspath(path))
    mine, theirs = model.get_config(), meta["config"]
    if mine["layers"] != theirs["layers"] or mine["loss"] != theirs["loss"]:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds a different architecture: {theirs['layers']}")
    saved = meta.get("distributed")
    if saved != layout and (saved is not None or layout is not None):
        said = lambda d: "one process" if d is None else (  # noqa: E731
            f"{d['ranks']} ranks at batch_size={d['batch_size_per_rank']} per rank")
        raise CheckpointError(
            f"checkpoint {os.fspath(path)!r} was written by a training of {said(saved)}, and this fit runs "
            f"{said(layout)}: resume with the same number of ranks and batch size (the global batch, its "
            "shares and the data order depend on them)")
    if not model.built:
        model.build(theirs["input_dim"])
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
        from .precision import LossScaler

        model.loss_scaler_ = LossScaler()
        model.loss_scaler_.set_state(meta["loss_scaler"])
    history = History()
    history.epochs = list(meta["history"]["epochs"])
    history.history = {k: list(v) for k, v in meta["history"]["history"].items()}
    model.history_ = history
    return opt


class ModelCheckpoint(Callback):
    """Save the full training state every ``every`` epochs (and at the end of training).

    Parameters
    ----------
    path : str or path-like
        The checkpoint file; the one before it is kept as ``<path>.prev``.
    every : int
        Epochs between saves.

    ``fit(..., resume=path)`` continues from the file.
    """

    def __init__(self, path, every=1):
        self.path = os.fspath(path)
        self.every = check_int("every", every)
        self._saved_epoch = None

    def on_epoch_end(self, model, epoch, logs):
        if not is_root(model):  # data-parallel: rank 0 writes, the other ranks hold the same state
            return
        if epoch % self.every == 0:
            save_checkpoint(model, self.path)
            self._saved_epoch = epoch

    def on_train_end(self, model):
        # The last epoch too, when `every` did not fall on it.
        if is_root(model) and model.n_iter_ and model.n_iter_ != self._saved_epoch:
            save_checkpoint(model, self.path)
            self._saved_epoch = model.n_iter_

"""Model files: ``.npz`` archives read without pickle (writing: ``fastnet.core.npzfile``).

An archive holds ``__fastnet__`` (the format version, the architecture and the
checksums as JSON, stored as uint8 bytes) and one array per parameter, named as
in ``model.parameters()``.

:func:`load_model` takes no memory before it knows the sizes: it reads the zip
directory and the ``.npy`` headers (:class:`fastnet.core.npzfile.Archive`), checks the
metadata (a bounded JSON object), the architecture, the names, dtypes and shapes
every array must have, then reads each array once to verify the checksums and that
every weight is finite (one array at a time), and only then builds the model and
reads the weights into it.  Every damaged or hostile file ends in
:class:`ModelFileError` naming the file (and the entry at fault).

Model files written before checksums existed (no ``sha256`` in the metadata) are
still read, with every other check; any file written now carries both checksums.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from fastnet.core.sequential import Sequential

from fastnet.core.npzfile import (FORMAT_VERSION, META_KEY, Archive, ModelFileError, NotAnArchive,  # noqa: F401
                      atomic_write, check_format_version, json_type, save_model, verify_checksums)

#: Largest model a file may declare (parameters); larger is refused before any allocation.
MAX_PARAMETERS = 2**31

_WANTED = "fastnet reads .npz archives written by model.save() or `fastnet train --save`"


def _is_count(value, low=1):
    return type(value) is int and value >= low


def check_config(config, fail):
    """The shape of an architecture (JSON from a file), before anything is built from it:
    raises ``fail(detail)`` for anything but a dict whose layers are dicts with sane sizes,
    and for a declared size over :data:`MAX_PARAMETERS`."""
    if not isinstance(config, dict):
        raise fail(f"bad architecture in the file: a JSON {json_type(config)} where an object is expected")
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(c, dict) for c in layers):
        raise fail(f"bad architecture in the file: 'layers' must be a non-empty list of objects, got {layers!r:.200}")
    n = config.get("input_dim")
    if n is not None and not _is_count(n):
        raise fail(f"bad architecture in the file: input_dim {n!r:.100} is not a positive integer")
    if not isinstance(config.get("loss"), str) or not isinstance(config.get("dtype"), str):
        raise fail("bad architecture in the file: 'loss' and 'dtype' must be strings")
    seed = config.get("seed")
    if seed is not None and not _is_count(seed, 0):
        raise fail(f"bad architecture in the file: seed {seed!r:.100} is not a non-negative integer")
    total = 0
    width = n or 1
    for i, layer in enumerate(layers):
        if layer.get("type") == "Dense":
            units = layer.get("units")
            if not _is_count(units):
                raise fail(f"bad architecture in the file: layers[{i}] has units {units!r:.100}")
            total += width * units + units
            width = units
    if total > MAX_PARAMETERS:
        raise fail(f"declares {total:,} parameters (limit {MAX_PARAMETERS:,}): refused")


def parameter_shapes(layers: Sequence[Any], n_in: int) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the parameters a model of ``layers`` (unbuilt Layer objects) has
    for ``n_in`` inputs, in ``model.parameters()`` order, computed without building it."""
    from fastnet.core.layers import Dense, Dropout

    shapes: dict[str, tuple[int, ...]] = {}
    counts: dict[str, int] = {}
    n = n_in
    for layer in layers:
        kind = type(layer).__name__.lower()
        name = f"{kind}_{counts.get(kind, 0)}"
        counts[kind] = counts.get(kind, 0) + 1
        if isinstance(layer, Dense):
            shapes[f"{name}.W"] = (n, layer.units)
            if layer.use_bias:
                shapes[f"{name}.b"] = (layer.units,)
            n = layer.units
        elif not isinstance(layer, Dropout):
            raise ValueError(f"no parameter layout known for a {type(layer).__name__} layer")
    return shapes


def check_entries(archive, expected, fail, prefix=""):
    """The archive's arrays (less the metadata) must be exactly ``expected`` (``{name: shape}``,
    names given ``prefix``): the same names, those shapes, float dtypes.  Nothing is read."""
    names = set(archive.entries) - {META_KEY}
    wanted = {prefix + k: v for k, v in expected.items()}
    if names != set(wanted):
        extra, missing = sorted(names - set(wanted)), sorted(set(wanted) - names)
        raise fail(f"its arrays do not match the architecture: "
                   + "; ".join(part for part in (
                       f"unexpected {extra[:10]}" + (" ..." if len(extra) > 10 else "") if extra else "",
                       f"missing {missing[:10]}" + (" ..." if len(missing) > 10 else "") if missing else "") if part)
                   + f" (the architecture has {sorted(wanted)[:10]}{' ...' if len(wanted) > 10 else ''})")
    for name, shape in wanted.items():
        entry = archive.entries[name]
        if tuple(entry.shape) != tuple(shape) or entry.dtype.kind != "f":
            raise fail(f"{name} has shape {tuple(entry.shape)} and dtype {entry.dtype}, "
                       f"expected {tuple(shape)} floats")


def check_classes(config, fail):
    """A classifier's ``classes`` must be as many distinct, sorted labels as it has outputs
    (checked on the configuration, before a model is made from it)."""
    from fastnet.core.losses import get_loss

    classes = config.get("classes")
    if classes is None:
        return
    try:
        kind = get_loss(config["loss"]).target_kind
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"bad architecture in the file ({exc})") from None
    if kind != "class":
        raise fail(f"bad architecture in the file: class labels for a {config['loss']} model")
    if not isinstance(classes, list) or not all(type(c) in (int, float, str, bool) for c in classes):
        raise fail("bad architecture in the file: 'classes' must be a list of labels (numbers or strings)")
    n_out = config["layers"][-1].get("units")
    if len(classes) != n_out:
        raise fail(f"bad architecture in the file: {len(classes)} class labels for {n_out} outputs")
    numbers = all(type(c) in (int, float, bool) for c in classes)
    if not (numbers or all(type(c) is str for c in classes)) \
            or not all(a < b for a, b in zip(classes, classes[1:])):  # (as np.unique orders them)
        raise fail("bad architecture in the file: the class labels are not distinct and sorted")


def layers_of(config, fail):
    """The (unbuilt) layers of ``config`` and ``{name: shape}`` of the parameters they have for
    its ``input_dim`` (None when it has none): no backend, no model, nothing allocated."""
    from fastnet.core.layers import Dense, layer_from_config

    try:
        layers = [layer_from_config(c) for c in config["layers"]]
        if not isinstance(layers[-1], Dense):
            raise ValueError(f"the last layer must be Dense, got {type(layers[-1]).__name__}")
        n_in = config.get("input_dim")
        return layers, (None if n_in is None else parameter_shapes(layers, n_in))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise fail(f"bad architecture in the file ({type(exc).__name__}: {exc})") from None


def finite_or_fail(name, a, fail):
    """Raise ``fail`` naming ``name`` unless every value of ``a`` is finite."""
    flat = a.reshape(-1, order="A")
    step = 1 << 16  # in slices: no mask the size of the array
    if all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step)):
        return
    bad = sum(int(flat[i:i + step].size - np.count_nonzero(np.isfinite(flat[i:i + step])))
              for i in range(0, flat.size, step))
    raise fail(f"{name} holds {bad:,} non-finite value{'s' if bad > 1 else ''} (NaN or inf) of {a.size:,}")


def _not_an_archive(path, exc):
    if exc.kind == "npy":
        shape = f" of shape {exc.shape}" if exc.shape is not None else ""
        return ModelFileError(f"{path!r} holds a single NumPy array (an .npy file{shape}), not a fastnet model: "
                              f"{_WANTED}")
    if exc.kind == "empty":
        return ModelFileError(f"cannot read model file {path!r}: the file is empty")
    return ModelFileError(f"{path!r} is not a fastnet model file: it is neither a NumPy .npz archive nor an .npy "
                          f"array ({_WANTED}; it never reads pickles)")


def load_model(path: str | os.PathLike[str], backend: str = "auto", kernels: str = "fused", *,
               allow_nonfinite: bool = False) -> Sequential:
    """Read a model written by :func:`save_model` onto ``backend``; a training checkpoint
    (:class:`~fastnet.train.checkpoint.ModelCheckpoint`) gives the model at its last epoch.

    Every check (sizes, names, shapes, checksums, finite weights) runs before the model
    is built.  ``allow_nonfinite=True`` accepts weights that are NaN or infinite (refused
    by default: such a model predicts nothing useful).  Raises :class:`ModelFileError`.
    """
    from fastnet.core.sequential import Sequential

    p = os.fspath(path)
    try:
        archive = Archive(p, "model file", ModelFileError)
    except NotAnArchive as exc:
        raise _not_an_archive(p, exc) from None
    with archive:
        fail = archive.fail
        meta = archive.read_meta()
        if meta is None:
            raise ModelFileError(f"{p!r} is not a fastnet model file (no {META_KEY})")
        if meta.get("kind") == "fastnet-checkpoint":
            return _model_of_checkpoint(p, backend, kernels, allow_nonfinite)
        check_format_version(meta, lambda d: ModelFileError(f"{p!r} {d}"))
        config = meta.get("config")
        check_config(config, fail)
        _, expected = layers_of(config, fail)
        check_classes(config, fail)
        names = sorted(set(archive.entries) - {META_KEY})
        if names:
            if expected is None:
                raise fail("holds weights but no input_dim: damaged")
            check_entries(archive, expected, fail)
        # pass 1: checksums and finite weights, one array at a time (nothing kept)
        digest = _digest_arrays(archive, names, None if allow_nonfinite else fail)
        verify_checksums(meta, digest, fail)
        # every check passed: only now a model (a backend: device, kernels) and its memory
        try:
            model = cast("Sequential", Sequential.from_config(config, backend=backend, kernels=kernels))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
            raise fail(f"bad architecture in the file ({type(exc).__name__}: {exc})") from None
        if names:
            # pass 2: the weights into the model
            model.build(config["input_dim"])
            params = dict(model.parameters())
            again = _digest_arrays(archive, names, None, into=params, backend=model.backend_)
            if again != digest:
                raise fail("changed while it was being read: try again")
    return model


def _model_of_checkpoint(path, backend, kernels, allow_nonfinite):
    """The model a training checkpoint (:class:`~fastnet.train.checkpoint.ModelCheckpoint`) holds: its
    weights at its last epoch (``n_iter_`` and ``history_`` too), read with the checkpoint's
    own checks; its optimizer and random state are for ``fit(resume=path)``."""
    from fastnet.core.callbacks import History
    from fastnet.train.checkpoint import CheckpointError, read_checkpoint
    from fastnet.core.sequential import Sequential

    meta, arrays = read_checkpoint(path)
    fail = lambda detail: CheckpointError(f"checkpoint {path!r}: {detail}")  # noqa: E731
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    if not allow_nonfinite:
        for name, a in sorted(weights.items()):
            finite_or_fail(name, a, fail)
    check_classes(meta["config"], fail)
    model = cast("Sequential", Sequential.from_config(meta["config"], backend=backend, kernels=kernels))
    model.build(meta["config"]["input_dim"])
    model.set_weights(weights)
    history = History()
    history.epochs = list(meta["history"]["epochs"])
    history.history = {k: list(v) for k, v in meta["history"]["history"].items()}
    model.history_ = history
    return model


def _digest_arrays(archive, names, fail, into=None, backend=None):
    """The checksum of the arrays ``names`` (as :func:`fastnet.core.npzfile.array_digest`), each read
    once; with ``fail``, non-finite values raise it; with ``into`` (``{name: device array}``),
    each array is copied there."""
    import hashlib

    from fastnet.core.npzfile import _digest_update

    h = hashlib.sha256()
    for name in names:  # sorted, as array_digest
        dst = None if into is None else into[name]
        direct = dst is not None and archive.fits(name, dst)  # (a CPU model: read straight into its weights)
        a = archive.read(name, out=dst if direct else None)
        if fail is not None:
            finite_or_fail(name, a, fail)
        _digest_update(h, name, a)
        if dst is not None and not direct:
            dst[...] = backend.asarray(a, dtype=dst.dtype)
        del a
    return h.hexdigest()

"""Model files: ``.npz`` archives read without pickle (writing: ``fastnet.npzfile``).

An archive holds ``__fastnet__`` (the format version and the architecture as
JSON, stored as uint8 bytes) and one array per parameter, named as in
``model.parameters()``.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    from .sequential import Sequential

from .npzfile import FORMAT_VERSION, META_KEY, ModelFileError, atomic_write, save_model  # noqa: F401


#: Largest model a file may declare (parameters); larger is refused before any allocation.
MAX_PARAMETERS = 2**31


def _check_declared_size(config, path):
    """Refuse architectures whose declared size is absurd, before allocating anything."""
    try:
        n = int(config["input_dim"])
        total = 0
        for layer in config["layers"]:
            if layer.get("type") == "Dense":
                units = int(layer["units"])
                total += n * units + units
                n = units
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{os.fspath(path)!r}: bad architecture in the file ({exc!r})") from None
    if n < 1 or total > MAX_PARAMETERS:
        raise ModelFileError(
            f"{os.fspath(path)!r} declares {total:,} parameters (limit {MAX_PARAMETERS:,}): refused"
        )


def load_model(path: str | os.PathLike[str], backend: str = "auto", kernels: str = "fused") -> Sequential:
    """Read a model written by :func:`save_model` onto ``backend``."""
    from .sequential import Sequential

    wanted = "fastnet reads .npz archives written by model.save() or `fastnet train --save`"
    try:
        archive = np.load(os.fspath(path), allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):  # what NumPy says of any file that is not .npy/.npz
            raise ModelFileError(f"{os.fspath(path)!r} is not a fastnet model file: it is neither a NumPy "
                                 f".npz archive nor an .npy array ({wanted}; it never reads pickles)") from None
        raise ModelFileError(f"cannot read model file {os.fspath(path)!r}: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"cannot read model file {os.fspath(path)!r}: {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ModelFileError(f"{os.fspath(path)!r} holds a single NumPy array (an .npy file of shape "
                             f"{archive.shape}), not a fastnet model: {wanted}")
    with archive:
        if META_KEY not in archive.files:
            raise ModelFileError(f"{os.fspath(path)!r} is not a fastnet model file (no {META_KEY})")
        try:
            meta = json.loads(archive[META_KEY].tobytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{os.fspath(path)!r}: damaged metadata ({exc})") from None
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(
                f"{os.fspath(path)!r} has format version {version!r}; this fastnet reads up to "
                f"{FORMAT_VERSION}: upgrade fastnet"
            )
        _check_declared_size(meta.get("config"), path)
        try:
            model = cast("Sequential", Sequential.from_config(meta["config"], backend=backend, kernels=kernels))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{os.fspath(path)!r}: bad architecture in the file ({exc})") from None
        try:
            weights = {k: archive[k] for k in archive.files if k != META_KEY}
        except (ValueError, OSError, EOFError) as exc:  # object arrays need pickle: refused
            raise ModelFileError(f"{os.fspath(path)!r}: refused to read its arrays ({exc})") from None
    if weights:
        n_in = meta["config"].get("input_dim")
        if not isinstance(n_in, int) or n_in < 1:
            raise ModelFileError(f"{os.fspath(path)!r}: bad input_dim {n_in!r}")
        model.build(n_in)
        expected = dict(model.parameters())
        if set(weights) != set(expected):
            raise ModelFileError(
                f"{os.fspath(path)!r}: parameters {sorted(weights)} do not match the architecture "
                f"{sorted(expected)}"
            )
        for name, a in weights.items():
            if a.shape != expected[name].shape or a.dtype.kind != "f":
                raise ModelFileError(
                    f"{os.fspath(path)!r}: {name} has shape {a.shape} and dtype {a.dtype}, "
                    f"expected {expected[name].shape} floats"
                )
        model.set_weights(weights)
    return model

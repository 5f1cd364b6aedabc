"""The ``.npz`` container of model files and checkpoints: writing, and its constants.

Below the model in the import order: it takes a model as any object with
``get_config``, ``get_weights``, ``n_iter_`` and ``built``, and never imports
the model module.  Reading a model back (which builds one) is ``fastnet.io``.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

FORMAT_VERSION = 1
META_KEY = "__fastnet__"


class ModelFileError(ValueError):
    """A model file is unreadable, damaged, hostile or from a newer fastnet."""


def encode_meta(obj):
    """JSON metadata as a uint8 array (readable without pickle)."""
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model, path):
    """Write ``model`` to ``path`` atomically."""
    meta = {"format_version": FORMAT_VERSION, "config": model.get_config(), "n_iter": model.n_iter_}
    arrays = {META_KEY: encode_meta(meta)}
    if model.built:
        arrays.update(model.get_weights())
    atomic_write(path, lambda f: np.savez(f, **arrays))

"""The ``.npz`` container of model files and checkpoints: writing, and its constants.

Below the model in the import order: it takes a model as any object with
``get_config``, ``get_weights``, ``n_iter_`` and ``built``, and never imports
the model module.  Reading a model back (which builds one) is ``fastnet.io``.
"""
from __future__ import annotations

import contextlib
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


def atomic_write(path, write, keep_previous=None):
    """Write ``path`` so that it is always complete, and the file it replaces survives any failure.

    1. ``write(f)`` fills a temporary file in the same folder, flushed and fsynced;
    2. only then, with ``keep_previous`` (a path), the current ``path`` is also kept
       there: a hard link, so ``path`` never disappears (a rename where the file
       system has no hard links);
    3. the temporary file is renamed onto ``path`` (atomic) and the folder fsynced.

    If a step fails (no space, a quota, a size limit, a read-only folder, an I/O
    error, an interrupt), the temporary file is removed and the exception re-raised:
    ``path`` is as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes owner-only files: the mode open() would give
                os.fchmod(f.fileno(), _mode_for(path))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and os.path.exists(path):
            _keep(path, os.fspath(keep_previous), folder)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)


def _mode_for(path):
    """The mode of the file ``path`` replaces, else what ``open(path, "w")`` gives: 0o666
    less the process's umask (read without changing it where /proc tells it)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def _keep(path, previous, folder):
    """``previous`` becomes (a link to) the current ``path``; ``path`` stays in place."""
    staged = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(previous)}")
    try:
        os.link(path, staged)
    except OSError:  # no hard links here: move it (path is missing until the next rename)
        os.replace(path, previous)
        return
    try:
        os.replace(staged, previous)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise


def fsync_folder(folder):
    """Persist the renames in ``folder`` (where the platform lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def os_reason(exc):
    """``"no space left on device"``, ``"permission denied"``...: the OS's words for ``exc``."""
    if getattr(exc, "errno", None):
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def save_model(model, path):
    """Write ``model`` to ``path`` atomically."""
    meta = {"format_version": FORMAT_VERSION, "config": model.get_config(), "n_iter": model.n_iter_}
    arrays = {META_KEY: encode_meta(meta)}
    if model.built:
        arrays.update(model.get_weights())
    path = os.fspath(path)
    existed = os.path.exists(path)
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as exc:
        kept = "the file already there is unchanged" if existed else "nothing was written"
        # The same OSError subclass (PermissionError, ...), with the path and what is left.
        raise OSError(exc.errno, f"could not write the model file: {os_reason(exc)}; {kept}", path) from exc

"""Where compiled kernels are cached on disk: a per-user folder, never the install folder.

Numba's default cache (``cache=True``) is a ``__pycache__`` folder beside the source
file, i.e. inside ``site-packages/fastnet/kernels`` for an installed fastnet.  Files
there outlive ``pip uninstall`` (pip removes only what it installed) and leave an
empty ``fastnet`` namespace package behind that shadows a later editable install.  So
``cpu`` and ``cuda`` define their kernels with Numba's ``CACHE_DIR`` pointed at
:func:`cache_dir` (and put it back afterwards: other Numba users in the process keep
their own setting):

1. ``$FASTNET_KERNEL_CACHE`` when set;
2. else ``$NUMBA_CACHE_DIR`` when set (Numba's own override, honoured as Numba would);
3. else ``~/.cache/fastnet/kernels/fastnet-<version>-numba-<version>-py<X.Y>``, beside
   the MNIST cache, one folder per fastnet, Numba and Python version, so that no
   version ever loads another's entries.

This module imports nothing heavy (no Numba until :func:`redirect` is called).
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

ENV = "FASTNET_KERNEL_CACHE"


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cache_dir() -> Path:
    """The folder compiled kernels are written to and read from (see the module docstring)."""
    for env in (ENV, "NUMBA_CACHE_DIR"):
        value = os.environ.get(env)
        if value:
            return Path(value).expanduser()
    key = (f"fastnet-{_version('fastnet-mlp')}-numba-{_version('numba')}"
           f"-py{sys.version_info[0]}.{sys.version_info[1]}")
    return Path.home() / ".cache" / "fastnet" / "kernels" / key


def redirect(config):
    """Point ``config.CACHE_DIR`` (a Numba config module) at :func:`cache_dir`; return
    the previous value for :func:`restore`."""
    previous = config.CACHE_DIR
    config.CACHE_DIR = str(cache_dir())
    return previous


def restore(config, previous):
    config.CACHE_DIR = previous

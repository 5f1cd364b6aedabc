"""``fastnet info``: versions, usable backends (and why the others are not), Numba cache."""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform


def _version(module):
    try:
        return importlib.import_module(module).__version__
    except Exception as exc:  # not installed, or broken
        return f"not available ({type(exc).__name__})"


def _distribution(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def numba_cache_dir():
    """Where fastnet's compiled kernels are cached (``fastnet.kernels.cache.cache_dir``)."""
    from .kernels.cache import cache_dir

    return str(cache_dir())


def report():
    from . import __version__
    from .backend import backend_status, gpu_array_library_version

    lines = [
        f"fastnet {__version__}  (Python {platform.python_version()}, {platform.machine()})",
        f"numpy   {_version('numpy')}",
        f"numba   {_version('numba')}  (numba-cuda {_distribution('numba-cuda')})",
        f"cupy    {gpu_array_library_version()}",
        "backends:",
    ]
    for name in ("cpu", "cuda", "cuda-sim"):
        ok, why = backend_status(name)
        lines.append(f"  {name:<9} {'usable' if ok else 'unavailable'}: {why}")
    lines.append(f"kernel cache: {numba_cache_dir()}  (set FASTNET_KERNEL_CACHE to move it)")
    return "\n".join(lines)

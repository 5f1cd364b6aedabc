"""Devices, precisions, thread counts and GEMM providers."""

import ctypes as _ctypes
import os as _os

#: Set in a process forked from one that had loaded GNU OpenMP (:func:`gomp_forked`).  Kept
#: here, imported with fastnet, so that a fork before fastnet's GEMM modules were imported counts.
_gomp_in_parent = False


def gomp_loaded() -> bool:
    """Whether ``libgomp.so.1`` is in the process (loaded by anyone: oneDNN, MKL, fastnet, a BLAS)."""
    try:
        _ctypes.CDLL("libgomp.so.1", mode=getattr(_os, "RTLD_NOLOAD", 4) | _ctypes.RTLD_GLOBAL)
        return True
    except OSError:
        return False


def _after_fork_in_child() -> None:
    global _gomp_in_parent
    _gomp_in_parent = _gomp_in_parent or gomp_loaded()


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)


def gomp_forked() -> bool:
    """Whether this process was forked from one that had loaded GNU OpenMP (``libgomp.so.1``,
    anyone's): a parallel region of libgomp's here could wait forever for threads that stayed
    in the parent, so nothing of fastnet's starts one (oneDNN's GNU OpenMP build, MKL on
    ``MKL_THREADING_LAYER=GNU``, the few-row kernels' threads)."""
    return _gomp_in_parent

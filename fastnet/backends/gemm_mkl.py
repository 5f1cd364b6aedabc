"""float32 GEMMs through Intel MKL's ``cblas_sgemm``, called from a cached Numba function
(optional; CPU only; ``pip install ".[mkl]"`` in fastnet's clone: the ``mkl`` wheel).

``matmul(a, b, out)`` computes ``out = a @ b`` in float32.  ``a`` and ``b`` are 2-D
float32 arrays with one unit stride: C-contiguous, or the transpose of one (``x.T``,
``W.T``), which MKL reads in place as a transposed operand (``CblasTrans``), nothing
copied; other layouts are copied first.  ``out`` is C-contiguous (row stride at least its
width).

**Which library.**  ``libmkl_rt.so.N`` from the ``mkl`` distribution's own file list (the
wheel installs it into ``<prefix>/lib``, on no search path), or the path in
``FASTNET_MKL``.  MKL's single dynamic library picks its CPU code path and its threading
layer at run time: Intel OpenMP (``libiomp5``, from the ``intel-openmp`` wheel the ``mkl``
wheel requires) unless ``MKL_THREADING_LAYER`` says otherwise (``GNU``: the process's
``libgomp``, the runtime oneDNN's ``onednn-cpu-gomp`` uses; ``SEQUENTIAL``).

**The call.**  One Numba function (compiled once, cached on disk; the function address
is given at run time) reads the operands' layouts and calls ``cblas_sgemm``: about as
cheap per call as NumPy's ``matmul``.  ``set_num_threads`` is ``mkl_set_num_threads``
(MKL's own count, whatever the threading layer).

fastnet runs a CPU training step's float32 GEMMs here when :mod:`fastnet.backends.gemm_choice`
measures MKL fastest on the step's shapes (or ``FASTNET_CPU_GEMM=mkl``).
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
import threading
from typing import Any, Optional

import numpy as np

from fastnet.backends import gomp_forked

__all__ = ["available", "load", "matmul", "version", "library_path", "set_num_threads",
           "get_num_threads", "MKLUnavailable", "POOL", "F32Matmul", "forked"]

ENV = "FASTNET_MKL"
PACKAGE = "mkl"
INSTALL_HINT = 'pip install ".[mkl]" in fastnet\'s clone (the mkl wheel: Intel MKL with its OpenMP runtime)'

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


class MKLUnavailable(ImportError):
    """MKL's library is not installed, or does not load."""


def _package_library() -> Optional[str]:
    """Path of ``libmkl_rt.so.N`` in the ``mkl`` distribution's installed file list, or None."""
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if re.fullmatch(r"libmkl_rt\.so(\.\d+)*", f.name):
            path = os.path.abspath(str(dist.locate_file(f)))
            if os.path.exists(path):
                return path
    return None


def _executor() -> Any:
    """The Numba function ``run(cblas_sgemm's address, a, b, out) -> status``: 0 when MKL
    ran, -1 when an operand's layout is not one ``cblas_sgemm`` reads (copy it, call
    again)."""
    global _RUN
    if _RUN is None:
        import numba

        import fastnet.kernels  # noqa: F401  (points Numba's cache at fastnet's kernel cache)

        from fastnet.backends import gemm_onednn

        global _NATIVE_CALL, _LAYOUT
        _NATIVE_CALL = gemm_onednn._native_caller()

        @numba.njit(cache=True, nogil=True)
        def layout(x):  # pragma: no cover - compiled
            """(CBLAS transpose flag, leading dimension) of a 2-D float32 operand, or (0, 0)."""
            rows, cols = x.shape
            s0, s1 = x.strides[0] // 4, x.strides[1] // 4
            if x.strides[0] % 4 or x.strides[1] % 4:
                return 0, 0
            if (s1 == 1 or cols == 1) and s0 >= max(1, cols):
                return _NO_TRANS, s0
            if (s0 == 1 or rows == 1) and s1 >= max(1, rows):
                return _TRANS, s1
            if rows == 1 and cols == 1:
                return _NO_TRANS, 1
            return 0, 0

        _LAYOUT = layout

        @numba.njit(cache=True, nogil=True)
        def run(sgemm, a, b, out):  # pragma: no cover - compiled
            m, k = a.shape
            n = b.shape[1]
            ta, lda = _LAYOUT(a)
            tb, ldb = _LAYOUT(b)
            if ta == 0 or tb == 0:
                return -1
            ldo = out.strides[0] // 4 if m > 1 else max(1, n)
            # cblas_sgemm returns nothing: the int32 the call reads is ignored
            _NATIVE_CALL(sgemm, (np.int32(_ROW_MAJOR), np.int32(ta), np.int32(tb), np.int32(m), np.int32(n),
                                 np.int32(k), np.float32(1.0), np.uint64(a.ctypes.data), np.int32(lda),
                                 np.uint64(b.ctypes.data), np.int32(ldb), np.float32(0.0),
                                 np.uint64(out.ctypes.data), np.int32(ldo)))
            return 0

        _RUN = run
    return _RUN


_RUN: Any = None
# (globals, not closure variables: those would key Numba's cache per process)
_NATIVE_CALL: Any = None
_LAYOUT: Any = None


class _Lib:
    def __init__(self, path: str):
        from fastnet.backends.gemm_onednn import _dlopen

        self.path = path
        self.dll = dll = _dlopen(path, ctypes.RTLD_LOCAL)
        buf = ctypes.create_string_buffer(256)
        dll.MKL_Get_Version_String(buf, len(buf))
        text = buf.value.decode(errors="replace")
        m = re.search(r"Version (\d+(?:\.\d+)*)", text)
        self.version = m.group(1) if m else text.strip() or "unknown"
        dll.MKL_Get_Max_Threads.restype = ctypes.c_int
        dll.MKL_Set_Num_Threads.argtypes = [ctypes.c_int]
        dll.MKL_Set_Num_Threads.restype = None
        self.sgemm = ctypes.cast(dll.cblas_sgemm, ctypes.c_void_p).value
        if not self.sgemm:
            raise MKLUnavailable(f"{path} has no cblas_sgemm")
        self.run = _executor()


_lib: Optional[_Lib] = None
_load_error: Optional[str] = None
_load_lock = threading.Lock()

#: Why MKL does not run in a process forked from one that had loaded GNU OpenMP (:func:`forked`).
FORKED = ("this process was forked from one that had loaded GNU OpenMP (libgomp: oneDNN's runtime, or MKL's "
          "with MKL_THREADING_LAYER=GNU): OpenMP's threads do not come with a fork, and MKL's GEMMs in such a "
          "child waited forever for them (measured, on MKL's own Intel OpenMP too); start the process with "
          "multiprocessing's 'spawn' or 'forkserver' method to run MKL in it")


def forked() -> Optional[str]:
    """Why MKL does not run in this process (forked after GNU OpenMP was loaded), or None."""
    return FORKED if gomp_forked() else None


def load() -> _Lib:
    """The loaded library (loaded on first use); :class:`MKLUnavailable` when it does not load,
    or in a process forked from one that had loaded GNU OpenMP (``FORKED``).

    Measured (Intel Xeon, MKL 2026.2, 2 threads), a forked child's first MKL GEMM waited
    forever where the parent had run MKL on GNU OpenMP, or had run oneDNN's GNU OpenMP threads
    (whether or not MKL was loaded there, on its default Intel OpenMP); a child of a parent
    that had run MKL alone, on Intel OpenMP, trained on.  The child computes on the providers
    that run there."""
    global _lib, _load_error
    if forked() is not None:
        raise MKLUnavailable(FORKED)
    if _lib is not None:
        return _lib
    with _load_lock:
        if _lib is None and _load_error is None:
            choice = os.environ.get(ENV, "").strip()
            path = choice or _package_library()
            if not sys.platform.startswith("linux"):
                _load_error = "fastnet.backends.gemm_mkl supports Linux only"
            elif path is None:
                _load_error = "MKL is not installed"
            else:
                try:
                    _lib = _Lib(path)
                except (OSError, AttributeError, MKLUnavailable) as e:
                    _load_error = f"MKL does not load ({ENV}={choice!r}): {path}: {e}" if choice else \
                        f"MKL does not load: {path}: {e}"
        if _lib is None:
            raise MKLUnavailable(f"{_load_error}. {INSTALL_HINT}")
    return _lib


def loaded() -> bool:
    """True when this process has loaded MKL already (nothing is loaded by asking)."""
    return _lib is not None


def available() -> bool:
    """True when MKL's library loads."""
    try:
        load()
        return True
    except MKLUnavailable:
        return False


def version() -> str:
    """MKL's version, e.g. ``"2026.2"`` (its own version string)."""
    return load().version


def library_path() -> str:
    return load().path


def get_num_threads() -> int:
    """MKL's thread count (``mkl_get_max_threads``)."""
    return int(load().dll.MKL_Get_Max_Threads())


def set_num_threads(n: int) -> bool:
    """Set MKL's thread count (``mkl_set_num_threads``)."""
    load().dll.MKL_Set_Num_Threads(int(n))
    return True


#: MKL's thread pool as fastnet.backends.threads takes pools: (name, get count, set count).
POOL = ("mkl", get_num_threads, set_num_threads)


def matmul(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``out = a @ b`` in float32 through ``cblas_sgemm`` (``out`` allocated when None)."""
    lib = load()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul needs (M, K) @ (K, N), not {a.shape} @ {b.shape}")
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"MKL's sgemm takes float32 operands, not {a.dtype} and {b.dtype}")
    m, n = a.shape[0], b.shape[1]
    if out is None:
        out = np.empty((m, n), np.float32)
    elif out.shape != (m, n) or out.dtype != np.float32 or out.strides[1] != 4 or out.strides[0] < 4 * n:
        raise ValueError(f"out must be float32 of shape {(m, n)}, rows contiguous, not {out.dtype} {out.shape} "
                         f"with strides {out.strides}")
    if 0 in (m, n, a.shape[1]):
        out[...] = 0.0
        return out
    if lib.run(lib.sgemm, a, b, out) < 0:
        lib.run(lib.sgemm, np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return out


class F32Matmul:
    """``out = a @ b`` in float32 through MKL: the float32 training GEMMs when MKL is the
    provider (:mod:`fastnet.backends.gemm_choice`)."""

    def __init__(self) -> None:
        load()
        #: The GEMMs' thread pool, for fit's thread tuner.
        self.pool = POOL

    def __call__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        return matmul(a, b, out=out)

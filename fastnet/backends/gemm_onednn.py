"""GEMMs through oneDNN's matmul primitive, called with ``ctypes`` (optional; CPU only).

``matmul(a, b)`` computes ``a @ b`` in float32, from float32 or bfloat16
operands (bfloat16: ``ml_dtypes.bfloat16`` arrays, or ``uint16`` arrays holding
the bit patterns), with float32 accumulation and a float32 result::

    out = a @ b  [+ bias]  [+ beta * out]

Transposed operands cost nothing: pass ``x.T`` or ``w.T`` (NumPy views); their
strides go into oneDNN's memory descriptors, nothing is copied.  Every operand
is used in place through its data pointer.

**Which oneDNN.**  Two PyPI packages carry ``libdnnl.so``; both install it into
``<prefix>/lib`` and both call it ``libdnnl.so.3``, so the library is loaded by
its full version name, found in the package's own file list:

* ``onednn-cpu-gomp`` (oneDNN 3.2, CPU engine threaded with GNU OpenMP, no other
  dependency): preferred;
* ``onednn`` (oneDNN 3.13 in 2026.1.0): built with the SYCL runtime for CPU and
  GPU, so it needs Intel's SYCL and OpenCL runtimes (installed with it as
  wheels) and a SYCL CPU device.  The OpenCL ICD file the wheel ships names a
  conda placeholder path, so ``OCL_ICD_FILENAMES`` is pointed at the wheel's
  ``libintelocl.so`` when not set.

``FASTNET_ONEDNN`` picks one: a package name, or the path of a ``libdnnl.so.*``.

**Primitives are cached** (never freed: one per problem the process meets) per
shape, data types, strides, bias, beta and thread count.  A call with arguments
laid out as in an earlier call (shapes, strides, dtypes) skips every check and
runs one small Numba function (compiled once, cached on disk) that sets the three or four
data handles, executes and waits: an eighth of the overhead of the same five calls through
``ctypes`` (which the first call, and read-only arrays, take).

**Threads.**  oneDNN 3.2 (OpenMP) uses ``omp_get_max_threads()`` of the
process's ``libgomp.so.1``; :func:`set_num_threads` calls ``omp_set_num_threads``
there (``OMP_NUM_THREADS`` works too, but NumPy's OpenBLAS also reads it when
imported).  This pool is not OpenBLAS's (pthreads) nor PyTorch's (its own
``libgomp``), and idle threads of each spin for a while after their work, so
alternating the two pools is 15x slower than either alone ("oneDNN and OpenBLAS
in one step" in docs/pages/decisions.md): a step's GEMMs run all here or all in
NumPy, not both.  The SYCL build runs
CPU work on TBB threads (dynamic scheduling); their count is not set from here.

**Other work on the same threads.**  :class:`PoolRunner` runs a compiled C callback on
every thread of the OpenMP pool (the optimizer's update, the bf16 rounding: the step's
other parallel work, where :class:`FasterOf` measured it faster than one thread).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import threading
import time
from typing import Any, NamedTuple, Optional

import numpy as np

from fastnet.backends import gomp_forked

__all__ = ["available", "load", "matmul", "implementation", "version", "runtime", "pool_runner", "PoolRunner",
           "library_path", "set_num_threads", "get_num_threads", "set_verbose",
           "to_bf16_bits", "OneDNNUnavailable", "OneDNNError"]

ENV = "FASTNET_ONEDNN"
PACKAGES = ("onednn-cpu-gomp", "onednn")
INSTALL_HINT = ("pip install onednn-cpu-gomp  (oneDNN 3.2 for the CPU, GNU OpenMP threads); "
                "or pip install onednn  (oneDNN 3.13, needs Intel's SYCL/OpenCL runtime wheels, "
                "installed with it)")

# oneDNN C API constants (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h; the same in 3.2 and 3.13)
_CPU_ENGINE = 1                      # dnnl_cpu
_STREAM_IN_ORDER = 1                 # dnnl_stream_in_order
_F32, _BF16 = 3, 2                   # dnnl_f32, dnnl_bf16
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS, _ARG_BIAS = 1, 17, 33, 41
_QUERY_IMPL_INFO_STR = 8             # dnnl_query_impl_info_str
_RUNTIMES = {0: "none", 1: "sequential", 2: "OMP", 4: "TBB", 8: "threadpool", 256: "OCL", 512: "SYCL"}
_STATUS = {1: "out_of_memory", 2: "invalid_arguments", 3: "unimplemented",
           4: "last_impl_reached", 5: "runtime_error", 6: "not_required"}
_MAX_NDIMS = 12
_Dims = ctypes.c_int64 * _MAX_NDIMS


class OneDNNUnavailable(ImportError):
    """oneDNN's library is not installed (or does not load, or has no CPU engine)."""


class OneDNNError(RuntimeError):
    """A oneDNN call returned an error status."""


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint),
                ("gpu_runtime", ctypes.c_uint)]


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


# -- finding and loading the library ----------------------------------------------------------

def _package_library(package: str) -> Optional[str]:
    """Path of ``libdnnl.so.X.Y`` in ``package``'s installed file list, or None."""
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    found = [f for f in (dist.files or []) if re.fullmatch(r"libdnnl\.so\.\d+\.\d+", f.name)]
    for f in found:
        path = os.path.abspath(str(dist.locate_file(f)))
        if os.path.exists(path):
            return path
    return None


def _candidates() -> list[str]:
    choice = os.environ.get(ENV, "").strip()
    if choice and os.sep in choice:
        return [choice]
    packages = [choice] if choice else list(PACKAGES)
    paths = [_package_library(p) for p in packages]
    return [p for p in paths if p]


def _dlopen(path: str, mode: int) -> ctypes.CDLL:
    """``ctypes.CDLL(path)``, first loading (RTLD_GLOBAL) each dependency it cannot find
    from the library's own folder: the wheels install into ``<prefix>/lib``, which is on
    no search path and in no RUNPATH."""
    folder = os.path.dirname(path)
    for _ in range(32):
        try:
            return ctypes.CDLL(path, mode=mode)
        except OSError as e:
            m = re.search(r"([\w.+-]+\.so[\w.]*): cannot open shared object file", str(e))
            dep = os.path.join(folder, m.group(1)) if m else ""
            if not m or dep == path or not os.path.exists(dep):
                raise
            _dlopen(dep, ctypes.RTLD_GLOBAL)
    raise OSError(f"too many missing dependencies loading {path}")


def _native_caller():
    """The Numba intrinsic ``native_call(address, args)``: calls the C function at ``address``
    (returning int32) with ``args``, a tuple of integers (int32 or 64-bit: pointers, handles)
    and float32s.  The address is a run-time value, so the functions calling it compile once
    and load from Numba's cache in later processes (a function pointer frozen into the code,
    as ctypes globals are, would be compiled afresh in each: 0.4-0.5 s)."""
    from llvmlite import ir
    from numba import types as nt
    from numba.extending import intrinsic

    @intrinsic
    def native_call(typingctx, address, args):
        if not isinstance(address, nt.Integer) or not isinstance(args, nt.BaseTuple):
            return None

        def codegen(context, builder, signature, llargs):
            values = [builder.extract_value(llargs[1], i) for i in range(len(args))]
            fnty = ir.FunctionType(ir.IntType(32), [v.type for v in values])
            return builder.call(builder.inttoptr(llargs[0], fnty.as_pointer()), values)

        return nt.int32(address, args), codegen

    return native_call


def _numba_executor(dll: ctypes.CDLL) -> Any:
    """A Numba function that sets the memories' data handles from the arrays, executes and
    waits: one call from Python instead of five ctypes calls and four ``.ctypes.data``.
    Compiled once and cached on disk with fastnet's kernels (the library's functions are
    called through their addresses, given at run time).

    ``handles``: uint64 [src, weights, dst, bias (or 0) memories, primitive, stream, number
    of arguments, address of the dnnl_exec_arg_t array, addresses of
    dnnl_memory_set_data_handle, dnnl_primitive_execute and dnnl_stream_wait].  Returns
    the OR of the statuses."""
    global _EXECUTOR
    if _EXECUTOR is None:
        import numba

        import fastnet.kernels  # noqa: F401  (points Numba's cache at fastnet's kernel cache)

        global _NATIVE_CALL
        _NATIVE_CALL = _native_caller()

        @numba.njit(cache=True, nogil=True)
        def run(handles, a, b, out, bias):  # pragma: no cover - compiled
            set_handle, execute, wait = handles[8], handles[9], handles[10]
            status = _NATIVE_CALL(set_handle, (handles[0], np.uint64(a.ctypes.data)))
            status |= _NATIVE_CALL(set_handle, (handles[1], np.uint64(b.ctypes.data)))
            status |= _NATIVE_CALL(set_handle, (handles[2], np.uint64(out.ctypes.data)))
            if handles[6] == 4:
                status |= _NATIVE_CALL(set_handle, (handles[3], np.uint64(bias.ctypes.data)))
            status |= _NATIVE_CALL(execute, (handles[4], handles[5], np.int32(handles[6]), handles[7]))
            return status | _NATIVE_CALL(wait, (handles[5],))

        _EXECUTOR = run
    return _EXECUTOR


_EXECUTOR: Any = None
_NATIVE_CALL: Any = None  # (a global, not a closure variable: those would key Numba's cache per process)


def _function_addresses(dll: ctypes.CDLL) -> list[int]:
    """Addresses of the functions the executor calls, in its ``handles`` order."""
    names = ("dnnl_memory_set_data_handle", "dnnl_primitive_execute", "dnnl_stream_wait")
    addresses = [ctypes.cast(getattr(dll, name), ctypes.c_void_p).value for name in names]
    assert all(addresses)
    return [int(a or 0) for a in addresses]


class _Lib:
    """The loaded library and one CPU engine (its streams are per thread: ``_here``)."""

    def __init__(self, path: str):
        folder = os.path.dirname(path)
        ocl = os.path.join(folder, "libintelocl.so")
        if os.path.exists(ocl):   # the SYCL build: let its OpenCL loader see the CPU runtime
            os.environ.setdefault("OCL_ICD_FILENAMES", ocl)
        self.path = path
        self.dll = dll = _dlopen(path, ctypes.RTLD_LOCAL)
        vp, P = ctypes.c_void_p, ctypes.POINTER
        dll.dnnl_version.restype = P(_Version)
        v = dll.dnnl_version().contents
        self.version = (v.major, v.minor, v.patch)
        self.runtime = _RUNTIMES.get(v.cpu_runtime, str(v.cpu_runtime))
        dll.dnnl_engine_get_count.restype = ctypes.c_size_t
        dll.dnnl_engine_get_count.argtypes = [ctypes.c_int]
        sig = {
            "dnnl_engine_create": [P(vp), ctypes.c_int, ctypes.c_size_t],
            "dnnl_stream_create": [P(vp), vp, ctypes.c_uint],
            "dnnl_stream_wait": [vp],
            "dnnl_memory_desc_create_with_strides": [P(vp), ctypes.c_int, P(_Dims), ctypes.c_int,
                                                     P(_Dims)],
            "dnnl_memory_desc_destroy": [vp],
            "dnnl_primitive_attr_create": [P(vp)],
            "dnnl_primitive_attr_destroy": [vp],
            "dnnl_primitive_attr_set_post_ops": [vp, vp],
            "dnnl_post_ops_create": [P(vp)],
            "dnnl_post_ops_destroy": [vp],
            "dnnl_post_ops_append_sum": [vp, ctypes.c_float, ctypes.c_int32, ctypes.c_int],
            "dnnl_matmul_primitive_desc_create": [P(vp), vp, vp, vp, vp, vp, vp],
            "dnnl_primitive_desc_query": [vp, ctypes.c_int, ctypes.c_int, vp],
            "dnnl_primitive_desc_destroy": [vp],
            "dnnl_primitive_create": [P(vp), vp],
            "dnnl_primitive_execute": [vp, vp, ctypes.c_int, P(_ExecArg)],
            "dnnl_memory_create": [P(vp), vp, vp, vp],
            "dnnl_memory_set_data_handle": [vp, vp],
            "dnnl_set_verbose": [ctypes.c_int],
        }
        for name, args in sig.items():
            f = getattr(dll, name)
            f.argtypes, f.restype = args, ctypes.c_int
        if dll.dnnl_engine_get_count(_CPU_ENGINE) < 1:
            raise OneDNNUnavailable(f"oneDNN {self.version_str} ({path}, CPU runtime {self.runtime}) "
                                    "finds no CPU device")
        self.engine = vp()
        self.check(dll.dnnl_engine_create(ctypes.byref(self.engine), _CPU_ENGINE, 0),
                   "dnnl_engine_create")
        self.omp: Any = None
        if self.runtime == "OMP":
            # the libgomp.so.1 libdnnl loaded (already in the process: dlopen returns it)
            self.omp = ctypes.CDLL("libgomp.so.1")
            self.omp.omp_get_max_threads.restype = ctypes.c_int
        self.execute = _numba_executor(dll)
        self.functions = _function_addresses(dll)

    def new_stream(self) -> ctypes.c_void_p:
        """A new in-order stream on the engine (one per thread that computes: ``_here``)."""
        stream = ctypes.c_void_p()
        self.check(self.dll.dnnl_stream_create(ctypes.byref(stream), self.engine, _STREAM_IN_ORDER),
                   "dnnl_stream_create")
        return stream

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))

    @staticmethod
    def check(status: int, what: str) -> None:
        if status != 0:
            raise OneDNNError(f"{what} failed: dnnl status {status} "
                              f"({_STATUS.get(status, 'unknown')})")


_lib: Optional[_Lib] = None
_threads: Optional[int] = None   # oneDNN's OpenMP thread count, as set here (primitives are per count)
_load_error: Optional[str] = None
_load_lock = threading.Lock()
#: Why oneDNN does not run in this process, when it was forked from one that had loaded it.
_forked: Optional[str] = None
FORKED = ("this process was forked from one that had loaded oneDNN and its OpenMP runtime: OpenMP's "
          "threads do not come with a fork, and oneDNN's next parallel region here could wait for them "
          "forever (start the process with multiprocessing's 'spawn' or 'forkserver' method to train on "
          "oneDNN in it)")
FORKED_GOMP = ("this process was forked from one that had loaded GNU OpenMP (libgomp: another library's "
               "OpenMP, MKL's with MKL_THREADING_LAYER=GNU), oneDNN's runtime here: OpenMP's threads do not "
               "come with a fork, and oneDNN's first parallel region here could wait for them forever (start "
               "the process with multiprocessing's 'spawn' or 'forkserver' method to train on oneDNN in it)")


def _after_fork_in_child() -> None:
    # GNU OpenMP keeps no threads across a fork: a child running the parent's primitives waited
    # forever (measured), and so did a child loading oneDNN after MKL's GEMMs had run on the
    # parent's libgomp.  The child computes on NumPy's BLAS; what would run oneDNN says why.
    global _forked
    if _lib is not None and _lib.omp is not None:
        _forked = FORKED
        _here.cache.clear()  # (the forking thread's primitives: the child's main thread's now)
        _here.fast.clear()
        _here.stream = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def forked() -> Optional[str]:
    """Why oneDNN does not run in this process (forked after its OpenMP threads ran), or None."""
    return _forked


def load() -> _Lib:
    """The loaded library (loaded on first use); :class:`OneDNNUnavailable` when none loads,
    or in a process forked from one that had loaded it (``FORKED``) or, for oneDNN's build on
    GNU OpenMP, from one that had loaded that runtime (``FORKED_GOMP``)."""
    global _lib, _load_error, _threads, _forked
    if _forked is not None:
        raise OneDNNUnavailable(_forked)
    if _lib is not None:
        return _lib
    with _load_lock:
        if _lib is None:
            if not sys.platform.startswith("linux"):
                _load_error = "fastnet.backends.gemm_onednn supports Linux only"
            else:
                errors = []
                for path in _candidates():
                    try:
                        _lib = _Lib(path)
                        if _lib.omp is not None and not gomp_forked():
                            _threads = int(_lib.omp.omp_get_max_threads())
                        break
                    except (OSError, OneDNNUnavailable, OneDNNError, AttributeError) as e:
                        errors.append(f"{path}: {e}")
                else:
                    _load_error = ("oneDNN is not installed" if not errors
                                   else "oneDNN does not load: " + "; ".join(errors))
        if _lib is None:
            raise OneDNNUnavailable(f"{_load_error}. {INSTALL_HINT}")
        if _lib.omp is not None and gomp_forked():
            _forked = FORKED_GOMP  # (refused before its first parallel region)
            raise OneDNNUnavailable(_forked)
    return _lib


def available() -> bool:
    """True when a oneDNN library loads and has a CPU engine."""
    try:
        load()
        return True
    except OneDNNUnavailable:
        return False


def version() -> tuple[int, int, int]:
    return load().version


def runtime() -> str:
    """oneDNN's CPU runtime: ``"OMP"`` (onednn-cpu-gomp), ``"SYCL"`` (onednn), ..."""
    return load().runtime


def library_path() -> str:
    return load().path


def set_verbose(level: int) -> None:
    """oneDNN's verbose mode (1: one line per execution, with the implementation; 2: and creation)."""
    lib = load()
    lib.check(lib.dll.dnnl_set_verbose(level), "dnnl_set_verbose")


def get_num_threads() -> Optional[int]:
    """oneDNN's OpenMP thread count (None where the runtime is not OpenMP), as OpenMP has it
    now: another library on the same OpenMP runtime (PyTorch's CPU wheel shares the system's
    libgomp) may have set it since :func:`set_num_threads`."""
    global _threads
    lib = load()
    if lib.omp is not None:
        _threads = int(lib.omp.omp_get_max_threads())
    return _threads


def set_num_threads(n: int) -> bool:
    """Set oneDNN's OpenMP thread count (False where the runtime is not OpenMP: unchanged)."""
    lib = load()
    global _threads
    if lib.omp is None:
        return False
    lib.omp.omp_set_num_threads(int(n))
    _threads = int(lib.omp.omp_get_max_threads())
    return True


#: oneDNN's thread pool as fastnet.backends.threads takes pools: (name, get count, set count).
POOL = ("onednn", get_num_threads, set_num_threads)


class PoolRunner:
    """Runs a C callback ``void body(void *data)`` on the threads of an OpenMP pool at once
    (``GOMP_parallel``: the calling thread is one of them).  On oneDNN's pool, for the work
    of a training step that is not a GEMM (the optimizer's update,
    ``fastnet.kernels.cpu.PoolUpdate``; the bf16 rounding of GEMM operands,
    ``fastnet.kernels.cpu.PoolRound``): the threads are the ones that run the step's
    GEMMs, already awake, so no second pool spins beside them (only where oneDNN's runtime
    is OpenMP).  On the process's ``libgomp`` for the forward pass of a few rows
    (``fastnet.backends.small_batch``), on a given number of threads, from any Python
    thread (each is the master of a team of its own).  The body asks OpenMP which thread it
    is (``thread_functions``: the addresses of ``omp_get_thread_num`` and
    ``omp_get_num_threads``) and takes its share."""

    def __init__(self, omp: ctypes.CDLL) -> None:
        address = lambda f: int(ctypes.cast(f, ctypes.c_void_p).value or 0)
        self.thread_functions = (address(omp.omp_get_thread_num), address(omp.omp_get_num_threads))
        #: ``GOMP_barrier``: a body calls it where every thread must wait for the others.
        self.barrier = address(omp.GOMP_barrier)
        self._omp = omp
        self._parallel = omp.GOMP_parallel
        self._parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        self._parallel.restype = None

    @staticmethod
    def threads() -> int:
        """The pool's thread count as last set here (:func:`set_num_threads`)."""
        return _threads or 1

    @staticmethod
    def faster_of() -> "FasterOf":
        """A new :class:`FasterOf`: where a user of the pool measures which way is faster."""
        return FasterOf()

    def max_threads(self) -> int:
        """OpenMP's thread count for the next parallel region (``omp_get_max_threads``:
        ``OMP_NUM_THREADS``, or what ``omp_set_num_threads`` set)."""
        return int(self._omp.omp_get_max_threads())

    def run(self, body: int, data: int, threads: int = 0) -> None:
        """``body(data)`` on each of ``threads`` threads of the pool (0: its current count);
        returns when all are done.  The GIL is released meanwhile (a ctypes call)."""
        if _forked is not None:   # (oneDNN's team stayed in the parent: it would wait forever)
            raise OneDNNUnavailable(_forked)
        self._parallel(body, data, threads, 0)


class FasterOf:
    """Of two ways to do the same work (on the calling thread, or shared by the pool's
    threads), the one measured faster here, per ``key`` (a size, a thread count): each
    way is timed on its first ``TRIES`` calls of a key (alternating), then the one with the
    lower best time runs, for ``KEEP`` calls, when the key is measured again (a load that
    came or went since).  Waking the pool costs a few microseconds on any CPU; how much
    work pays for it depends on the CPU's speed and memory, so it is measured, not set."""

    TRIES = 4
    KEEP = 1000

    def __init__(self) -> None:
        self.chosen: dict[Any, str] = {}
        self._times: dict[Any, tuple[list[float], list[float]]] = {}
        self._calls: dict[Any, int] = {}

    def __call__(self, key: Any, here: Any, pool: Any, *args: Any) -> None:
        choice = self.chosen.get(key)
        if choice is not None:
            calls = self._calls[key] = self._calls[key] + 1
            if calls >= self.KEEP:
                del self.chosen[key]
            (pool if choice == "pool" else here)(*args)
            return
        times = self._times.setdefault(key, ([], []))
        i = 0 if len(times[0]) <= len(times[1]) else 1
        start = time.perf_counter()
        (here, pool)[i](*args)
        times[i].append(time.perf_counter() - start)
        if len(times[1]) >= self.TRIES:
            self.chosen[key] = "pool" if min(times[1]) < min(times[0]) else "here"
            self._calls[key] = 0
            del self._times[key]


_runner: Optional[PoolRunner] = None


def pool_runner() -> Optional[PoolRunner]:
    """The :class:`PoolRunner` of oneDNN's OpenMP pool, or None where the runtime is not
    OpenMP (the SYCL build) or its ``GOMP_parallel`` is not found."""
    global _runner
    lib = load()
    if _runner is None and lib.omp is not None and hasattr(lib.omp, "GOMP_parallel"):
        _runner = PoolRunner(lib.omp)
    return _runner


# -- operands ---------------------------------------------------------------------------------

def _dtype_code(a: np.ndarray) -> int:
    if a.dtype == np.float32:
        return _F32
    if a.dtype == np.uint16 or a.dtype.name == "bfloat16":
        return _BF16
    raise TypeError(f"oneDNN matmul takes float32 or bfloat16 (ml_dtypes.bfloat16, or uint16 bit "
                    f"patterns) operands, not {a.dtype}")


def _element_strides(a: np.ndarray) -> Optional[tuple[int, int]]:
    """Strides of a 2-D array in elements, normalised for dimensions of size 1; None when oneDNN
    should not see the array as it is (negative or unaligned strides, no unit stride)."""
    size = a.itemsize
    s0, s1 = a.strides
    if s0 % size or s1 % size or s0 < 0 or s1 < 0:
        return None
    s0, s1 = s0 // size, s1 // size
    m, n = a.shape
    if n == 1:      # one column: inner (row-major) or outer (after a column-major dim)
        s1 = m if s0 == 1 and m > 1 else 1
    if m == 1:
        s0 = n if s1 == 1 else 1
    if (s1 == 1 and s0 >= n) or (s0 == 1 and s1 >= m):   # row-major or column-major, maybe padded
        return s0, s1
    return None


def _prepare(a: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    strides = _element_strides(a)
    if strides is None:
        a = np.ascontiguousarray(a)
        strides = _element_strides(a)
        assert strides is not None
    return a, strides


class _Problem(NamedTuple):
    """What a primitive is made for: ``(m, k) @ (k, n)`` of data type ``dt``, the element strides
    of ``a``, ``b`` and ``out``, a bias or not, and ``beta``."""
    m: int
    k: int
    n: int
    dt: int
    sa: tuple
    sb: tuple
    so: tuple
    bias: bool
    beta: float


class _Gemm:
    """One cached primitive with its memory objects (their data handles are set per call)."""

    def __init__(self, lib: _Lib, problem: _Problem, stream: ctypes.c_void_p):
        m, k, n, dt, sa, sb, so, bias, beta = problem
        dll, vp = lib.dll, ctypes.c_void_p
        self.lib = lib
        self.stream = stream
        self.out_shape = (m, n)
        self.lock = threading.Lock()
        descs = []

        def desc(rows: int, cols: int, dtype: int, strides: tuple) -> ctypes.c_void_p:
            md = vp()
            lib.check(dll.dnnl_memory_desc_create_with_strides(
                ctypes.byref(md), 2, _Dims(rows, cols), dtype, _Dims(*strides)),
                "dnnl_memory_desc_create_with_strides")
            descs.append(md)
            return md

        attr, post_ops, pd = vp(), vp(), vp()
        try:
            src, wei, dst = desc(m, k, dt, sa), desc(k, n, dt, sb), desc(m, n, _F32, so)
            bias_md = desc(1, n, _F32, (n, 1)) if bias else None
            lib.check(dll.dnnl_primitive_attr_create(ctypes.byref(attr)), "dnnl_primitive_attr_create")
            if beta != 0.0:
                lib.check(dll.dnnl_post_ops_create(ctypes.byref(post_ops)), "dnnl_post_ops_create")
                lib.check(dll.dnnl_post_ops_append_sum(post_ops, beta, 0, 0), "dnnl_post_ops_append_sum")
                lib.check(dll.dnnl_primitive_attr_set_post_ops(attr, post_ops),
                          "dnnl_primitive_attr_set_post_ops")
            lib.check(dll.dnnl_matmul_primitive_desc_create(
                ctypes.byref(pd), lib.engine, src, wei, bias_md, dst, attr),
                f"dnnl_matmul_primitive_desc_create (M={m} K={k} N={n})")
            info = ctypes.c_char_p()
            lib.check(dll.dnnl_primitive_desc_query(pd, _QUERY_IMPL_INFO_STR, 0, ctypes.byref(info)),
                      "dnnl_primitive_desc_query")
            self.impl = (info.value or b"").decode()
            self.primitive = vp()
            lib.check(dll.dnnl_primitive_create(ctypes.byref(self.primitive), pd), "dnnl_primitive_create")
            self.memories = []
            args = [(_ARG_SRC, src), (_ARG_WEIGHTS, wei), (_ARG_DST, dst)]
            if bias_md is not None:
                args.append((_ARG_BIAS, bias_md))
            for _, md in args:
                mem = vp()
                lib.check(dll.dnnl_memory_create(ctypes.byref(mem), md, lib.engine, None),
                          "dnnl_memory_create")
                self.memories.append(mem)
            exec_args = [_ExecArg(arg, mem) for (arg, _), mem in zip(args, self.memories)]
            self.args = (_ExecArg * len(args))(*exec_args)
        finally:
            for md in descs:
                dll.dnnl_memory_desc_destroy(md)
            for handle, destroy in ((pd, dll.dnnl_primitive_desc_destroy),
                                    (post_ops, dll.dnnl_post_ops_destroy),
                                    (attr, dll.dnnl_primitive_attr_destroy)):
                if handle.value:
                    destroy(handle)

        self.handles = np.array([m.value for m in self.memories] + [0] * (4 - len(self.memories))
                                + [self.primitive.value, stream.value, len(args),
                                   ctypes.addressof(self.args)] + lib.functions, np.uint64)

    def fast(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, bias: np.ndarray) -> None:
        """Execute on these arrays (writeable; bfloat16 as uint16) through the Numba executor."""
        with self.lock:
            status = self.lib.execute(self.handles, a, b, out, bias)
        if status:
            self.lib.check(status, "dnnl_primitive_execute")

    def __call__(self, *pointers: int) -> None:
        """Execute on these data pointers (src, weights, dst[, bias]), through ctypes."""
        lib = self.lib
        dll = lib.dll
        with self.lock:
            for mem, ptr in zip(self.memories, pointers):
                dll.dnnl_memory_set_data_handle(mem, ptr)
            lib.check(dll.dnnl_primitive_execute(self.primitive, self.stream, len(self.args), self.args),
                      "dnnl_primitive_execute")
            lib.check(dll.dnnl_stream_wait(self.stream), "dnnl_stream_wait")


class _Here(threading.local):
    """A thread's primitives and stream.  oneDNN's primitives share a scratchpad per thread
    (``DNNL_ENABLE_CONCURRENT_EXEC=OFF``, the default build): a primitive must run in the
    thread that made it, and a stream serves one thread.  So each thread that computes makes
    its own (fits may run in several threads at once, as a thread pool's jobs do)."""

    def __init__(self) -> None:
        #: by (problem, threads): a _Problem and the pool's thread count
        self.cache: dict[tuple, _Gemm] = {}
        #: by the arguments' layouts (those used in place): the primitive, and whether to view
        #: bfloat16 as uint16
        self.fast: dict[tuple, tuple[_Gemm, bool]] = {}
        self.stream: Optional[ctypes.c_void_p] = None


_here = _Here()
_NO_BIAS = np.zeros(1, np.float32)


def _setup(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray], bias: Optional[np.ndarray],
           beta: float):
    """Checks the arguments, copies what oneDNN cannot read in place, finds or creates the
    primitive; returns it with the arrays to pass and whether nothing was copied."""
    lib = load()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul needs (M, K) @ (K, N), not {a.shape} @ {b.shape}")
    dt = _dtype_code(a)
    if _dtype_code(b) != dt:
        raise TypeError(f"operands must have the same data type, not {a.dtype} and {b.dtype}")
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        if beta != 0.0:
            raise ValueError("beta needs out (the array accumulated into)")
        out = np.empty((m, n), np.float32)
    elif out.shape != (m, n) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(m, n)}, not {out.dtype} {out.shape}")
    a2, sa = _prepare(a)
    b2, sb = _prepare(b)
    so = _element_strides(out)
    if so is None:
        raise ValueError("out must have non-negative strides with one unit stride")
    bias2 = bias
    if bias is not None:
        bias2 = np.ascontiguousarray(bias, dtype=np.float32)
        if bias2.shape not in ((n,), (1, n)):
            raise ValueError(f"bias must have shape ({n},), not {bias2.shape}")
    problem = _Problem(m, k, n, dt, sa, sb, so, bias is not None, float(beta))
    key = (problem, _threads)
    here = _here
    gemm = here.cache.get(key)
    if gemm is None:
        if here.stream is None:
            here.stream = lib.new_stream()
        gemm = here.cache[key] = _Gemm(lib, problem, here.stream)
    in_place = a2 is a and b2 is b and bias2 is bias
    return gemm, a2, b2, out, bias2, in_place


def _layout(x: Optional[np.ndarray]) -> Optional[tuple]:
    return None if x is None else (x.shape, x.strides, x.dtype)


def matmul(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None, *,
           bias: Optional[np.ndarray] = None, beta: float = 0.0) -> np.ndarray:
    """``a @ b (+ bias) (+ beta * out)`` into ``out`` (float32, allocated when None).

    ``a`` (M, K) and ``b`` (K, N) are both float32 or both bfloat16 (``ml_dtypes.bfloat16`` or
    ``uint16`` bit patterns); any 2-D views with a unit stride (``x.T`` included) are used in
    place.  ``bias`` (N,) is float32.  ``beta`` (not 0) adds ``beta * out`` as it was.
    """
    # the usual call: arguments laid out as in an earlier call -> its primitive, no checks,
    # one call of the Numba executor (docs/pages/decisions.md, "oneDNN's call path")
    key = (_layout(a), _layout(b), _layout(out), _layout(bias), beta, _threads)
    hit = _here.fast.get(key)
    if hit is not None:
        gemm, view = hit
        if out is None:
            out = np.empty(gemm.out_shape, np.float32)
        if view:
            a, b = a.view(np.uint16), b.view(np.uint16)
        gemm.fast(a, b, out, _NO_BIAS if bias is None else bias)
        return out
    if a.ndim == 2 and b.ndim == 2 and 0 in (*a.shape, b.shape[-1]):   # nothing for oneDNN to do
        return _empty_product(a, b, out, bias, beta)
    gemm, a2, b2, out, bias2, in_place = _setup(a, b, out, bias, beta)
    if in_place and a.flags.writeable and b.flags.writeable and out.flags.writeable and (
            bias is None or (bias.ndim == 1 and bias.flags.writeable)):
        _here.fast[key] = (gemm, a.dtype != np.float32 and a.dtype != np.uint16)
    if bias2 is None:
        gemm(a2.ctypes.data, b2.ctypes.data, out.ctypes.data)
    else:
        gemm(a2.ctypes.data, b2.ctypes.data, out.ctypes.data, bias2.ctypes.data)
    return out


def implementation(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None, *,
                   bias: Optional[np.ndarray] = None, beta: float = 0.0) -> str:
    """The name of the implementation oneDNN chose for ``matmul(a, b, ...)`` (e.g.
    ``brg_matmul:avx512_core_bf16``)."""
    return _setup(a, b, out, bias, beta)[0].impl


def _empty_product(a, b, out, bias, beta):
    m, n = a.shape[0], b.shape[1]
    result = np.zeros((m, n), np.float32)
    if bias is not None:
        result += np.asarray(bias, np.float32).reshape(1, n)
    if out is None:
        return result
    if beta != 0.0:
        result += np.float32(beta) * out
    out[...] = result
    return out


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    bits = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        bits[nan] = 0x7FC0
    return bits


def _round_bf16_kernel():
    """The Numba loop rounding float32 bits to bfloat16 bits on the calling thread (nearest
    even; NaN stays a quiet NaN): ``fastnet.kernels.cpu.round_bf16_bits``."""
    from fastnet.kernels import cpu

    return cpu.round_bf16_bits


class Bf16Matmul:
    """``out = bf16(a) @ bf16(b)``, float32 accumulation and output, through oneDNN: the
    GEMM of ``precision="bf16"`` training steps.

    An operand is either float32 (C-contiguous, or the transpose of a C-contiguous array:
    ``x.T``, ``W.T``), rounded into a bfloat16 buffer kept per operand position and shape,
    or what :meth:`operand` returned (bfloat16 bits, used as they are).  A step rounds each
    array once: the forward pass's ``x`` and ``W`` are read again by the backward pass's
    ``x.T @ dy`` and ``dy @ W.T``, and ``dy`` by both of them.  Buffers are reused once the
    shapes repeat (no allocation in the steady state) and given to oneDNN in their layout."""

    #: Rounded operands kept at most (a layer's x, W and dy, at two batch sizes): past it
    #: the kept buffers are dropped and made again (never seen in a training run).
    MAX_OPERANDS = 256

    def __init__(self) -> None:
        load()
        self._buffers: dict[tuple, np.ndarray] = {}
        #: The GEMMs' thread pool, for fit's thread tuner; what runs other work on it.
        self.pool = POOL
        self.pool_runner = runner = pool_runner()
        self._round_here = _round_bf16_kernel()
        self._round_on_pool = None
        if runner is not None:
            from fastnet.kernels import cpu

            self._round_on_pool = cpu.PoolRound(runner.thread_functions, runner.run)
        #: Per size and thread count, where rounding was measured faster (:class:`FasterOf`).
        self.where = FasterOf()
        #: What rounds an operand (``fastnet bench --profile`` times it as a part of its own).
        self._round = self._round_bits
        #: Arrays an optimizer step rounded as it updated them, by address: (the array, its
        #: bits), taken (once) by the next :meth:`operand` of that array (:meth:`rounded_by_step`).
        self._fresh: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._keep = False
        #: How many operands were the bits a step had rounded (not rounded again), for the profile.
        self.from_steps = 0

    def _round_bits(self, src: np.ndarray, dst: np.ndarray) -> None:
        """``src`` (float32 bits) rounded into ``dst``: on this thread, or shared by the
        pool's threads where it has more than one and that was measured faster for arrays
        of this size (:class:`FasterOf`).  The same bits either way."""
        threads = PoolRunner.threads()
        if self._round_on_pool is None or threads < 2:
            self._round_here(src, dst)
        else:
            self.where((src.size, threads), self._round_here, self._round_on_pool, src, dst)

    def _bits(self, x: np.ndarray, key: Any) -> np.ndarray:
        transposed = not x.flags.c_contiguous
        src = x.T if transposed else x
        if not src.flags.c_contiguous or src.dtype != np.float32:
            raise ValueError(f"bf16 GEMM operands are float32, C-contiguous or transposed so: got {x.dtype} "
                             f"with strides {x.strides}")
        key = (key, src.shape)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) >= self.MAX_OPERANDS:
                self._buffers.clear()
            buf = self._buffers[key] = np.empty(src.shape, np.uint16)
        self._round(src.reshape(-1).view(np.uint32), buf.reshape(-1))
        return buf.T if transposed else buf

    def operand(self, x: np.ndarray) -> np.ndarray:
        """``x`` rounded to bfloat16 now, for GEMMs to come (until ``x`` changes): bits in a
        buffer of ``x``'s own (by address), which the next ``operand`` of the same array
        overwrites; or, once, the bits the optimizer's step rounded ``x`` into as it updated it
        (:meth:`rounded_by_step`)."""
        address = x.__array_interface__["data"][0]
        held = self._fresh.pop(address, None) if self._fresh else None
        if held is not None and held[0] is x:
            self.from_steps += 1
            return held[1]
        return self._bits(x, address)

    def step_bits(self, params: list) -> list:
        """For an optimizer's step that rounds the weights as it updates them: per parameter,
        a flat uint16 buffer of its own for the weights' bits (2-D C-contiguous float32
        arrays: the GEMMs' operands), else None."""
        return [np.empty(p.size, np.uint16) if p.ndim == 2 and p.dtype == np.float32 and p.flags.c_contiguous
                else None for p in params]

    def rounds_in_steps(self) -> bool:
        """Whether optimizer steps round the weights for the next forward pass now (only inside
        ``fit``'s loop of steps: :meth:`steps_round`)."""
        return self._keep

    def rounded_by_step(self, pairs) -> None:
        """``(array, its bits in its shape)`` pairs an optimizer step just rounded: the next
        :meth:`operand` of each array takes its bits instead of rounding it again."""
        if self._keep:
            for a, bits in pairs:
                self._fresh[a.__array_interface__["data"][0]] = (a, bits)

    def forget_rounded(self) -> None:
        """Drop what steps rounded: the arrays may have changed since (a callback's edit)."""
        self._fresh.clear()

    @contextlib.contextmanager
    def steps_round(self):
        """While in it (``fit``'s loop of steps), optimizer steps that can round the weights as
        they update them do, for the next step's forward pass; nothing rounded is kept past it
        (the weights may change outside ``fit``'s loop: a user's code, a checkpoint loaded)."""
        self._keep = True
        self._fresh.clear()
        try:
            yield
        finally:
            self._keep = False
            self._fresh.clear()

    def __call__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        a = a if a.dtype == np.uint16 else self._bits(a, "a")
        b = b if b.dtype == np.uint16 else self._bits(b, "b")
        return matmul(a, b, out=out)


class F32Matmul:
    """``out = a @ b`` in float32 through oneDNN: the float32 training GEMMs when
    ``FASTNET_CPU_GEMM=onednn`` (fastnet.backends.precision; NumPy's OpenBLAS by default)."""

    def __init__(self) -> None:
        load()
        #: The GEMMs' thread pool, for fit's thread tuner; what runs other work on it.
        self.pool = POOL
        self.pool_runner = pool_runner()

    def __call__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        return matmul(a, b, out=out)

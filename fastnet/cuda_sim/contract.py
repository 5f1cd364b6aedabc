"""A strict stand-in for CuPy: NumPy computes, the installed CuPy's contract decides.

fastnet's CUDA backend is written against CuPy, and CuPy differs from NumPy in
ways that only show on a GPU: ``cupy.take`` has no ``mode``, a device array is
never converted to a host array implicitly, NumPy functions refuse device
arrays.  ``cupy-cuda13x`` installs and imports on a machine with neither GPU
nor driver, and its functions' signatures are readable there (only allocating
device memory fails).  This module uses that: :func:`module` returns an array
module that computes with NumPy but accepts only what the installed CuPy
accepts, so every CuPy-only line of fastnet runs in CI without a GPU.

What it checks
--------------
* **Names.**  A function or array method that CuPy does not have is an
  ``AttributeError``.
* **Arguments.**  Each call is bound against the real CuPy signature
  (``inspect.signature``, or the signature line Cython puts at the top of a
  docstring); an argument CuPy does not take is a ``TypeError``.  CuPy ufuncs
  take ``nin`` inputs, optional outputs and only ``out``, ``dtype``, ``casting``.
* **No implicit host conversion.**  ``np.asarray(dev)``, NumPy functions and
  ufuncs given a device array, ``bool(dev)``, ``iter(dev)``, a device array as
  the index of a host array, and a host (NumPy) array given to a CuPy function
  or operator are refused with ``TypeError``.  Explicit transfers are allowed:
  ``asnumpy``/``.get()``/``float()``/``int()``/``.item()`` (device to host),
  ``asarray``/``.set()``/assignment of a host array (host to device).

What it counts (:data:`COUNTERS`)
---------------------------------
``allocations`` (a new device array: a function or operator result that is not
an ``out=`` argument nor a view of an input), ``host_to_device``,
``device_to_host`` and ``synchronizations`` (every device-to-host read, and
``Stream.synchronize``).  ``fastnet``'s tests assert zero of each per training
step after the first.

What it counts (:func:`launch_counter`)
---------------------------------------
Device launches, while a counter is open: fastnet's ``numba.cuda`` kernels
(``fastnet.kernels.cuda`` reports each launch on contract arrays), CuPy's own
kernels (each call counted as the kernels CuPy 14 launches for it: one per
element-wise operation, copy, fill or gather; reductions as CuPy dispatches
them, through CUB's routines with a temporary result copied into ``out``),
GEMMs and collectives; and ``workspaces``, the pool allocations CuPy makes
inside a call (CUB's).  A call's own result array is an allocation of
:data:`COUNTERS`, as before.

Under ``NUMBA_ENABLE_CUDASIM=1`` the ``numba.cuda`` kernels take these arrays
through DLPack (``__dlpack__``), as numba-cuda takes CuPy arrays on a GPU.

Where it lives
--------------
This module is the array module object (``xp``, from :func:`module`) and
the public names.  The device array and :data:`COUNTERS` are in
:mod:`fastnet.cuda_sim.device_array`; reading and binding the installed CuPy's
signatures is :mod:`fastnet.cuda_sim.signatures`.  Imports point one way:
signatures, then the device array, then this module.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import inspect
import os

import numpy as np

from fastnet.cuda_sim import device_array as _device_array
from fastnet.cuda_sim.device_array import (
    COUNTERS, LAUNCH_KINDS, Counters, LaunchCount, device_arrays, ndarray, out_arrays, record_call, record_launch,
    unwrap, wrap,
)
from fastnet.cuda_sim.signatures import (
    ContractError, available, binary_names, binary_signature, bind_signature, installed_cupy, is_ufunc,
    signature_of,
)

__all__ = ["module", "ndarray", "COUNTERS", "Counters", "ContractError", "available", "SIM_COMPUTE_CAPABILITY",
           "SIM_GPUS", "launch_counter", "LaunchCount", "LAUNCH_KINDS"]

#: The simulated GPU's compute capability (``cupy.cuda.Device().compute_capability``).
SIM_COMPUTE_CAPABILITY = "FASTNET_SIM_COMPUTE_CAPABILITY"


@contextlib.contextmanager
def launch_counter():
    """Count device launches inside the ``with`` block: yields a :class:`LaunchCount`
    (``by_kind``, ``by_name``, ``total``, ``workspaces``, ``snapshot()``/``since()``), filled
    as the launches happen.  Counters may nest; each counts everything inside it."""
    count = LaunchCount()
    _device_array.ACTIVE_COUNTS.append(count)
    try:
        yield count
    finally:
        _device_array.ACTIVE_COUNTS.remove(count)


# --------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------
_UFUNC_KWARGS = {"out", "dtype", "casting"}


class _Stream:
    """CuPy's current stream: the null stream (pointer 0)."""

    ptr = 0

    def synchronize(self):
        COUNTERS.add("synchronizations")


class _Device:
    """``cupy.cuda.Device(i)``: its ``id`` (the current device when ``i`` is None), ``use()``
    and its compute capability, ``FASTNET_SIM_COMPUTE_CAPABILITY`` (default ``"90"``, an
    H100/H200) so that tests can play an older GPU."""

    current = 0  # the process's current device (cudaSetDevice)

    def __init__(self, device=None):
        for attr in ("compute_capability", "id", "use"):
            if not hasattr(installed_cupy().cuda.Device, attr):
                raise ContractError(f"cupy.cuda.Device has no {attr}")
        self.id = _Device.current if device is None else int(device)
        if not 0 <= self.id < _Runtime().getDeviceCount():
            raise ContractError(f"cupy.cuda.Device({device!r}): no such device "
                                f"({_Runtime().getDeviceCount()} simulated)")

    def use(self):
        _Device.current = self.id

    @property
    def compute_capability(self):
        return os.environ.get(SIM_COMPUTE_CAPABILITY, "90")


#: The simulated machine's number of GPUs (``cupy.cuda.runtime.getDeviceCount()``).
SIM_GPUS = "FASTNET_SIM_GPUS"


class _Runtime:
    """``cupy.cuda.runtime``: ``getDeviceCount()`` is ``FASTNET_SIM_GPUS`` (default 8, a
    node of eight GPUs, so ``mpiexec -n 2`` gets a GPU per rank as on a GPU machine)."""

    def getDeviceCount(self):
        if not hasattr(installed_cupy().cuda.runtime, "getDeviceCount"):
            raise ContractError("cupy.cuda.runtime has no getDeviceCount")
        return int(os.environ.get(SIM_GPUS, "8"))


class _Cuda:
    """``cupy.cuda``: the current stream, which fastnet's kernels launch on, ``Device``
    and ``runtime``."""

    _stream = _Stream()
    Device = _Device
    runtime = _Runtime()

    def get_current_stream(self, device_id=-1):
        return self._stream


class _Module:
    """The contract's array module (``xp``)."""

    ndarray = ndarray
    cuda = _Cuda()
    # dtypes pass straight through
    float32, float64, int32, int64, uint64, bool_ = (
        np.float32, np.float64, np.int32, np.int64, np.uint64, np.bool_)

    def __init__(self):
        self.__name__ = "fastnet.cuda_sim.contract"
        self.__version__ = f"contract of CuPy {available()[1]}"

    def __repr__(self):
        return f"<array module {self.__version__}>"

    # -- transfers ---------------------------------------------------------
    def asarray(self, a, dtype=None, order=None, *, copy=None, blocking=False):
        if isinstance(a, ndarray):
            if dtype is None or np.dtype(dtype) == a.dtype:
                return a
            COUNTERS.add("allocations")
            record_launch("cupy", "astype")
            return ndarray(a._a.astype(dtype))
        COUNTERS.add("host_to_device")
        COUNTERS.add("allocations")
        return ndarray(np.array(a, dtype=dtype, order=order or "K", copy=True))

    def ascontiguousarray(self, a, dtype=None):
        if not isinstance(a, ndarray):
            raise ContractError(f"cupy.ascontiguousarray takes a device array, got {type(a).__name__}")
        r = np.ascontiguousarray(a._a, dtype=dtype)
        record_call("ascontiguousarray", r, (a._a,))
        return wrap(r, (a._a,))

    def asnumpy(self, a, stream=None, order="C", out=None, *, blocking=True):
        if isinstance(a, ndarray):
            COUNTERS.add("device_to_host")
            COUNTERS.add("synchronizations")
            return np.array(a._a, order=order, copy=True)
        return np.asarray(a, order=order)

    # -- data-parallel collectives ------------------------------------------
    def nccl_process_group(self, host):
        """Stand-in for ``cupyx.distributed.init_process_group(size, rank, use_mpi=True)``:
        calls bound against the installed ``NCCLBackend``, summed through ``host`` (MPI)."""
        return _NCCLStandIn(host)

    # -- cuBLAS (the GEMMs of precision="tf32", "bf16", "fp16") ----------------
    def cublas_binding(self):
        """Stand-in for ``(cupy_backends.cuda.libs.cublas, cupy.cuda.device.get_cublas_handle)``."""
        return _cublas_stand_in(), _cublas_handle

    # -- launches (not CuPy's: fastnet.kernels.cuda reports its kernels here) -------
    @staticmethod
    def record_launch(kind, name):
        """Count a launch of kind ``kind`` (one of :data:`LAUNCH_KINDS`) in the open
        :func:`launch_counter` blocks."""
        record_launch(kind, name)

    # -- everything else: bound against CuPy, computed by NumPy ---------------
    def __getattr__(self, name):
        return _lookup(self, installed_cupy(), np, "", name)


class _NCCLStandIn:
    """``cupyx.distributed``'s NCCL communicator as fastnet calls it: each call is bound
    against the installed CuPy's ``NCCLBackend`` method, takes device arrays only (a NumPy
    array is refused, as NCCL would), and is computed with MPI on the arrays' host
    memory (on a GPU the data never leaves the device: nothing is counted)."""

    def __init__(self, host):
        import warnings

        with warnings.catch_warnings():  # "nccl library could not be loaded": no GPU here
            warnings.simplefilter("ignore")
            from cupyx.distributed import NCCLBackend
        self._real = NCCLBackend
        self.host = host

    def _bind(self, name, args):
        return bind_signature(inspect.signature(getattr(self._real, name)), f"NCCLBackend.{name}",
                              (self,) + args, {})

    def all_reduce(self, *args):
        a = self._bind("all_reduce", args)
        src = unwrap(a["in_array"], "NCCLBackend.all_reduce in_array")
        dst = unwrap(a["out_array"], "NCCLBackend.all_reduce out_array")
        if a.get("op", "sum") != "sum":
            raise ContractError(f"fastnet sums gradients; the stand-in has op='sum' only, got {a['op']!r}")
        if not (src.flags.c_contiguous and dst.flags.c_contiguous):
            raise ContractError("NCCLBackend.all_reduce needs contiguous arrays")
        if dst is not src:
            dst[...] = src
        self.host.allreduce(dst, "the NCCL all-reduce (simulated)")
        record_launch("collective", "all_reduce")

    def broadcast(self, *args):
        a = self._bind("broadcast", args)
        buf = unwrap(a["in_out_array"], "NCCLBackend.broadcast in_out_array")
        if a.get("root", 0) != 0:
            raise ContractError(f"fastnet broadcasts from rank 0, got root={a['root']!r}")
        self.host.broadcast(buf, "the NCCL broadcast (simulated)")
        record_launch("collective", "broadcast")


_CUBLAS = "cupy_backends.cuda.libs.cublas"
_CUBLAS_HANDLE = 0x5EED  # what the stand-in's get_cublas_handle returns


def _cublas_handle():
    binary_signature("cupy.cuda.device", "get_cublas_handle").bind()  # takes no argument
    return _CUBLAS_HANDLE


def _round_to(x, fmt):
    """float32 ``x`` rounded to ``fmt``'s significand (to nearest, ties to even), as float32."""
    if fmt == "fp16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float32)  # overflow: inf, as on the tensor cores
    drop = {"bf16": 16, "tf32": 13, "fp32": 0}[fmt]
    if drop == 0:
        return x.copy()
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = ((u + np.uint32((1 << (drop - 1)) - 1) + ((u >> np.uint32(drop)) & np.uint32(1)))
         & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)).view(np.float32)
    return np.where(np.isfinite(x), r, x)


class _CublasStandIn:
    """CuPy's cuBLAS binding as fastnet calls it: ``gemmEx`` bound against the installed
    CuPy's signature (read from the compiled module, which cannot be imported without
    libcublas), the constants' names checked to exist there (their values are cuBLAS's
    documented enums), and the product computed as cuBLAS computes it from the raw
    pointers: column-major matrices of the given leading dimensions, operations N or T,
    the inputs rounded to the compute type's format, float32 output."""

    CUDA_R_32F = 0
    CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
    CUBLAS_COMPUTE_32F = 68
    CUBLAS_COMPUTE_32F_FAST_16F = 74
    CUBLAS_COMPUTE_32F_FAST_16BF = 75
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77
    CUBLAS_GEMM_DEFAULT = -1
    CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99
    _FORMAT = {68: "fp32", 74: "fp16", 75: "bf16", 77: "tf32"}

    def __init__(self):
        names = [n for n in vars(type(self)) if n.startswith("CUBLAS_")] + ["gemmEx"]
        missing = sorted(set(names) - binary_names(_CUBLAS, names))
        if missing:
            raise ContractError(f"the installed CuPy's cuBLAS binding lacks {missing}")
        self._sig = binary_signature(_CUBLAS, "gemmEx")

    @staticmethod
    def _matrix(ptr, rows, cols, ld, what):
        """The column-major ``rows x cols`` matrix at device address ``ptr`` (host memory here)."""
        if ld < max(1, rows):
            raise ContractError(f"cublasGemmEx: {what}'s leading dimension {ld} < its rows {rows}")
        count = ld * (cols - 1) + rows
        base = np.ctypeslib.as_array((ctypes.c_float * count).from_address(ptr))
        return np.lib.stride_tricks.as_strided(base, shape=(rows, cols), strides=(4, 4 * ld))

    def gemmEx(self, *args):
        a = bind_signature(self._sig, "cupy_backends.cuda.libs.cublas.gemmEx", args, {})
        for name, v in a.items():
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise ContractError(f"cublas.gemmEx's {name} is a C integer, got {type(v).__name__} {v!r}")
        if a["handle"] != _CUBLAS_HANDLE:
            raise ContractError("cublas.gemmEx needs the handle of cupy.cuda.device.get_cublas_handle()")
        if {a["Atype"], a["Btype"], a["Ctype"]} != {self.CUDA_R_32F}:
            raise ContractError("fastnet's GEMMs are float32 arrays (CUDA_R_32F)")
        fmt = self._FORMAT.get(a["computeType"])
        if fmt is None:
            raise ContractError(f"compute type {a['computeType']} is not one of float32's")
        m, n, k = a["m"], a["n"], a["k"]
        shapes = {}
        for name, op, rows, cols in (("A", a["transa"], m, k), ("B", a["transb"], k, n)):
            if op not in (self.CUBLAS_OP_N, self.CUBLAS_OP_T):
                raise ContractError(f"cublas.gemmEx: operation {op} on {name}")
            stored = (rows, cols) if op == self.CUBLAS_OP_N else (cols, rows)
            x = self._matrix(a[name], *stored, a[f"ld{name.lower()}"], name)
            shapes[name] = x if op == self.CUBLAS_OP_N else x.T
        alpha = np.float32(ctypes.c_float.from_address(a["alpha"]).value)
        beta = np.float32(ctypes.c_float.from_address(a["beta"]).value)
        c = self._matrix(a["C"], m, n, a["ldc"], "C")
        product = _round_to(shapes["A"], fmt).astype(np.float64) @ _round_to(shapes["B"], fmt).astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            c[...] = (alpha * product + (beta * c if beta else 0.0)).astype(np.float32)
        record_launch("gemm", "gemmEx")


@functools.lru_cache(maxsize=None)
def _cublas_stand_in():
    return _CublasStandIn()


class _Submodule:
    """``cupy.linalg`` and the like: the same rules one level down."""

    def __init__(self, real, host, prefix):
        self._real, self._host, self._prefix = real, host, prefix

    def __getattr__(self, name):
        return _lookup(self, self._real, self._host, self._prefix, name)


def _lookup(namespace, real_ns, host_ns, prefix, name):
    if name.startswith("__"):
        raise AttributeError(name)
    real = getattr(real_ns, name, None)
    if real is None:
        raise AttributeError(f"CuPy has no function {prefix}{name!r}")
    host = getattr(host_ns, name, None)
    if inspect.ismodule(real) and inspect.ismodule(host):
        fn = _Submodule(real, host, f"{prefix}{name}.")
    elif host is None or not callable(host):
        raise AttributeError(f"the CuPy contract does not emulate cupy.{prefix}{name}")
    elif is_ufunc(real):
        fn = _ufunc(prefix + name, real, host)
    else:
        fn = _function(prefix + name, real, host)
    setattr(namespace, name, fn)  # cached: the next lookup skips __getattr__
    return fn


def _ufunc(name, real, host):
    def call(*args, **kwargs):
        if len(args) < real.nin or len(args) > real.nin + real.nout:
            raise ContractError(f"cupy.{name} takes {real.nin} inputs, got {len(args)} arguments")
        extra = set(kwargs) - _UFUNC_KWARGS
        if extra:
            raise ContractError(f"cupy.{name} does not take {sorted(extra)}")
        out = list(args[real.nin:])
        if "out" in kwargs:
            o = kwargs["out"]
            out += list(o) if isinstance(o, tuple) else [o]
        for o in out:
            if not isinstance(o, ndarray):
                raise ContractError(f"cupy.{name}: out must be a device array, got {type(o).__name__}")
        where = f"cupy.{name}"
        result = host(*unwrap(args, where), **{k: unwrap(v, where) for k, v in kwargs.items()})
        record_launch("cupy", name)  # one element-wise kernel
        return wrap(result, device_arrays(args[:real.nin]), out)

    call.__name__ = name
    return call


def _function(name, real, host):
    sig = signature_of(real)

    def call(*args, **kwargs):
        bound = bind_signature(sig, f"cupy.{name}", args, kwargs)
        out = out_arrays(bound.get("out")) if bound is not None else None
        where = f"cupy.{name}"
        result = host(*unwrap(args, where), **{k: unwrap(v, where) for k, v in kwargs.items()})
        inputs = device_arrays(args)
        first = next(iter(bound.values()), None) if bound else None
        record_call(name.rsplit(".", 1)[-1], result, inputs, out, bound,
                    host_input=first._a if isinstance(first, ndarray) else None)
        return wrap(result, inputs, out)

    call.__name__ = name
    return call


@functools.lru_cache(maxsize=None)
def module():
    """The contract array module; needs CuPy importable (its signatures are the contract)."""
    ok, why = available()
    if not ok:
        raise ImportError(f"the CuPy contract needs CuPy installed: {why}")
    return _Module()


# The device array's ``__array_namespace__`` is this module's: installed here,
# as fastnet.cuda_sim.device_array cannot import the module built on it.
ndarray._namespace = staticmethod(module)

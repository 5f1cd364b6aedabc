"""The device array of the CuPy contract, and the device traffic it counts.

:class:`ndarray` is a NumPy array that behaves as strictly as a CuPy one: it
refuses implicit host conversions, takes only the methods and arguments that
``cupy.ndarray`` takes (bound by :mod:`fastnet.cuda_sim.signatures`), and counts
allocations, transfers and synchronisations in :data:`COUNTERS`.  :func:`wrap`
and :func:`unwrap` move values between NumPy and the contract for the array
module, :mod:`fastnet.cuda_sim.contract`, which is built on this module.

It also counts device launches (:class:`LaunchCount`, filled while
:func:`fastnet.cuda_sim.contract.launch_counter` is open): each call is counted as
the kernels CuPy 14 would launch for it on a GPU (:func:`record_call`).
"""
from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np

from fastnet.cuda_sim.signatures import ContractError, bind_method, installed_cupy

__all__ = ["COUNTERS", "Counters", "LaunchCount", "LAUNCH_KINDS", "ndarray", "device_arrays", "out_arrays",
           "record_call", "record_launch", "unwrap", "wrap"]

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)


class Counters:
    """Device traffic seen by the contract: allocations, transfers, synchronisations."""

    FIELDS = ("allocations", "host_to_device", "device_to_host", "synchronizations")

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        for f in self.FIELDS:
            setattr(self, f, 0)

    def add(self, field, n=1):
        with self._lock:
            setattr(self, field, getattr(self, field) + n)

    def snapshot(self):
        """The counts as a dict."""
        return {f: getattr(self, f) for f in self.FIELDS}

    def since(self, snapshot):
        """Counts added since ``snapshot``."""
        return {f: getattr(self, f) - snapshot[f] for f in self.FIELDS}


#: The process-wide counters.
COUNTERS = Counters()


# --------------------------------------------------------------------------
# device launches: what a GPU would run for each call
# --------------------------------------------------------------------------
#: Kinds of launch: fastnet's ``numba.cuda`` kernels (``fastnet.kernels.cuda``), CuPy's own
#: kernels (element-wise, reductions, copies, fills, CUB's reductions), GEMMs (cuBLAS, through
#: ``cupy.matmul`` or the cuBLAS binding) and collectives (NCCL).
LAUNCH_KINDS = ("numba", "cupy", "gemm", "collective")


class LaunchCount:
    """Device launches counted while a :func:`fastnet.cuda_sim.contract.launch_counter` is open.

    ``by_kind``: ``{kind: launches}`` over :data:`LAUNCH_KINDS`; ``by_name``: launches per
    kernel or CuPy function name (a reduction CuPy hands to CUB counts as ``sum/cub``, its
    extra kernels as ``sum/copy``, ``argmax/astype``); ``workspaces``: device allocations
    CuPy makes inside a call and frees after it (CUB's temporary result and workspace, from
    CuPy's memory pool: no ``cudaMalloc``, but a pool lookup and a stream-ordered free each).
    """

    def __init__(self):
        self.by_kind = dict.fromkeys(LAUNCH_KINDS, 0)
        self.by_name = collections.Counter()
        self.workspaces = 0

    @property
    def total(self):
        """All launches counted so far."""
        return sum(self.by_kind.values())

    def snapshot(self):
        """The counts so far: ``{"by_kind": ..., "by_name": ..., "workspaces": ...}`` (copies)."""
        return {"by_kind": dict(self.by_kind), "by_name": dict(self.by_name), "workspaces": self.workspaces}

    def since(self, snapshot):
        """Counts added since ``snapshot`` (names that did not change are left out)."""
        names = {n: c - snapshot["by_name"].get(n, 0) for n, c in self.by_name.items()}
        return {"by_kind": {k: c - snapshot["by_kind"][k] for k, c in self.by_kind.items()},
                "by_name": {n: c for n, c in names.items() if c},
                "workspaces": self.workspaces - snapshot["workspaces"]}

    def __repr__(self):
        return f"LaunchCount(by_kind={self.by_kind}, workspaces={self.workspaces})"


_LAUNCH_LOCK = threading.Lock()
#: The open counters (see ``fastnet.cuda_sim.contract.launch_counter``); empty: nothing is counted.
ACTIVE_COUNTS: list = []
#: Model CuPy's CUB *block* reductions (``cupy/_core/_cub_reduction.pyx``: CuPy's reduction
#: kernels go through them when CuPy finds ``nvcc``; fastnet's ``cuda13`` extra installs none,
#: its ``cuda12`` extra does).  With them a whole-array reduction runs in two passes with a
#: pool workspace; off by default (one launch per reduction kernel).
CUB_BLOCK_REDUCTIONS = False


def record_launch(kind, name, n=1, workspaces=0):
    """Count ``n`` launches of kind ``kind`` named ``name`` in every open counter."""
    if not ACTIVE_COUNTS or not (n or workspaces):
        return
    with _LAUNCH_LOCK:
        for count in ACTIVE_COUNTS:
            count.by_kind[kind] += n
            if n:
                count.by_name[name] += n
            count.workspaces += workspaces


#: CuPy calls that launch nothing: allocation without initialisation.
_NO_KERNEL = frozenset({"empty", "empty_like"})
#: CuPy calls that run a GEMM (cuBLAS).
_GEMMS = frozenset({"matmul", "dot", "tensordot", "inner", "vdot", "__matmul__"})
#: Reductions CuPy routes through ``cupy.cuda.cub.cub_reduction`` first (its ``cub`` routine
#: accelerator, on by default), by CuPy's name of the operation.
_CUB_ROUTINES = {"sum": "sum", "prod": "prod", "max": "max", "amax": "max", "min": "min", "amin": "min",
                 "argmax": "argmax", "argmin": "argmin"}
_REDUCTIONS = frozenset(_CUB_ROUTINES) | {"mean", "var", "std", "any", "all", "count_nonzero", "nansum",
                                          "nanprod", "nanmax", "nanmin", "ptp"}
#: dtypes CUB reduces (``cub.pyx``: ``CUB_support_dtype``); sum and prod with no ``dtype`` only
#: those that need no promotion (``CUB_sum_support_dtype``).
_CUB_DTYPES = frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                              np.int64, np.uint64, np.float16, np.float32, np.float64,
                                              np.complex64, np.complex128))
_CUB_SUM_DTYPES = frozenset(np.dtype(t) for t in (np.int64, np.uint64, np.float16, np.float32, np.float64,
                                                  np.complex64, np.complex128))
#: Largest input, in bytes, that CUB's ``DeviceReduce`` reduces in one single-tile kernel (its
#: policy: 256 threads x 16 four-byte items, scaled by the item size); larger: two kernels.
_CUB_TILE_BYTES = 256 * 16 * 4


def _reduction_axes(axis, ndim):
    """``(reduced axes, kept axes)``, sorted, as CuPy's ``_get_axis``."""
    if axis is None or ndim == 0:
        reduced = tuple(range(ndim))
    else:
        reduced = tuple(sorted(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,))))
    return reduced, tuple(i for i in range(ndim) if i not in reduced)


def _contiguous_axes(reduced, ndim, order):
    """Reduced axes that are one contiguous run at the fast end of the layout (CuPy's
    ``_cub_device_segmented_reduce_axis_compatible``)."""
    if not reduced or list(reduced) != list(range(reduced[0], reduced[0] + len(reduced))):
        return False
    return reduced[-1] == ndim - 1 if order == "C" else reduced[0] == 0


def _cub_routine(op, a, axis, dtype):
    """``"device"``, ``"segmented"`` or None: which of CuPy's CUB routines takes reduction
    ``op`` of host array ``a`` (``cupy/cuda/cub.pyx``, ``cub_reduction``)."""
    if op in ("argmax", "argmin") and dtype is not None:
        return None
    if a.flags.c_contiguous:
        order = "C"
    elif a.flags.f_contiguous:
        order = "F"
    else:
        return None
    if dtype is None:
        ok = a.dtype in (_CUB_SUM_DTYPES if op in ("sum", "prod") else _CUB_DTYPES)
    else:
        ok = np.dtype(dtype) == a.dtype and a.dtype in _CUB_DTYPES
    if not ok:
        return None
    reduced, kept = _reduction_axes(axis, a.ndim)
    if not kept and a.size <= 0x7FFFFFFF:
        return "device"
    if op in ("argmax", "argmin"):
        return None
    if a.size and not _contiguous_axes(reduced, a.ndim, order):
        return None
    return "segmented" if int(np.prod([a.shape[i] for i in reduced])) > 0 else None


def _record_reduction(name, a, axis, dtype, out):
    """Count reduction ``name`` of host array ``a`` as CuPy 14 runs it on a GPU.

    Through CUB's routines (``cub.pyx``) the result is computed into a temporary array with a
    pool workspace, then copied into ``out`` by one more kernel (``elementwise_copy``); argmax
    and argmin add a cast of CUB's key-value pair.  Otherwise one CuPy reduction kernel writes
    ``out`` directly (two passes and a workspace for a whole-array reduction when
    :data:`CUB_BLOCK_REDUCTIONS` models CuPy's CUB block reductions).
    """
    op = _CUB_ROUTINES.get(name)
    route = _cub_routine(op, a, axis, dtype) if op is not None else None
    if route == "device":
        kernels = 1 if a.size * a.dtype.itemsize <= _CUB_TILE_BYTES else 2
        temps = 1 + (op in ("argmax", "argmin") or out is not None)  # workspace, temporary result
        record_launch("cupy", f"{name}/cub", kernels, workspaces=temps)
        if op in ("argmax", "argmin"):
            record_launch("cupy", f"{name}/astype", workspaces=int(out is not None))
        if out is not None:
            record_launch("cupy", f"{name}/copy")
    elif route == "segmented":
        record_launch("cupy", f"{name}/cub", workspaces=int(a.size > 0) + int(out is not None))
        if out is not None:
            record_launch("cupy", f"{name}/copy")
    else:
        reduced, kept = _reduction_axes(axis, a.ndim)
        order = "F" if a.flags.f_contiguous else "C" if a.flags.c_contiguous else None
        two_pass = (CUB_BLOCK_REDUCTIONS and not kept and a.size > 0 and order is not None
                    and _contiguous_axes(reduced, a.ndim, order))
        record_launch("cupy", name, 2 if two_pass else 1, workspaces=int(two_pass))


def record_call(name, result, inputs=(), out=None, bound=None, host_input=None):
    """Count the launches of CuPy call ``name`` (a function, method or operator) that returned
    ``result`` (a NumPy value) from the NumPy arrays ``inputs``.

    A GEMM is a ``gemm`` launch; a reduction is counted by :func:`_record_reduction` (from the
    bound ``axis``, ``dtype`` and ``out``, and ``host_input``, the array reduced); ``empty``
    launches nothing, nor does a call whose result is a view of an input (``reshape``, slices,
    ``astype(copy=False)`` of the same dtype) or not an array.  Any other call that returns a
    device array or writes one (``out=``, ``copyto``, ``fill``) is one CuPy kernel.
    """
    if not ACTIVE_COUNTS or name in _NO_KERNEL:
        return
    if name in _GEMMS:
        record_launch("gemm", name.strip("_"))
        return
    if name in _REDUCTIONS and host_input is not None:
        bound = bound or {}
        _record_reduction(name, host_input, bound.get("axis"), bound.get("dtype"), bound.get("out"))
        return
    if result is None:  # written in place
        record_launch("cupy", name.strip("_"))
        return
    results = result if isinstance(result, tuple) else (result,)
    arrays = [r for r in results if isinstance(r, np.ndarray)]
    if not arrays and not any(isinstance(r, np.generic) for r in results):
        return
    if arrays and all(r.size == 0 for r in arrays):
        return  # CuPy launches nothing for an empty result
    if out is None and arrays and all(_views_of(r, inputs) for r in arrays):
        return
    record_launch("cupy", name.strip("_"))


# --------------------------------------------------------------------------
# between NumPy and the contract
# --------------------------------------------------------------------------
def unwrap(x, where):
    """Host value for NumPy; refuses NumPy arrays where CuPy wants device arrays."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise ContractError(
            f"{where}: got a NumPy array (shape {x.shape}); CuPy takes device arrays here "
            "(move it with cupy.asarray first)"
        )
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v, where) for v in x)
    return x


def _views_of(result, inputs):
    return any(np.may_share_memory(result, a) for a in inputs)


def wrap(result, inputs=(), out=None):
    """Wrap NumPy results as device arrays; count the new ones."""
    if isinstance(result, tuple):
        return tuple(wrap(r, inputs, out) for r in result)
    if isinstance(result, np.generic):
        # CuPy returns 0-d device arrays where NumPy returns scalars.
        COUNTERS.add("allocations")
        return ndarray(np.asarray(result))
    if not isinstance(result, np.ndarray):
        return result
    if out is not None and any(result is o._a or np.may_share_memory(result, o._a) for o in out):
        return next(o for o in out if np.may_share_memory(result, o._a))
    if not _views_of(result, inputs):
        COUNTERS.add("allocations")
    return ndarray(result)


def device_arrays(values):
    """The NumPy arrays of the device arrays in ``values`` (nested lists and tuples included)."""
    found = []
    for v in values:
        if isinstance(v, ndarray):
            found.append(v._a)
        elif isinstance(v, (list, tuple)):
            found.extend(device_arrays(v))
    return found


def out_arrays(bound_out):
    """The device arrays of a bound ``out`` argument (None when there is none)."""
    if bound_out is None:
        return None
    if isinstance(bound_out, ndarray):
        return [bound_out]
    if isinstance(bound_out, tuple):
        return [o for o in bound_out if isinstance(o, ndarray)]
    raise ContractError(f"out must be a device array, got {type(bound_out).__name__}")


def _binary(op, name):
    def method(self, other):
        if isinstance(other, np.ndarray):
            raise ContractError(f"{name}: a NumPy array operand is not supported by CuPy ({_IMPLICIT})")
        if isinstance(other, ndarray):
            other_a = other._a
        elif isinstance(other, (int, float, complex, bool, np.generic)):
            other_a = other
        else:
            return NotImplemented
        result = op(self._a, other_a)
        record_call(name, result, (self._a,))
        return wrap(result, (self._a,))

    method.__name__ = name
    return method


def _inplace(op, name):
    def method(self, other):
        if isinstance(other, np.ndarray):
            raise ContractError(f"{name}: a NumPy array operand is not supported by CuPy ({_IMPLICIT})")
        op(self._a, other._a if isinstance(other, ndarray) else other)
        record_call(name, None)
        return self

    method.__name__ = name
    return method


def _unary(op, name):
    def method(self):
        result = op(self._a)
        record_call(name, result, (self._a,))
        return wrap(result, (self._a,))

    method.__name__ = name
    return method


def _advanced(key):
    """Whether an index (after :meth:`ndarray._key`) holds an index array or list: CuPy's
    advanced indexing, a kernel."""
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (np.ndarray, list)) for k in keys)


def _host_read():
    """A device-to-host copy, which waits for the device: counted as both."""
    COUNTERS.add("device_to_host")
    COUNTERS.add("synchronizations")


class ndarray:
    """A device array of the contract: a NumPy array that behaves as strictly as a CuPy one."""

    __slots__ = ("_a", "__weakref__")
    # NumPy must defer to this type in mixed operations (and then be refused).
    __array_priority__ = 1000
    #: ``__array_namespace__`` returns ``_namespace()``: :func:`fastnet.cuda_sim.contract.module`,
    #: which installs itself here (it is built on this module, so this one cannot import it).
    _namespace: Any = None

    def __init__(self, a):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"contract arrays wrap NumPy arrays, got {type(a).__name__}")
        self._a = a

    # -- what CuPy refuses -------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise ContractError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise ContractError(f"numpy.{ufunc.__name__} was given a device array: {_IMPLICIT}")

    def __array_function__(self, func, types, args, kwargs):
        raise ContractError(f"numpy.{func.__name__} was given a device array: {_IMPLICIT}")

    def __bool__(self):
        raise ContractError(
            "bool() of a device array reads it back to the host (a synchronisation): "
            "compare on the device, or read it once explicitly with .get()"
        )

    def __iter__(self):
        raise ContractError("iterating a device array reads it element by element: use .get() once")

    def __index__(self):
        raise ContractError(_IMPLICIT)

    # -- explicit transfers ------------------------------------------------
    def __float__(self):
        _host_read()
        return float(self._a)

    def __int__(self):
        _host_read()
        return int(self._a)

    def get(self, *args, **kwargs):
        bind_method("get", args, kwargs)
        _host_read()
        return self._a.copy()

    def item(self, *args):
        bind_method("item", args, {})
        _host_read()
        return self._a.item(*args)

    def tolist(self):
        _host_read()
        return self._a.tolist()

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise ContractError(f"ndarray.set takes a NumPy array, got {type(arr).__name__}")
        if arr.shape != self._a.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self._a.shape}, new shape: {arr.shape}")
        COUNTERS.add("host_to_device")
        self._a[...] = arr

    # -- attributes --------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))

    @property
    def data(self):
        """``.ptr``: the address of the first element, as CuPy's ``MemoryPointer``."""
        return _Pointer(self._a.__array_interface__["data"][0])

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"contract.{np.array_repr(self._a)}"

    # -- DLPack: how numba-cuda (and the simulator here) take the array ------
    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        kwargs = {}
        if max_version is not None:
            kwargs["max_version"] = max_version
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()

    def __array_namespace__(self, api_version=None):
        # (CuPy's arrays have no such method; fastnet.kernels.reference finds
        # CuPy by its package name, the contract through this.)
        return ndarray._namespace()

    # -- indexing ----------------------------------------------------------
    def _key(self, key):
        if isinstance(key, tuple):
            return tuple(self._key(k) for k in key)
        if isinstance(key, ndarray):
            return key._a
        if isinstance(key, np.ndarray):
            # CuPy copies a host index array to the device.
            COUNTERS.add("host_to_device")
            COUNTERS.add("allocations")
        return key

    def __getitem__(self, key):
        k = self._key(key)
        r = self._a[k]
        if isinstance(r, np.generic):  # CuPy: a 0-d view, not a scalar
            r = self._a[(k if isinstance(k, tuple) else (k,)) + (Ellipsis,)]
        if _advanced(k) and r.size:  # a gather kernel (basic indexing gives a view)
            record_launch("cupy", "getitem")
        return wrap(r, (self._a,))

    def __setitem__(self, key, value):
        k = self._key(key)
        if isinstance(value, np.ndarray):
            COUNTERS.add("host_to_device")
        elif isinstance(value, ndarray):
            value = value._a
        self._a[k] = value
        record_call("setitem", None)

    # -- methods: bound against CuPy's ndarray -----------------------------
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if not hasattr(installed_cupy().ndarray, name):
            raise AttributeError(f"CuPy arrays have no attribute {name!r}")
        target = getattr(self._a, name)
        if not callable(target):
            return wrap(target, (self._a,))

        def method(*args, **kwargs):
            bound = bind_method(name, args, kwargs)
            out = out_arrays(bound.get("out")) if bound is not None else None
            if name == "reshape" and "copy" in kwargs:
                kwargs = dict(kwargs)
                kwargs.pop("copy")
            result = target(*unwrap(args, f"ndarray.{name}"),
                            **{k: unwrap(v, f"ndarray.{name}") for k, v in kwargs.items()})
            inputs = (self._a,) + tuple(device_arrays(args))
            record_call(name, result, inputs, out, bound, host_input=self._a)
            return wrap(result, inputs, out)

        method.__name__ = name
        return method

    __add__ = _binary(np.add, "__add__")
    __radd__ = _binary(lambda a, b: np.add(b, a), "__radd__")
    __sub__ = _binary(np.subtract, "__sub__")
    __rsub__ = _binary(lambda a, b: np.subtract(b, a), "__rsub__")
    __mul__ = _binary(np.multiply, "__mul__")
    __rmul__ = _binary(lambda a, b: np.multiply(b, a), "__rmul__")
    __truediv__ = _binary(np.true_divide, "__truediv__")
    __rtruediv__ = _binary(lambda a, b: np.true_divide(b, a), "__rtruediv__")
    __floordiv__ = _binary(np.floor_divide, "__floordiv__")
    __mod__ = _binary(np.mod, "__mod__")
    __pow__ = _binary(np.power, "__pow__")
    __rpow__ = _binary(lambda a, b: np.power(b, a), "__rpow__")
    __matmul__ = _binary(np.matmul, "__matmul__")
    __and__ = _binary(np.bitwise_and, "__and__")
    __or__ = _binary(np.bitwise_or, "__or__")
    __xor__ = _binary(np.bitwise_xor, "__xor__")
    __lshift__ = _binary(np.left_shift, "__lshift__")
    __rshift__ = _binary(np.right_shift, "__rshift__")
    __lt__ = _binary(np.less, "__lt__")
    __le__ = _binary(np.less_equal, "__le__")
    __gt__ = _binary(np.greater, "__gt__")
    __ge__ = _binary(np.greater_equal, "__ge__")
    __eq__ = _binary(np.equal, "__eq__")
    __ne__ = _binary(np.not_equal, "__ne__")
    __iadd__ = _inplace(np.ndarray.__iadd__, "__iadd__")
    __isub__ = _inplace(np.ndarray.__isub__, "__isub__")
    __imul__ = _inplace(np.ndarray.__imul__, "__imul__")
    __itruediv__ = _inplace(np.ndarray.__itruediv__, "__itruediv__")
    __ixor__ = _inplace(np.ndarray.__ixor__, "__ixor__")
    __neg__ = _unary(np.negative, "__neg__")
    __pos__ = _unary(np.positive, "__pos__")
    __abs__ = _unary(np.abs, "__abs__")
    __invert__ = _unary(np.invert, "__invert__")
    __hash__ = None  # type: ignore[assignment]  # unhashable, as CuPy's and NumPy's arrays


class _Pointer:
    __slots__ = ("ptr",)

    def __init__(self, ptr):
        self.ptr = ptr

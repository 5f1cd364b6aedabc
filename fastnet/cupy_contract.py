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

Under ``NUMBA_ENABLE_CUDASIM=1`` the ``numba.cuda`` kernels take these arrays
through DLPack (``__dlpack__``), as numba-cuda takes CuPy arrays on a GPU.
"""
from __future__ import annotations

import ast
import functools
import inspect
import threading

import numpy as np

__all__ = ["module", "ndarray", "COUNTERS", "Counters", "ContractError", "available"]

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)


class ContractError(TypeError):
    """A call that CuPy would refuse (or that would silently copy to the host)."""


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
# the real CuPy: names and signatures only
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _cupy():
    import cupy

    return cupy


def available():
    """``(True, version)`` when CuPy imports (its contract can be checked), else ``(False, why)``."""
    try:
        return True, _cupy().__version__
    except Exception as exc:  # ImportError, or a broken install
        return False, f"{type(exc).__name__}: {exc}"


def _signature_from_doc(obj):
    """Cython methods carry ``cls.name(self, a, b=None, *, c=1) -> T`` as their first doc line."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if not doc:
        return None
    line = doc.splitlines()[0]
    head, _, _ = line.partition(" -> ")
    name, paren, params = head.partition("(")
    if not paren or not params.endswith(")"):
        return None
    params = params[:-1]
    # Cython writes C types before some names ("tuple max_version=None"): keep the last word.
    cleaned = []
    for p in _split_params(params):
        lhs, eq, rhs = p.partition("=")
        cleaned.append(lhs.split()[-1] + eq + rhs if lhs.strip() else p)
    try:
        tree = ast.parse(f"def f({', '.join(cleaned)}): pass")
    except SyntaxError:
        return None
    args = tree.body[0].args
    P = inspect.Parameter
    out = []

    def default(node):
        try:
            return ast.literal_eval(node)
        except ValueError:
            return None

    positional = args.posonlyargs + args.args
    defaults = [P.empty] * (len(positional) - len(args.defaults)) + [default(d) for d in args.defaults]
    for a, d in zip(positional, defaults):
        out.append(P(a.arg, P.POSITIONAL_OR_KEYWORD, default=d))
    if args.vararg:
        out.append(P(args.vararg.arg, P.VAR_POSITIONAL))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append(P(a.arg, P.KEYWORD_ONLY, default=P.empty if d is None else default(d)))
    if args.kwarg:
        out.append(P(args.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(out)


def _split_params(params):
    depth, cur, parts = 0, "", []
    for ch in params:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _signature_of(obj):
    """CuPy's signature of ``obj`` (None when it has none to read)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = _signature_from_doc(obj)
    if sig is not None:
        params = list(sig.parameters.values())
        if params and params[0].name == "self":
            sig = sig.replace(parameters=params[1:])
    return sig


@functools.lru_cache(maxsize=None)
def _method_signature(name):
    return _signature_of(getattr(_cupy().ndarray, name))


def _is_ufunc(obj):
    return type(obj).__name__ == "ufunc"


# --------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------
def _unwrap(x, where):
    """Host value for NumPy; refuses NumPy arrays where CuPy wants device arrays."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise ContractError(
            f"{where}: got a NumPy array (shape {x.shape}); CuPy takes device arrays here "
            "(move it with cupy.asarray first)"
        )
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, where) for v in x)
    return x


def _views_of(result, inputs):
    return any(np.may_share_memory(result, a) for a in inputs)


def _wrap(result, inputs=(), out=None):
    """Wrap NumPy results as device arrays; count the new ones."""
    if isinstance(result, tuple):
        return tuple(_wrap(r, inputs, out) for r in result)
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


def _device_arrays(values):
    found = []
    for v in values:
        if isinstance(v, ndarray):
            found.append(v._a)
        elif isinstance(v, (list, tuple)):
            found.extend(_device_arrays(v))
    return found


def _outs(bound_out):
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
        return _wrap(op(self._a, other_a), (self._a,))

    method.__name__ = name
    return method


def _inplace(op, name):
    def method(self, other):
        if isinstance(other, np.ndarray):
            raise ContractError(f"{name}: a NumPy array operand is not supported by CuPy ({_IMPLICIT})")
        op(self._a, other._a if isinstance(other, ndarray) else other)
        return self

    method.__name__ = name
    return method


def _unary(op, name):
    def method(self):
        return _wrap(op(self._a), (self._a,))

    method.__name__ = name
    return method


def _host_read():
    """A device-to-host copy, which waits for the device: counted as both."""
    COUNTERS.add("device_to_host")
    COUNTERS.add("synchronizations")


class ndarray:
    """A device array of the contract: a NumPy array that behaves as strictly as a CuPy one."""

    __slots__ = ("_a", "__weakref__")
    # NumPy must defer to this type in mixed operations (and then be refused).
    __array_priority__ = 1000

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
        _bind("ndarray", "get", args, kwargs)
        _host_read()
        return self._a.copy()

    def item(self, *args):
        _bind("ndarray", "item", args, {})
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
        return module()

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
        return _wrap(r, (self._a,))

    def __setitem__(self, key, value):
        k = self._key(key)
        if isinstance(value, np.ndarray):
            COUNTERS.add("host_to_device")
        elif isinstance(value, ndarray):
            value = value._a
        self._a[k] = value

    # -- methods: bound against CuPy's ndarray -----------------------------
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if not hasattr(_cupy().ndarray, name):
            raise AttributeError(f"CuPy arrays have no attribute {name!r}")
        target = getattr(self._a, name)
        if not callable(target):
            return _wrap(target, (self._a,))

        def method(*args, **kwargs):
            bound = _bind("ndarray", name, args, kwargs)
            out = _outs(bound.get("out")) if bound is not None else None
            if name == "reshape" and "copy" in kwargs:
                kwargs = dict(kwargs)
                kwargs.pop("copy")
            result = target(*_unwrap(args, f"ndarray.{name}"),
                            **{k: _unwrap(v, f"ndarray.{name}") for k, v in kwargs.items()})
            return _wrap(result, (self._a,) + tuple(_device_arrays(args)), out)

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
    __hash__ = None


class _Pointer:
    __slots__ = ("ptr",)

    def __init__(self, ptr):
        self.ptr = ptr


def _bind(owner, name, args, kwargs):
    """Bind a call to an ndarray method against CuPy's signature."""
    return _bind_signature(_method_signature(name), f"cupy.ndarray.{name}", args, kwargs)


def _bind_signature(sig, where, args, kwargs):
    """``{name: value}`` of the bound arguments; ContractError where CuPy would refuse them."""
    if sig is None:
        return None
    try:
        return sig.bind(*args, **kwargs).arguments
    except TypeError as exc:
        raise ContractError(f"{where}{sig}: {exc}") from None


# --------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------
_UFUNC_KWARGS = {"out", "dtype", "casting"}


class _Stream:
    """CuPy's current stream: the null stream (pointer 0)."""

    ptr = 0

    def synchronize(self):
        COUNTERS.add("synchronizations")


class _Cuda:
    """``cupy.cuda``: only the current stream, which fastnet's kernels launch on."""

    _stream = _Stream()

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
        self.__name__ = "fastnet.cupy_contract"
        self.__version__ = f"contract of CuPy {available()[1]}"

    def __repr__(self):
        return f"<array module {self.__version__}>"

    # -- transfers ---------------------------------------------------------
    def asarray(self, a, dtype=None, order=None, *, copy=None, blocking=False):
        if isinstance(a, ndarray):
            if dtype is None or np.dtype(dtype) == a.dtype:
                return a
            COUNTERS.add("allocations")
            return ndarray(a._a.astype(dtype))
        COUNTERS.add("host_to_device")
        COUNTERS.add("allocations")
        return ndarray(np.array(a, dtype=dtype, order=order or "K", copy=True))

    def ascontiguousarray(self, a, dtype=None):
        if not isinstance(a, ndarray):
            raise ContractError(f"cupy.ascontiguousarray takes a device array, got {type(a).__name__}")
        r = np.ascontiguousarray(a._a, dtype=dtype)
        return _wrap(r, (a._a,))

    def asnumpy(self, a, stream=None, order="C", out=None, *, blocking=True):
        if isinstance(a, ndarray):
            COUNTERS.add("device_to_host")
            COUNTERS.add("synchronizations")
            return np.array(a._a, order=order, copy=True)
        return np.asarray(a, order=order)

    # -- everything else: bound against CuPy, computed by NumPy ---------------
    def __getattr__(self, name):
        return _lookup(self, _cupy(), np, "", name)


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
    elif _is_ufunc(real):
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
        result = host(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()})
        return _wrap(result, _device_arrays(args[:real.nin]), out)

    call.__name__ = name
    return call


def _function(name, real, host):
    sig = _signature_of(real)

    def call(*args, **kwargs):
        bound = _bind_signature(sig, f"cupy.{name}", args, kwargs)
        out = _outs(bound.get("out")) if bound is not None else None
        where = f"cupy.{name}"
        result = host(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()})
        return _wrap(result, _device_arrays(args), out)

    call.__name__ = name
    return call


@functools.lru_cache(maxsize=None)
def module():
    """The contract array module; needs CuPy importable (its signatures are the contract)."""
    ok, why = available()
    if not ok:
        raise ImportError(f"the CuPy contract needs CuPy installed: {why}")
    return _Module()

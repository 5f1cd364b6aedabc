"""Fused CUDA kernels: ``@numba.cuda.jit`` kernels launched on CuPy arrays.

Overrides of kernels of the table in ``reference``: a kernel defined here
replaces the reference one of the same name on the ``cuda`` and ``cuda-sim``
backends, the others run as written there (on CuPy arrays).  Same names,
signatures and side effects (see its docstring):
results are written into the arrays passed in, nothing is returned, nothing is
allocated (but the backward kernels' scratch, once: see below).  Each public
function is a small Python wrapper that picks a launch configuration and
launches one kernel, ``_k_<name>``; ``SIGNATURES`` lists the argument types of
every kernel per dtype (``tests/cuda_compile`` compiles them all to PTX for
sm_80 and sm_90 and runs ``ptxas`` on them).

Decisions:

* **Lazy, per dtype.**  No signature is given to ``cuda.jit``: an eager
  signature compiles at import and needs a CUDA driver, and this module must
  import on a machine with neither a GPU nor the simulator.  Numba compiles one
  specialisation per argument types at the first launch (float32 and float64;
  int32 and int64 labels for ``softmax_xent``).  Device helpers are
  ``inline="always"`` (inlined in Numba IR): typing a call to a non-inlined
  device function compiles it for the *current device*, which needs a driver,
  so ``compile_ptx(..., cc=(9, 0))`` on a machine without a GPU would fail.
* **float32 stays float32.**  Numba types a float literal as float64 and
  would promote ``float32 * 0.5`` to a float64 multiply; every constant in a
  kernel is therefore written ``T(0.5)`` with ``T`` the element type, and the
  wrappers cast the Python-float hyper-parameters to the array dtype before the
  launch (as NumPy 2 / NEP 50 does in ``reference``).  The compile test checks
  that float32 PTX holds no float64 instruction at all.
* **Grid-stride loops, bounded grids.**  Element-wise kernels launch
  ``min(ceil(size / BLOCK), MAX_BLOCKS)`` blocks and stride over the array, so
  any size works with any grid (the simulator tests use a grid of 2 blocks).
* **Shared-memory tree reductions, no atomic sums, no warp shuffles.**  The
  simulator has no shuffles or ballots, and atomic additions would make the
  sums depend on thread timing.  Every sum here is taken in a fixed order, so
  a launch configuration gives bit-identical results run after run.

  - activation backward: a 2-D grid of 2-D blocks.  A block of ``(bx, by)``
    threads owns ``bx`` adjacent columns (consecutive threads read consecutive
    addresses of a row) and one of ``gy`` row blocks (``blockIdx.y``); thread
    row ``ty`` of row block ``j`` walks rows ``j * by + ty``, then every
    ``gy * by``-th, writes ``dz`` and keeps its partial column sum; the ``by``
    partial sums are added in a tree in shared memory.  With one row block
    that is ``db``.  With more (``gy`` is chosen so that the grid has up to
    ``MAX_BLOCKS`` blocks and a thread at least one row: 8 x 16 blocks for
    128 rows of 256 columns, not 8), each block writes its column sums to a
    scratch row ``part[j]``, and the last block of the column chunk to arrive
    (an atomic counter per chunk, after a memory fence; the counter is reset
    for the next launch) adds ``part[0..gy)`` in the order of ``j`` and writes
    ``db``: one kernel pass, the same bits whichever block is last.  Atomics
    count arrivals and read other blocks' partial sums through L2; none adds.
    The scratch (at most ``MAX_BLOCKS * bx`` partial sums and a counter per
    chunk) is made at the first launch, per array module, stream and dtype.
  - losses: one block per row (blocks stride over rows), threads stride over
    the row's columns; the row maximum and the row sum are tree reductions in
    shared memory.  softmax_xent subtracts the row maximum before ``exp``
    (finite for logits of +-1e4) and stores ``exp`` in ``grad`` on the way, so
    each element's ``exp`` is taken once.
* **Sigmoid as** ``0.5 * tanh(0.5 x) + 0.5``: no overflow for large ``|x|``.
* **NaN in, NaN out.**  ``relu`` and ``leaky_relu`` are written so that a NaN
  input stays NaN (as ``maximum`` does in ``reference``); a label outside
  ``[0, k)`` gives a NaN loss for its row instead of reading out of bounds.
* **Streams, device views, no host synchronisation.**  ``use_array_module(xp)``
  (called by the backend) registers CuPy's array type.  A kernel on such
  arrays runs on CuPy's current stream (``numba.cuda.external_stream`` of
  ``cupy.cuda.get_current_stream().ptr``, made once per pointer; pointer 0,
  CuPy's null stream, is the legacy default stream), so it is ordered after
  the GEMMs CuPy queued before it.  Each array argument is passed as a numba
  device view made once per buffer (address, shape, strides, dtype) with
  ``from_cuda_array_interface(..., owner=None, sync=False)``: numba's default
  consumption of ``__cuda_array_interface__`` synchronises the exporting
  stream once per argument per launch (numba's built-in ``numba.cuda``,
  numba-cuda < 0.26), and numba-cuda's own handling of a CuPy argument
  (DLPack, no synchronisation) costs two exports per argument per launch.
  A view describes memory and holds no array: the table keeps no device
  memory alive (it once held every array ever passed, ~31 GB for a
  ``predict_proba`` of 1M rows at width 4096), and keeps at most
  ``MAX_VIEWS`` views, least recently used dropped first.  Under the
  simulator a view is a NumPy array over the ``fastnet.cuda_sim.contract``
  array's memory, owning nothing either.
* **Cached on disk.**  Every kernel is ``cuda.jit(cache=True)``, the
  factory-made activation kernels too (numba keys a closure's cache entry by
  its pickled free variables, the same in every process): a second process
  loads the compiled code instead of running NVVM again.
* **Launch configurations bound once.**  ``kernel[grid, block, stream]`` costs
  a dispatch and an occupancy check per call; the bound launcher is kept in
  ``_BOUND``, keyed by ``(kernel, grid, block, stream pointer)``.  The key
  space is small: grids are capped at ``MAX_BLOCKS`` and a training run uses a
  handful of shapes.
* **Dropout masks** come from splitmix64 on ``(key, counter, element)`` (see
  ``reference.dropout_mask``): the same bits as the CPU kernels, and a state of
  two integers that checkpoints restore.

Launch settings are module-level (``BLOCK``, ``ROW_BLOCK``, ``BWD_BLOCK``,
``MAX_BLOCKS``); change them with ``set_launch_config`` (the simulator tests
lower them: every simulated thread is a Python thread).

Launches on ``fastnet.cuda_sim.contract`` arrays are reported to its launch
counter (``launch_counter``): the tests count a training step's launches.
"""
from __future__ import annotations

import collections
import ctypes
import inspect
import math
import threading
import warnings

import numba
import numpy as np
from numba import cuda, types

from . import cache as _cache

try:  # NVIDIA's numba-cuda keeps its own config; numba's built-in numba.cuda uses numba's
    from numba.cuda.core import config as _numba_config
except ImportError:  # numba's built-in numba.cuda
    from numba.core import config as _numba_config

from .reference import (
    GELU_A,
    GELU_C,
    LEAKY_SLOPE,
    SPLITMIX_GAMMA,
    SPLITMIX_M1,
    SPLITMIX_M2,
    adam_scalars,
    dropout_params,
)

#: The module's functions that are not kernels.
API = ("set_launch_config", "use_array_module")

# --------------------------------------------------------------------------
# launch settings
# --------------------------------------------------------------------------
#: Threads per block of the element-wise kernels (activation forward,
#: optimizer updates).
BLOCK = 256
#: Most threads per block of the row-wise loss kernels; a row of ``k``
#: columns gets ``min(ROW_BLOCK, next_pow2(max(k, 32)))`` threads.
ROW_BLOCK = 256
#: ``(columns, rows)`` of the 2-D block of the activation backward kernels.
#: For ``k`` narrower than a block, columns are traded for rows.
BWD_BLOCK = (32, 8)
#: Cap on the blocks of any launch; the kernels stride over the rest.
#: 1024 x 256 threads fill an H100 (132 SMs x 2048 threads).
MAX_BLOCKS = 1024

# Size of the shared-memory scratch of the reductions: a compile-time
# constant, so it bounds ROW_BLOCK and the threads of BWD_BLOCK.
_SMEM = 256

_SIM = bool(numba.config.ENABLE_CUDASIM)


def _lock_simulator_shared_arrays():
    """Make the simulator give every thread of a block the same shared array.

    numba's simulator (``FakeCUDAShared.array``) looks a block's array up by the calling
    line and makes it if missing, without a lock: two of the block's threads (Python
    threads) asking at once can each make one, and a reduction then reads another
    thread's garbage (seen as ``OverflowError: math range error`` in ``softmax_xent``'s
    ``exp``, once in several CI runs).  The lookup is done here under a lock, with the
    simulator's own key (file and line of the caller).  A GPU is not concerned."""
    import sys
    import threading

    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    cls = kernelapi.FakeCUDAShared
    if getattr(cls, "_fastnet_locked", False):
        return
    original, lock = cls.array, threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:  # (not used by fastnet's kernels)
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                found = self._allocations[key] = np.empty(shape, dtype)
        return found

    cls.array = array
    cls._fastnet_locked = True


if _SIM:
    _lock_simulator_shared_arrays()


def _is_pow2(n):
    return isinstance(n, int) and n > 0 and n & (n - 1) == 0


def set_launch_config(block=None, row_block=None, bwd_block=None, max_blocks=None):
    """Change the launch settings; return the previous ones as a dict.

    ``set_launch_config(**old)`` restores them.  Reduction blocks must be
    powers of two (the shared-memory trees halve them) of at most 256 threads.
    """
    global BLOCK, ROW_BLOCK, BWD_BLOCK, MAX_BLOCKS
    old = dict(block=BLOCK, row_block=ROW_BLOCK, bwd_block=BWD_BLOCK, max_blocks=MAX_BLOCKS)
    if block is not None:
        if not (isinstance(block, int) and 1 <= block <= 1024):
            raise ValueError(f"block must be an integer in [1, 1024], got {block!r}")
        BLOCK = block
    if row_block is not None:
        if not (_is_pow2(row_block) and row_block <= _SMEM):
            raise ValueError(
                f"row_block must be a power of two <= {_SMEM}, got {row_block!r}"
            )
        ROW_BLOCK = row_block
    if bwd_block is not None:
        bx, by = bwd_block
        if not (_is_pow2(bx) and _is_pow2(by) and bx * by <= _SMEM):
            raise ValueError(
                "bwd_block must be two powers of two with a product "
                f"<= {_SMEM}, got {bwd_block!r}"
            )
        BWD_BLOCK = (bx, by)
    if max_blocks is not None:
        if not (isinstance(max_blocks, int) and max_blocks >= 1):
            raise ValueError(f"max_blocks must be a positive integer, got {max_blocks!r}")
        MAX_BLOCKS = max_blocks
    return old


# --------------------------------------------------------------------------
# launching: CuPy's current stream, device views made once, bound configurations
# --------------------------------------------------------------------------
_BOUND = {}  # (kernel, grid, block, stream ptr) -> bound launcher
_STREAMS = {}  # stream pointer -> numba stream
#: (address, shape, strides, dtype) -> numba view of that memory, least recently used first.
#: A view holds no reference to any array (see :func:`_view`).
_VIEWS = collections.OrderedDict()
_VIEWS_LOCK = threading.Lock()
#: Most device views kept; past it the least recently used one is dropped.
MAX_VIEWS = 4096
#: Device array types -> their module's ``cuda.get_current_stream``
#: (registered by :func:`use_array_module`: CuPy, or ``fastnet.cuda_sim.contract``).
_DEVICE_TYPES = {}
#: Device array types -> their array module (the backward kernels' scratch is made with it).
_MODULES = {}
#: Device array types -> ``record_launch(kind, name)`` of their module, where it counts
#: launches (``fastnet.cuda_sim.contract``; CuPy has none).
_RECORDERS = {}


def use_array_module(xp):
    """Launch on arrays of ``xp`` (CuPy, or the CuPy contract under the simulator).

    Their kernels run on ``xp``'s current stream and take each array as a
    numba device view made once per buffer (see :func:`_view`).
    """
    _DEVICE_TYPES[xp.ndarray] = xp.cuda.get_current_stream
    _MODULES[xp.ndarray] = xp
    record = getattr(xp, "record_launch", None)
    if record is not None:
        _RECORDERS[xp.ndarray] = record


def _host_view(ptr, shape, strides, dtype):
    """A NumPy array over the host memory at ``ptr``, owning nothing (the simulator's view)."""
    if not all(shape):
        return np.empty(shape, dtype)
    low = sum((n - 1) * s for n, s in zip(shape, strides) if s < 0)
    high = sum((n - 1) * s for n, s in zip(shape, strides) if s > 0) + dtype.itemsize
    buffer = (ctypes.c_char * (high - low)).from_address(ptr + low)
    return np.ndarray(shape, dtype, buffer=buffer, offset=-low, strides=strides)


def _make_view(a):
    if _SIM:
        # The simulator runs kernels on NumPy arrays: a NumPy array over the
        # contract array's memory, as numba's view is over the CuPy array's.
        return _host_view(a.data.ptr, a.shape, a.strides, a.dtype)
    # owner=None: the view describes the memory and keeps no array alive (see _view).
    # sync=False: the kernel is launched on the stream that produced the data,
    # so the per-argument stream synchronisation numba does by default (for the
    # stream CuPy exports in __cuda_array_interface__) would only stall the host.
    return cuda.from_cuda_array_interface(a.__cuda_array_interface__, owner=None, sync=False)  # (needs a GPU)


def _view(a):
    """A numba view of device array ``a``, made once per address, shape, strides and dtype.

    A view is a description of memory (pointer, shape, strides, dtype) and holds
    no reference to ``a``: two arrays with the same description are the same
    memory to a kernel, and the array being passed keeps that memory allocated
    for the launch (CuPy frees in stream order: memory freed after a launch is
    reused only by work queued after it).  So the table keeps no device memory
    alive, whatever passes through it (inference outputs, label slices), and
    holds at most ``MAX_VIEWS`` small objects, least recently used dropped
    first: the buffers a training step passes at every launch keep their views,
    and after the first step no view is made, no stream is synchronised.
    """
    key = (a.data.ptr, a.shape, a.strides, a.dtype)
    with _VIEWS_LOCK:  # (inference may launch from several threads)
        v = _VIEWS.get(key)
        if v is not None:
            _VIEWS.move_to_end(key)
            return v
        v = _VIEWS[key] = _make_view(a)
        while len(_VIEWS) > MAX_VIEWS:
            _VIEWS.popitem(last=False)
    return v


def _stream_of(a):
    """``(pointer, numba stream)`` to launch on for array ``a``.

    For a device array it is its module's current stream, so the kernel is
    ordered with the GEMMs queued before it; ``(0, None)`` for a NumPy array.
    Under the simulator there are no streams (``(pointer, None)``).
    """
    current = _DEVICE_TYPES.get(type(a))
    if current is None:
        return 0, None
    ptr = current().ptr
    stream = _STREAMS.get(ptr)
    if stream is None and not _SIM:  # (needs a GPU)
        # numba does not own (or destroy) an external stream; a later CuPy
        # stream at the same address is the same handle to the driver.
        # Pointer 0 is CuPy's null stream, the legacy default stream.
        stream = _STREAMS[ptr] = cuda.external_stream(ptr) if ptr else cuda.legacy_default_stream()
    return ptr, stream


def _bind(kernel, grid, block, stream):
    if _SIM:
        # The simulator's ``kernel[grid, block]`` configures the kernel object
        # itself and returns it, so a kept one would run with the last
        # configuration set: configure at every call instead.
        def launch(*args):
            with warnings.catch_warnings():
                # splitmix64 multiplies modulo 2**64: NumPy scalars (the
                # simulator's) warn on that wrap-around, the GPU does not.
                warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)
                kernel[grid, block](*args)

        return launch
    with warnings.catch_warnings():
        # Small grids are deliberate here (a 10-column loss, a 16-chunk bias
        # gradient); numba warns below 128 blocks.
        # (Matched by message: numba-cuda and numba's built-in target raise
        # different NumbaPerformanceWarning classes.)
        warnings.filterwarnings("ignore", message=r".*Grid size .* under-utilization")  # (numba may wrap it in ANSI bold)
        if stream is None:
            return kernel[grid, block]
        return kernel[grid, block, stream]


def _launch(kernel, grid, block, like, *args):
    """Launch ``kernel[grid, block]`` on the stream of array ``like``."""
    ptr, stream = _stream_of(like)
    key = (kernel, grid, block, ptr)
    bound = _BOUND.get(key)
    if bound is None:
        bound = _BOUND[key] = _bind(kernel, grid, block, stream)
    if type(like) in _DEVICE_TYPES:
        args = [_view(a) if type(a) in _DEVICE_TYPES else a for a in args]
    bound(*args)
    record = _RECORDERS.get(type(like))
    if record is not None:  # (the CuPy contract counts launches)
        record("numba", kernel.__name__)


def _blocks(work, per_block):
    return max(1, min(-(-work // per_block), MAX_BLOCKS))


def _pow2ceil(n):
    return 1 << (n - 1).bit_length()


def _row_threads(k):
    return min(ROW_BLOCK, _pow2ceil(max(k, 32)))


def _bwd_block(k):
    bx, by = BWD_BLOCK
    while bx > 1 and bx // 2 >= k:
        bx //= 2
        by *= 2
    return bx, by


def _flat(a, name):
    """``a`` as a 1-D view (never a copy: the update must land in ``a``)."""
    if a.ndim == 1:
        return a
    if not a.flags.c_contiguous:
        raise ValueError(
            f"{name} must be C-contiguous to be updated in place, got strides {a.strides}"
        )
    return a.reshape(a.size)


#: Every kernel below is cached in the per-user folder of ``cache.cache_dir()``,
#: never in the install folder; numba's setting is put back at the end of the module.
_previous_cache_dir = _cache.redirect(_numba_config)


# --------------------------------------------------------------------------
# device helpers
# --------------------------------------------------------------------------
@cuda.jit(device=True, inline="always")
def _sigmoid(x):
    T = type(x)
    return T(0.5) * math.tanh(T(0.5) * x) + T(0.5)


@cuda.jit(device=True, inline="always")
def _block_sum(sm, v):
    """Sum of ``v`` over the threads of a 1-D block (a power of two)."""
    t = cuda.threadIdx.x
    sm[t] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            sm[t] += sm[t + s]
        cuda.syncthreads()
        s //= 2
    r = sm[0]
    cuda.syncthreads()  # every thread has read sm[0] before it is reused
    return r


@cuda.jit(device=True, inline="always")
def _block_max(sm, v):
    """Maximum of ``v`` over the threads of a 1-D block (a power of two)."""
    t = cuda.threadIdx.x
    sm[t] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            sm[t] = max(sm[t], sm[t + s])
        cuda.syncthreads()
        s //= 2
    r = sm[0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True, inline="always")
def _column_sum(sm, v):
    """Sum of ``v`` over ``threadIdx.y`` for each ``threadIdx.x``."""
    tx = cuda.threadIdx.x
    bx = cuda.blockDim.x
    at = cuda.threadIdx.y * bx + tx
    sm[at] = v
    cuda.syncthreads()
    s = cuda.blockDim.y // 2
    while s > 0:
        if cuda.threadIdx.y < s:
            sm[at] += sm[at + s * bx]
        cuda.syncthreads()
        s //= 2
    r = sm[tx]
    cuda.syncthreads()
    return r


# --------------------------------------------------------------------------
# bias + activation, forward (in place) and backward (with the bias gradient)
# --------------------------------------------------------------------------
@cuda.jit(device=True, inline="always")
def _identity(x):
    return x


@cuda.jit(device=True, inline="always")
def _tanh(x):
    return math.tanh(x)


@cuda.jit(device=True, inline="always")
def _relu(x):
    T = type(x)
    return T(0) if x < T(0) else x  # NaN stays NaN, as with maximum(x, 0)


@cuda.jit(device=True, inline="always")
def _leaky_relu(x):
    T = type(x)
    return x * T(LEAKY_SLOPE) if x < T(0) else x


@cuda.jit(device=True, inline="always")
def _d_identity(a, dy):
    return dy


@cuda.jit(device=True, inline="always")
def _d_sigmoid(a, dy):
    T = type(a)
    return dy * (a * (T(1) - a))


@cuda.jit(device=True, inline="always")
def _d_tanh(a, dy):
    T = type(a)
    return dy * (T(1) - a * a)


@cuda.jit(device=True, inline="always")
def _d_relu(a, dy):
    T = type(dy)
    return dy if a > T(0) else T(0)


@cuda.jit(device=True, inline="always")
def _d_leaky_relu(a, dy):
    T = type(dy)
    return dy if a > T(0) else dy * T(LEAKY_SLOPE)


def _make_fwd(name, act):
    def kernel(z, b):
        k = z.shape[1]
        for i in range(cuda.grid(1), z.shape[0] * k, cuda.gridsize(1)):
            r = i // k
            c = i - r * k
            z[r, c] = act(z[r, c] + b[c])

    kernel.__name__ = kernel.__qualname__ = name
    return cuda.jit(kernel, cache=True)


def _make_fwd_saving(name, act):
    """Forward of an activation whose backward reads its input: ``x = z + b`` kept."""
    def kernel(z, b, x):
        k = z.shape[1]
        for i in range(cuda.grid(1), z.shape[0] * k, cuda.gridsize(1)):
            r = i // k
            c = i - r * k
            v = z[r, c] + b[c]
            x[r, c] = v
            z[r, c] = act(v)

    kernel.__name__ = kernel.__qualname__ = name
    return cuda.jit(kernel, cache=True)


def _make_bwd(name, dact):
    def kernel(a, dy, dz, db, part, count):
        # part: (gridDim.y * k) partial column sums, count: one arrival counter per
        # column chunk (zero between launches); both untouched when gridDim.y == 1.
        sm = cuda.shared.array(_SMEM, dtype=db.dtype)
        T = db.dtype.type
        n, k = a.shape
        bx = cuda.blockDim.x
        by = cuda.blockDim.y
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        gy = cuda.gridDim.y
        j = cuda.blockIdx.y
        # The chunk loop runs the same number of times in every thread of the
        # block, so the syncthreads inside it are reached by all.
        for c0 in range(cuda.blockIdx.x * bx, k, cuda.gridDim.x * bx):
            c = c0 + tx
            acc = T(0)
            if c < k:
                for r in range(j * by + ty, n, gy * by):
                    v = dact(a[r, c], dy[r, c])
                    dz[r, c] = v  # read then written by this thread: dz may be dy
                    acc += v
            total = _column_sum(sm, acc)
            if gy == 1:
                if c < k and ty == 0:
                    db[c] = total
            else:
                # This row block's column sums, then the chunk's last block to arrive
                # adds the gy partial sums in the order of j (whichever block it is).
                if c < k and ty == 0:
                    part[j * k + c] = total
                cuda.threadfence()  # the partial sums are visible before the arrival
                cuda.syncthreads()
                arrived = 0
                if tx == 0 and ty == 0:
                    arrived = 1 if cuda.atomic.add(count, c0 // bx, 1) == gy - 1 else 0
                if cuda.syncthreads_or(arrived):
                    s = T(0)
                    if c < k:
                        for i in range(ty, gy, by):
                            # an atomic read, at L2: this SM's L1 may hold a stale line
                            s += cuda.atomic.add(part, i * k + c, T(0))
                    total = _column_sum(sm, s)
                    if c < k and ty == 0:
                        db[c] = total
                    if tx == 0 and ty == 0:
                        count[c0 // bx] = 0  # all arrived: ready for the next launch

    kernel.__name__ = kernel.__qualname__ = name
    return cuda.jit(kernel, cache=True)


def _fwd(kernel, z, b):
    if z.size:
        _launch(kernel, _blocks(z.size, BLOCK), BLOCK, z, z, b)


#: (array type, stream pointer, dtype) -> (partial sums, arrival counters) of the backward
#: kernels, grown to the largest launch (at most MAX_BLOCKS * bx partial sums).
_SCRATCH = {}


def _bwd_scratch(like, dtype, n_part, n_count):
    """The backward kernels' scratch for arrays like ``like``: at least ``n_part`` partial
    sums of ``dtype`` and ``n_count`` zeroed int32 counters, made once per array module,
    stream and dtype and reused (each launch leaves its counters at zero again)."""
    key = (type(like), _stream_of(like)[0], dtype)
    part, count = _SCRATCH.get(key, (None, None))
    if part is None or part.size < n_part or count.size < n_count:
        xp = _MODULES.get(type(like), np)
        part = xp.empty(max(n_part, 1, 0 if part is None else part.size), dtype=dtype)
        count = xp.zeros(max(n_count, 1, 0 if count is None else count.size), dtype=np.int32)
        _SCRATCH[key] = part, count
    return part, count


def _bwd(kernel, a, dy, dz, db):
    n, k = a.shape
    if k:  # n == 0 still launches: db becomes zeros, as a sum over no rows
        bx, by = _bwd_block(k)
        gx = _blocks(k, bx)
        # Row blocks too, up to MAX_BLOCKS blocks in all: a thread sums >= 1 row.
        gy = max(1, min(-(-n // by), MAX_BLOCKS // gx))
        part, count = _bwd_scratch(a, db.dtype, gy * k if gy > 1 else 0, -(-k // bx))
        _launch(kernel, (gx, gy), (bx, by), a, a, dy, dz, db, part, count)


#: The activations this module fuses: name -> (forward kernel, backward kernel).
FUSED_ACTIVATIONS = {}


def _fuse_activation(name, act, dact, fwd_doc, bwd_doc, saves_input=False):
    """The ``<name>_fwd`` / ``<name>_bwd`` pair (same signatures as reference's) of an
    element-wise activation ``act`` and its derivative ``dact(saved, dy)``; with
    ``saves_input`` the forward also writes its input (``fwd(z, b, x)``)."""
    kf = (_make_fwd_saving if saves_input else _make_fwd)(f"_k_{name}_fwd", act)
    kb = _make_bwd(f"_k_{name}_bwd", dact)
    globals()[kf.__name__], globals()[kb.__name__] = kf, kb
    FUSED_ACTIVATIONS[name] = (kf, kb)

    if saves_input:  # the backward reads the saved input x
        def fwd(z, b, x):
            if z.size:
                _launch(kf, _blocks(z.size, BLOCK), BLOCK, z, z, b, x)

        def bwd(x, dy, dz, db):
            _bwd(kb, x, dy, dz, db)
    else:  # the backward reads the output a
        def fwd(z, b):
            _fwd(kf, z, b)

        def bwd(a, dy, dz, db):
            _bwd(kb, a, dy, dz, db)

    fwd.__name__, fwd.__qualname__, fwd.__doc__ = f"{name}_fwd", f"{name}_fwd", fwd_doc
    bwd.__name__, bwd.__qualname__, bwd.__doc__ = f"{name}_bwd", f"{name}_bwd", bwd_doc
    return fwd, bwd


identity_fwd, identity_bwd = _fuse_activation(
    "identity", _identity, _d_identity, "``z += b`` in place.", "``dz = dy``; ``db = dz.sum(0)``.")
sigmoid_fwd, sigmoid_bwd = _fuse_activation(
    "sigmoid", _sigmoid, _d_sigmoid, "``z = sigmoid(z + b)`` in place, as ``0.5 * tanh(0.5 * x) + 0.5``.",
    "``dz = dy * a * (1 - a)`` where ``a`` is the sigmoid output.")
tanh_fwd, tanh_bwd = _fuse_activation(
    "tanh", _tanh, _d_tanh, "``z = tanh(z + b)`` in place.", "``dz = dy * (1 - a**2)`` where ``a`` is the tanh output.")
relu_fwd, relu_bwd = _fuse_activation(
    "relu", _relu, _d_relu, "``z = max(z + b, 0)`` in place.", "``dz = dy where a > 0 else 0``.")
leaky_relu_fwd, leaky_relu_bwd = _fuse_activation(
    "leaky_relu", _leaky_relu, _d_leaky_relu, "``z = x if x > 0 else 0.01 x`` with ``x = z + b``, in place.",
    "``dz = dy where a > 0 else 0.01 dy``.")


@cuda.jit(device=True, inline="always")
def _gelu(x):
    # reference's order of operations: u = c ((x x)(a x) + x), ((t + 1) x) / 2
    T = type(x)
    t = math.tanh(T(GELU_C) * ((x * x) * (T(GELU_A) * x) + x))
    return ((t + T(1)) * x) * T(0.5)


@cuda.jit(device=True, inline="always")
def _d_gelu(x, dy):
    T = type(x)
    x2 = x * x
    t = math.tanh(T(GELU_C) * (x + (T(GELU_A) * x2) * x))
    d = T(0.5) * (T(1) + t) + (T(0.5) * x) * (T(1) - t * t) * (T(GELU_C) * (T(1) + T(3) * T(GELU_A) * x2))
    return dy * d


gelu_fwd, gelu_bwd = _fuse_activation(
    "gelu", _gelu, _d_gelu, "GELU (tanh approximation): ``x = z + b`` kept in ``x``, ``z = gelu(x)``.",
    "``dz = dy * gelu'(x)`` from the saved input ``x``.", saves_input=True)


# --------------------------------------------------------------------------
# losses: per-row loss and the gradient of ``scale * loss.sum()``
# --------------------------------------------------------------------------
@cuda.jit(cache=True)
def _k_softmax_xent(logits, y, loss, grad, scale):
    sm = cuda.shared.array(_SMEM, dtype=logits.dtype)
    T = logits.dtype.type
    n, k = logits.shape
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
        yi = y[i]
        valid = yi >= 0 and yi < k
        # Read before any thread writes grad (grad may be logits).
        xy = logits[i, yi] if valid else T(0)
        m = T(-math.inf)
        for j in range(t, k, nt):
            m = max(m, logits[i, j])
        mx = _block_max(sm, m)
        s = T(0)
        for j in range(t, k, nt):
            e = math.exp(logits[i, j] - mx)
            grad[i, j] = e
            s += e
        total = _block_sum(sm, s)
        for j in range(t, k, nt):
            onehot = T(1) if j == yi else T(0)
            grad[i, j] = (grad[i, j] / total - onehot) * scale
        if t == 0:
            loss[i] = math.log(total) - (xy - mx) if valid else T(math.nan)


@cuda.jit(cache=True)
def _k_sigmoid_bce(logits, y, loss, grad, scale):
    sm = cuda.shared.array(_SMEM, dtype=logits.dtype)
    T = logits.dtype.type
    n, k = logits.shape
    t = cuda.threadIdx.x
    for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
        s = T(0)
        for j in range(t, k, cuda.blockDim.x):
            z = logits[i, j]
            u = y[i, j]
            # max(z, 0) - z u + log1p(exp(-|z|)): finite for any z
            s += max(z, T(0)) - z * u + math.log1p(math.exp(-abs(z)))
            grad[i, j] = (_sigmoid(z) - u) * scale
        total = _block_sum(sm, s)
        if t == 0:
            loss[i] = total


@cuda.jit(cache=True)
def _k_squared_error(pred, y, loss, grad, scale2):
    sm = cuda.shared.array(_SMEM, dtype=pred.dtype)
    T = pred.dtype.type
    n, k = pred.shape
    t = cuda.threadIdx.x
    for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
        s = T(0)
        for j in range(t, k, cuda.blockDim.x):
            d = pred[i, j] - y[i, j]
            s += d * d
            grad[i, j] = d * scale2
        total = _block_sum(sm, s)
        if t == 0:
            loss[i] = total


def _rows(kernel, x, *args):
    n, k = x.shape
    if n:
        _launch(kernel, min(n, MAX_BLOCKS), _row_threads(k), x, x, *args)


def softmax_xent(logits, y, loss, grad, scale):
    """Softmax cross-entropy forward and backward in one call.

    ``loss = logsumexp(logits_i) - logits_i[y_i]`` (NaN where ``y_i`` is not in
    ``[0, k)``), ``grad = scale * (softmax(logits) - onehot(y))``.
    """
    T = logits.dtype.type
    _rows(_k_softmax_xent, logits, y, loss, grad, T(scale))


def sigmoid_bce(logits, y, loss, grad, scale):
    """Binary cross-entropy on logits; ``grad = scale * (sigmoid(z) - t)``."""
    T = logits.dtype.type
    _rows(_k_sigmoid_bce, logits, y, loss, grad, T(scale))


def squared_error(pred, y, loss, grad, scale):
    """``loss_i = sum_j (p - t)**2``; ``grad = 2 * scale * (p - t)``."""
    T = pred.dtype.type
    _rows(_k_squared_error, pred, y, loss, grad, T(2 * scale))


# --------------------------------------------------------------------------
# optimizer updates, in place, element-wise (1-D; other shapes are flattened)
# --------------------------------------------------------------------------
@cuda.jit(cache=True)
def _k_sgd_update(w, g, lr, wd):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        wi = w[i]
        w[i] = wi - lr * (g[i] + wd * wi)


@cuda.jit(cache=True)
def _k_momentum_update(w, g, v, lr, mu, wd):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        wi = w[i]
        vi = mu * v[i] - lr * (g[i] + wd * wi)
        v[i] = vi
        w[i] = wi + vi


@cuda.jit(cache=True)
def _k_nesterov_update(w, g, v, lr, mu, wd):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        wi = w[i]
        gd = g[i] + wd * wi
        vi = mu * v[i] - lr * gd
        v[i] = vi
        w[i] = wi + (mu * vi - lr * gd)


@cuda.jit(cache=True)
def _k_adam_update(w, g, m, v, step, beta1, c1, beta2, c2, eps, wd, scale):
    # c1 = 1 - beta1 and c2 = 1 - beta2, rounded once on the host as in reference;
    # step = lr / bc1 and scale = 1 / sqrt(bc2) (reference.adam_update's arrangement)
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        wi = w[i]
        gd = g[i] + wd * wi
        mi = beta1 * m[i] + c1 * gd
        vi = beta2 * v[i] + c2 * (gd * gd)
        m[i] = mi
        v[i] = vi
        w[i] = wi - step * mi / (math.sqrt(vi) * scale + eps)


@cuda.jit(cache=True)
def _k_adamw_update(w, g, m, v, step, beta1, c1, beta2, c2, eps, lrwd, scale):
    # lrwd = lr * weight_decay
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        wi = w[i]
        gi = g[i]
        mi = beta1 * m[i] + c1 * gi
        vi = beta2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        w[i] = wi - (step * mi / (math.sqrt(vi) * scale + eps) + lrwd * wi)


@cuda.jit(cache=True)
def _k_rmsprop_update(w, g, s, lr, rho, c, eps, wd):
    # c = 1 - rho
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        wi = w[i]
        gd = g[i] + wd * wi
        si = rho * s[i] + c * (gd * gd)
        s[i] = si
        w[i] = wi - lr * gd / (math.sqrt(si) + eps)


def _update(kernel, w, arrays, scalars):
    if w.size:
        T = w.dtype.type
        flat = [_flat(a, name) for name, a in arrays]
        _launch(
            kernel, _blocks(w.size, BLOCK), BLOCK, w, *flat, *[T(s) for s in scalars]
        )


def sgd_update(w, g, lr, weight_decay):
    """``w -= lr * (g + weight_decay * w)``."""
    _update(_k_sgd_update, w, [("w", w), ("g", g)], (lr, weight_decay))


def momentum_update(w, g, v, lr, mu, weight_decay):
    """Heavy-ball momentum: ``v = mu v - lr (g + wd w)``; ``w += v``."""
    _update(
        _k_momentum_update, w, [("w", w), ("g", g), ("v", v)], (lr, mu, weight_decay)
    )


def nesterov_update(w, g, v, lr, mu, weight_decay):
    """Nesterov momentum (Sutskever form): ``v = mu v - lr g'``; ``w += mu v - lr g'``."""
    _update(
        _k_nesterov_update, w, [("w", w), ("g", g), ("v", v)], (lr, mu, weight_decay)
    )


def adam_update(w, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    """Adam with L2 weight decay added to the gradient (see ``reference``)."""
    step, scale = adam_scalars(lr, bc1, bc2)
    _update(
        _k_adam_update,
        w,
        [("w", w), ("g", g), ("m", m), ("v", v)],
        (step, beta1, 1 - beta1, beta2, 1 - beta2, eps, weight_decay, scale),
    )


def adamw_update(w, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    """AdamW: Adam with decoupled weight decay ``w -= lr * wd * w``."""
    step, scale = adam_scalars(lr, bc1, bc2)
    _update(
        _k_adamw_update,
        w,
        [("w", w), ("g", g), ("m", m), ("v", v)],
        (step, beta1, 1 - beta1, beta2, 1 - beta2, eps, lr * weight_decay, scale),
    )


def rmsprop_update(w, g, s, lr, rho, eps, weight_decay):
    """RMSprop: ``s = rho s + (1 - rho) g'^2``; ``w -= lr g' / (sqrt(s) + eps)``."""
    _update(
        _k_rmsprop_update,
        w,
        [("w", w), ("g", g), ("s", s)],
        (lr, rho, 1 - rho, eps, weight_decay),
    )


# --------------------------------------------------------------------------
# dropout masks: splitmix64 on a counter (see reference.dropout_mask)
# --------------------------------------------------------------------------
_GAMMA = np.uint64(SPLITMIX_GAMMA)
_M1 = np.uint64(SPLITMIX_M1)
_M2 = np.uint64(SPLITMIX_M2)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@cuda.jit(cache=True)
def _k_dropout_mask(keep, threshold, scale, unit, key, base, shift):
    T = keep.dtype.type
    for i in range(cuda.grid(1), keep.size, cuda.gridsize(1)):
        x = key + _GAMMA * (base + np.uint64(i))
        x = (x ^ (x >> _S30)) * _M1
        x = (x ^ (x >> _S27)) * _M2
        x = x ^ (x >> _S31)
        # at most 24 (float32) or 53 (float64) bits: exact in T, as is * unit
        u = T(x >> shift) * unit
        keep[i] = scale if u >= threshold else T(0)


def dropout_mask(keep, rate, key, counter, start=0):
    """``keep = 1 / (1 - rate)`` where the counter-based uniform is ``>= rate``, else 0."""
    if keep.size:
        threshold, scale, unit, base, shift = dropout_params(rate, counter, keep.dtype, start)
        _launch(_k_dropout_mask, _blocks(keep.size, BLOCK), BLOCK, keep, _flat(keep, "keep"),
                threshold, scale, unit, np.uint64(int(key) & 0xFFFFFFFFFFFFFFFF),
                np.uint64(base), np.uint64(shift))


# --------------------------------------------------------------------------
# data augmentation: per-row affine warp with bilinear interpolation
# --------------------------------------------------------------------------
@cuda.jit(cache=True)
def _k_affine_warp(x, params, out, h, w):
    # one thread per output pixel, grid-stride over all rows' pixels
    T = x.dtype.type
    one = T(1)
    zero = T(0)
    hw = h * w
    fh = T(h)
    fw = T(w)
    for k in range(cuda.grid(1), x.shape[0] * hw, cuda.gridsize(1)):
        i = k // hw
        p = k - i * hw
        v = p // w
        u = p - v * w
        fu = T(u)
        fv = T(v)
        sx = params[i, 0] * fu + params[i, 1] * fv + params[i, 2]
        sy = params[i, 3] * fu + params[i, 4] * fv + params[i, 5]
        total = zero
        if sx > -one and sx < fw and sy > -one and sy < fh:  # False for NaN too
            gx = math.floor(sx)
            gy = math.floor(sy)
            fx = sx - T(gx)
            fy = sy - T(gy)
            x0 = int(gx)
            y0 = int(gy)
            if y0 >= 0:
                if x0 >= 0:
                    total += (one - fx) * (one - fy) * x[i, y0 * w + x0]
                if x0 + 1 < w:
                    total += fx * (one - fy) * x[i, y0 * w + x0 + 1]
            if y0 + 1 < h:
                if x0 >= 0:
                    total += (one - fx) * fy * x[i, (y0 + 1) * w + x0]
                if x0 + 1 < w:
                    total += fx * fy * x[i, (y0 + 1) * w + x0 + 1]
        out[i, p] = total


def affine_warp(x, params, out, h, w):
    """Each row of ``x`` (an ``h x w`` image) resampled through its own affine map
    ``params[i] = (a, b, tx, c, d, ty)``, bilinear, zero outside (see ``reference``)."""
    size = x.shape[0] * int(h) * int(w)
    if size:
        _launch(_k_affine_warp, _blocks(size, BLOCK), BLOCK, x, x, params, out, np.int64(h), np.int64(w))


# --------------------------------------------------------------------------
# argument types of every kernel, for offline compilation (tests/cuda_compile)
# --------------------------------------------------------------------------
def _sig_act_fwd(f):
    return [(f[:, ::1], f[::1])]


def _sig_act_fwd_saving(f):
    return [(f[:, ::1], f[::1], f[:, ::1])]


def _sig_act_bwd(f):
    return [(f[:, ::1], f[:, ::1], f[:, ::1], f[::1], f[::1], types.int32[::1])]


def _sig_dense_loss(f):
    return [(f[:, ::1], f[:, ::1], f[::1], f[:, ::1], f)]


def _sig_softmax_xent(f):
    return [(f[:, ::1], i[::1], f[::1], f[:, ::1], f) for i in (types.int32, types.int64)]


def _sig_update(n_arrays, n_scalars):
    return lambda f: [(f[::1],) * n_arrays + (f,) * n_scalars]


#: ``kernel name -> f(float type) -> [tuple of numba argument types, ...]``,
#: one entry per ``@cuda.jit`` kernel of this module: the types the wrappers
#: launch them with (C-contiguous arrays; scalars of the array dtype).
SIGNATURES = {
    **{kf.__name__: _sig_act_fwd_saving if len(inspect.signature(kf.py_func).parameters) == 3 else _sig_act_fwd
       for kf, _ in FUSED_ACTIVATIONS.values()},
    **{kb.__name__: _sig_act_bwd for _, kb in FUSED_ACTIVATIONS.values()},
    "_k_softmax_xent": _sig_softmax_xent,
    "_k_sigmoid_bce": _sig_dense_loss,
    "_k_squared_error": _sig_dense_loss,
    "_k_sgd_update": _sig_update(2, 2),
    "_k_momentum_update": _sig_update(3, 3),
    "_k_nesterov_update": _sig_update(3, 3),
    "_k_adam_update": _sig_update(4, 8),
    "_k_adamw_update": _sig_update(4, 8),
    "_k_rmsprop_update": _sig_update(3, 5),
    "_k_dropout_mask": lambda f: [(f[::1], f, f, f, types.uint64, types.uint64, types.uint64)],
    "_k_affine_warp": lambda f: [(f[:, ::1], f[:, ::1], f[:, ::1], types.int64, types.int64)],
}  # fmt: skip


_cache.restore(_numba_config, _previous_cache_dir)

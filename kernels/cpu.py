"""Fused CPU kernels: ``@numba.njit(cache=True)`` loops on NumPy arrays.

Overrides of kernels of the table in ``reference``: a kernel defined here
replaces the reference one of the same name on the ``cpu`` backend, the others
run as written there.  Same names, signatures and side effects (see its docstring):
results are written into the arrays passed in, nothing is returned, nothing is
allocated.  Each kernel makes one pass over its data: bias + activation in
place; activation derivative times the upstream gradient with the bias
gradient summed in the same loop; softmax cross-entropy row by row (max,
exp and sum, loss and gradient while the row is in L1); each optimizer update
reads ``g`` and the state once and writes the state and ``w`` once.

Arrays are expected C-contiguous (the 2-D kernels take ``(n, k)`` arrays, row
slices of C-contiguous buffers qualify).  The optimizer updates accept any
C-contiguous shape: ``a.reshape(a.size)`` is a view in Numba, as in NumPy.

Compiled float32 stays float32 (every scalar cast to the array's dtype), with
vectorisable float32 ``exp``/``tanh``/``sigmoid``/``log1p`` of our own (full-precision
``math`` functions for float64), ``fastmath`` limited to ``contract``,
``error_model="numpy"``, no ``parallel=True``, 512-bit vectors, and loops that index
whole rows from 0: each was measured, and "CPU kernels" in docs/pages/decisions.md
gives the figures.

The Adam and AdamW updates and the bfloat16 rounding of GEMM operands can also run on
the threads of oneDNN's OpenMP pool, where the step's GEMMs run (:class:`PoolUpdate`,
:class:`PoolRound`: one C callback per thread, each running the same loop on its share);
"Work on the GEMMs' own pool" in docs/pages/decisions.md.
"""
from __future__ import annotations

import math
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import config as _numba_config
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from . import cache as _cache

from .reference import (GELU_A, GELU_C, LEAKY_SLOPE, SPLITMIX_GAMMA, SPLITMIX_M1, SPLITMIX_M2, adam_scalars,
                        dropout_params)


#: Public names that are not kernels of the table (``fastnet.kernels.overrides``).
API = ("PoolUpdate", "pool_update", "PoolRound", "round_bf16_bits", "PoolForward", "FORWARD_ACTIVATIONS", "aligned_zeros")


# --------------------------------------------------------------------------
# compile-time helpers
# --------------------------------------------------------------------------
#: Numba's on-disk cache is keyed by source file but records the module name:
#: code cached while this file was imported as top-level ``kernels.cpu`` (a
#: checkout on sys.path) fails to load as ``fastnet.kernels.cpu`` with
#: ModuleNotFoundError.  So only the installed name writes and reads it.
_CACHE = __name__ == "fastnet.kernels.cpu"
#: Flags of every kernel: NumPy's error model and FMA contraction (see the
#: module docstring).
_JIT = dict(cache=_CACHE, error_model="numpy", fastmath={"contract"})
#: Scalar helpers are ordinary njit functions that LLVM inlines into each
#: kernel; helpers taking arrays are inlined by Numba (called, they keep
#: reference-count calls per row: docs/pages/decisions.md, "Helpers inlined").
_HELPER = dict(error_model="numpy", fastmath={"contract"})
_HELPER_ARRAYS = dict(_HELPER, inline="always")
#: Every kernel below is cached in the per-user folder of ``cache.cache_dir()``,
#: never in the install folder; Numba's setting is put back at the end of the module.
_previous_cache_dir = _cache.redirect(_numba_config)


@intrinsic
def _prefer_512bit_vectors(typingctx):
    """Ask LLVM to vectorise the calling kernel with 512-bit registers.

    LLVM's cost model prefers 256-bit vectors on AVX-512 CPUs unless the
    function carries ``"prefer-vector-width"="512"`` (clang's
    ``-mprefer-vector-width=512``); Numba has no option for it.  On CPUs
    without AVX-512 the attribute changes nothing.  llvmlite only accepts the
    attributes it knows, so the string is added to the set directly; if that
    ever fails the kernel simply keeps LLVM's default width.
    """

    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # pragma: no cover - depends on llvmlite internals
            pass
        return context.get_dummy_value()

    return types.none(), codegen


def _cast(a, x):
    """``x`` converted to the dtype of ``a`` (an array or a float scalar)."""


@overload(_cast)
def _cast_impl(a, x):
    dt = a.dtype if isinstance(a, types.Array) else a
    if dt == types.float32:
        return lambda a, x: np.float32(x)
    if dt == types.float64:
        return lambda a, x: np.float64(x)
    raise TypingError(f"fastnet kernels support float32 and float64 arrays, got {dt}")


@intrinsic
def _pow2_from_rounded(typingctx, j):
    """``2.0**n`` where ``j = t + 1.5 * 2**23`` (float32) or ``t + 1.5 * 2**52``
    (float64) holds the integer ``n = round(t)`` in its low mantissa bits.

    Shifting the bits of ``j`` left by the mantissa width drops the magic
    constant and leaves ``n`` in the exponent field; adding the bits of 1.0
    adds the exponent bias.  Pure integer ops on the bit pattern: no libm call,
    no float->int conversion (whose result for NaN LLVM leaves undefined), so it
    vectorises and NaN stays harmless.
    """
    if j == types.float32:
        ity, shift, one = ir.IntType(32), 23, 0x3F800000
    elif j == types.float64:
        ity, shift, one = ir.IntType(64), 52, 0x3FF0000000000000
    else:
        return None

    def codegen(context, builder, signature, args):
        i = builder.bitcast(args[0], ity)
        i = builder.shl(i, ir.Constant(ity, shift))
        i = builder.add(i, ir.Constant(ity, one))
        return builder.bitcast(i, args[0].type)

    return j(j), codegen


def _exp(x):
    """``exp(x)`` for ``x <= 0`` (and -inf, NaN); float32: vectorisable polynomial,
    float64: ``math.exp``."""


@overload(_exp)
def _exp_impl(x):
    if x == types.float64:
        return lambda x: math.exp(x)
    if x != types.float32:
        return None

    def exp_f32(x):
        # exp(x) = 2**n * exp(r), n = round(x / ln 2), |r| <= ln2/2, as in
        # Cephes expf: ln 2 split in two so that n * C1 is exact, and n rounded
        # by adding 1.5 * 2**23 (exact: no reassociation, see module docstring).
        # exp(r): degree-6 polynomial fitted for relative error (3e-9 on the
        # interval, far below float32's 6e-8; Cephes' degree 7 costs an FMA for
        # nothing), by Horner's rule: with FMA each step rounds once, ~1 ulp in
        # all.  Below LO the result would be a denormal: 0, as with FTZ (the
        # select also discards whatever the exponent bits made of such x, so
        # no clamp is needed first).  NaN gives NaN.  Valid up to x = 88
        # (every caller passes x <= 0).
        lo = np.float32(-87.33654)
        magic = np.float32(12582912.0)
        j = x * np.float32(1.44269504088896341) + magic
        n = j - magic
        r = x - n * np.float32(0.693359375)
        r = r - n * np.float32(-2.12194440e-4)
        p = np.float32(1.38146128e-3)
        p = p * r + np.float32(8.36871006e-3)
        p = p * r + np.float32(4.16683890e-2)
        p = p * r + np.float32(1.66665211e-1)
        p = p * r + np.float32(4.99999940e-1)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        e = p * _pow2_from_rounded(j)
        return np.float32(0.0) if x < lo else e

    return exp_f32


def _tanh(x):
    """``tanh(x)``; float32: vectorisable, float64: ``math.tanh``."""


@overload(_tanh)
def _tanh_impl(x):
    if x == types.float64:
        return lambda x: math.tanh(x)
    if x != types.float32:
        return None

    def tanh_f32(x):
        # tanh|x| = -m / (2 + m) with m = expm1(-2|x|) in [-1, 0]: no
        # cancellation anywhere (2 + m >= 1), tiny x keep their relative
        # precision, and from |x| ~ 9 on m rounds to -1: tanh = 1 exactly, for
        # any x (the clamp keeps 2**n a normal number; nothing overflows).
        # expm1 as exp above: y = n ln2 + r,
        # expm1(y) = 2**n expm1(r) + (2**n - 1), exact scaling and one FMA;
        # expm1(r) = r + r^2 Q(r), Q of degree 4 fitted for relative error
        # (1.3e-8).  NaN passes as NaN.
        lo = np.float32(-87.33654)
        magic = np.float32(12582912.0)
        y = np.float32(-2.0) * abs(x)
        yc = lo if y < lo else y
        j = yc * np.float32(1.44269504088896341) + magic
        n = j - magic
        r = yc - n * np.float32(0.693359375)
        r = r - n * np.float32(-2.12194440e-4)
        q = np.float32(1.38825225e-3)
        q = q * r + np.float32(8.36651400e-3)
        q = q * r + np.float32(4.16672006e-2)
        q = q * r + np.float32(1.66665435e-1)
        q = q * r + np.float32(4.99999970e-1)
        em_r = q * (r * r) + r
        scale = _pow2_from_rounded(j)
        m = scale * em_r + (scale - np.float32(1.0))
        t = abs(m / (np.float32(2.0) + m))
        return -t if x < np.float32(0.0) else t

    return tanh_f32


@njit(**_HELPER)
def _sigmoid(x):
    # e = exp(-|x|) <= 1 never overflows; x < 0 uses e / (1 + e) so that tiny
    # sigmoids keep their relative precision (0.5 * tanh(x/2) + 0.5 rounds
    # them to multiples of 2**-25 in float32).  NaN goes to the second branch.
    one = _cast(x, 1.0)
    e = _exp(-abs(x))
    num = one if x >= _cast(x, 0.0) else e
    return num / (one + e)


def _log1p01(u):
    """``log1p(u)`` for ``0 <= u <= 1``; float32: vectorisable, float64: ``math.log1p``."""


@overload(_log1p01)
def _log1p01_impl(u):
    if u == types.float64:
        return lambda u: math.log1p(u)
    if u != types.float32:
        return None

    def log1p01_f32(u):
        # Cephes logf on 1 + u = 2**e * (1 + f) with sqrt(1/2) <= 1 + f < sqrt(2):
        # e = 0, f = u; or e = 1, f = u/2 - 1/2 (exact in float32 for
        # u in [sqrt(2) - 1, 1]), so f carries no rounding error from 1 + u.
        big = u > np.float32(0.41421356)
        f = np.float32(0.5) * u - np.float32(0.5) if big else u
        e = np.float32(1.0) if big else np.float32(0.0)
        z = f * f
        y = np.float32(7.0376836292e-2) * f - np.float32(1.1514610310e-1)
        y = y * f + np.float32(1.1676998740e-1)
        y = y * f - np.float32(1.2420140846e-1)
        y = y * f + np.float32(1.4249322787e-1)
        y = y * f - np.float32(1.6668057665e-1)
        y = y * f + np.float32(2.0000714765e-1)
        y = y * f - np.float32(2.4999993993e-1)
        y = y * f + np.float32(3.3333331174e-1)
        y = y * f * z
        y = y + e * np.float32(-2.12194440e-4)
        y = y - np.float32(0.5) * z
        return f + y + e * np.float32(0.693359375)

    return log1p01_f32


@njit(**_HELPER_ARRAYS)
def _rowsum(a):
    """Sum of a 1-D array with 8 running partial sums, as NumPy's pairwise sum
    does within a block: independent adds (a sequential float sum is one
    4-cycle dependency chain and cannot vectorise without fastmath's
    reassociation), and a smaller rounding error than one running sum."""
    k = a.size
    s = _cast(a, 0.0)
    if k < 8:
        for j in range(k):
            s += a[j]
        return s
    r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
    r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
    k8 = k - k % 8
    for j in range(8, k8, 8):
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
    s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for j in range(k8, k):
        s += a[j]
    return s


# --------------------------------------------------------------------------
# bias + activation, forward (in place)
# --------------------------------------------------------------------------
@njit(**_JIT)
def identity_fwd(z, b):
    _prefer_512bit_vectors()
    n, k = z.shape
    for i in range(n):
        zi = z[i]
        for j in range(k):
            zi[j] = zi[j] + b[j]


@njit(**_JIT)
def sigmoid_fwd(z, b):
    _prefer_512bit_vectors()
    n, k = z.shape
    for i in range(n):
        zi = z[i]
        for j in range(k):
            zi[j] = _sigmoid(zi[j] + b[j])


@njit(**_JIT)
def tanh_fwd(z, b):
    _prefer_512bit_vectors()
    n, k = z.shape
    for i in range(n):
        zi = z[i]
        for j in range(k):
            zi[j] = _tanh(zi[j] + b[j])


@njit(**_JIT)
def relu_fwd(z, b):
    _prefer_512bit_vectors()
    n, k = z.shape
    zero = _cast(z, 0.0)
    for i in range(n):
        zi = z[i]
        for j in range(k):
            x = zi[j] + b[j]
            # `x < 0` (not `x > 0`) keeps NaN, as np.maximum does.
            zi[j] = zero if x < zero else x


@njit(**_JIT)
def leaky_relu_fwd(z, b):
    _prefer_512bit_vectors()
    n, k = z.shape
    zero = _cast(z, 0.0)
    slope = _cast(z, LEAKY_SLOPE)
    for i in range(n):
        zi = z[i]
        for j in range(k):
            x = zi[j] + b[j]
            zi[j] = x * slope if x < zero else x


@njit(**_JIT)
def gelu_fwd(z, b, x):
    # reference's order of operations: u = c ((v v)(a v) + v), z = ((t + 1) v) / 2
    _prefer_512bit_vectors()
    n, k = z.shape
    half = _cast(z, 0.5)
    one = _cast(z, 1.0)
    c = _cast(z, GELU_C)
    a = _cast(z, GELU_A)
    for i in range(n):
        zi = z[i]
        xi = x[i]
        for j in range(k):
            v = zi[j] + b[j]
            xi[j] = v
            t = _tanh(c * ((v * v) * (a * v) + v))
            zi[j] = ((t + one) * v) * half


# --------------------------------------------------------------------------
# activation backward times upstream gradient, bias gradient in the same pass
# --------------------------------------------------------------------------
# Each reads a[i, j] and dy[i, j] before writing dz[i, j], so dz may be dy
# (fastnet's layers pass the same array) or a.  When dz is dy a separate loop
# reads and writes dz only (two pointers to the same memory keep LLVM's loop
# scalar).  The bias gradient is summed in the same pass, row by row (the order
# of NumPy's dz.sum(axis=0)): in place inside the same inner loop, with a
# separate dz as a second inner loop over the row while it is in L1
# (docs/pages/decisions.md, "In-place backward loops").
@njit(**_HELPER_ARRAYS)
def _same(p, q):
    return p.ctypes.data == q.ctypes.data


@njit(**_HELPER_ARRAYS)
def _add_row(db, row):
    for j in range(db.size):
        db[j] += row[j]


@njit(**_JIT)
def identity_bwd(a, dy, dz, db):
    _prefer_512bit_vectors()
    n, k = dy.shape
    db[:] = 0
    copy = not _same(dz, dy)
    for i in range(n):
        dzi = dz[i]
        if copy:
            dyi = dy[i]
            for j in range(k):
                dzi[j] = dyi[j]
        _add_row(db, dzi)


@njit(**_JIT)
def sigmoid_bwd(a, dy, dz, db):
    _prefer_512bit_vectors()
    n, k = a.shape
    one = _cast(a, 1.0)
    db[:] = 0
    if _same(dz, dy):
        for i in range(n):
            ai = a[i]
            dzi = dz[i]
            for j in range(k):
                s = ai[j]
                d = dzi[j] * (s * (one - s))
                dzi[j] = d
                db[j] += d
    else:
        for i in range(n):
            ai = a[i]
            dyi = dy[i]
            dzi = dz[i]
            for j in range(k):
                s = ai[j]
                dzi[j] = dyi[j] * (s * (one - s))
            _add_row(db, dzi)


@njit(**_JIT)
def tanh_bwd(a, dy, dz, db):
    _prefer_512bit_vectors()
    n, k = a.shape
    one = _cast(a, 1.0)
    db[:] = 0
    if _same(dz, dy):
        for i in range(n):
            ai = a[i]
            dzi = dz[i]
            for j in range(k):
                t = ai[j]
                d = dzi[j] * (one - t * t)
                dzi[j] = d
                db[j] += d
    else:
        for i in range(n):
            ai = a[i]
            dyi = dy[i]
            dzi = dz[i]
            for j in range(k):
                t = ai[j]
                dzi[j] = dyi[j] * (one - t * t)
            _add_row(db, dzi)


@njit(**_JIT)
def relu_bwd(a, dy, dz, db):
    _prefer_512bit_vectors()
    n, k = a.shape
    zero = _cast(a, 0.0)
    db[:] = 0
    if _same(dz, dy):
        for i in range(n):
            ai = a[i]
            dzi = dz[i]
            for j in range(k):
                d = dzi[j] if ai[j] > zero else zero
                dzi[j] = d
                db[j] += d
    else:
        for i in range(n):
            ai = a[i]
            dyi = dy[i]
            dzi = dz[i]
            for j in range(k):
                dzi[j] = dyi[j] if ai[j] > zero else zero
            _add_row(db, dzi)


@njit(**_JIT)
def leaky_relu_bwd(a, dy, dz, db):
    _prefer_512bit_vectors()
    n, k = a.shape
    zero = _cast(a, 0.0)
    slope = _cast(a, LEAKY_SLOPE)
    db[:] = 0
    if _same(dz, dy):
        for i in range(n):
            ai = a[i]
            dzi = dz[i]
            for j in range(k):
                g = dzi[j]
                d = g if ai[j] > zero else g * slope
                dzi[j] = d
                db[j] += d
    else:
        for i in range(n):
            ai = a[i]
            dyi = dy[i]
            dzi = dz[i]
            for j in range(k):
                g = dyi[j]
                dzi[j] = g if ai[j] > zero else g * slope
            _add_row(db, dzi)


@njit(**_HELPER)
def _d_gelu(v):
    """GELU's derivative at its input ``v`` (see reference.gelu_bwd)."""
    half = _cast(v, 0.5)
    one = _cast(v, 1.0)
    c = _cast(v, GELU_C)
    a = _cast(v, GELU_A)
    v2 = v * v
    t = _tanh(c * (v + (a * v2) * v))
    return half * (one + t) + (half * v) * (one - t * t) * (c * (one + _cast(v, 3.0) * a * v2))


@njit(**_JIT)
def gelu_bwd(x, dy, dz, db):
    _prefer_512bit_vectors()
    n, k = x.shape
    db[:] = 0
    if _same(dz, dy):
        for i in range(n):
            xi = x[i]
            dzi = dz[i]
            for j in range(k):
                d = dzi[j] * _d_gelu(xi[j])
                dzi[j] = d
                db[j] += d
    else:
        for i in range(n):
            xi = x[i]
            dyi = dy[i]
            dzi = dz[i]
            for j in range(k):
                dzi[j] = dyi[j] * _d_gelu(xi[j])
            _add_row(db, dzi)


# --------------------------------------------------------------------------
# losses: per-row loss and the gradient of ``scale * loss.sum()``
# --------------------------------------------------------------------------
#: Elements per block of rows in the loss kernels (16 KiB of float64: the
#: block's logits, targets and gradient stay in L1 between the sweeps).
_BLOCK = 2048


@njit(**_HELPER_ARRAYS)
def _rowmax(a):
    """Largest element of a 1-D array (its first element when every comparison is False:
    with a NaN in the row, the row's sum is NaN whatever the max is, as in NumPy)."""
    mx = a[0]
    for j in range(1, a.size):
        if a[j] > mx:
            mx = a[j]
    return mx


@njit(**_HELPER_ARRAYS)
def _flat(a, i0, i1):
    """Rows ``i0:i1`` of a C-contiguous array as one flat view."""
    block = a[i0:i1]
    return block.reshape(block.size)


@njit(**_JIT)
def softmax_fwd(z, b):
    # The output activation at inference (predict_proba): per row the max of z + b, the
    # shifted values; per block one flat exp loop (as softmax_xent); per row the sum and
    # the division.  One call instead of the reference's five NumPy passes (1 row: ~13 us
    # of NumPy calls).
    _prefer_512bit_vectors()
    n, k = z.shape
    rows = max(1, _BLOCK // max(k, 1))
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        for i in range(i0, i1):
            x = z[i]
            for j in range(k):
                x[j] = x[j] + b[j]
            mx = _rowmax(x)
            for j in range(k):
                x[j] = x[j] - mx
        e = _flat(z, i0, i1)
        for t in range(e.size):
            e[t] = _exp(e[t])
        for i in range(i0, i1):
            x = z[i]
            s = _rowsum(x)
            for j in range(k):
                x[j] = x[j] / s


# The loss kernels sweep blocks of rows: element-wise work as one flat loop over
# the block (a row of 10 classes is too short to vectorise on its own), row
# sums with independent partial sums.  Every array is read from memory once.
@njit(**_JIT)
def softmax_xent(logits, y, loss, grad, scale):
    # Per row: max, shifted logits into grad, the class's shifted logit kept
    # in loss; per block: exp (x - max <= 0: finite for logits of any size);
    # per row: sum, loss = log(sum) - shifted class logit, scaled gradient.
    _prefer_512bit_vectors()
    n, k = logits.shape
    sc = _cast(grad, scale)
    one = _cast(grad, 1.0)
    rows = max(1, _BLOCK // max(k, 1))
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        for i in range(i0, i1):
            x = logits[i]
            g = grad[i]
            mx = _rowmax(x)
            for j in range(k):
                g[j] = x[j] - mx
            loss[i] = g[y[i]]
        e = _flat(grad, i0, i1)
        for t in range(e.size):
            e[t] = _exp(e[t])
        for i in range(i0, i1):
            g = grad[i]
            s = _rowsum(g)
            c = y[i]
            ey = g[c]
            loss[i] = np.log(s) - loss[i]
            for j in range(k):
                g[j] = g[j] / s * sc
            g[c] = (ey / s - one) * sc


@njit(**_JIT)
def sigmoid_bce(logits, y, loss, grad, scale):
    # Element losses max(z, 0) - z t + log1p(exp(-|z|)) (finite for any z) go
    # through grad to be summed per row; then grad gets sigmoid(z) - t.  exp is
    # computed twice: cheaper than keeping it in a second buffer we don't have.
    _prefer_512bit_vectors()
    n, k = logits.shape
    sc = _cast(grad, scale)
    zero = _cast(grad, 0.0)
    rows = max(1, _BLOCK // max(k, 1))
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        z = _flat(logits, i0, i1)
        t = _flat(y, i0, i1)
        g = _flat(grad, i0, i1)
        for j in range(g.size):
            x = z[j]
            pos = x if x > zero else zero
            g[j] = pos - x * t[j] + _log1p01(_exp(-abs(x)))
        for i in range(i0, i1):
            loss[i] = _rowsum(grad[i])
        for j in range(g.size):
            g[j] = (_sigmoid(z[j]) - t[j]) * sc


@njit(**_JIT)
def squared_error(pred, y, loss, grad, scale):
    _prefer_512bit_vectors()
    n, k = pred.shape
    sc2 = _cast(grad, 2 * scale)
    rows = max(1, _BLOCK // max(k, 1))
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        p = _flat(pred, i0, i1)
        t = _flat(y, i0, i1)
        g = _flat(grad, i0, i1)
        for j in range(g.size):
            d = p[j] - t[j]
            g[j] = d * d
        for i in range(i0, i1):
            loss[i] = _rowsum(grad[i])
        for j in range(g.size):
            g[j] = (p[j] - t[j]) * sc2


# --------------------------------------------------------------------------
# optimizer updates: element-wise, one read of g and the state, one write
# --------------------------------------------------------------------------
# reshape(size) is a view for C-contiguous arrays; it lets one compiled loop
# serve every shape and keeps the index a plain 0..size-1 counter.  The
# arithmetic follows reference's order of operations (and its float32
# constants: NumPy casts a Python float to the array dtype, so does _cast).
@njit(**_HELPER_ARRAYS)
def _sgd_range(w1, g1, lo, hi, lr_, wd):
    """SGD on elements ``lo:hi`` of flat float arrays (the scalars already in their dtype)."""
    for i in range(lo, hi):
        w1[i] -= lr_ * (g1[i] + wd * w1[i])


@njit(**_JIT)
def sgd_update(w, g, lr, weight_decay):
    _prefer_512bit_vectors()
    w1 = w.reshape(w.size)
    _sgd_range(w1, g.reshape(g.size), 0, w1.size, _cast(w, lr), _cast(w, weight_decay))


@njit(**_JIT)
def momentum_update(w, g, v, lr, mu, weight_decay):
    _prefer_512bit_vectors()
    w1 = w.reshape(w.size)
    g1 = g.reshape(g.size)
    v1 = v.reshape(v.size)
    lr_ = _cast(w, lr)
    mu_ = _cast(w, mu)
    wd = _cast(w, weight_decay)
    for i in range(w1.size):
        wi = w1[i]
        vi = v1[i] * mu_ - lr_ * (g1[i] + wd * wi)
        v1[i] = vi
        w1[i] = wi + vi


@njit(**_JIT)
def nesterov_update(w, g, v, lr, mu, weight_decay):
    _prefer_512bit_vectors()
    w1 = w.reshape(w.size)
    g1 = g.reshape(g.size)
    v1 = v.reshape(v.size)
    lr_ = _cast(w, lr)
    mu_ = _cast(w, mu)
    wd = _cast(w, weight_decay)
    for i in range(w1.size):
        wi = w1[i]
        gd = g1[i] + wd * wi
        vi = v1[i] * mu_ - lr_ * gd
        v1[i] = vi
        w1[i] = wi + (mu_ * vi - lr_ * gd)


@njit(**_HELPER_ARRAYS)
def _adam_range(w1, g1, m1, v1, lo, hi, b1, b2, omb1, omb2, eps_, wd, lrwd, step, scale):
    """Adam on elements ``lo:hi`` of flat float arrays (the scalars already in their dtype):
    L2 decay ``wd`` added to the gradient (Adam), decoupled decay ``lrwd = lr * weight_decay``
    taken from the weight (AdamW); the other one is 0 (adding ``0 * w`` changes no finite value)."""
    for i in range(lo, hi):
        wi = w1[i]
        gd = g1[i] + wd * wi
        mi = m1[i] * b1 + omb1 * gd
        vi = v1[i] * b2 + omb2 * (gd * gd)
        m1[i] = mi
        v1[i] = vi
        w1[i] = wi - (step * mi / (np.sqrt(vi) * scale + eps_) + lrwd * wi)


@njit(**_JIT)
def _adam(w, g, m, v, lr, beta1, beta2, eps, wd, lrwd, bc1, bc2):
    _prefer_512bit_vectors()
    w1 = w.reshape(w.size)
    # reference.adam_update's arrangement: lr / bc1 and 1 / sqrt(bc2) once, in double
    _adam_range(w1, g.reshape(g.size), m.reshape(m.size), v.reshape(v.size), 0, w1.size,
                _cast(w, beta1), _cast(w, beta2), _cast(w, 1 - beta1), _cast(w, 1 - beta2),
                _cast(w, eps), _cast(w, wd), _cast(w, lrwd), _cast(w, lr / bc1), _cast(w, 1.0 / np.sqrt(bc2)))


@njit(**_JIT)
def adam_update(w, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    _adam(w, g, m, v, lr, beta1, beta2, eps, weight_decay, 0.0, bc1, bc2)


@njit(**_JIT)
def adamw_update(w, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    _adam(w, g, m, v, lr, beta1, beta2, eps, 0.0, lr * weight_decay, bc1, bc2)


@njit(**_JIT)
def rmsprop_update(w, g, s, lr, rho, eps, weight_decay):
    _prefer_512bit_vectors()
    w1 = w.reshape(w.size)
    g1 = g.reshape(g.size)
    s1 = s.reshape(s.size)
    lr_ = _cast(w, lr)
    rho_ = _cast(w, rho)
    omr = _cast(w, 1 - rho)
    eps_ = _cast(w, eps)
    wd = _cast(w, weight_decay)
    for i in range(w1.size):
        wi = w1[i]
        gd = g1[i] + wd * wi
        si = s1[i] * rho_ + omr * (gd * gd)
        s1[i] = si
        w1[i] = wi - lr_ * gd / (np.sqrt(si) + eps_)


# --------------------------------------------------------------------------
# dropout masks: splitmix64 on a counter (see reference.dropout_mask)
# --------------------------------------------------------------------------
_GAMMA = np.uint64(SPLITMIX_GAMMA)
_M1 = np.uint64(SPLITMIX_M1)
_M2 = np.uint64(SPLITMIX_M2)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@njit(**_JIT)
def _dropout_fill(flat, threshold, scale, unit, key, base, shift):
    zero = scale - scale
    for i in range(flat.size):
        x = key + _GAMMA * (base + np.uint64(i))
        x = (x ^ (x >> _S30)) * _M1
        x = (x ^ (x >> _S27)) * _M2
        x = x ^ (x >> _S31)
        # x >> shift has at most 24 (float32) or 53 (float64) bits: exact in
        # float64, and the product with unit = 2**-bits is exact too, so the
        # comparison is the one reference makes in the array dtype.
        u = np.float64(x >> shift) * np.float64(unit)
        flat[i] = scale if u >= np.float64(threshold) else zero


def dropout_mask(keep, rate, key, counter, start=0):
    """``keep = 1 / (1 - rate)`` where the counter-based uniform is ``>= rate``, else 0."""
    threshold, scale, unit, base, shift = dropout_params(rate, counter, keep.dtype, start)
    _dropout_fill(keep.reshape(keep.size), threshold, scale, unit,
                  np.uint64(int(key) & 0xFFFFFFFFFFFFFFFF), np.uint64(base), np.uint64(shift))



# --------------------------------------------------------------------------
# data augmentation: per-row affine warp with bilinear interpolation
# --------------------------------------------------------------------------
@njit(**_JIT)
def affine_warp(x, params, out, h, w):
    """Each row of ``x`` (an ``h x w`` image) resampled through its own affine map
    ``params[i] = (a, b, tx, c, d, ty)``, bilinear, zero outside (see ``reference``);
    one pass over the output, the four neighbours summed in the reference's order."""
    one = _cast(x, 1.0)
    zero = one - one
    low = -one
    fh = _cast(x, h)
    fw = _cast(x, w)
    for i in range(x.shape[0]):
        img = x[i]
        dst = out[i]
        a, b, tx = params[i, 0], params[i, 1], params[i, 2]
        c, d, ty = params[i, 3], params[i, 4], params[i, 5]
        for v in range(h):
            fv = _cast(x, v)
            for u in range(w):
                fu = _cast(x, u)
                sx = a * fu + b * fv + tx
                sy = c * fu + d * fv + ty
                total = zero
                if sx > low and sx < fw and sy > low and sy < fh:  # False for NaN too
                    gx = math.floor(sx)
                    gy = math.floor(sy)
                    fx = sx - gx
                    fy = sy - gy
                    x0 = int(gx)
                    y0 = int(gy)
                    if y0 >= 0:
                        if x0 >= 0:
                            total += (one - fx) * (one - fy) * img[y0 * w + x0]
                        if x0 + 1 < w:
                            total += fx * (one - fy) * img[y0 * w + x0 + 1]
                    if y0 + 1 < h:
                        if x0 >= 0:
                            total += (one - fx) * fy * img[(y0 + 1) * w + x0]
                        if x0 + 1 < w:
                            total += fx * fy * img[(y0 + 1) * w + x0 + 1]
                dst[v * w + u] = total


# --------------------------------------------------------------------------
# Adam, AdamW and the bfloat16 rounding across the threads of an OpenMP pool
# --------------------------------------------------------------------------
@intrinsic
def _pointer(typingctx, address):
    """The integer ``address`` as a ``void *`` (for ``numba.carray``)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return types.voidptr(address), codegen


@intrinsic
def _call_int(typingctx, address):
    """Call the C function ``int f(void)`` at ``address`` (``omp_get_thread_num`` ...)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])

    return types.int32(address), codegen


@njit(**_HELPER_ARRAYS)
def _round_bf16_range(src, dst, lo, hi):
    """Elements ``lo:hi`` of float32 bits ``src`` (uint32) rounded to bfloat16 bits ``dst``
    (uint16): nearest even; a NaN stays a quiet NaN."""
    # Every step cast back to uint32 (Numba widens uint32 arithmetic to 64 bits: half the
    # lanes per vector) and no branch (a select): 16 elements per instruction.
    u = np.uint32
    for i in range(lo, hi):
        x = src[i]
        high = u(x >> u(16))
        rounded = u(u(u(x + u(0x7FFF)) + u(high & u(1))) >> u(16))
        nan = u(x & u(0x7FFFFFFF)) > u(0x7F800000)
        dst[i] = np.uint16(u(high | u(0x40)) if nan else rounded)


@njit(nogil=True, **_JIT)
def round_bf16_bits(src, dst):
    """Float32 bits ``src`` (flat uint32) rounded to bfloat16 bits ``dst`` (flat uint16), on
    the calling thread (``precision="bf16"``'s GEMM operands,
    ``fastnet.backends.gemm_onednn.Bf16Matmul``)."""
    _round_bf16_range(src, dst, 0, src.size)


#: A pool body's table: the header's length, then six entries per tensor.
_HEAD, _ENTRY = 6, 6
#: Elements updated, then rounded, at a time where an update also rounds the weights to
#: bfloat16 (:meth:`PoolUpdate.rounding`): 2,048 elements of w, g, m and v (32 KB) are still in
#: L1 when the rounding reads w back.
_FUSE = 2048
#: Each thread's share starts on a multiple of 32 elements (a 64-byte boundary of the
#: 16-bit output of the rounding, two of float32): no cache line is written by two threads.
_ALIGN = 32


def _pool_update_body(data):  # pragma: no cover - compiled (a C callback)
    """One thread's share of a :class:`PoolUpdate` or :class:`PoolRound`: ``data`` is its
    table (uint64): addresses of ``omp_get_thread_num`` and ``omp_get_num_threads``, the
    kind (0 Adam, 1 AdamW, 2 bfloat16 rounding, 3 SGD), the number of tensors, the address
    of the 9 float32 scalars, whether an update also rounds (1) or not (0), then per tensor
    the addresses of ``w``, ``g``, ``m``, ``v``, its size and the address of the bfloat16 bits
    the updated ``w`` is rounded into (0: none) (SGD: 0 for ``m`` and ``v``; the rounding:
    ``src``, ``dst``, 0, 0, size, 0).  The tensors are one range of elements end to end;
    thread ``t`` of ``T`` takes its ``T``-th of it."""
    _prefer_512bit_vectors()
    head = numba.carray(data, _HEAD, np.uint64)
    t = np.uint64(_call_int(head[0]))
    threads = np.uint64(_call_int(head[1]))
    kind, n, rounds = head[2], head[3], head[5]
    sc = numba.carray(_pointer(head[4]), 9, np.float32)
    table = numba.carray(data, _HEAD + _ENTRY * n, np.uint64)
    total = np.uint64(0)
    for k in range(n):
        total += table[_HEAD + _ENTRY * k + 4]
    mask = ~np.uint64(_ALIGN - 1)
    lo = (total * t // threads) & mask
    hi = total if t + 1 == threads else (total * (t + 1) // threads) & mask
    base = np.uint64(0)
    for k in range(n):
        e = _HEAD + _ENTRY * k
        size = table[e + 4]
        a = max(lo, base)
        b = min(hi, base + size)
        if a < b and kind == 2:
            _round_bf16_range(numba.carray(_pointer(table[e]), size, np.uint32),
                              numba.carray(_pointer(table[e + 1]), size, np.uint16), a - base, b - base)
        elif a < b:
            w1 = numba.carray(_pointer(table[e]), size, np.float32)
            g1 = numba.carray(_pointer(table[e + 1]), size, np.float32)
            m1 = numba.carray(_pointer(table[e + 2]), size, np.float32)
            v1 = numba.carray(_pointer(table[e + 3]), size, np.float32)
            into = table[e + 5] if rounds else np.uint64(0)
            step = np.uint64(_FUSE) if into else b - a
            for c in range(a - base, b - base, step):   # (one chunk when nothing is rounded)
                d = min(c + step, b - base)
                if kind == 3:
                    _sgd_range(w1, g1, c, d, sc[0], sc[1])
                else:
                    _adam_range(w1, g1, m1, v1, c, d, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], sc[7], sc[8])
                if into:
                    _round_bf16_range(numba.carray(_pointer(table[e]), size, np.uint32),
                                      numba.carray(_pointer(into), size, np.uint16), c, d)
        base += size


_CALLBACKS: dict = {}
_CALLBACKS_LOCK = threading.Lock()


def _callback_address(body):
    """The address of ``body`` compiled as a C callback ``void(void *)`` (once per process,
    whichever threads ask at once; cached on disk with the kernels)."""
    with _CALLBACKS_LOCK:
        compiled = _CALLBACKS.get(body)
        if compiled is None:
            previous = _cache.redirect(_numba_config)
            try:
                compiled = _CALLBACKS[body] = numba.cfunc(types.void(types.voidptr), **_JIT)(body)
            finally:
                _cache.restore(_numba_config, previous)
    return compiled.address


def _pool_body_address():
    """The address of :func:`_pool_update_body` as a C callback."""
    return _callback_address(_pool_update_body)


class PoolUpdate:
    """One SGD, Adam or AdamW step of a model's float32 parameters, run by every thread of an
    OpenMP pool at once (oneDNN's, whose threads run the step's GEMMs): the parameters'
    elements, end to end, split in equal shares.  Each element is computed as
    :func:`sgd_update`, :func:`adam_update` or :func:`adamw_update` computes it (the same
    loop): the results are bit for bit those of the one-thread kernels.

    ``kernel``: a name of ``KINDS``; ``tensors``: ``(w, g, [state...])`` flat C-contiguous
    float32 arrays (Adam's state: ``m``, ``v``; SGD has none), kept alive here (the table
    holds their addresses); ``thread_functions``: the addresses of the pool's
    ``omp_get_thread_num`` and ``omp_get_num_threads``.  :meth:`set` takes one step's
    scalars; the pool then calls ``body(data)`` on each thread (``GOMP_parallel``).

    ``bits`` (``precision="bf16"``): per tensor a flat uint16 array as large, or None; while
    :meth:`rounding` is on, each updated ``w`` is also rounded to bfloat16 into its ``bits``
    (:func:`round_bf16_bits`' loop, ``_FUSE`` elements at a time, while they are in L1): the
    next step's GEMMs read them without rounding the weights again."""

    KINDS = {"adam_update": 0, "adamw_update": 1, "sgd_update": 3}
    SLOTS = {"adam_update": 2, "adamw_update": 2, "sgd_update": 0}

    def __init__(self, kernel, tensors, thread_functions, bits=None):
        self.kind = self.KINDS[kernel]
        self.tensors = [(w, g, tuple(st)) for w, g, st in tensors]
        self.bits = list(bits) if bits is not None else [None] * len(self.tensors)
        if len(self.bits) != len(self.tensors) or any(
                b is not None and (b.dtype != np.uint16 or b.ndim != 1 or not b.flags.c_contiguous
                                   or b.size != w.size) for b, (w, _, _) in zip(self.bits, self.tensors)):
            raise ValueError("PoolUpdate's bits are a flat C-contiguous uint16 array per tensor, as large, or None")
        for w, g, st in self.tensors:
            if len(st) != self.SLOTS[kernel]:
                raise ValueError(f"{kernel} keeps {self.SLOTS[kernel]} state arrays per parameter, got {len(st)}")
            for a in (w, g, *st):
                if a.dtype != np.float32 or a.ndim != 1 or not a.flags.c_contiguous or a.size != w.size:
                    raise ValueError("PoolUpdate takes flat C-contiguous float32 arrays of one size per "
                                     f"parameter, got {a.dtype} {a.shape}")
        self.scalars = np.zeros(9, np.float32)
        table = [*thread_functions, self.kind, len(self.tensors), self.scalars.ctypes.data, 0]
        for (w, g, st), b in zip(self.tensors, self.bits):
            m, v = st if st else (w, w)   # (SGD: not read)
            table += [w.ctypes.data, g.ctypes.data, m.ctypes.data, v.ctypes.data, w.size,
                      0 if b is None else b.ctypes.data]
        self.table = np.array(table, dtype=np.uint64)
        self.data = self.table.ctypes.data
        self.body = _pool_body_address()

    def rounding(self, on):
        """Whether the next steps also round each ``w`` into its ``bits``."""
        self.table[5] = 1 if on else 0

    def set(self, *args):
        """This step's scalars: the kernel's arguments after its arrays (``lr, weight_decay``;
        Adam's ``lr, beta1, beta2, eps, weight_decay, bc1, bc2``), computed in double and
        rounded to float32 as the one-thread kernels compute them."""
        if self.kind == 3:
            lr, weight_decay = args
            self.scalars[:2] = (lr, weight_decay)
            return
        lr, beta1, beta2, eps, weight_decay, bc1, bc2 = args
        wd, lrwd = (weight_decay, 0.0) if self.kind == 0 else (0.0, lr * weight_decay)
        self.scalars[:] = (beta1, beta2, 1 - beta1, 1 - beta2, eps, wd, lrwd, *adam_scalars(lr, bc1, bc2))


def pool_update(kernel, tensors, thread_functions, bits=None):
    """A :class:`PoolUpdate` for optimizer kernel ``kernel``, or None where it has none
    (SGD, Adam and AdamW do) or the tensors are not float32."""
    if kernel not in PoolUpdate.KINDS or any(w.dtype != np.float32 for w, _, _ in tensors):
        return None
    return PoolUpdate(kernel, tensors, thread_functions, bits)


class PoolRound:
    """:func:`round_bf16_bits` run by every thread of an OpenMP pool at once, each on its
    share of the elements (the same loop: the same bits).  ``thread_functions`` as for
    :class:`PoolUpdate`; :meth:`__call__` rounds one array, through ``run(body, data)``
    (``fastnet.backends.gemm_onednn.PoolRunner.run``)."""

    def __init__(self, thread_functions, run):
        self._run = run
        self.table = np.zeros(_HEAD + _ENTRY, dtype=np.uint64)
        self.table[:_HEAD] = (*thread_functions, 2, 1, 0, 0)
        self._data = self.table.ctypes.data
        self._body = _pool_body_address()

    def __call__(self, src, dst):
        """``src`` (flat uint32, C-contiguous) rounded into ``dst`` (flat uint16, as many)."""
        if src.dtype != np.uint32 or dst.dtype != np.uint16 or src.size != dst.size \
                or not (src.flags.c_contiguous and dst.flags.c_contiguous):
            raise ValueError(f"PoolRound takes flat uint32 and uint16 arrays of one size, got "
                             f"{src.dtype} {src.shape} and {dst.dtype} {dst.shape}")
        self.table[_HEAD:] = (src.ctypes.data, dst.ctypes.data, 0, 0, src.size, 0)
        self._run(self._body, self._data)



# --------------------------------------------------------------------------
# A forward pass of a few rows across the threads of an OpenMP pool
# --------------------------------------------------------------------------
#: The forward body's table: the header's length, then seven entries per layer.
_FWD_HEAD, _FWD_ENTRY = 9, 7


@intrinsic
def _call_void(typingctx, address):
    """Call the C function ``void f(void)`` at ``address`` (``GOMP_barrier``)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])
        return context.get_dummy_value()

    return types.none(address), codegen


@njit(**_HELPER_ARRAYS)
def _partial_rows(x, W, acc, k0, k1):
    """``acc = x[:, k0:k1] @ W[k0:k1]``: rows ``k0:k1`` of ``W`` (contiguous memory) read
    four at a time, each used for every row of ``x`` while it is in L1, two rows of ``x``
    per load of its values (each row's sums in the same order as alone: the same bits)."""
    n, N = acc.shape
    zero = _cast(acc, 0.0)
    for r in range(n):
        ar = acc[r]
        for j in range(N):
            ar[j] = zero
    k = k0
    while k + 4 <= k1:
        w0, w1, w2, w3 = W[k], W[k + 1], W[k + 2], W[k + 3]
        r = 0
        while r + 2 <= n:
            xa, xb, aa, ab = x[r], x[r + 1], acc[r], acc[r + 1]
            a0, a1, a2, a3 = xa[k], xa[k + 1], xa[k + 2], xa[k + 3]
            b0, b1, b2, b3 = xb[k], xb[k + 1], xb[k + 2], xb[k + 3]
            for j in range(N):
                v0, v1, v2, v3 = w0[j], w1[j], w2[j], w3[j]
                aa[j] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
                ab[j] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3
            r += 2
        if r < n:
            xa, aa = x[r], acc[r]
            a0, a1, a2, a3 = xa[k], xa[k + 1], xa[k + 2], xa[k + 3]
            for j in range(N):
                aa[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j]
        k += 4
    while k < k1:
        w0 = W[k]
        for r in range(n):
            a0, ar = x[r, k], acc[r]
            for j in range(N):
                ar[j] += a0 * w0[j]
        k += 1


def _forward_body(data):  # pragma: no cover - compiled (a C callback)
    """One thread's share of a :class:`PoolForward` call.  ``data`` is its table (uint64):
    the addresses of ``omp_get_thread_num``, ``omp_get_num_threads`` and ``GOMP_barrier``,
    the number of layers, the rows, the input's address, the scratch's address, the bytes
    between two blocks' scratch, the number of blocks ``P``, then per layer the addresses of
    ``W``, ``b``, its output and its pre-activation buffer (GELU's), its inputs, its outputs
    and its activation code.  Called outside a parallel region it runs the whole pass on
    the calling thread (one thread, and ``GOMP_barrier`` returns at once).

    Each layer: ``W``'s rows are cut into ``P`` blocks (contiguous: a block uses all of a
    cache's sets); thread ``t`` of ``T`` takes blocks ``t, t + T, ...`` and multiplies the
    rows by each into scratch of its own (the same blocks on every call, so they stay in
    that core's L2 cache).  After a barrier it sums the ``P`` partial results, in block
    order, over the output columns that make up the same blocks of the next layer's input,
    adds the bias and applies the activation (softmax, on the last layer: whole rows, by
    thread 0): the next layer's blocks read only what their
    own thread wrote, so no second barrier is needed, and two banks of scratch alternate
    between layers so that one layer's partial sums are not written over while another
    thread still reads the last layer's.  The sums do not depend on ``T``."""
    _prefer_512bit_vectors()
    head = numba.carray(data, _FWD_HEAD, np.uint64)
    t = np.int64(_call_int(head[0]))
    threads = np.int64(_call_int(head[1]))
    barrier = head[2]
    layers, rows = np.int64(head[3]), np.int64(head[4])
    x_at, scratch, stride, parts = np.int64(head[5]), np.int64(head[6]), np.int64(head[7]), np.int64(head[8])
    table = numba.carray(data, _FWD_HEAD + _FWD_ENTRY * layers, np.uint64)
    for layer in range(layers):
        e = _FWD_HEAD + _FWD_ENTRY * layer
        K, N, act = np.int64(table[e + 4]), np.int64(table[e + 5]), np.int64(table[e + 6])
        W = numba.carray(_pointer(table[e]), (K, N), np.float32)
        x = numba.carray(_pointer(x_at), (rows, K), np.float32)
        bank = scratch + (layer % 2) * parts * stride
        for p in range(t, parts, threads):
            block = numba.carray(_pointer(bank + p * stride), (rows, N), np.float32)
            _partial_rows(x, W, block, K * p // parts, K * (p + 1) // parts)
        _call_void(barrier)
        out_at = np.int64(table[e + 2])
        whole = act == 6  # softmax: whole rows, on thread 0 (the last layer only)
        for p in range(t, 1 if whole else parts, threads):
            c0, c1 = (0, N) if whole else (N * p // parts, N * (p + 1) // parts)
            m = c1 - c0
            if m == 0:
                continue
            b = numba.carray(_pointer(np.int64(table[e + 1]) + 4 * c0), m, np.float32)
            for r in range(rows):
                z = numba.carray(_pointer(out_at + 4 * (r * N + c0)), (1, m), np.float32)
                zr = z[0]
                for u in range(parts):
                    part = numba.carray(_pointer(bank + u * stride + 4 * (r * N + c0)), m, np.float32)
                    if u == 0:
                        for j in range(m):
                            zr[j] = part[j]
                    else:
                        for j in range(m):
                            zr[j] += part[j]
                if act == 0:  # (the codes of _FORWARD_KERNELS)
                    identity_fwd(z, b)
                elif act == 1:
                    relu_fwd(z, b)
                elif act == 2:
                    sigmoid_fwd(z, b)
                elif act == 3:
                    tanh_fwd(z, b)
                elif act == 4:
                    leaky_relu_fwd(z, b)
                elif act == 6:
                    softmax_fwd(z, b)
                else:
                    pre = numba.carray(_pointer(np.int64(table[e + 3]) + 4 * (r * N + c0)), (1, m), np.float32)
                    gelu_fwd(z, b, pre)
        x_at = out_at


#: The activation kernels the forward body applies, in the order of its codes (a layer whose
#: activation is not among them predicts through the BLAS: no :class:`PoolForward`).
_FORWARD_KERNELS = (identity_fwd, relu_fwd, sigmoid_fwd, tanh_fwd, leaky_relu_fwd, gelu_fwd, softmax_fwd)
#: Activation name -> code.
FORWARD_ACTIVATIONS = {f.__name__[:-len("_fwd")]: code for code, f in enumerate(_FORWARD_KERNELS)}



def _forward_body_address():
    """The address of :func:`_forward_body` as a C callback."""
    return _callback_address(_forward_body)


def aligned_zeros(shape, dtype=np.float32, align=64):
    """Zeros of ``shape`` and ``dtype``, C-contiguous, starting on a multiple of ``align``
    bytes (NumPy starts large arrays 16 bytes into a cache line): the forward kernel's
    buffers, and on the CPU a layer's weights (``Backend.parameter``)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


class PoolForward:
    """The forward pass of a float32 network of dense layers on up to ``max_rows`` rows, on
    one or more threads of an OpenMP pool (:func:`_forward_body`).  What a call of a row or
    two spends is the time to read the weights, and a core reads its own L2 cache about
    twice as fast as the shared L3: with the weights cut into ``parts`` blocks, each thread
    reads its own blocks, the same ones on every call.  The sums are those of a GEMM split
    into ``parts`` along ``K`` (each output a sum of ``parts`` partial dot products, in
    block order): the same bits on any number of threads, for a row whatever the other
    rows of the call; they differ from a BLAS's in the last bits.

    ``layers``: ``(W, b, activation)`` per layer (``W`` (K, N) and ``b`` (N,) C-contiguous
    float32, read where they are: the caller builds another when they are other arrays);
    ``functions``: the addresses of the pool's ``omp_get_thread_num``,
    ``omp_get_num_threads`` and ``GOMP_barrier``; ``run(body, data, threads)`` runs
    ``body(data)`` on ``threads`` threads of the pool
    (``fastnet.backends.gemm_onednn.PoolRunner.run``).  Each Python thread calling it has
    buffers of its own."""

    def __init__(self, layers, max_rows, parts, functions, run):
        import ctypes

        self.layers = [(W, b, act) for W, b, act in layers]
        for i, (W, b, act) in enumerate(self.layers):
            if W.dtype != np.float32 or b.dtype != np.float32 or W.ndim != 2 or b.shape != W.shape[1:] \
                    or not (W.flags.c_contiguous and b.flags.c_contiguous):
                raise ValueError(f"PoolForward takes C-contiguous float32 W (K, N) and b (N,), got layer {i}: "
                                 f"W {W.dtype} {W.shape}, b {b.dtype} {b.shape}")
            if act not in FORWARD_ACTIVATIONS:
                raise ValueError(f"PoolForward applies {', '.join(FORWARD_ACTIVATIONS)}, not {act!r} (layer {i})")
            if act == "softmax" and i + 1 < len(self.layers):
                raise ValueError(f"PoolForward applies softmax on the last layer only, got it on layer {i}")
            if i and W.shape[0] != self.layers[i - 1][0].shape[1]:
                raise ValueError(f"layer {i} takes {W.shape[0]} inputs, layer {i - 1} gives "
                                 f"{self.layers[i - 1][0].shape[1]}")
        if not 1 <= parts <= self.layers[0][0].shape[0]:
            raise ValueError(f"parts must be 1 to {self.layers[0][0].shape[0]} (the first layer's inputs), "
                             f"got {parts!r}")
        self.max_rows, self.parts, self._functions, self._run = max_rows, parts, functions, run
        self._local = threading.local()
        self._body = _forward_body_address()
        self._here = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._body)

    def _buffers(self):
        """This Python thread's buffers and table (made on its first call)."""
        mine = getattr(self._local, "buffers", None)
        if mine is None:
            widest = max(W.shape[1] for W, _, _ in self.layers)
            # each block's partial sums on pages of their own: no cache line written by two cores
            stride = -(-self.max_rows * widest * 4 // 4096) * 4096
            scratch = aligned_zeros(stride // 4 * self.parts * 2, align=4096)  # two banks
            x = aligned_zeros(self.max_rows * self.layers[0][0].shape[0])
            outs = [aligned_zeros(self.max_rows * W.shape[1]) for W, _, _ in self.layers]
            pres = [aligned_zeros(self.max_rows * W.shape[1]) if act == "gelu" else out
                    for (W, _, act), out in zip(self.layers, outs)]
            table = [*self._functions, len(self.layers), 0, x.ctypes.data, scratch.ctypes.data, stride, self.parts]
            for (W, b, act), out, pre in zip(self.layers, outs, pres):
                table += [W.ctypes.data, b.ctypes.data, out.ctypes.data, pre.ctypes.data, W.shape[0], W.shape[1],
                          FORWARD_ACTIVATIONS[act]]
            table = np.array(table, dtype=np.uint64)
            k, n = self.layers[0][0].shape[0], self.layers[-1][0].shape[1]
            # per row count: the rows of the input buffer and of the last output
            views = [None] + [(x[:r * k].reshape(r, k), outs[-1][:r * n].reshape(r, n))
                              for r in range(1, self.max_rows + 1)]
            mine = self._local.buffers = (views, table, table.ctypes.data, (scratch, outs, pres))
        return mine

    def __call__(self, x, threads):
        """The last layer's outputs (a new (rows, N) array) for ``x`` (rows, K): on the
        calling thread (``threads=1``) or on ``threads`` threads of the pool."""
        rows = x.shape[0]
        if not 0 < rows <= self.max_rows or not 0 < threads <= self.parts:
            raise ValueError(f"PoolForward runs 1 to {self.max_rows} rows on 1 to {self.parts} threads, "
                             f"got {rows} rows, {threads} threads")
        views, table, data, _ = self._buffers()
        xbuf, out = views[rows]
        xbuf[...] = x
        table[4] = rows
        if threads == 1:
            self._here(data)
        else:
            self._run(self._body, data, threads)
        return out.copy()


_cache.restore(_numba_config, _previous_cache_dir)

"""The training GEMMs of ``precision="tf32"``, ``"bf16"`` and ``"fp16"`` on CUDA GPUs.

CuPy's ``matmul`` honours TF32 only (``CUPY_TF32=1`` or its ``set_compute_type``), and
CuPy 14 has no bfloat16 arrays.  cuBLAS itself does all three on float32 arrays:
``cublasGemmEx`` with float32 A, B and C and a "fast" compute type
(``CUBLAS_COMPUTE_32F_FAST_TF32``, ``_FAST_16BF``, ``_FAST_16F``) converts the inputs
to that format on the tensor cores and accumulates and writes float32.  So the
activations, gradients and weights stay float32 arrays (no conversion kernels, no
second copy), and only the products change precision.

:class:`CublasMatmul` calls ``cupy_backends.cuda.libs.cublas.gemmEx`` (CuPy's own
binding: it puts the handle on CuPy's current stream, where fastnet's kernels run)
with CuPy's cuBLAS handle.  cuBLAS is column-major: a C-contiguous ``(rows, cols)``
array is, to it, the column-major ``(cols, rows)`` matrix, its transpose.  So
``out = a @ b`` is computed as ``out^T = b^T a^T``: cuBLAS's ``A`` is ``b``, its
``B`` is ``a``, with ``m = out.shape[1]``, ``n = out.shape[0]``.  A transposed view
(``x.T``, ``W.T``: F-contiguous) is the same memory read with the other operation.

Under the CUDA simulator (backend ``"cuda-sim"``) the array module
(:mod:`fastnet.cuda_sim.contract`) brings a stand-in of the binding that checks each call
against the installed CuPy's ``gemmEx`` signature and computes what cuBLAS computes
from the pointers, leading dimensions and operations, the inputs rounded to the
precision's format.
"""
from __future__ import annotations

import numpy as np

#: cuBLAS's compute type of each precision (the names of CuPy's constants).
COMPUTE_TYPES = {"tf32": "CUBLAS_COMPUTE_32F_FAST_TF32", "bf16": "CUBLAS_COMPUTE_32F_FAST_16BF",
                 "fp16": "CUBLAS_COMPUTE_32F_FAST_16F"}


def _operand(x):
    """``(operation, leading dimension)`` of a 2-D array given to cuBLAS as a column-major
    matrix whose transpose is ``x``: C-contiguous ``x`` is read as is (``N``), an
    F-contiguous one (a transposed view) with ``T``."""
    rows, cols = x.shape
    if x.flags.c_contiguous:
        return 0, max(1, cols)  # CUBLAS_OP_N
    if x.flags.f_contiguous:
        return 1, max(1, rows)  # CUBLAS_OP_T
    raise ValueError(f"a GEMM operand must be C- or F-contiguous, got strides {x.strides} for shape {x.shape}")


class CublasMatmul:
    """``out = a @ b`` (float32 arrays) through ``cublasGemmEx`` with ``precision``'s compute type.

    ``xp``: CuPy, or the CUDA simulator's array module (whose ``cublas_binding()``
    brings the stand-in).
    """

    def __init__(self, precision: str, xp) -> None:
        self.precision = precision
        binding = getattr(xp, "cublas_binding", None)
        if binding is not None:  # fastnet.cuda_sim.contract (the simulator)
            self._lib, self._handle = binding()
        else:
            from cupy_backends.cuda.libs import cublas

            self._lib, self._handle = cublas, xp.cuda.device.get_cublas_handle
        lib = self._lib
        self._compute = getattr(lib, COMPUTE_TYPES[precision])
        self._algo = lib.CUBLAS_GEMM_DEFAULT_TENSOR_OP
        self._r32f = 0  # CUDA_R_32F (cudaDataType)
        # alpha = 1 and beta = 0 in host memory (cuBLAS's default pointer mode), kept alive here
        self._one, self._zero = np.ones((), np.float32), np.zeros((), np.float32)

    def __call__(self, a, b, out):
        n, k = a.shape
        k2, m = b.shape
        if k2 != k or out.shape != (n, m):
            raise ValueError(f"matmul shapes: {a.shape} @ {b.shape} into {out.shape}")
        for name, x in (("a", a), ("b", b), ("out", out)):
            if x.dtype != np.float32:
                raise TypeError(f"precision={self.precision!r} GEMMs take float32 arrays, got {name} {x.dtype}")
        if not out.flags.c_contiguous:
            raise ValueError("the GEMM's out must be C-contiguous")
        if n == 0 or m == 0:
            return out
        if k == 0:
            out.fill(0)
            return out
        op_b, ld_b = _operand(b)
        op_a, ld_a = _operand(a)
        self._lib.gemmEx(self._handle(), op_b, op_a, m, n, k, self._one.ctypes.data,
                         b.data.ptr, self._r32f, ld_b, a.data.ptr, self._r32f, ld_a,
                         self._zero.ctypes.data, out.data.ptr, self._r32f, m, self._compute, self._algo)
        return out

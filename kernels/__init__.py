"""Fused kernels for fastnet, installed as ``fastnet.kernels``.

Three modules with the same names, signatures and side effects:

* ``reference`` -- plain array expressions (NumPy or CuPy); the oracle;
* ``cpu``       -- ``@numba.njit(cache=True)`` fused loops on NumPy arrays;
* ``cuda``      -- ``@numba.cuda.jit`` kernels launched on CuPy arrays.

The list of kernel names is ``reference.KERNELS``.  ``cache`` says where compiled
kernels are kept on disk: a per-user folder keyed by versions, never the install
folder.  Nothing here imports Numba or CuPy until a module that needs it is
imported, so ``import fastnet`` stays fast.
"""
from . import reference  # noqa: F401  (pure NumPy, cheap)

__all__ = ["reference"]

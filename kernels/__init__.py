"""Kernels for fastnet, installed as ``fastnet.kernels``.

* ``reference`` -- the complete kernel table: every kernel, in plain array
  expressions (NumPy or CuPy); the oracle, and correct on every backend;
* ``cpu``       -- ``@numba.njit(cache=True)`` fused loops on NumPy arrays, for
  the kernels it overrides;
* ``cuda``      -- ``@numba.cuda.jit`` kernels launched on CuPy arrays, for the
  kernels it overrides.

A backend's kernels are :func:`kernel_set`: the reference table with the fused
module's kernels laid over it, name by name, so a kernel a module does not fuse
falls back to its reference version.  ``cache`` says where compiled kernels are
kept on disk: a per-user folder keyed by versions, never the install folder.
Nothing here imports Numba or CuPy until a module that needs it is imported, so
``import fastnet`` stays fast.
"""
from __future__ import annotations

import importlib

from . import reference

__all__ = ["reference", "KernelSet", "kernel_set", "FUSED_MODULES"]

#: The fused module of each kind of device.
FUSED_MODULES = {"cpu": "fastnet.kernels.cpu", "cuda": "fastnet.kernels.cuda"}


class KernelSet:
    """One backend's kernels: an attribute per name of ``reference.KERNELS``.

    ``fused`` names the kernels taken from the fused module, ``fallback`` those
    that run as written in ``reference``; ``module`` is the fused module (None
    for ``kernels="reference"``).
    """

    def __init__(self, module=None, label="reference"):
        self.module = module
        self.label = label
        fused, fallback = [], []
        for name, ref in reference.KERNELS.items():
            mine = getattr(module, name, None) if module is not None else None
            setattr(self, name, mine if mine is not None else ref)
            (fused if mine is not None else fallback).append(name)
        self.fused, self.fallback = tuple(fused), tuple(fallback)

    def __repr__(self):
        return f"<kernels {self.label}: {len(self.fused)} fused, {len(self.fallback)} reference>"

    def pool_update(self, kernel, tensors, thread_functions, bits=None):
        """Optimizer kernel ``kernel`` over ``tensors`` (``(w, g, [state...])`` flat arrays) as
        one update that every thread of an OpenMP pool runs a share of (the fused module's
        ``pool_update``, :class:`fastnet.kernels.cpu.PoolUpdate`; ``bits``: where each updated
        ``w`` may also be rounded to bfloat16, or None), or None where the module has none for
        it: then the kernel runs tensor by tensor on the calling thread."""
        make = getattr(self.module, "pool_update", None)
        if make is None or kernel not in self.fused:
            return None
        return make(kernel, tensors, thread_functions, bits)


def overrides(module):
    """Public names of ``module`` that look like kernels but are not in the table
    (a misspelt override would otherwise be silently unused)."""
    api = set(getattr(module, "API", ()))
    return sorted(n for n, v in vars(module).items()
                  if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
                  and n not in reference.KERNELS and n not in api)


def kernel_set(device_kind, kernels="fused"):
    """The :class:`KernelSet` of a device kind (``"cpu"`` or ``"cuda"``): the reference
    table, with ``kernels="fused"`` the fused module's kernels laid over it."""
    if kernels == "reference":
        return KernelSet(None, "reference")
    name = FUSED_MODULES[device_kind]
    module = importlib.import_module(name)
    return KernelSet(module, name)

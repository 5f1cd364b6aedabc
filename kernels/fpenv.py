"""The CPU's floating-point environment: flush-to-zero and denormals-are-zero.

Adam's second-moment estimates fall into denormal floats within a few hundred
steps (``(1 - beta2) * g**2`` for small gradients); an x86 core handles each
denormal operand in a slow microcode path.  Setting FTZ (bit 15) and DAZ
(bit 6) of the MXCSR register makes them zero instead, as PyTorch's
``torch.set_flush_denormal(True)`` does.  MXCSR is per thread: fastnet sets it
on the thread that runs the kernels, for the duration of ``fit`` only, and
puts the caller's value back afterwards.

Only x86-64 has MXCSR; elsewhere these functions do nothing.
"""
from __future__ import annotations

import platform

FTZ = 1 << 15
DAZ = 1 << 6
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")

if SUPPORTED:
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    def _mxcsr_call(builder, name, ptr):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        builder.call(fn, [builder.bitcast(ptr, ir.IntType(8).as_pointer())])

    @intrinsic
    def _stmxcsr(typingctx):
        def codegen(context, builder, signature, args):
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
            return builder.load(slot)

        return types.uint32(), codegen

    @intrinsic
    def _ldmxcsr(typingctx, value):
        def codegen(context, builder, signature, args):
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(args[0], slot)
            _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
            return context.get_dummy_value()

        return types.void(types.uint32), codegen

    from numba.core import config as _numba_config

    from . import cache as _cache

    # Cached in the per-user kernel folder, never in the install folder (see cache.py).
    _previous_cache_dir = _cache.redirect(_numba_config)

    @njit(cache=True)
    def get_mxcsr():
        """The calling thread's MXCSR register."""
        return _stmxcsr()

    @njit(cache=True)
    def set_mxcsr(value):
        """Load ``value`` into the calling thread's MXCSR register."""
        _ldmxcsr(value)

    _cache.restore(_numba_config, _previous_cache_dir)

    def flush_denormals(enable=True):
        """Set (or clear) FTZ and DAZ on this thread; returns the previous MXCSR value."""
        previous = int(get_mxcsr())
        value = previous | FTZ | DAZ if enable else previous & ~(FTZ | DAZ)
        set_mxcsr(value & 0xFFFFFFFF)
        return previous

    def restore(previous):
        """Put back a value returned by :func:`flush_denormals`."""
        set_mxcsr(previous & 0xFFFFFFFF)

else:  # pragma: no cover - non-x86 machines

    def flush_denormals(enable=True):
        return None

    def restore(previous):
        pass

"""``fastnet info``: versions, usable backends (and why the others are not), which kernels
each backend runs fused and which fall back to the reference table, the Numba cache."""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform


def precision_lines() -> list[str]:
    """``precisions (<backend>): float32 yes; bf16 ...`` for the CPU and each usable GPU backend."""
    from fastnet.backends.devices import DEVICES, backend_status, get_backend
    from fastnet.backends.precision import CPU_GEMM, cpu_gemm_provider, supported

    lines = ["precisions (cpu backend): " + "; ".join(f"{k} {v}" for k, v in supported().items())]
    try:
        provider = cpu_gemm_provider()
    except ValueError as exc:  # a bad FASTNET_CPU_GEMM: said here, raised when a model is made
        provider = f"none ({exc})"
    how = ("the fastest provider measured on each model's step at its first fit (fastnet.backends.gemm_choice)"
           if provider == "auto" else "as set")
    lines.append(f"float32 GEMMs of cpu training: {provider} "
                 f"({CPU_GEMM}={os.environ.get(CPU_GEMM, 'auto')}: {how}; inference: NumPy's BLAS)")
    lines.extend(gemm_choice_lines(provider))
    lines.append(small_batch_line())
    for name in [n for n, device in DEVICES.items() if device.gpu]:
        if backend_status(name)[0]:
            try:
                cc = get_backend(name)._device.compute_capability()
            except Exception as exc:  # reported, not raised: fastnet info always prints
                lines.append(f"precisions ({name} backend): unknown ({type(exc).__name__}: {exc})")
                continue
            lines.append(f"precisions ({name} backend, compute capability {cc // 10}.{cc % 10}): "
                         + "; ".join(f"{k} {v}" for k, v in supported(cc).items()))
    return lines


def gemm_choice_lines(provider: str) -> list[str]:
    """The CPU's GEMM providers, the choice for the default recipe's model (measured now, or
    from the cache) and why, and the decisions cached on this CPU."""
    from fastnet.backends import gemm_choice as gc
    from fastnet.core.recipes import CONFIGS

    lines = []
    try:
        here = gc.available()
        ready = [p for p in gc.PROVIDERS if here.get(p) is None]
        vers = gc.versions(ready)
        lines.append(f"  CPU: {gc.cpu_model()}; providers here: " + ", ".join(
            f"{p} ({vers[p]})" if here.get(p) is None else f"{p}: no ({str(here[p]).split('. ')[0]}; "
            f"{gc.INSTALL.get(p, '')})" for p in gc.PROVIDERS))
        if provider not in gc.PROVIDERS + ("auto",):
            return lines
        from fastnet.backends.threads import blas_threads
        from fastnet.core.optimizers import get_optimizer
        from fastnet.kernels import kernel_set

        recipe = CONFIGS["default"]
        sizes = [784, *recipe["hidden"], 10]
        shapes = [s for n_in, n_out in zip(sizes, sizes[1:]) for s in ((n_in, n_out), (n_out,))]  # (W, b)
        # (fit's decision for the recipe's model: its steps timed with the recipe's optimizer)
        update = get_optimizer(recipe["optimizer"], lr=recipe["lr"]).step_update(shapes, kernel_set("cpu"))
        choice = gc.choose(recipe["batch_size"], shapes, blas_threads() or 1, provider, update=update)
        source = {"measured": f"measured now in {choice.seconds:.2f} s", "cache": "cached decision"}.get(
            choice.source, choice.source)
        lines.append(f"  the default recipe's model: {choice.provider}: {choice.reason().replace(' (cached decision)', '')}"
                     f" [{source}]")
        for entry in gc.cached_decisions()[:6]:
            if entry.get("problems") == [list(p) for p in choice.problems] and entry.get("threads") == choice.threads:
                continue
            lines.append(f"  decided on this CPU: {entry.get('provider')}: {entry.get('reason')}")
    except Exception as exc:  # reported, not raised: fastnet info always prints
        lines.append(f"  GEMM providers: unknown ({type(exc).__name__}: {exc})")
    return lines


def _version(module):
    try:
        return importlib.import_module(module).__version__
    except Exception as exc:  # not installed, or broken
        return f"not available ({type(exc).__name__})"


def _distribution(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def numba_cache_dir():
    """Where fastnet's compiled kernels are cached (``fastnet.kernels.cache.cache_dir``)."""
    from fastnet.kernels.cache import cache_dir

    return str(cache_dir())


def kernel_lines():
    """Per device kind, the kernels its module fuses and those that fall back to reference."""
    from fastnet.kernels import FUSED_MODULES, kernel_set

    lines = []
    for kind, module in FUSED_MODULES.items():
        try:
            kset = kernel_set(kind)
        except Exception as exc:  # numba-cuda missing or broken: nothing to list
            lines.append(f"  {kind:<9} {module} not importable ({type(exc).__name__}: {exc})")
            continue
        total = len(kset.fused) + len(kset.fallback)
        lines.append(f"  {kind:<9} {len(kset.fused)} of {total} fused ({module}): {', '.join(kset.fused)}")
        lines.append(f"  {'':<9} reference: {', '.join(kset.fallback) or '(none)'}")
    return lines


def report():
    from fastnet import __version__
    from fastnet.backends.devices import DEVICES, backend_status, gpu_array_library_version

    lines = [
        f"fastnet {__version__}  (Python {platform.python_version()}, {platform.machine()})",
        f"numpy   {_version('numpy')}",
        f"numba   {_version('numba')}  (numba-cuda {_distribution('numba-cuda')})",
        f"cupy    {gpu_array_library_version()}",
        "backends:",
    ]
    for name in DEVICES:
        ok, why = backend_status(name)
        lines.append(f"  {name:<9} {'usable' if ok else 'unavailable'}: {why}")
    mpi = ", ".join(f"{n} {_distribution(n)}" for n in ("mpich", "openmpi", "impi-rt")
                    if _distribution(n) != "not installed") or "none from the package index"
    nccl = ", ".join(f"{n} {_distribution(n)}" for n in ("nvidia-nccl-cu13", "nvidia-nccl-cu12")
                     if _distribution(n) != "not installed") or "not installed"
    lines.append(f"distributed (fit(distributed=True)): mpi4py {_distribution('mpi4py')} (MPI: {mpi}); "
                 f"NCCL: {nccl}")
    lines.extend(precision_lines())
    lines.append("kernels (fused: the device's own; reference: the table's plain array version):")
    lines.extend(kernel_lines())
    lines.append(f"kernel cache: {numba_cache_dir()}  (set FASTNET_KERNEL_CACHE to move it)")
    return "\n".join(lines)


def small_batch_line() -> str:
    """Where CPU ``predict`` of a few rows runs (fastnet.backends.small_batch)."""
    from fastnet.backends import small_batch

    if os.environ.get("FASTNET_SMALL_BATCH", "1").strip() == "0":
        return "predict of 1-16 rows (cpu, float32): NumPy's BLAS (FASTNET_SMALL_BATCH=0)"
    if small_batch.runner() is None:
        return "predict of 1-16 rows (cpu, float32): NumPy's BLAS (libgomp.so.1 does not load here)"
    return (f"predict of 1-{small_batch.MAX_ROWS} rows (cpu, float32): the forward kernel on OpenMP threads "
            f"where it is measured faster than NumPy's GEMMs, once per model shape and row count (the weights "
            f"in up to {small_batch._cores()} blocks, one per core; its thread count measured; "
            "FASTNET_SMALL_BATCH=0 turns it off)")

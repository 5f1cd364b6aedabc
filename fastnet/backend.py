"""Backends: one object per device, carrying the array module and the kernels.

Layers, losses and optimizers are written once against ``backend.xp`` (NumPy
or CuPy) and ``backend.kernels`` (a module with the names in
``fastnet.kernels.reference.KERNELS``).  Everything device-specific that is
not a kernel lives in this file; the CuPy part is the ``_CupyDevice`` class.

=========  ======  ===================================  ==========================
name       xp      kernels (default, ``"fused"``)        available when
=========  ======  ===================================  ==========================
cpu        NumPy   ``fastnet.kernels.cpu`` (Numba)       always
cuda       CuPy    ``fastnet.kernels.cuda`` (numba.cuda) CuPy imports and sees a GPU
cuda-sim   NumPy   ``fastnet.kernels.cuda`` (simulator)  ``NUMBA_ENABLE_CUDASIM=1``
=========  ======  ===================================  ==========================

``kernels="reference"`` swaps in the plain array expressions of
``fastnet.kernels.reference`` on any backend, so fused and plain can be
compared on the same model.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import os

import numpy as np

BACKEND_NAMES = ("cpu", "cuda", "cuda-sim", "auto")
KERNEL_CHOICES = ("fused", "reference")
DTYPES = ("float32", "float64")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine; the message says why."""


def did_you_mean(value, choices):
    """`` (did you mean 'x'?)`` when ``value`` is close to one of ``choices``."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(argument, value, choices):
    """Raise ``ValueError`` naming ``argument`` unless ``value`` is in ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{argument} must be one of {', '.join(map(repr, choices))}, "
            f"got {value!r}{did_you_mean(value, choices)}"
        )


# --------------------------------------------------------------------------
# availability probes (cheap, never raise)
# --------------------------------------------------------------------------
def _simulator_enabled() -> bool:
    # numba reads NUMBA_ENABLE_CUDASIM once, at import: the environment is the
    # truth only until numba is imported, numba.config after that.
    import sys

    if "numba" in sys.modules:
        return bool(sys.modules["numba"].config.ENABLE_CUDASIM)
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_status() -> tuple[bool, str]:
    """``(usable, reason)`` for the ``cuda`` backend."""
    if _simulator_enabled():
        return False, (
            "NUMBA_ENABLE_CUDASIM=1 is set: numba.cuda is the CPU simulator "
            "(use backend='cuda-sim')"
        )
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return False, (
            f"CuPy is not importable ({type(exc).__name__}: {exc}); install it with "
            "pip install 'fastnet[cuda13]' (CUDA 13 driver) or 'fastnet[cuda12]'"
        )
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"CuPy found no usable CUDA driver or GPU ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "CuPy is installed but no CUDA GPU is visible"
    try:
        import numba.cuda  # noqa: F401
    except Exception as exc:
        return False, (
            f"numba.cuda is not importable ({exc}); install numba-cuda "
            "(pip install 'fastnet[cuda13]')"
        )
    return True, f"{count} CUDA device(s)"


def gpu_array_library_version() -> str:
    """CuPy's version, or why it is not importable."""
    try:
        import cupy
    except Exception as exc:
        return f"not available ({type(exc).__name__})"
    return cupy.__version__


def backend_status(name: str) -> tuple[bool, str]:
    """``(usable, reason)`` for one backend name."""
    if name == "cpu":
        return True, "NumPy"
    if name == "cuda":
        return cuda_status()
    if name == "cuda-sim":
        if _simulator_enabled():
            return True, "numba.cuda simulator"
        return False, "set NUMBA_ENABLE_CUDASIM=1 before Python starts (before numba is imported)"
    raise ValueError(f"unknown backend {name!r}")


def available_backends() -> list[str]:
    """Names of the backends usable in this process, e.g. ``['cpu']``."""
    return [n for n in ("cpu", "cuda", "cuda-sim") if backend_status(n)[0]]


# --------------------------------------------------------------------------
# devices: the few lines that differ between NumPy and CuPy arrays
# --------------------------------------------------------------------------
class _HostDevice:
    xp = np

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    def to_host(self, a):
        return np.asarray(a)

    def synchronize(self):
        pass

    def permutation(self, n):
        return self.rng.permutation(n)

    def uniform(self, out):
        # Generator.random fills float32/float64 buffers without allocating.
        self.rng.random(out=out, dtype=out.dtype)

    def get_rng_state(self):
        return self.rng.bit_generator.state

    @contextlib.contextmanager
    def compute_env(self):
        # Denormal floats (Adam's tiny second moments) take a slow microcode
        # path on x86: flush them to zero on this thread while training.
        from fastnet.kernels import fpenv

        previous = fpenv.flush_denormals(True)
        try:
            yield
        finally:
            fpenv.restore(previous)

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state


class _CupyDevice:
    def __init__(self, seed):
        import cupy

        self.xp = cupy
        self.rng = cupy.random.RandomState(seed)

    def asarray(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a):
        return self.xp.asnumpy(a)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()

    def permutation(self, n):
        return self.rng.permutation(n)

    def uniform(self, out):
        out[...] = self.rng.random_sample(out.shape, dtype=out.dtype)

    def get_rng_state(self):
        return None  # CuPy's generator state is not exported: a resumed run reshuffles anew

    def compute_env(self):
        return contextlib.nullcontext()

    def set_rng_state(self, state):
        pass


class Backend:
    """A device, its array module ``xp``, its ``kernels`` and a random generator.

    Create one with :func:`get_backend`.  Each call makes a new Backend with
    its own generator, so two models never share random state.

    Attributes
    ----------
    name : str
        ``"cpu"``, ``"cuda"`` or ``"cuda-sim"``.
    xp : module
        ``numpy`` or ``cupy``.
    kernels : module
        Module with the functions listed in ``fastnet.kernels.reference.KERNELS``.
    kernels_name : str
        ``"fused"`` or ``"reference"``.
    dtype : numpy.dtype
        Floating-point type of parameters and activations.
    rng : generator
        The device's random generator (NumPy ``Generator`` or CuPy ``RandomState``).
    """

    def __init__(self, name, device, kernels, kernels_name, dtype, seed):
        self.name = name
        self._device = device
        self.xp = device.xp
        self.kernels = kernels
        self.kernels_name = kernels_name
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.rng = device.rng

    def asarray(self, a, dtype=None):
        """Copy or view ``a`` on this device as a C-contiguous array."""
        return self._device.asarray(a, dtype=dtype)

    def to_host(self, a):
        """``a`` as a NumPy array (a copy from the GPU, a view on the CPU)."""
        return self._device.to_host(a)

    def synchronize(self):
        """Wait until queued device work is done (no-op on the CPU)."""
        self._device.synchronize()

    def permutation(self, n):
        """A random permutation of ``range(n)`` on the device."""
        return self._device.permutation(n)

    def uniform(self, out):
        """Fill ``out`` with uniform random numbers in [0, 1) in place."""
        self._device.uniform(out)

    def compute_env(self):
        """Context for a training run: on the CPU, flush-to-zero and denormals-are-zero
        on the calling thread (the caller's setting is restored on exit)."""
        return self._device.compute_env()

    def get_rng_state(self):
        """The random generator's state as JSON-able data (None where not supported)."""
        return self._device.get_rng_state()

    def set_rng_state(self, state):
        """Restore a state from :meth:`get_rng_state`."""
        self._device.set_rng_state(state)

    def __repr__(self):
        return f"Backend({self.name!r}, dtype={self.dtype.name}, kernels={self.kernels_name!r})"


def _load_kernels(device_kind, kernels):
    if kernels == "reference":
        return importlib.import_module("fastnet.kernels.reference")
    module = "fastnet.kernels.cuda" if device_kind in ("cuda", "cuda-sim") else "fastnet.kernels.cpu"
    return importlib.import_module(module)


def get_backend(name="auto", dtype="float32", seed=None, kernels="fused") -> Backend:
    """Return a new :class:`Backend`.

    Parameters
    ----------
    name : {"cpu", "cuda", "cuda-sim", "auto"}
        ``"auto"`` is ``"cuda"`` when CuPy sees a GPU, else ``"cpu"``.
    dtype : {"float32", "float64"}
    seed : int or None
        Seed of the backend's random generator (shuffling, dropout masks).
    kernels : {"fused", "reference"}
        Numba-fused kernels, or the plain array expressions they are tested against.

    Raises
    ------
    BackendUnavailableError
        ``name`` is ``"cuda"`` or ``"cuda-sim"`` and cannot run here; the
        message says what is missing.
    """
    if isinstance(name, Backend):
        name = name.name
    check_choice("backend", name, BACKEND_NAMES)
    check_choice("kernels", kernels, KERNEL_CHOICES)
    dtype_name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    check_choice("dtype", dtype_name, DTYPES)
    if name == "auto":
        name = "cuda" if cuda_status()[0] else "cpu"
    usable, why = backend_status(name)
    if not usable:
        raise BackendUnavailableError(f"backend {name!r} is not available: {why}")
    device = _CupyDevice(seed) if name == "cuda" else _HostDevice(seed)
    return Backend(name, device, _load_kernels(name, kernels), kernels, dtype_name, seed)

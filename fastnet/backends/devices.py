"""Backends: one object per device, carrying the array module and the kernels.

Layers, losses and optimizers are written once against ``backend.xp`` (NumPy
or CuPy) and ``backend.kernel_set`` (a :class:`fastnet.kernels.KernelSet`: every
name of ``fastnet.kernels.reference.KERNELS``, fused where the device's module
fuses it, else the reference version).  Everything device-specific that is
not a kernel lives in this file; the CuPy part is the ``_CupyDevice`` class.

=========  ==============  ===================================  ===============================
name       xp              kernels (default, ``"fused"``)        available when
=========  ==============  ===================================  ===============================
cpu        NumPy           ``fastnet.kernels.cpu`` (Numba)       always
cuda       CuPy            ``fastnet.kernels.cuda`` (numba.cuda) see :func:`cuda_status`
cuda-sim   CuPy contract   ``fastnet.kernels.cuda`` (simulator)  ``NUMBA_ENABLE_CUDASIM=1`` and
                                                                 CuPy installed (no GPU needed)
=========  ==============  ===================================  ===============================

``cuda`` and ``cuda-sim`` share every line of ``_CupyDevice``: ``cuda-sim``
runs it on ``fastnet.cuda_sim.contract``, NumPy arrays that accept only what the
installed CuPy accepts (and count allocations, transfers and syncs).

A fused module overrides the kernels it fuses; the others run as written in
``fastnet.kernels.reference`` (``fastnet info`` lists which).
``kernels="reference"`` swaps in the plain array expressions of
``fastnet.kernels.reference`` on any backend, so fused and plain can be
compared on the same model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fastnet.kernels import kernel_set
from fastnet.backends.precision import CPU_PRECISIONS, GPU_PRECISIONS
from fastnet.core.validation import check_choice

KERNEL_CHOICES = ("fused", "reference")
DTYPES = ("float32", "float64")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine; the message says why."""


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


#: Oldest numba-cuda that takes CuPy arrays without a host synchronisation per
#: argument (older ones, and numba's built-in ``numba.cuda``, consume
#: ``__cuda_array_interface__`` with ``sync=True``).
MIN_NUMBA_CUDA = (0, 26)
_INSTALL = ("pip install '.[cuda13]' (CUDA 13 driver) or '.[cuda12]' (CUDA 12) in fastnet's clone "
            "(fastnet-mlp[cuda13] once on the package index)")


def _import_cupy():
    import cupy

    return cupy


#: The oldest Linux driver branch of each CUDA major version (NVIDIA's minor-version
#: compatibility table).
_MIN_DRIVER = {12: "driver 525", 13: "driver 580"}


def _cuda_version(v):
    return f"{v // 1000}.{v % 1000 // 10}"


def _numba_cuda_problem():
    """Why numba.cuda cannot launch on CuPy arrays without syncs, or None."""
    try:
        import numba.cuda as ncuda
    except Exception as exc:
        return f"numba.cuda is not importable ({type(exc).__name__}: {exc}); {_INSTALL}"
    if getattr(ncuda, "implementation", None) != "NVIDIA":
        return ("numba's built-in numba.cuda is in use (deprecated: it needs a separate CUDA toolkit "
                "for NVVM and synchronises the host on every CuPy array argument); install NVIDIA's "
                f"numba-cuda: {_INSTALL}")
    try:
        version = importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        return f"numba.cuda says NVIDIA but the numba-cuda package is not installed; {_INSTALL}"
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_NUMBA_CUDA:
        return (f"numba-cuda {version} is older than {'.'.join(map(str, MIN_NUMBA_CUDA))} (it synchronises "
                f"the host on every CuPy array argument); {_INSTALL}")
    return None


#: NVIDIA's libraries the smoke check's calls load, by the words their loader's error names.
_CUDA_LIBRARIES = (("cublaslt", "cuBLASLt"), ("cublas", "cuBLAS"), ("nvrtc", "NVRTC"),
                   ("nvjitlink", "nvJitLink"), ("nvvm", "libNVVM"), ("curand", "cuRAND"))


def _missing_library(text):
    """The NVIDIA library an error message says could not be found or loaded, or None."""
    low = text.lower()
    return next((name for word, name in _CUDA_LIBRARIES if word in low), None)


def _smoke_launch(cupy):
    """One fused kernel and one CuPy GEMM on tiny arrays: ``(ok, reason)``.

    The kernel proves numba-cuda compiles (libNVVM) and launches on CuPy's
    arrays; the GEMM proves CuPy's ``matmul`` finds cuBLAS, which it loads only
    at its first GEMM: without it the first ``Dense`` forward would fail after
    this check had said "usable".
    """
    try:
        from fastnet.kernels import cuda as kcuda

        kcuda.use_array_module(cupy)
        z = cupy.zeros((1, 1), dtype=cupy.float32)
        b = cupy.full((1,), 1.5, dtype=cupy.float32)
        kcuda.relu_fwd(z, b)
        got = float((z * 2).sum())
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if "nvvm" in text.lower():
            return False, f"libNVVM cannot be found, so no kernel compiles ({text}); {_INSTALL}"
        return False, f"a test launch of a fused kernel failed ({text})"
    if got != 3.0:
        return False, f"a test launch of a fused kernel computed {got}, expected 3.0"
    try:
        a = cupy.full((2, 2), 0.5, dtype=cupy.float32)
        gemm = float(cupy.matmul(a, a).sum())
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        lib = _missing_library(text)
        if lib:
            return False, f"{lib} cannot be found or loaded, so no GEMM runs ({text}); {_INSTALL}"
        return False, f"a test GEMM (cupy.matmul) failed ({text})"
    if gemm != 2.0:
        return False, f"a test GEMM (cupy.matmul) computed {gemm}, expected 2.0"
    return True, "test launch and GEMM passed"


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """``(usable, reason)`` for the ``cuda`` backend (probed once per process).

    Usable means: CuPy imports; NVIDIA's numba-cuda >= 0.26 is the ``numba.cuda``
    (``numba.cuda.implementation == "NVIDIA"``); an NVIDIA driver is loaded and
    supports CuPy's CUDA major version; a GPU is visible; and a test launch (one
    fused kernel on a one-element CuPy array, one CuPy op, one CuPy GEMM through
    cuBLAS) computes the right values.
    Otherwise the reason names what is missing.
    """
    if _simulator_enabled():
        return False, (
            "NUMBA_ENABLE_CUDASIM=1 is set: numba.cuda is the CPU simulator "
            "(use backend='cuda-sim')"
        )
    try:
        cupy = _import_cupy()
    except Exception as exc:  # ImportError, or a broken CUDA install
        return False, f"CuPy is not importable ({type(exc).__name__}: {exc}); install it with {_INSTALL}"
    problem = _numba_cuda_problem()
    if problem:
        return False, problem
    runtime = cupy.cuda.runtime
    try:
        driver = runtime.driverGetVersion()
        built = runtime.runtimeGetVersion()
    except Exception as exc:
        return False, f"CuPy cannot query the CUDA driver ({type(exc).__name__}: {exc})"
    if driver == 0:
        return False, "no NVIDIA driver is installed (or libcuda cannot be loaded): no GPU to run on"
    # CUDA's minor-version compatibility: a toolkit of CUDA major version M runs on
    # any driver of major M (13.x on r580+, 12.x on r525+), so only the majors are
    # compared (CuPy 14.2's wheel is built with 13.2 and runs on a 13.0 driver); the
    # smoke launch below proves the rest.
    if driver // 1000 < built // 1000:
        return False, (f"the NVIDIA driver supports CUDA {_cuda_version(driver)}, older than CUDA "
                       f"{built // 1000}, the major version CuPy was built for ({_cuda_version(built)}): "
                       f"upgrade the driver ({_MIN_DRIVER.get(built // 1000, 'a newer one')} or later), "
                       "or install the extra of the driver's CUDA (e.g. 'fastnet-mlp[cuda12]')")
    try:
        count = runtime.getDeviceCount()
    except Exception as exc:
        return False, f"CuPy found no usable GPU ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "the NVIDIA driver is loaded but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES?)"
    ok, why = _smoke_launch(cupy)
    if not ok:
        return False, why
    return True, f"{count} CUDA device(s), driver CUDA {_cuda_version(driver)}, {why}"


def gpu_array_library_version() -> str:
    """CuPy's version, or why it is not importable."""
    try:
        import cupy
    except Exception as exc:
        return f"not available ({type(exc).__name__})"
    return cupy.__version__


def _simulator_status() -> tuple[bool, str]:
    if not _simulator_enabled():
        return False, "set NUMBA_ENABLE_CUDASIM=1 before Python starts (before numba is imported)"
    from fastnet.cuda_sim import contract as cupy_contract

    ok, why = cupy_contract.available()
    if not ok:
        return False, (f"the cuda-sim backend runs on the CuPy contract, which needs CuPy installed "
                       f"(no GPU needed): {why}")
    return True, f"numba.cuda simulator on the contract of CuPy {why}"


def backend_status(name: str) -> tuple[bool, str]:
    """``(usable, reason)`` for one backend name."""
    if name not in DEVICES:
        raise ValueError(f"unknown backend {name!r}")
    return DEVICES[name].status()


def available_backends() -> list[str]:
    """Names of the backends usable in this process, e.g. ``['cpu']``."""
    return [n for n in DEVICES if backend_status(n)[0]]


# --------------------------------------------------------------------------
# devices: the few lines that differ between NumPy and CuPy arrays
# --------------------------------------------------------------------------
class _HostDevice:
    xp = np

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    def few_rows_outputs(self, backend, model, X):
        """``model``'s outputs for a few rows ``X`` (host array) through the forward kernel
        on OpenMP threads (:mod:`fastnet.backends.small_batch`), or None: too many rows, or
        a model or machine it does not serve."""
        from fastnet.backends import small_batch

        if X.shape[0] > small_batch.MAX_ROWS:
            return None
        return small_batch.outputs(model, X.astype(backend.dtype, copy=False))

    def parameter(self, a, dtype=None):
        """A copy of ``a`` starting on a 64-byte cache line (NumPy's own start on 16 bytes): a
        row of a (K, 512) float32 weight is then 32 whole lines, and a 64-byte load of it never
        reads two.  The few-row forward kernel (fastnet.backends.small_batch) read a
        784-512-512-10 network's weights in 19.3 µs aligned, 23-28 µs as NumPy placed them
        (Intel Xeon with AMX)."""
        from fastnet.kernels.cpu import aligned_zeros

        src = np.asarray(a, dtype=dtype)
        out = aligned_zeros(src.shape, src.dtype)
        out[...] = src
        return out

    def to_host(self, a):
        return np.asarray(a)

    def synchronize(self):
        pass

    def gather(self, src, idx, out):
        # mode="clip": with the default "raise", NumPy buffers `out` (a copy per step).
        return np.take(src, idx, axis=0, out=out, mode="clip")

    def order_to_device(self, order):
        return order

    def collective(self, host):
        """Data-parallel collectives between host arrays: MPI's own (``host``)."""
        return host

    def thread_tuner(self, work=None, ranks=None, pool=None):
        from fastnet.backends import threads

        # ranks: the data-parallel processes on this host, each with its share of the cores;
        # pool: the GEMMs' thread pool when not NumPy's BLAS (oneDNN's)
        return threads.tuner(work, pool) if ranks is None else threads.SharedCores(ranks, pool)

    def precision_matmul(self, precision, dtype):
        """The GEMM of a training step in ``precision`` (None: NumPy's).  float32 models'
        float32 GEMMs: the provider ``FASTNET_CPU_GEMM`` names, else NumPy's until the first
        fit measures the providers (:meth:`Backend.choose_gemm`, fastnet.backends.gemm_choice)."""
        from fastnet.backends import gemm_choice
        from fastnet.backends import gemm_onednn
        from fastnet.backends.precision import cpu_gemm_provider

        if precision == "float32":
            setting = cpu_gemm_provider()
            return gemm_choice.matmul_for(setting) if dtype == np.float32 and setting != "auto" else None
        return gemm_onednn.Bf16Matmul()

    def choose_gemm(self, backend, batch, weight_shapes, threads, comm, optimizer=None):
        """fastnet.backends.gemm_choice's decision for ``backend``'s float32 steps (None where there is
        nothing to choose), its provider installed as the backend's training GEMM; ``optimizer``:
        the fit's, its update timed in each step with the GEMMs."""
        from fastnet.backends import gemm_choice

        if backend.precision != "float32":
            return {"provider": "onednn", "source": f"precision={backend.precision!r} runs on oneDNN only"}
        if backend.dtype != np.float32:
            return {"provider": "numpy", "source": f"dtype={backend.dtype.name!r}: NumPy's BLAS (the providers "
                                                   "measured are float32)"}
        update = None if optimizer is None else optimizer.step_update(weight_shapes, backend.kernel_set)
        choice = gemm_choice.choose(batch, weight_shapes, threads, update=update)
        if comm is not None and comm.size > 1:
            # every rank computes with rank 0's provider (one library, one set of numerics)
            provider = comm.broadcast_object(choice.provider)
            if provider != choice.provider:
                choice = gemm_choice.Choice(provider, f"rank 0's ({choice.source} there)", choice.gflops,
                                            choice.unavailable, choice.problems, choice.threads, choice.cpu,
                                            choice.versions, choice.seconds, choice.update)
        current = getattr(backend._matmul, "pool", ("blas",))[0]
        wanted = {"numpy": "blas"}.get(choice.provider, choice.provider)
        if choice.source != "setting" and current != wanted:  # (a set provider is in place since __init__)
            backend._matmul = gemm_choice.matmul_for(choice.provider)
        return choice.as_dict()

    def evaluation_matmul(self, backend):
        """The float32 GEMM of fit's validation: the training GEMMs' library where it is not
        NumPy's (oneDNN for ``precision="bf16"``), else None (NumPy's, as ``predict``)."""
        if backend._matmul is None or backend.dtype != np.float32:
            return None
        if backend.precision == "float32":
            return backend._matmul
        from fastnet.backends import gemm_onednn

        return gemm_onednn.F32Matmul()

    def compute_capability(self):
        return None

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


class _CupyDevice:
    """CuPy arrays (``xp`` is CuPy, or ``fastnet.cuda_sim.contract`` under the simulator)."""

    def __init__(self, xp):
        self.xp = xp
        self._order = None  # the epoch's permutation, on the device
        self._collective = None  # the NCCL communicator of data-parallel fits

    def asarray(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a):
        return self.xp.asnumpy(a)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()

    def gather(self, src, idx, out):
        return self.xp.take(src, idx, axis=0, out=out)  # CuPy's take has no `mode`

    def order_to_device(self, order):
        # One host-to-device copy per epoch into a buffer kept across epochs.
        if self._order is None or self._order.shape != order.shape or self._order.dtype != order.dtype:
            self._order = self.xp.empty(order.shape, dtype=order.dtype)
        self._order.set(order)
        return self._order

    def evaluation_matmul(self, backend):
        """The GEMM of fit's validation: CuPy's (None); one library on the GPU."""
        return None

    def precision_matmul(self, precision, dtype):
        """The GEMM of a training step in ``precision`` (None: CuPy's)."""
        if precision == "float32":
            return None
        from fastnet.backends.gemm_cublas import CublasMatmul

        return CublasMatmul(precision, self.xp)

    def compute_capability(self):
        """The current GPU's compute capability as an integer (90 for 9.0)."""
        return int(self.xp.cuda.Device().compute_capability)

    def compute_env(self):
        return contextlib.nullcontext()

    def collective(self, host):
        """Data-parallel collectives between GPUs: NCCL (``cupyx.distributed``) on the current
        stream, set up through ``host`` (MPI); the simulator's array module brings a stand-in."""
        from fastnet.train.distributed import NCCLCommunicator, check_rank_device

        if self._collective is None or self._collective.host is not host:  # one NCCL set-up per job
            check_rank_device(host, self.xp.cuda.Device().id, self.xp.cuda.runtime.getDeviceCount())
            start = getattr(self.xp, "nccl_process_group", None)  # fastnet.cuda_sim.contract's
            if start is None:
                from cupyx.distributed import init_process_group

                nccl = init_process_group(host.size, host.rank, use_mpi=True)
            else:
                nccl = start(host)
            self._collective = NCCLCommunicator(host, nccl, self.xp.cuda.get_current_stream)
        return self._collective

    def thread_tuner(self, work=None, ranks=None, pool=None):
        from fastnet.backends import threads

        return threads.NoTuner()  # the GPU's threads are the kernels' launch configurations


# --------------------------------------------------------------------------
# the device registry: every backend, declared once
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Device:
    """One backend, as the rest of fastnet sees it: ``MLP(backend=name)``, ``fastnet info``,
    the CLI's ``--backend``, Ray Tune's ``backend`` key and the precision checks all read
    :data:`DEVICES`.  Adding a backend is a module that calls :func:`register_device`
    (and, optionally, a fused kernel module: ``fastnet.kernels.FUSED_MODULES``).

    ``kernels``: the key of its fused kernel module in ``fastnet.kernels.FUSED_MODULES``, or
    an importable module's name (added there under the device's name), or None (the reference
    table only).  ``precisions``: the training GEMMs' precisions it can have (float32
    first).  ``status()``: ``(usable here, why or what)``, cheap and never raising.
    ``make()``: its array device, an object with ``xp`` (the array module) and the methods
    ``_HostDevice`` and ``_CupyDevice`` implement: ``asarray``, ``to_host``, ``synchronize``,
    ``gather``, ``order_to_device``, ``compute_env``, ``thread_tuner``, ``precision_matmul``,
    ``compute_capability``, ``collective`` (``choose_gemm`` optional).  ``gpu``: its
    precisions are tensor-core ones, checked against ``compute_capability()``.
    """
    name: str
    kernels: str | None
    precisions: tuple[str, ...]
    status: Callable[[], tuple[bool, str]]
    make: Callable[[], Any]
    gpu: bool = False


#: Every backend by name, in the order ``available_backends()`` and ``fastnet info`` list them.
DEVICES: dict[str, Device] = {}


def register_device(device: Device) -> Device:
    """Add ``device`` to :data:`DEVICES` (replacing one of the same name); returns it."""
    from fastnet.kernels import FUSED_MODULES

    if not isinstance(device, Device):
        raise TypeError(f"device must be a fastnet.backends.devices.Device, got {type(device).__name__}")
    if device.name == "auto" or not device.name:
        raise ValueError(f"device name must be a non-empty name other than 'auto', got {device.name!r}")
    if device.kernels is not None and device.kernels not in FUSED_MODULES:
        import importlib.util

        if importlib.util.find_spec(device.kernels) is None:
            raise ValueError(f"device {device.name!r}: kernels must be one of {sorted(FUSED_MODULES)}, an importable "
                             f"module's name, or None, got {device.kernels!r}")
        # a fused kernel module of its own: listed under the device's name
        FUSED_MODULES[device.name] = device.kernels
        device = dataclasses.replace(device, kernels=device.name)
    if not device.precisions or device.precisions[0] != "float32":
        raise ValueError(f"device {device.name!r}: precisions must start with 'float32', got {device.precisions!r}")
    DEVICES[device.name] = device
    return device


def backend_names() -> tuple[str, ...]:
    """The names ``backend=`` takes: every registered device, and ``"auto"``."""
    return (*DEVICES, "auto")


def _simulated_device():
    from fastnet.cuda_sim import contract as cupy_contract

    return _CupyDevice(cupy_contract.module())


register_device(Device("cpu", "cpu", CPU_PRECISIONS, lambda: (True, "NumPy"), _HostDevice))
# (lambdas: the probes are looked up when called, so a test can stand in for them)
register_device(Device("cuda", "cuda", GPU_PRECISIONS, lambda: cuda_status(), lambda: _CupyDevice(_import_cupy()),
                       gpu=True))
register_device(Device("cuda-sim", "cuda", GPU_PRECISIONS, lambda: _simulator_status(), lambda: _simulated_device(),
                       gpu=True))


class Backend:
    """A device, its array module ``xp``, its ``kernel_set`` and the random streams.

    Create one with :func:`get_backend`.  Each call makes a new Backend with
    its own generators, so two models never share random state.

    Random numbers are the same on every backend for the same seed: the epoch
    permutations come from a NumPy generator on the host (copied to the device
    once per epoch), the dropout masks from a counter-based generator inside
    the ``dropout_mask`` kernel (splitmix64 of ``(key, counter, element)``),
    whose whole state is two integers.  :meth:`get_rng_state` returns both
    streams' state, and checkpoints store it.

    Attributes
    ----------
    name : str
        ``"cpu"``, ``"cuda"`` or ``"cuda-sim"``.
    xp : module
        ``numpy``, ``cupy`` or (``cuda-sim``) ``fastnet.cuda_sim.contract``.
    kernel_set : fastnet.kernels.KernelSet
        Every kernel of ``fastnet.kernels.reference.KERNELS``: the device's fused
        version where there is one, else the reference version (``kernels``, its old
        name, still reads it with a ``DeprecationWarning``).
    kernels_name : str
        ``"fused"`` or ``"reference"`` (the model's ``kernels`` setting).
    dtype : numpy.dtype
        Floating-point type of parameters and activations.
    rng : numpy.random.Generator
        The host generator of the epoch permutations.
    augment_rng : numpy.random.Generator
        The host generator of the augmentation's per-image distortions
        (``fit(augment=...)``), a stream of its own: augmenting or not leaves the
        permutations and dropout masks of a seed as they were.
    dropout_key, dropout_counter : int
        State of the dropout masks' generator.
    """

    def __init__(self, name, device, kernels, kernels_name, dtype, seed, precision="float32"):
        self.name = name
        self.precision = precision
        # The training steps' GEMMs: the array module's in float32, else (fastnet.backends.precision)
        # oneDNN's bfloat16 ones on the CPU, cuBLAS's tensor-core ones on a GPU
        self._matmul = device.precision_matmul(precision, np.dtype(dtype))
        self._device = device
        self.xp = device.xp
        self.kernel_set = kernels  # (a KernelSet; ``model.kernels`` is the setting's name, kernels_name here)
        self.kernels_name = kernels_name
        self.dtype = np.dtype(dtype)
        self.seed = seed
        # (spawn(3)'s first two children are spawn(2)'s: adding the augmentation
        # stream changed neither the permutations nor the dropout masks of a seed)
        host, masks, augment = np.random.SeedSequence(seed).spawn(3)
        self.rng = np.random.default_rng(host)
        self.augment_rng = np.random.default_rng(augment)
        self.dropout_key = int(masks.generate_state(1, np.uint64)[0])
        self.dropout_counter = 0
        #: First row of this process's batch in the global batch (data-parallel ``fit``).
        self.dropout_row = 0

    @property
    def kernels(self):
        """Deprecated: ``kernel_set`` (``model.kernels`` is the setting, ``"fused"`` or ``"reference"``)."""
        warnings.warn("Backend.kernels is deprecated: use Backend.kernel_set (the KernelSet); the setting's "
                      "name is Backend.kernels_name, as model.kernels", DeprecationWarning, stacklevel=2)
        return self.kernel_set

    @kernels.setter
    def kernels(self, value):
        warnings.warn("Backend.kernels is deprecated: use Backend.kernel_set (the KernelSet)",
                      DeprecationWarning, stacklevel=2)
        self.kernel_set = value

    def asarray(self, a, dtype=None):
        """Copy or view ``a`` on this device as a C-contiguous array."""
        return self._device.asarray(a, dtype=dtype)

    def few_rows_outputs(self, model, X):
        """``model``'s outputs (after the loss's activation) for a few host rows ``X`` by a
        path of this device's own (the CPU's forward kernel on OpenMP threads,
        :mod:`fastnet.backends.small_batch`), or None: predict's chunks then run as for many
        rows."""
        serve = getattr(self._device, "few_rows_outputs", None)
        return None if serve is None else serve(self, model, X)

    def parameter(self, a, dtype=None):
        """A new C-contiguous array of ``a`` on this device, placed for the kernels that read a
        layer's parameters (on the CPU: from a 64-byte cache line)."""
        place = getattr(self._device, "parameter", None)
        return self._device.asarray(a, dtype=dtype) if place is None else place(a, dtype=dtype)

    def to_host(self, a):
        """``a`` as a NumPy array (a copy from the GPU, a view on the CPU)."""
        return self._device.to_host(a)

    def synchronize(self):
        """Wait until queued device work is done (no-op on the CPU)."""
        self._device.synchronize()

    def matmul(self, a, b, out):
        """``out = a @ b`` of a training step, in the backend's ``precision``: the array
        module's GEMM in float32; else inputs in bfloat16 (``"bf16"``), TF32 or float16
        with float32 accumulation and output (:mod:`fastnet.backends.precision`)."""
        if self._matmul is None:
            return self.xp.matmul(a, b, out=out)
        return self._matmul(a, b, out)

    def evaluation_matmul(self):
        """The float32 GEMM that fit's per-epoch validation runs (None: the array module's, as
        ``predict``): on the CPU the training GEMMs' library where that is not NumPy's BLAS
        (oneDNN or MKL; oneDNN's float32 GEMM for ``precision="bf16"``), so that no other
        thread pool runs between two steps.  A pool's idle threads spin for a while after
        their work (OpenBLAS's about 0.13 s), and oneDNN's GEMMs run many times slower
        beside them: validating in NumPy cost the next steps 0.08 s an epoch (784-512-512-10,
        batch 128, Intel Xeon).  The validation figures differ from ``evaluate``'s in the
        last bits (another library's sums), as any two GEMM libraries do."""
        return self._device.evaluation_matmul(self)

    def step_rounding(self):
        """The GEMM whose weights an optimizer step may round as it updates them
        (``precision="bf16"`` on the CPU: ``gemm_onednn.Bf16Matmul``), or None."""
        return self._matmul if hasattr(self._matmul, "rounded_by_step") else None

    def steps_round(self):
        """A context for ``fit``'s loop of steps: inside it an optimizer step that rounds the
        weights as it updates them (``precision="bf16"``, SGD, Adam and AdamW on oneDNN's pool)
        leaves their bits for the next forward pass, which then does not round them again."""
        rounding = self.step_rounding()
        return contextlib.nullcontext() if rounding is None else rounding.steps_round()

    def forget_rounded(self):
        """Drop the weights' bits the last step left (a callback may have changed the weights)."""
        rounding = self.step_rounding()
        if rounding is not None:
            rounding.forget_rounded()

    def gemm_operand(self, a):
        """``a`` as this backend's training GEMMs read it, for :meth:`matmul` (and its
        transpose, ``.T``) until ``a`` changes: bfloat16 bits rounded once (``"bf16"`` on
        the CPU), else ``a`` itself.  A layer prepares what its forward and backward passes
        read more than once, so a step rounds each array once."""
        prepare = getattr(self._matmul, "operand", None)
        return a if prepare is None else prepare(a)

    def collective(self, host):
        """The collectives of data-parallel training on this device, given MPI's (``host``)."""
        return self._device.collective(host)

    def pool_runner(self):
        """What runs work of a step on the threads of its GEMMs' pool, where that pool is
        OpenMP's (oneDNN's: ``precision="bf16"``, or float32 where :meth:`choose_gemm` chose
        it; :class:`fastnet.backends.gemm_onednn.PoolRunner`), else None (NumPy's BLAS, MKL,
        a GPU): the optimizer's update then runs on the calling thread."""
        return getattr(self._matmul, "pool_runner", None)

    def permutation(self, n):
        """A random permutation of ``range(n)`` from the host generator, on the device."""
        return self._device.order_to_device(self.rng.permutation(n))

    def choose_gemm(self, batch, weight_shapes, comm=None, optimizer=None):
        """Choose the provider of this CPU backend's float32 training GEMMs for steps of
        ``batch`` rows through dense layers of ``weight_shapes`` (by measurement,
        :mod:`fastnet.backends.gemm_choice`, each step with ``optimizer``'s update of parameters of
        those shapes where given; ``comm``: a data-parallel fit's, whose ranks all take
        rank 0's) and install it; returns the decision as a dict for ``history.params["gemm"]``,
        or None on a GPU.  Call it before :meth:`thread_tuner`: the tuner tunes the chosen
        provider's thread pool."""
        choose = getattr(self._device, "choose_gemm", None)
        if choose is None:
            return None
        from fastnet.backends import threads

        return choose(self, batch, weight_shapes, threads.blas_threads() or 1, comm, optimizer)

    def thread_tuner(self, work=None, ranks=None):
        """What chooses the BLAS thread count during a training run (``fastnet.backends.threads``);
        on a GPU, nothing (``threads.NoTuner``).  ``work``: a hashable description of
        the step; runs of the same work continue one another's choice.  ``ranks``: in a
        data-parallel fit, its processes on this host (they share its cores; nothing is
        tuned: the ranks wait for each other every step), else None.
        When the CPU steps' GEMMs are oneDNN's or MKL's (``precision="bf16"``, or float32 where
        :meth:`choose_gemm` chose them) their thread pool is the one tuned or shared."""
        return self._device.thread_tuner(work, ranks, getattr(self._matmul, "pool", None))

    def gather(self, src, idx, out):
        """``out[:] = src[idx]`` (rows), written into ``out``; returns ``out``."""
        return self._device.gather(src, idx, out)

    def dropout_mask(self, keep, rate):
        """Fill ``keep`` with ``1 / (1 - rate)`` (kept) or 0 (dropped); advances the stream.
        ``keep``'s rows are rows ``dropout_row, ...`` of the call's mask: a data-parallel
        rank's share of the global batch (``fastnet.train.distributed``), else 0."""
        self.kernel_set.dropout_mask(keep, rate, self.dropout_key, self.dropout_counter,
                                  self.dropout_row * keep.shape[1])
        self.dropout_counter += 1

    def compute_env(self):
        """Context for a training run: on the CPU, flush-to-zero and denormals-are-zero
        on the calling thread (the caller's setting is restored on exit)."""
        return self._device.compute_env()

    def get_rng_state(self):
        """Both random streams' state as JSON-able data."""
        return {"host": self.rng.bit_generator.state, "dropout_key": self.dropout_key,
                "dropout_counter": self.dropout_counter, "augment": self.augment_rng.bit_generator.state}

    def set_rng_state(self, state):
        """Restore a state from :meth:`get_rng_state` (or a bare NumPy generator state)."""
        if "host" in state:
            self.rng.bit_generator.state = state["host"]
            self.dropout_key = int(state["dropout_key"])
            self.dropout_counter = int(state["dropout_counter"])
            if "augment" in state:  # (checkpoints written before fastnet.Augment have none)
                self.augment_rng.bit_generator.state = state["augment"]
        else:  # checkpoints of fastnet <= 0.1.0 held the NumPy generator's state alone
            self.rng.bit_generator.state = state

    def __repr__(self):
        precision = "" if self.precision == "float32" else f", precision={self.precision!r}"
        return f"Backend({self.name!r}, dtype={self.dtype.name}, kernels={self.kernels_name!r}{precision})"


def resolve_name(name: str) -> str:
    """The backend ``name`` stands for: ``"auto"`` is ``"cuda"`` when CuPy sees a GPU, else ``"cpu"``."""
    if name == "auto":
        return "cuda" if cuda_status()[0] else "cpu"
    return name


def get_backend(name="auto", dtype="float32", seed=None, kernels="fused", precision="float32") -> Backend:
    """Return a new :class:`Backend`.

    Parameters
    ----------
    name : {"cpu", "cuda", "cuda-sim", "auto"} or another registered device (:data:`DEVICES`)
        ``"auto"`` is ``"cuda"`` when CuPy sees a GPU, else ``"cpu"``.
    dtype : {"float32", "float64"}
    seed : int or None
        Seed of the backend's random generator (shuffling, dropout masks).
    kernels : {"fused", "reference"}
        Numba-fused kernels, or the plain array expressions they are tested against.
    precision : {"float32", "bf16", "tf32", "fp16"}
        The training GEMMs' precision (:mod:`fastnet.backends.precision`): ``"bf16"`` on the CPU
        where the CPU and oneDNN support it; ``"tf32"``, ``"bf16"``, ``"fp16"`` on GPUs
        whose tensor cores support them.

    Raises
    ------
    BackendUnavailableError
        ``name`` is ``"cuda"`` or ``"cuda-sim"`` and cannot run here; the
        message says what is missing.
    """
    if isinstance(name, Backend):
        name = name.name
    check_choice("backend", name, backend_names())
    check_choice("kernels", kernels, KERNEL_CHOICES)
    dtype_name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    check_choice("dtype", dtype_name, DTYPES)
    name = resolve_name(name)
    usable, why = backend_status(name)
    if not usable:
        raise BackendUnavailableError(f"backend {name!r} is not available: {why}")
    spec = DEVICES[name]
    device = spec.make()
    if spec.kernels is None:  # no fused module: the reference table, and said so
        kernels = "reference"
    kset = kernel_set(spec.kernels, kernels)
    if hasattr(kset.module, "use_array_module"):
        kset.module.use_array_module(device.xp)
    from fastnet.backends.precision import check as check_precision

    precision = check_precision(precision, spec, dtype_name,
                                None if precision == "float32" else device.compute_capability())
    return Backend(name, device, kset, kernels, dtype_name, seed, precision)

"""Precisions of the training GEMMs, what this machine supports, and fp16's loss scaling.

Whatever the precision, weights, optimizer state, losses and every fused kernel stay
float32, and inference (``predict``, ``evaluate``, validation) runs in float32: only
the GEMMs of training steps (forward, dW, dX) change.

``"float32"`` (default, every backend): float32 GEMMs (on the CPU NumPy's BLAS, oneDNN's
or MKL's, whichever measures fastest on the model's step: :mod:`fastnet.backends.gemm_choice`; on
GPUs cuBLAS through CuPy).

``"bf16"`` on the CPU: bfloat16 inputs (the float32 activations, gradients and weights
rounded to nearest even) with float32 accumulation and output, through oneDNN's
matmul (:mod:`fastnet.backends.gemm_onednn`).  It needs a CPU with bfloat16 dot-product
instructions (``avx512_bf16`` or ``amx_bf16``) and oneDNN (``pip install
"fastnet-mlp[bf16]"``).  ``FASTNET_CPU_FEATURES_OFF=avx512_bf16,amx_bf16`` makes fastnet
treat those instructions as absent (to try the path of a machine without).

On CUDA GPUs (:mod:`fastnet.backends.gemm_cublas`: cuBLAS's ``cublasGemmEx`` on float32
arrays with a "fast" compute type, which converts the inputs on the tensor cores and
accumulates in float32):

* ``"tf32"``: TensorFloat-32 inputs (10-bit mantissa), compute capability 8.0 or newer;
* ``"bf16"``: bfloat16 inputs (8-bit mantissa, float32's range), 8.0 or newer;
* ``"fp16"``: float16 inputs (10-bit mantissa, largest 65504, smallest normal 6.1e-5),
  7.0 or newer, with dynamic loss scaling (:class:`LossScaler`): small gradients would
  round to zero in float16, so the loss gradient is multiplied by a scale (2**16 at
  first) before the backward pass and the gradients divided by it before the
  optimizer; a step whose gradients overflow is skipped and the scale halved, and
  after 2000 steps without overflow the scale doubles (PyTorch's ``GradScaler``
  defaults).

A precision the machine cannot run is refused when the model is made, with a
:class:`PrecisionUnavailableError` naming the missing CPU feature, GPU compute
capability or library.  ``fastnet info`` lists what this machine supports.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from fastnet.core.validation import check_choice

PRECISIONS = ("float32", "bf16", "tf32", "fp16")
#: The precisions of each kind of backend.
CPU_PRECISIONS = ("float32", "bf16")
GPU_PRECISIONS = ("float32", "tf32", "bf16", "fp16")
#: The compute capability each GPU precision needs (tensor cores of that format), and why.
GPU_NEEDS = {"tf32": (80, "TF32 tensor cores (Ampere, compute capability 8.0, or newer)"),
             "bf16": (80, "bfloat16 tensor cores (Ampere, compute capability 8.0, or newer)"),
             "fp16": (70, "float16 tensor cores (Volta, compute capability 7.0, or newer)")}
#: CPU flags (``/proc/cpuinfo``) of bfloat16 dot products, any one of which will do.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FEATURES_OFF = "FASTNET_CPU_FEATURES_OFF"
INSTALL = 'pip install ".[bf16]" in fastnet\'s clone (oneDNN for the CPU: the onednn-cpu-gomp wheel)'


class PrecisionUnavailableError(ValueError):
    """The precision asked for needs a CPU feature, a backend or a library this machine lacks."""


#: The float32 GEMM provider of CPU training steps: ``auto`` (default: chosen per machine and
#: model by measurement, :mod:`fastnet.backends.gemm_choice`), or one of ``numpy`` (NumPy's BLAS),
#: ``onednn``, ``mkl`` (see :func:`cpu_gemm_provider`).
CPU_GEMM = "FASTNET_CPU_GEMM"
CPU_GEMM_PROVIDERS = ("auto", "numpy", "onednn", "mkl")


def cpu_gemm_provider() -> str:
    """``FASTNET_CPU_GEMM``, checked: ``auto`` (or unset: the float32 GEMMs' provider is
    measured at a model's first fit, :func:`fastnet.backends.gemm_choice.choose`), ``numpy``,
    ``onednn`` or ``mkl`` (that provider, unmeasured).  ``openblas`` is the old name of
    ``numpy``."""
    value = os.environ.get(CPU_GEMM, "auto")
    if value.strip().lower() == "openblas":
        return "numpy"
    return check_choice(CPU_GEMM, value, CPU_GEMM_PROVIDERS)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere), without those
    ``FASTNET_CPU_FEATURES_OFF`` names."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    off = {f.strip() for f in os.environ.get(FEATURES_OFF, "").split(",") if f.strip()}
    return flags - off


def bf16_problem() -> str | None:
    """Why ``precision="bf16"`` cannot run on this machine's CPU, or None when it can."""
    flags = cpu_flags()
    if not any(f in flags for f in BF16_FLAGS):
        hidden = os.environ.get(FEATURES_OFF)
        return ("it needs a CPU with bfloat16 dot-product instructions (avx512_bf16 or amx_bf16), and this "
                "one has neither" + (f" ({FEATURES_OFF}={hidden!r} hides them)" if hidden else ""))
    from fastnet.backends import gemm_onednn

    if gemm_onednn.forked():
        return f"it needs oneDNN, which does not run here: {gemm_onednn.forked()}"
    if not gemm_onednn.available():
        return f"it needs oneDNN, which does not load: {INSTALL}"
    return None


def gpu_problem(precision: str, compute_capability: int) -> str | None:
    """Why ``precision`` cannot run on a GPU of ``compute_capability`` (e.g. 90), or None."""
    need, what = GPU_NEEDS[precision]
    if compute_capability < need:
        cc = f"{compute_capability // 10}.{compute_capability % 10}"
        return f"it needs {what}, and this GPU has compute capability {cc}"
    return None


def check(precision: str, device: Any, dtype: str, compute_capability: int | None = None) -> str:
    """``precision``, checked for a model on ``device`` (a registered
    ``fastnet.backends.devices.Device``, or its name) in ``dtype``; ``compute_capability``: the GPU's
    (e.g. 90), for the GPU backends."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "float32":
        return precision
    if isinstance(device, str):  # a backend's name
        from fastnet.backends.devices import DEVICES

        device = DEVICES[device]
    gpu = device.gpu
    if precision not in device.precisions:
        kind = ("a GPU precision (tensor cores)" if precision not in CPU_PRECISIONS and not gpu
                else "not a precision of this backend")
        raise PrecisionUnavailableError(
            f"precision={precision!r} is {kind}, got backend={device.name!r}: "
            f"the {device.name} backend has {', '.join(map(repr, device.precisions))}")
    if dtype != "float32":
        raise PrecisionUnavailableError(
            f"precision={precision!r} keeps float32 weights and optimizer state: dtype must be 'float32', "
            f"got {dtype!r}")
    why = gpu_problem(precision, int(compute_capability or 0)) if gpu else bf16_problem()
    if why is not None:
        raise PrecisionUnavailableError(f"precision={precision!r} is not available here: {why}")
    return precision


def supported(compute_capability: int | None = None) -> dict[str, str]:
    """``{precision: "yes" or why not}`` on this machine's CPU backend, or (given its compute
    capability) on a GPU's (for ``fastnet info``)."""
    if compute_capability is not None:
        return {p: "yes" if p == "float32" or gpu_problem(p, compute_capability) is None
                else f"no: {gpu_problem(p, compute_capability)}" for p in GPU_PRECISIONS}
    why = bf16_problem()
    return {"float32": "yes", "bf16": "yes" if why is None else f"no: {why}"}


class LossScaler:
    """Dynamic loss scaling of ``precision="fp16"`` training (used by ``fit``).

    Before the backward pass the loss gradient is multiplied by ``scale``; after it,
    :meth:`unscale` checks the gradients: finite, they are divided by ``scale`` and
    the step goes on (after ``growth_interval`` such steps in a row the scale is
    multiplied by ``growth``); infinite or NaN (a float16 overflow), the step is
    skipped and the scale multiplied by ``backoff``.

    The check reads one number from the device per step (as PyTorch's GradScaler
    does): the sum of all gradients, in float64, which is finite exactly when every
    gradient is.
    """

    def __init__(self, scale: float = 2.0 ** 16, growth_interval: int = 2000, growth: float = 2.0,
                 backoff: float = 0.5) -> None:
        self.scale = float(scale)
        self.growth_interval, self.growth, self.backoff = int(growth_interval), float(growth), float(backoff)
        self.good_steps = 0  # finite steps since the last change of scale
        self.skipped = 0  # steps skipped (overflow), in all
        self._total: Any = None  # the device slot of the gradients' sum

    def scale_loss_gradient(self, xp, grad) -> None:
        """``grad *= scale`` (the loss gradient, before the backward pass)."""
        xp.multiply(grad, self.scale, out=grad)

    def unscale(self, xp, flat) -> bool:
        """Divide the gradients (``flat``: all of them) by the scale and return True, or
        return False (skip the step) when one is not finite; updates the scale."""
        if self._total is None:
            self._total = xp.zeros((), dtype=np.float64)
        total = self._total
        flat.sum(dtype=np.float64, out=total)
        if not math.isfinite(float(total)):
            self.scale *= self.backoff
            self.good_steps = 0
            self.skipped += 1
            return False
        xp.multiply(flat, 1.0 / self.scale, out=flat)
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= self.growth
            self.good_steps = 0
        return True

    def __getstate__(self):  # (pickled with the model: without the device slot)
        return {**vars(self), "_total": None}

    def get_state(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def set_state(self, state) -> None:
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.skipped = int(state.get("skipped", 0))

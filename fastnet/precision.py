"""Precisions of the training GEMMs, and what this machine supports.

``precision="float32"`` (default): every GEMM in float32 (NumPy's BLAS, or CuPy's).
``precision="bf16"`` (CPU): the GEMMs of training steps take bfloat16 inputs (the
float32 activations, gradients and weights rounded to nearest even) and accumulate
and write float32, through oneDNN's matmul (:mod:`fastnet.gemm_onednn`); weights,
optimizer state, losses and every fused kernel stay float32, and inference
(``predict``, ``evaluate``, validation) runs in float32.  It needs a CPU with
bfloat16 dot-product instructions (``avx512_bf16`` or ``amx_bf16``) and oneDNN
(``pip install "fastnet[bf16]"``); elsewhere the model refuses it with an error that
names what is missing.  ``FASTNET_CPU_FEATURES_OFF=avx512_bf16,amx_bf16`` makes
fastnet treat those instructions as absent (to try the path of a machine without).
"""
from __future__ import annotations

import os

from .validation import check_choice

PRECISIONS = ("float32", "bf16")
#: CPU flags (``/proc/cpuinfo``) of bfloat16 dot products, any one of which will do.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FEATURES_OFF = "FASTNET_CPU_FEATURES_OFF"
INSTALL = 'pip install "fastnet[bf16]" (oneDNN for the CPU: the onednn-cpu-gomp wheel)'


class PrecisionUnavailableError(ValueError):
    """The precision asked for needs a CPU feature, a backend or a library this machine lacks."""


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
    from . import gemm_onednn

    if not gemm_onednn.available():
        return f"it needs oneDNN, which does not load: {INSTALL}"
    return None


def check(precision: str, backend: str, dtype: str) -> str:
    """``precision``, checked for a model on ``backend`` (its name) in ``dtype``."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "float32":
        return precision
    if backend != "cpu":
        raise PrecisionUnavailableError(
            f"precision={precision!r} is implemented on the cpu backend only, got backend={backend!r} "
            "(on CUDA GPUs: not yet)")
    if dtype != "float32":
        raise PrecisionUnavailableError(
            f"precision={precision!r} keeps float32 weights and optimizer state: dtype must be 'float32', "
            f"got {dtype!r}")
    why = bf16_problem()
    if why is not None:
        raise PrecisionUnavailableError(f"precision={precision!r} is not available here: {why}")
    return precision


def supported() -> dict[str, str]:
    """``{precision: "yes" or why not}`` on this machine's CPU backend (for ``fastnet info``)."""
    why = bf16_problem()
    return {"float32": "yes", "bf16": "yes" if why is None else f"no: {why}"}

"""The GPU install contract's checks, run by a clean environment's Python (no GPU needed).

Used by ``tests/backends/test_gpu_install_contract.py`` (``fastnet-mlp[cuda12]`` in a clean
virtual environment) and ``tests/cuda_sim/test_gpu_check_dry.py`` (``fastnet-mlp[cuda13]``: the
environment ``bench/gpu_check.sh`` makes on a bare machine, ``[cuda13,mpi]``; mpi4py and
MPICH bring no CUDA library, so what is found there comes from ``[cuda13]``).  What each check
asserts: the docstring of ``tests/backends/test_gpu_install_contract.py``.
"""
from __future__ import annotations

import json
import os
import subprocess

#: extra -> (the oldest driver of its CUDA major, as cudaDriverGetVersion gives it; that major).
EXTRAS = {"cuda13": (13000, 13), "cuda12": (12000, 12)}

CHECK_TIMEOUT = 600

# Run by the clean environment's Python: argv[1] = CUDA major, argv[2] = faked driver version.
# One line of JSON per check: {"name", "ok", "detail"}.
CHECKS = r'''
import json, os, sys, traceback

MAJOR, DRIVER = int(sys.argv[1]), int(sys.argv[2])
PREFIX = os.path.realpath(sys.prefix)


def report(name, ok, detail):
    print(json.dumps({"name": name, "ok": ok, "detail": str(detail)}), flush=True)


def check(name):
    def run(fn):
        try:
            detail = fn()
        except BaseException as exc:  # noqa: BLE001 - every failure is reported by name
            where = traceback.extract_tb(exc.__traceback__)[-1]
            report(name, False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]} "
                                f"[{os.path.basename(where.filename)}:{where.lineno}]")
        else:
            report(name, True, detail)
        return fn
    return run


def in_venv(path):
    real = os.path.realpath(path)
    if not real.startswith(PREFIX + os.sep):
        raise AssertionError(f"{real} is not inside the environment {PREFIX}")
    return real


@check("installed versions")
def _():
    from importlib import metadata
    names = sorted(d.metadata["Name"] for d in metadata.distributions())
    keep = [n for n in names if n.lower().startswith(("cupy", "numba", "cuda-", "nvidia-"))]
    return ", ".join(f"{n} {metadata.version(n)}" for n in keep)


from cuda import pathfinder

# Library (cuda.pathfinder's name) -> the file name it must have for this CUDA major.
LIBS = {
    "cudart": f"libcudart.so.{MAJOR}",
    "cublasLt": f"libcublasLt.so.{MAJOR}",
    "cublas": f"libcublas.so.{MAJOR}",
    "nvrtc": f"libnvrtc.so.{MAJOR}",
    "nvvm": "libnvvm.so",
    "nvJitLink": f"libnvJitLink.so.{MAJOR}",
    "nccl": "libnccl.so.2",
}
for lib, soname in LIBS.items():
    @check(f"load {lib}")
    def _(lib=lib, soname=soname):
        dl = pathfinder.load_nvidia_dynamic_lib(lib)
        path = in_venv(dl.abs_path)
        if not os.path.basename(dl.abs_path).startswith(soname):
            raise AssertionError(f"{dl.abs_path}: expected {soname}*")
        return f"{path} ({dl.found_via})"


@check("find libdevice")
def _():
    return in_venv(pathfinder.find_bitcode_lib("device"))


@check("find the CUDA headers CuPy gives NVRTC")
def _():
    inc = pathfinder.find_nvidia_header_directory("cudart")
    if inc is None:
        raise AssertionError("cuda.pathfinder finds no cudart headers")
    for h in ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h"):
        if not os.path.exists(os.path.join(inc, h)):
            raise AssertionError(f"{h} not in {inc}")
    return in_venv(inc)


@check("import cupy")
def _():
    import cupy
    return f"cupy {cupy.__version__}, runtimeGetVersion() = {cupy.cuda.runtime.runtimeGetVersion()}"


@check("from cupy_backends.cuda.libs import cublas")
def _():
    from cupy_backends.cuda.libs import cublas
    return cublas.__file__


@check("from cupy_backends.cuda.libs import nccl")
def _():
    from cupy_backends.cuda.libs import nccl
    return f"NCCL {nccl.get_version()}"


@check("NVRTC compiles a CUB reduction with CuPy's include options")
def _():
    from cupy._core import core
    from cupy.cuda import compiler
    from cupy_backends.cuda.libs import nvrtc

    options = core.assemble_cupy_compiler_options(()) + ("-arch=sm_90",)
    source = "".join(f"#include <{h}>\n" for h in core._cupy_header_list) + """
#include <cub/block/block_reduce.cuh>
#include <cupy/float16.cuh>
extern "C" __global__ void probe(const float* x, float* out) {
    typedef cub::BlockReduce<float, 128> Reduce;
    __shared__ typename Reduce::TempStorage tmp;
    float s = Reduce(tmp).Sum(x[threadIdx.x]);
    if (threadIdx.x == 0) out[0] = s + (float)float16(1.0f);
}
"""
    prog = compiler._NVRTCProgram(source, "probe.cu", (), (), method="cubin")
    cubin, _ = prog.compile(options)
    return f"NVRTC {nvrtc.getVersion()}: {len(cubin)} bytes of sm_90 cubin"


@check("numba-cuda compiles (libNVVM, libdevice) and nvJitLink links a kernel")
def _():
    from numba import cuda
    from numba.cuda.cudadrv import driver

    if cuda.implementation != "NVIDIA":
        raise AssertionError(f"numba.cuda.implementation is {cuda.implementation!r}")
    if not driver._have_nvjitlink():
        raise AssertionError("numba-cuda finds no usable nvJitLink (>= 12.3): no LTO")

    def probe(x):
        i = cuda.grid(1)
        if i < x.size:
            x[i] = max(x[i], 0.0) + 1.5 ** x[i]  # powf: from libdevice

    ltoir, _ = cuda.compile(probe, "void(float32[::1])", cc=(9, 0), output="ltoir")
    from cuda.bindings import nvjitlink

    handle = nvjitlink.create(2, ["-arch=sm_90", "-lto"])
    try:
        nvjitlink.add_data(handle, nvjitlink.InputType.LTOIR, ltoir, len(ltoir), "probe")
        nvjitlink.complete(handle)
        size = nvjitlink.get_linked_cubin_size(handle)
    finally:
        nvjitlink.destroy(handle)
    return f"nvJitLink {nvjitlink.version()}: {len(ltoir)} bytes of LTO-IR -> {size} bytes of sm_90 cubin"


for precision in ("tf32", "bf16", "fp16"):
    @check(f"CublasMatmul({precision!r})")
    def _(precision=precision):
        import cupy
        from fastnet.backends.gemm_cublas import CublasMatmul

        return f"compute type {CublasMatmul(precision, cupy)._compute}"


@check(f"cuda_status() with a faked CUDA {MAJOR}.0 driver")
def _():
    import cupy
    import fastnet.backends.devices as fb

    rt = cupy.cuda.runtime
    built = rt.runtimeGetVersion()
    rt.driverGetVersion = lambda: DRIVER
    rt.getDeviceCount = lambda: 1
    fb._smoke_launch = lambda cupy: (True, "faked")
    fb.cuda_status.cache_clear()
    ok, why = fb.cuda_status()
    if not ok:
        raise AssertionError(f"refused (CuPy built for {built}, driver {DRIVER}): {why}")
    return f"CuPy built for {built}, driver {DRIVER}: {why}"
'''



def clean_env():
    """The environment for pip and the checks: nothing of this process's Python, CUDA or
    simulator settings leaks in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CUDA_PATH", "CUDA_HOME",
                        "LD_LIBRARY_PATH", "NUMBA_ENABLE_CUDASIM", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def tail(text, n=40):
    return "\n".join(text.strip().splitlines()[-n:])


def run_checks(python, extra, tmp, env):
    """Run the checks with ``python`` (an environment with ``fastnet-mlp[extra]``); print each
    result.  Returns why the contract does not hold, or None."""
    driver, major = EXTRAS[extra]
    script = tmp / "checks.py"
    script.write_text(CHECKS)
    env = dict(env, CUPY_CACHE_DIR=str(tmp / "cupy-cache"), NUMBA_CACHE_DIR=str(tmp / "numba-cache"))
    run = subprocess.run([str(python), str(script), str(major), str(driver)], cwd=tmp,
                         capture_output=True, text=True, env=env, timeout=CHECK_TIMEOUT)
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    for r in results:
        print(f"{'PASS' if r['ok'] else 'FAIL'} [{extra}] {r['name']}: {r['detail']}")
    failed = [r for r in results if not r["ok"]]
    if failed:
        return (f"fastnet-mlp[{extra}] in a clean environment: {len(failed)} of {len(results)} checks failed:\n"
                + "\n".join(f"  {r['name']}: {r['detail'][:300]}" for r in failed))
    if run.returncode != 0 or not results:
        return f"the check script failed (exit {run.returncode}):\n{tail(run.stdout)}\n{tail(run.stderr)}"
    return None

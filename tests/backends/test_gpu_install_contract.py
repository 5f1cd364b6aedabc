"""The GPU extras install every library the ``cuda`` backend loads (no GPU needed).

For each of ``fastnet-mlp[cuda13]`` and ``fastnet-mlp[cuda12]``: a clean virtual environment
(``python -m venv``, no system site-packages), then README's command,
``pip install ".[cudaXX]"``, run in a copy of the repository (so no ``build/`` or
``*.egg-info`` is left in the working tree), then a script run by that environment's
Python checks, each by name:

* that ``cuda.pathfinder`` finds and loads, from the environment itself, every NVIDIA
  library the GPU path loads: cuBLAS and cuBLASLt (CuPy's ``matmul`` and fastnet's
  ``CublasMatmul``), NVRTC (CuPy compiles its elementwise kernels and reductions at run
  time), the CUDA runtime, libNVVM and nvJitLink (numba-cuda's compiler and linker) and
  NCCL (``fit(distributed=True)``); libdevice, and the CUDA headers CuPy gives NVRTC;
* CuPy's own bindings: ``from cupy_backends.cuda.libs import cublas`` (the import that
  fails without the cuBLAS wheel) and ``nccl``;
* that NVRTC, with the include options CuPy assembles, compiles a CUB block reduction
  to a cubin, and that numba-cuda compiles a kernel (libNVVM, libdevice) to LTO-IR that
  nvJitLink links into a cubin: what happens at a first launch, minus loading the cubin
  (which needs a driver);
* ``fastnet.backends.gemm_cublas.CublasMatmul`` constructs for ``"tf32"``, ``"bf16"``, ``"fp16"``
  (construction imports CuPy's cuBLAS binding and reads its constants; it needs no device);
* ``fastnet.backends.devices.cuda_status()`` says usable with the installed CuPy's real
  ``runtimeGetVersion()`` (13020 for cupy-cuda13x 14.2) and a faked oldest driver of
  that CUDA major (13.0, 12.0), one faked device and a faked smoke launch: CUDA's
  minor-version compatibility, which the extras' pins rely on.

libcuda (the driver) is not expected: there is none here.

Each install brings about 1 GB of wheels: the test is marked ``processes`` (run once per
CI).  Where pip cannot reach the package index it is skipped with the reason, except
under CI (``CI`` set), where it fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))

#: extra -> (the oldest driver of its CUDA major, as cudaDriverGetVersion gives it; that major).
EXTRAS = {"cuda13": (13000, 13), "cuda12": (12000, 12)}

#: What ``pip install .`` needs of the repository (pyproject's packages, readme, package data).
_SOURCE = ("pyproject.toml", "README.md", "fastnet", "kernels")

_INSTALL_TIMEOUT = 1200
_CHECK_TIMEOUT = 600

# Run by the clean environment's Python: argv[1] = CUDA major, argv[2] = faked driver version.
# One line of JSON per check: {"name", "ok", "detail"}.
_CHECKS = r'''
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


def _env():
    """The environment for pip and the checks: nothing of this process's Python, CUDA or
    simulator settings leaks in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CUDA_PATH", "CUDA_HOME",
                        "LD_LIBRARY_PATH", "NUMBA_ENABLE_CUDASIM", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _no_index(python, tmp, env):
    """Why pip cannot reach the package index, or None."""
    run = subprocess.run(
        [python, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--timeout", "20",
         "--retries", "1", "-d", str(tmp / "probe"), "cuda-pathfinder"],
        capture_output=True, text=True, env=env, timeout=300)
    if run.returncode == 0:
        return None
    return f"pip cannot download from the package index: {run.stderr.strip()[-500:]}"


def _tail(text, n=40):
    return "\n".join(text.strip().splitlines()[-n:])


@pytest.mark.processes
@pytest.mark.parametrize("extra", list(EXTRAS))
def test_gpu_extra_installs_every_library_the_gpu_path_loads(extra, tmp_path_factory):
    driver, major = EXTRAS[extra]
    tmp = tmp_path_factory.mktemp(f"install-{extra}")
    env = _env()
    try:
        src = tmp / "src"
        src.mkdir()
        for name in _SOURCE:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, src / name)
        venv = tmp / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
        python = str(venv / "bin" / "python")

        why = _no_index(python, tmp, env)
        if why:
            if IN_CI:
                pytest.fail(f"CI: {why}")
            pytest.skip(why)

        start = time.monotonic()
        # --no-compile: the same distributions and files, without the .pyc of ~2 GB of
        # packages (tens of seconds on two busy cores); the checks import only a few modules.
        install = subprocess.run([python, "-m", "pip", "install", "--no-compile", f".[{extra}]"], cwd=src,
                                 capture_output=True, text=True, env=env, timeout=_INSTALL_TIMEOUT)
        took = time.monotonic() - start
        print(f'\npip install ".[{extra}]": {took:.0f} s')
        if install.returncode != 0:
            pytest.fail(f'pip install ".[{extra}]" failed ({took:.0f} s):\n{_tail(install.stdout)}\n'
                        f"{_tail(install.stderr)}", pytrace=False)

        script = tmp / "checks.py"
        script.write_text(_CHECKS)
        env_checks = dict(env, CUPY_CACHE_DIR=str(tmp / "cupy-cache"), NUMBA_CACHE_DIR=str(tmp / "numba-cache"))
        run = subprocess.run([python, str(script), str(major), str(driver)], cwd=tmp,
                             capture_output=True, text=True, env=env_checks, timeout=_CHECK_TIMEOUT)
        results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        for r in results:
            print(f"{'PASS' if r['ok'] else 'FAIL'} [{extra}] {r['name']}: {r['detail']}")
        failed = [r for r in results if not r["ok"]]
        if failed:
            pytest.fail(f"fastnet-mlp[{extra}] in a clean environment: {len(failed)} of {len(results)} checks "
                        "failed:\n" + "\n".join(f"  {r['name']}: {r['detail'][:300]}" for r in failed),
                        pytrace=False)
        if run.returncode != 0 or not results:
            pytest.fail(f"the check script failed (exit {run.returncode}):\n{_tail(run.stdout)}\n"
                        f"{_tail(run.stderr)}", pytrace=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

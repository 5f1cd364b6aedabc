"""The GPU extras install every library the ``cuda`` backend loads (no GPU needed).

For ``fastnet-mlp[cuda12]`` here: a clean virtual environment (``python -m venv``, no system
site-packages), then README's command, ``pip install ".[cuda12]"``, run in a copy of the
repository (so no ``build/`` or ``*.egg-info`` is left in the working tree), then a script
(``tests/gpu_contract.py``) run by that environment's Python checks, each by name:

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

``fastnet-mlp[cuda13]`` gets the same checks in the environment that ``bench/gpu_check.sh``
makes for itself on a bare machine (``tests/cuda_sim/test_gpu_check_dry.py``,
``[cuda13,mpi]``): one CUDA 13 install per CI run, not two.

The install brings about 1 GB of wheels: the test is marked ``processes`` (run once per
CI).  Where pip cannot reach the package index it is skipped with the reason, except
under CI (``CI`` set), where it fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpu_contract import clean_env, run_checks, tail  # tests/gpu_contract.py

ROOT = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))

#: What ``pip install .`` needs of the repository (pyproject's packages, readme, package data).
_SOURCE = ("pyproject.toml", "README.md", "fastnet", "kernels")

_INSTALL_TIMEOUT = 1200


def _no_index(python, tmp, env):
    """Why pip cannot reach the package index, or None."""
    run = subprocess.run(
        [python, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--timeout", "20",
         "--retries", "1", "-d", str(tmp / "probe"), "cuda-pathfinder"],
        capture_output=True, text=True, env=env, timeout=300)
    if run.returncode == 0:
        return None
    return f"pip cannot download from the package index: {run.stderr.strip()[-500:]}"


@pytest.mark.processes
@pytest.mark.parametrize("extra", ["cuda12"])  # cuda13: tests/cuda_sim/test_gpu_check_dry.py
def test_gpu_extra_installs_every_library_the_gpu_path_loads(extra, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"install-{extra}")
    env = clean_env()
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
            pytest.fail(f'pip install ".[{extra}]" failed ({took:.0f} s):\n{tail(install.stdout)}\n'
                        f"{tail(install.stderr)}", pytrace=False)
        why = run_checks(python, extra, tmp, env)
        if why:
            pytest.fail(why, pytrace=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""Compile every CUDA kernel for the real chips, without a GPU.

Needs Numba's CUDA target with NVVM (``numba.cuda.compile_ptx``) and ``ptxas``:
the ``cuda-dev`` extra installs them (numba-cuda, CUDA 13.0 NVVM/NVRTC/ptxas
wheels; ``cuda.pathfinder`` finds ptxas, else ``ptxas`` on ``PATH``).  Without
them every test module here is replaced, unimported, by one skipped item that
names what is missing; with ``FASTNET_REQUIRE_CUDA_COMPILE=1`` (CI) that item
fails instead.  Under ``NUMBA_ENABLE_CUDASIM=1`` the modules are skipped:
``compile_ptx`` does not work in the simulator (that suite is tests/cuda_sim).
"""
import os
import shutil
import subprocess
import tempfile

import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
REQUIRE = os.environ.get("FASTNET_REQUIRE_CUDA_COMPILE") == "1"


def _one_line(exc):
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _probe():
    """``(toolchain, None)`` when PTX can be built and assembled, else ``(None, why)``."""
    try:
        import numba
        from numba import cuda
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
        return None, f"numba.cuda cannot be imported ({_one_line(exc)})"
    if not hasattr(cuda, "compile_ptx"):
        return None, "numba.cuda has no compile_ptx"
    ptxas, found_by = None, None
    try:
        from cuda import pathfinder

        ptxas, found_by = pathfinder.find_nvidia_binary_utility("ptxas"), "cuda.pathfinder"
    except Exception:  # noqa: BLE001 - pathfinder absent or broken: try PATH
        pass
    if ptxas is None:
        ptxas, found_by = shutil.which("ptxas"), "PATH"
    if ptxas is None:
        return None, "ptxas not found (neither cuda.pathfinder nor PATH)"

    # A kernel calling an inlined device function, as fastnet's kernels do:
    # numba's built-in numba.cuda (without numba-cuda) types such a call by
    # compiling for the current device, which needs a driver.
    @cuda.jit(device=True, inline="always")
    def twice(v):
        return v + v

    def probe(x):
        i = cuda.grid(1)
        if i < x.size:
            x[i] = twice(x[i])

    try:
        ptx, _ = cuda.compile_ptx(probe, "void(float32[::1])", cc=(9, 0))
    except Exception as exc:  # noqa: BLE001 - NVVM/libdevice missing, or needs a GPU
        return None, (
            "compile_ptx(cc=(9, 0)) failed on a two-line kernel with "
            f"numba.cuda {getattr(cuda, 'implementation', '?')!r} ({_one_line(exc)})"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        run = subprocess.run(
            [ptxas, "-arch=sm_90", path, "-o", os.devnull], capture_output=True, text=True
        )
    if run.returncode != 0:
        return None, (
            f"{ptxas} rejects the PTX of a one-line kernel (NVVM and ptxas from "
            f"different CUDA releases?): {run.stderr.strip()[:300]}"
        )
    version = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    return (
        dict(
            ptxas=ptxas,
            ptxas_found_by=found_by,
            ptxas_version=next((ln for ln in version.splitlines() if "release" in ln), "?"),
            numba=numba.__version__,
            numba_cuda=getattr(cuda, "implementation", "?"),
        ),
        None,
    )


if SIM:
    TOOLCHAIN, WHY = None, (
        "tests/cuda_compile runs without the simulator (compile_ptx does not work "
        "under NUMBA_ENABLE_CUDASIM=1): run it in a process without that variable"
    )
    FAIL = False
else:
    TOOLCHAIN, WHY = _probe()
    FAIL = REQUIRE
    if WHY:
        WHY = (
            f"CUDA compile toolchain unavailable: {WHY}. Install it with "
            "`pip install -e .[cuda-dev]`"
            + (" (FASTNET_REQUIRE_CUDA_COMPILE=1: failing)" if REQUIRE else "")
        )


def pytest_report_header(config):
    if TOOLCHAIN:
        t = TOOLCHAIN
        return (
            f"cuda_compile: numba {t['numba']} (numba.cuda: {t['numba_cuda']}), "
            f"ptxas {t['ptxas']} via {t['ptxas_found_by']} ({t['ptxas_version']})"
        )
    return f"cuda_compile: {WHY}"


if WHY:

    class _Unavailable(pytest.Item):
        def runtest(self):
            if FAIL:
                pytest.fail(WHY, pytrace=False)
            pytest.skip(WHY)

        def reportinfo(self):
            return self.path, None, self.name

    class _ReplacedModule(pytest.File):
        def collect(self):
            yield _Unavailable.from_parent(self, name="cuda_compile")

    def pytest_pycollect_makemodule(module_path, parent):
        return _ReplacedModule.from_parent(parent, path=module_path)


@pytest.fixture(scope="session")
def ptxas():
    """Path of the ptxas that assembles the PTX."""
    return TOOLCHAIN["ptxas"]

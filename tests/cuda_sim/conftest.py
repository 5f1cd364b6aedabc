"""The CUDA kernels under Numba's simulator: a pytest process of their own.

Run with ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda_sim``.  Numba
reads the variable once, when it is imported, so it must be in the
environment before the process starts.  In any other run every test module
here is replaced, unimported, by one skipped item that says why: importing
``numba.cuda`` there would bind it to the real driver for the whole process.

Every simulated thread is a Python thread (about 1 ms each), and every
``syncthreads`` a wait on each of them, so the session launches small grids:
32 threads per block, 4 per row of the row-wise kernels (softmax, the losses:
their reductions synchronise per row; with 32 threads they took 85% of a
simulated training step, and two simulator training tests ran in 34 s with 8
threads, 21 s with 4), at most 2 blocks.  The kernels stride over the rest,
which also exercises their grid- and block-stride loops on shapes larger than
one launch (10 classes over 4 threads: the row loop too, and a two-level
reduction); test_cuda_kernels.py checks the kernels under other launch shapes
(row blocks of 4 and 64).
"""
import os
import sys

import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
REASON = (
    "tests/cuda_sim needs NUMBA_ENABLE_CUDASIM=1 in the environment before numba "
    "is imported: run `NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda_sim`"
)

#: Launch settings of the session (see ``fastnet.kernels.cuda.set_launch_config``).
SIM_LAUNCH = dict(block=32, row_block=4, bwd_block=(8, 4), max_blocks=2)
#: GIL switch interval of the session, in seconds (Python's default: 0.005).
SWITCH_INTERVAL = 2e-4


if not SIM:

    class _NotUnderSimulator(pytest.Item):
        def runtest(self):
            pytest.skip(REASON)

        def reportinfo(self):
            return self.path, None, self.name

    class _SkippedModule(pytest.File):
        def collect(self):
            yield _NotUnderSimulator.from_parent(self, name="cuda_sim")

    def pytest_pycollect_makemodule(module_path, parent):
        return _SkippedModule.from_parent(parent, path=module_path)

else:
    import numba

    if not numba.config.ENABLE_CUDASIM:
        raise RuntimeError(
            "NUMBA_ENABLE_CUDASIM=1 is set but numba was imported before it was: "
            "start a new process with the variable already in its environment"
        )

    @pytest.fixture(autouse=True, scope="session")
    def small_launches():
        """Few simulated threads per launch (the simulator runs each in Python)."""
        from fastnet.kernels import cuda

        old = cuda.set_launch_config(**SIM_LAUNCH)
        yield
        cuda.set_launch_config(**old)

    @pytest.fixture(autouse=True, scope="session")
    def fast_thread_switches():
        """Shorter GIL switch interval: the simulator's syncthreads is a busy
        poll by a manager thread that holds the GIL for a whole switch interval
        (5 ms by default) per round; at 0.2 ms this suite runs ~3x faster."""
        old = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        yield
        sys.setswitchinterval(old)

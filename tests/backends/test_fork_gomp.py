"""Forked processes and GNU OpenMP: libgomp keeps no threads across a fork, and a parallel
region in the child of a process that had run one can wait forever for them.  fastnet
records at each fork whether libgomp was in the parent (``fastnet.backends.gomp_forked``);
in such a child oneDNN's GNU OpenMP build, MKL and the few-row kernels' threads refuse with
the reason, and training runs on the providers that do run (NumPy's BLAS)."""
import os
import subprocess
import sys
import textwrap

import pytest

from fastnet.backends import gemm_mkl

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def run_child(script, env=None, timeout=90):
    """Run ``script`` (which forks) in a process of its own: a child that waits for threads
    that stayed in the parent never ends."""
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], timeout=timeout, env=env,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child waited for OpenMP threads that stayed in the parent")
    return proc


def test_a_child_of_a_process_with_libgomp_refuses_mkl_and_gomp_threads_and_one_without_does_not():
    # (no MKL needed: the refusal comes before MKL is looked for; oneDNN's where it is installed)
    proc = run_child("""
        import ctypes, os, sys
        import fastnet
        from fastnet.backends import gemm_choice, gemm_mkl, gemm_onednn, gomp_forked

        def child(expect_refused):
            pid = os.fork()
            if pid == 0:
                refused = gomp_forked()
                from fastnet.backends import small_batch   # (imported after the fork: no handler of its own ran)
                try:
                    gemm_mkl.load()
                    said = None
                except gemm_mkl.MKLUnavailable as e:
                    said = str(e)
                ok = refused == expect_refused
                if expect_refused:
                    ok = ok and said is not None and "forked from one that had loaded GNU OpenMP" in said
                    found = gemm_choice.available()
                    ok = ok and found["mkl"] == said and gemm_mkl.forked() == said
                    ok = ok and small_batch.runner() is None
                    # oneDNN (never loaded in the parent) on GNU OpenMP refuses before its first
                    # parallel region (loaded, not run: its _lib)
                    gomp_build = gemm_onednn._lib is not None and gemm_onednn._lib.omp is not None
                    said_fork = "forked from one that had loaded GNU OpenMP" in (found["onednn"] or "")
                    ok = ok and said_fork == gomp_build
                else:
                    ok = ok and gemm_mkl.forked() is None and (said is None or "forked" not in said)
                os._exit(0 if ok else 3)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)

        without = child(False)          # nothing has loaded libgomp yet
        ctypes.CDLL("libgomp.so.1", mode=ctypes.RTLD_GLOBAL)
        with_gomp = child(True)
        sys.exit(10 * without + with_gomp)
    """)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])


@pytest.mark.skipif(not gemm_mkl.available(), reason="MKL is not installed (pip install '.[mkl]')")
@pytest.mark.parametrize("parent", ["onednn", "mkl-gnu"])
def test_a_child_forked_after_gnu_openmp_ran_trains_without_waiting_and_says_why_not_mkl(parent):
    # measured: the child's first MKL GEMM (measured by fit's GEMM choice) waited forever after
    # the parent had run oneDNN's threads, and oneDNN's after the parent had run MKL on GNU OpenMP
    env = dict(os.environ, FASTNET_THREADS="fixed", FASTNET_CPU_GEMM="onednn" if parent == "onednn" else "mkl")
    if parent == "mkl-gnu":
        env["MKL_THREADING_LAYER"] = "GNU"
    script = """
        import os, sys
        import numpy as np
        import fastnet
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((1024, 200)).astype(np.float32), rng.integers(0, 3, 1024)
        m = fastnet.MLP([200, 256, 256, 3], backend="cpu", seed=0)
        h = m.fit(X, y, epochs=1, batch_size=128, verbose=0, diagnose=False)
        assert h.params["gemm"]["provider"] == os.environ["FASTNET_CPU_GEMM"], h.params["gemm"]
        pid = os.fork()
        if pid == 0:
            del os.environ["FASTNET_CPU_GEMM"]   # auto: measured among the providers that run here
            h = m.fit(X, y, epochs=1, batch_size=128, verbose=0, diagnose=False)
            gemm = h.params["gemm"]
            ok = gemm["provider"] == "numpy" and np.isfinite(h["loss"][-1])
            ok = ok and "forked" in gemm["unavailable"]["mkl"] and "forked" in gemm["unavailable"]["onednn"]
            ok = ok and m.predict(X[:3]).shape == (3,)     # the few-row path: not on libgomp's threads
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """
    proc = run_child(script, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])

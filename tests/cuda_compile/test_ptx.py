"""Every CUDA kernel compiles to PTX for sm_90 and sm_80, and ptxas assembles it.

The kernels and their argument types come from ``fastnet.kernels.cuda``: every
``@cuda.jit`` kernel of the module must have an entry in its ``SIGNATURES``
table (checked here), so a new kernel cannot be left out silently.  For each
kernel and dtype (float32, float64; int32 and int64 labels for softmax_xent):
``numba.cuda.compile_ptx(..., cc=(9, 0))`` and ``cc=(8, 0)``, the PTX's
``.target``, no float64 instruction in float32 PTX, then ``ptxas -v`` for the
same architecture: exit status 0 and no spill stores or loads in any function.
"""
import inspect
import os
import re
import subprocess
import sys

import pytest
from numba import cuda as nbcuda
from numba import types
from numba.cuda.dispatcher import CUDADispatcher

from fastnet.kernels import KernelSet, cuda, overrides

FLOATS = [types.float32, types.float64]
CCS = [(9, 0), (8, 0)]

_PROPERTIES = re.compile(
    r"Function properties for (\S+)\s*\n\s*(\d+) bytes stack frame, "
    r"(\d+) bytes spill stores, (\d+) bytes spill loads"
)
_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_USED = re.compile(r"Used (\d+) registers")


def jit_kernels():
    """Every ``@cuda.jit`` kernel (not device function) defined in the module."""
    return {
        name: obj
        for name, obj in vars(cuda).items()
        if isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device")
    }


def _cases():
    for name in sorted(cuda.SIGNATURES):
        for f in FLOATS:
            for sig in cuda.SIGNATURES[name](f):
                labels = [str(t.dtype) for t in sig if isinstance(t, types.Array) and
                          isinstance(t.dtype, types.Integer)]  # fmt: skip
                yield pytest.param(name, f, sig, id="-".join([name, str(f), *labels]))


def test_every_kernel_has_signatures_and_a_wrapper():
    kernels = jit_kernels()
    assert kernels, "no @cuda.jit kernel found in fastnet.kernels.cuda"
    assert set(kernels) == set(cuda.SIGNATURES)
    fused = KernelSet(cuda).fused
    assert "gelu_fwd" in fused and overrides(cuda) == []
    assert set(kernels) == {f"_k_{name}" for name in fused}
    for name in fused:
        kernel = f"_k_{name}"
        # the wrapper names its kernel, or holds it (the factory-made activation pairs);
        # tests/cuda_sim checks it launches it
        wrapper = getattr(cuda, name)
        held = [c.cell_contents for c in wrapper.__closure__ or ()]
        assert kernel in wrapper.__code__.co_names or kernels[kernel] in held, name
        n_params = len(inspect.signature(kernels[kernel].py_func).parameters)
        for f in FLOATS:
            sigs = cuda.SIGNATURES[kernel](f)
            assert sigs and all(len(sig) == n_params for sig in sigs), kernel


def ptxas_report(stderr):
    """``{function: (spill stores, spill loads)}`` and register counts from ``-v``."""
    spills = {m[1]: (int(m[3]), int(m[4])) for m in _PROPERTIES.finditer(stderr)}
    return spills, [int(r) for r in _USED.findall(stderr)]


@pytest.mark.parametrize("name, f, sig", list(_cases()))
def test_compiles_for_sm90_and_sm80_without_spills(name, f, sig, ptxas, tmp_path, record_property):
    kernel = getattr(cuda, name)
    for cc in CCS:
        arch = f"sm_{cc[0]}{cc[1]}"
        ptx, resty = nbcuda.compile_ptx(kernel.py_func, sig, cc=cc)
        assert re.search(rf"^\.target {arch}\b", ptx, re.M), f"no .target {arch}"
        n_entries = len(re.findall(r"^\.visible \.entry ", ptx, re.M))
        assert n_entries == 1, n_entries
        if f == types.float32:
            f64 = sorted(set(re.findall(r"\b[a-z]+(?:\.[a-z0-9]+)*\.f64\b", ptx)))
            assert not f64, f"float32 kernel computes in float64: {f64}"
        path = tmp_path / f"{name}.{arch}.ptx"
        path.write_text(ptx)
        run = subprocess.run(
            [ptxas, f"-arch={arch}", "-v", str(path), "-o", os.devnull],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        entries = _ENTRY.findall(run.stderr)
        assert [a for _, a in entries] == [arch], run.stderr
        spills, registers = ptxas_report(run.stderr)
        assert entries[0][0] in spills, run.stderr
        bad = {fn: s for fn, s in spills.items() if s != (0, 0)}
        assert not bad, f"spills (stores, loads) for {arch}: {bad}"
        record_property(f"registers_{arch}", max(registers, default=0))


def test_module_imports_without_gpu_and_compiles_nothing():
    """Importing must not compile (an eager signature needs the driver)."""
    code = (
        "import fastnet.kernels.cuda as c\n"
        "compiled = [n for n in c.SIGNATURES if getattr(c, n).overloads]\n"
        "assert not compiled, compiled\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_binding_a_launch_configuration_needs_no_gpu_and_warns_nothing(recwarn):
    """``kernel[grid, block]`` is built once per configuration, quietly."""
    bound = cuda._bind(cuda._k_relu_fwd, 2, 32, None)
    assert (bound.griddim, bound.blockdim) == ((2, 1, 1), (32, 1, 1))
    assert not [w for w in recwarn if "under-utilization" in str(w.message)]


def test_every_kernel_is_cached_on_disk():
    """``cache=True`` on every kernel, the factory-made ones too: a second process loads
    the compiled code instead of running NVVM (that timing needs a GPU: bench/gpu_check.sh)."""
    for name in cuda.SIGNATURES:
        assert type(getattr(cuda, name)._cache).__name__ == "CUDACache", name


def test_factory_kernels_cache_keys_are_the_same_in_every_process():
    """numba keys a closure's cache entry by its pickled free variables (the device
    function of the activation): they must pickle to the same bytes in a new process,
    or every process would miss the cache and compile again."""
    code = (
        "import hashlib\n"
        "from numba.cuda.serialize import dumps\n"
        "import fastnet.kernels.cuda as c\n"
        "for n in sorted(c.SIGNATURES):\n"
        "    k = getattr(c, n).py_func\n"
        "    cells = tuple(x.cell_contents for x in (k.__closure__ or ()))\n"
        "    print(n, hashlib.sha256(dumps(cells)).hexdigest())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    closures = [n for n in cuda.SIGNATURES if getattr(cuda, n).py_func.__closure__]
    assert len(closures) == 2 * len(cuda.FUSED_ACTIVATIONS)  # the activation forward and backward kernels


def test_cuda_kernels_cache_outside_the_package():
    import pathlib

    import fastnet.kernels
    from fastnet.kernels import cache

    package = pathlib.Path(fastnet.kernels.__file__).resolve().parent
    for name in cuda.SIGNATURES:
        path = pathlib.Path(getattr(cuda, name)._cache._cache_path).resolve()
        assert package not in path.parents, (name, path)
        assert str(path).startswith(str(cache.cache_dir().resolve())), (name, path)

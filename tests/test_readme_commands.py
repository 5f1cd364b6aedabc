"""README's two commands, one after the other, as a new user runs them.

A fresh clone, a fresh virtual environment and an empty HOME; the two ``bash`` blocks
under "## The two commands" in README.md, taken from README.md itself, run in order:
the first installs fastnet and trains on MNIST, the second installs the test extras
(editable) and runs the whole suite (in which this test then skips itself).  Between
and after, the install folder is checked: training must not have written into it, and
no ``site-packages/fastnet`` folder may survive the switch to the editable install.

It takes minutes (two installs, an MNIST training, the suite again), so it runs in CI
(``CI`` set) or with ``FASTNET_README_TEST=1``, not on every local run.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NESTED = "FASTNET_README_NESTED"

pytestmark = [
    pytest.mark.processes,  # with FASTNET_CI_SPLIT=1 it runs in CI's outer run and the rest of the suite inside it
    pytest.mark.skipif(bool(os.environ.get(NESTED)), reason="inside the README test's own run of the suite"),
    pytest.mark.skipif(not (os.environ.get("CI") or os.environ.get("FASTNET_README_TEST")),
                       reason="slow (minutes): runs in CI, or with FASTNET_README_TEST=1"),
]


def readme_blocks():
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def test_readme_has_the_two_blocks():
    blocks = readme_blocks()
    assert len(blocks) == 2, blocks
    assert "fastnet train mnist" in blocks[0] and "tests/run.sh" in blocks[1]


def site_packages(venv):
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


#: Seconds of each phase of the test, printed at its end (CI's log: -rP).
PHASES: dict = {}


def run_block(block, cwd, env, timeout, phase=None):
    start = time.monotonic()
    try:
        return _run_block(block, cwd, env, timeout)
    finally:
        if phase:
            PHASES[phase] = PHASES.get(phase, 0.0) + time.monotonic() - start


def _run_block(block, cwd, env, timeout):
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return proc.returncode, proc.stdout


def summary(log):
    """The test groups' headers, results and failures, then the log's end."""
    keep = [line for line in log.splitlines()
            if line.startswith(("===", "FAILED", "ERROR")) or re.search(r"\d+ (passed|failed)", line)]
    return "\n".join(keep[-60:]) + "\n...\n" + log[-3000:]


def test_readme_commands_in_sequence_on_a_fresh_machine(tmp_path):
    first, second = readme_blocks()
    # (the clone's folder is not called fastnet: coverage maps the clone's fastnet/ and kernels/
    # onto the outer checkout's by those folder names, [tool.coverage.paths] in pyproject.toml)
    clone, home, venv = tmp_path / "clone", tmp_path / "home", tmp_path / "venv"
    home.mkdir()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "NUMBA_CACHE_DIR", "NUMBA_ENABLE_CUDASIM", "FASTNET_DATA",
            "FASTNET_KERNEL_CACHE", "FASTNET_COVERAGE", "FASTNET_REQUIRE_CUDA_COMPILE", "COVERAGE_PROCESS_START",
            "CI", "FASTNET_README_TEST", "PYTEST_ADDOPTS", "FASTNET_CI_SPLIT"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYTEST_")}
    # COLUMNS: the inner runs' "FAILED ... - reason" lines wide enough to read in this test's message
    env.update(HOME=str(home), VIRTUAL_ENV=str(venv), COLUMNS="400", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
               **{NESTED: "1"})
    if os.environ.get("FASTNET_CI_SPLIT") == "1":
        # CI's outer run left every unmarked test to this run (tests/conftest.py): it runs them
        # with CI's strictness (a missing extra or ptxas fails, never skips), and its coverage
        # data goes beside the outer run's, which combines it and checks the total.
        env.update(CI=os.environ.get("CI", "true"), FASTNET_REQUIRE_CUDA_COMPILE="1")
        if os.environ.get("FASTNET_COVERAGE") == "1":
            data = Path(os.environ.get("COVERAGE_FILE", ROOT / ".coverage")).resolve()
            env.update(FASTNET_COVERAGE="1", FASTNET_COVERAGE_DATA=str(data))

    PHASES.clear()
    rc, log = run_block(first, clone, env, timeout=1200, phase="first command")
    assert rc == 0, log[-6000:]
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", log).group(1))
    assert accuracy >= 0.98, log[-3000:]
    site = site_packages(venv)
    installed = site / "fastnet"
    record = next(site.glob("fastnet_mlp-*.dist-info")) / "RECORD"
    listed = {site / line.split(",")[0] for line in record.read_text().splitlines() if line}
    extra = [p for p in installed.rglob("*") if p.is_file() and p not in listed and p.suffix != ".pyc"]
    assert not extra, f"training wrote into the install folder: {extra[:5]}"
    assert list((home / ".cache" / "fastnet" / "kernels").rglob("*.nbi")), "no kernel cached per user"
    # From the clone's root the source folder fastnet/ shadows the installed package (a
    # script, a REPL, python -m, Ray's workers all put the root on sys.path first): fastnet
    # must import there too, with the same kernels.
    for command in ('python -c "import fastnet, fastnet.kernels.cpu; print(fastnet.kernels.cpu.__file__)"',
                    "python -m fastnet info", "echo 'import fastnet; print(fastnet.MLP)' | python -i -q",
                    "python examples/xor_sse.py"):
        rc, log = run_block(command, clone, env, timeout=300, phase="from the clone's root")
        assert rc == 0 and "Traceback" not in log, f"{command} from the clone's root:\n{log[-3000:]}"

    rc, log = run_block(second, clone, env, timeout=1500, phase="second command")
    # each group's command and result line (its tests and seconds), for CI's log (-rP)
    print("README's second command, its groups:\n" + "\n".join(
        line for line in log.splitlines()
        if re.match(r"=== [a-z ]+: (?!started)", line) or re.search(r"\d+ (passed|failed).* in [\d.]+s", line)))
    assert rc == 0, summary(log)
    assert "FAILED" not in log, summary(log)
    # each group ran its tests here (with FASTNET_CI_SPLIT=1 the outer run skipped them: a
    # nested run that skipped them too would pass having tested nothing)
    for group in ("backends", "core", "library", "cuda simulator", "cuda compile"):
        part = log.rsplit(f"=== {group}: ", 1)[-1].split("\n=== ", 1)[0]  # its output, printed whole at its end
        ran = re.search(r"(\d+) passed", part)
        assert ran and int(ran.group(1)) > 0, f"{group}: no test passed in the README's run\n{summary(log)}"
    assert "FASTNET_CI_SPLIT=1)" not in log, summary(log)
    assert not installed.exists(), f"{installed} survived the switch to the editable install"
    # Ray's workers started from the root import fastnet there (editable install now)
    rc, log = run_block("python examples/tune_mnist.py --small --epochs 1 --verbose 0", clone, env, timeout=900,
                        phase="Ray example")
    assert rc == 0 and "best config" in log.lower(), log[-3000:]
    print("the test's phases, seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in PHASES.items()))

    rc, log = run_block("pip uninstall -y fastnet-mlp", clone, env, timeout=300)
    assert rc == 0, log
    assert not installed.exists() and not list(site.glob("fastnet_mlp-*.dist-info")), log

"""The installed package: kernels/ is fastnet.kernels, never a top-level module."""
import subprocess
import sys


def test_kernels_installed_as_fastnet_kernels_only(tmp_path):
    code = (
        "import fastnet.kernels, fastnet.kernels.reference as r\n"
        "assert r.KERNELS\n"
        "try:\n"
        "    import kernels\n"
        "except ImportError:\n"
        "    print('no top-level kernels')\n"
        "else:\n"
        "    raise SystemExit('a top-level kernels module is importable: ' + kernels.__file__)\n"
    )
    # Run outside the repository, so the source folder is not on sys.path.
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "no top-level kernels" in out.stdout


def test_import_is_fast_and_lazy(tmp_path):
    code = ("import sys, time; t = time.perf_counter(); import fastnet; "
            "print(time.perf_counter() - t, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    seconds, numba_loaded = out.stdout.split()
    assert numba_loaded == "False"  # Numba is imported with the first CPU kernel, not before
    assert float(seconds) < 2.0  # generous: the budget is 0.5 s on a quiet machine


def test_every_install_line_installs_this_project():
    """The name ``fastnet`` on the package index is another project's (a PyTorch wrapper,
    version 1.0.0): ``pip install "fastnet[plot]"`` would install it. Every install line in
    the README, the docs, the examples and the library's hints installs from the clone
    (``.[extra]``) or names this distribution, ``fastnet-mlp``."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"] == "fastnet-mlp"
    files = [root / "README.md", *root.glob("docs/**/*.md"), *root.glob("examples/*.py"), root / "examples" / "README.md",
             *root.glob("fastnet/**/*.py"), *root.glob("bench/*.py"), *root.glob("bench/*.sh")]
    wrong = []
    for path in files:
        for m in re.finditer(r"pip install ((?:-[-\w]+ )*)([\"']?)([^\s\"'`]+)\2", path.read_text()):
            target = m.group(3)
            if target.startswith("fastnet") and not target.startswith("fastnet-mlp"):
                wrong.append(f"{path.relative_to(root)}: {m.group(0)}")
        wrong += [f"{path.relative_to(root)}: {m.group(0)}" for m in re.finditer(r"(?<![\w-])fastnet\[\w", path.read_text())]
    assert not wrong, wrong
